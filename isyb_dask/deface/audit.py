"""Face audit of renders: dlib face detection and face-recognition embeddings.

Models (loaded lazily, only with the ``audit`` extra installed):

* detector: dlib's HOG + linear SVM frontal face detector (``get_frontal_face_detector``,
  built into dlib, Boost Software Licence); ``run(image, upsample, adjust_threshold)`` gives
  a score per candidate window, a face is *detected* when the best score exceeds 0 (dlib's
  default decision threshold);
* landmarks: ``shape_predictor_5_face_landmarks.dat`` (D. King, CC0);
* embedding: ``dlib_face_recognition_resnet_model_v1.dat`` (D. King, CC0), a 128-d
  descriptor; dlib's same-person threshold is a Euclidean distance of 0.6.

Both model files come from the ``face_recognition_models`` package. Its 68-point predictor
(iBUG 300-W, non-commercial) and its MMOD CNN detector are never loaded.

A descriptor is computed for every view, also when no face is found: the defaced render uses
the landmarks found on the original render of the same view (same render geometry, so the
same place of the head); where the original has none either, the best-scoring candidate
window or a fixed central box is used. An attacker's detector would find nothing there, so
this descriptor is a conservative (pessimistic) measure of what is left of the face.

A head in a noisy background (:func:`isyb_dask.deface.skin.noisy_background` of the original)
is rendered from the 3x3x3 median of each image, the original's and every defaced copy's:
noise specks on the plain render hid even the original face from the detector (volunteer
with Rician noise of sigma 134: best original score 0.02, on the median 2.08), so the audit
could not judge. Every row carries the original's best score, and
:func:`attach_audit` says when the original shows no face.

A second iso-level, the image's tissue/air Otsu threshold (:data:`DEEP_FRACTION` x Otsu,
twice the skin level), is checked with the detector alone (no descriptors): a renderer's
iso-level is its own choice, and above the skin's brightness a thin masked layer lets the
surface through to the orbits and nasal cavity (volunteer defaced with the former thin
layer: no face at the skin level, dlib 1.07 at 1.0 x Otsu). ``face_detected`` is true when
either level shows a face; ``face_score_deep`` keeps the second level's best score.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isyb_dask.deface.render import VIEW_YAWS, render_geometry, render_views
from isyb_dask.deface.skin import noisy_background, skin_image, skin_threshold
from isyb_dask.errors import IsybError
from isyb_dask.io.derivatives import write_sidecar
from isyb_dask.io.outputs import embeddings_path, render_path

__all__ = [
    "AuditUnavailableError",
    "ViewFace",
    "DETECTION_THRESHOLD",
    "DEEP_FRACTION",
    "SCORE_FLOOR",
    "analyse_views",
    "head_distance",
    "audit_defaced",
    "attach_audit",
    "AUDIT_FIELDS",
    "write_render_png",
    "embeddings_path",
]

DETECTION_THRESHOLD = 0.0
"""A view shows a face when the detector's best score exceeds this (dlib's default)."""
DEEP_FRACTION = 1.0
"""Second audited iso-level as a fraction of the Otsu threshold (the skin level is 0.5)."""
SCORE_FLOOR = -1.0
"""Candidate windows scoring below this are not reported; ``face_score`` is floored here."""
MODEL_FILES = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}


class AuditUnavailableError(IsybError):
    """dlib or the face_recognition_models files are not installed (``pip install .[audit]``)."""


@functools.lru_cache(maxsize=1)
def _models() -> tuple[Any, Any, Any]:
    """(detector, 5-point landmark predictor, face recogniser), loaded once per process."""
    try:
        import dlib
        import face_recognition_models
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise AuditUnavailableError(
            f"the face audit needs dlib and face_recognition_models ({exc}); "
            "install the 'audit' extra: pip install 'isyb-dask[audit]'"
        ) from exc
    folder = Path(face_recognition_models.__file__).parent / "models"
    paths = {k: folder / v for k, v in MODEL_FILES.items()}
    for p in paths.values():
        if not p.is_file():
            raise AuditUnavailableError(f"face model file missing: {p}")
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(paths["landmarks"])),
            dlib.face_recognition_model_v1(str(paths["recognition"])))


@dataclasses.dataclass
class ViewFace:
    """Audit of one rendered view.

    Attributes
    ----------
    detected
        Best detector score > :data:`DETECTION_THRESHOLD`.
    score
        Best detector score (floored at :data:`SCORE_FLOOR`).
    box
        (left, top, right, bottom) of the window the landmarks were fitted in.
    source
        Where the landmarks come from: ``detected``, ``reference`` (the original's),
        ``candidate`` (best window below threshold) or ``fixed`` (central box).
    landmarks
        The 5 landmark points (x, y), shape (5, 2).
    embedding
        128-d face descriptor (float64).
    """

    detected: bool
    score: float
    box: tuple[int, int, int, int]
    source: str
    landmarks: np.ndarray
    embedding: np.ndarray


def _fixed_box(shape: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = shape
    return int(0.22 * w), int(0.25 * h), int(0.78 * w), int(0.81 * h)


def analyse_views(
    views: np.ndarray, reference: Sequence[ViewFace] | None = None, *, upsample: int = 0
) -> list[ViewFace]:
    """Detect faces and compute one descriptor per rendered view.

    Parameters
    ----------
    views
        uint8 renders, shape (n_views, H, W) (:func:`isyb_dask.deface.render.render_views`).
    reference
        Audit of the original head's views (same geometry): its landmarks are used where no
        face is detected here.
    upsample
        Image pyramid up-sampling of the detector (0: faces of at least 80 px, the size of
        a face at the default render geometry).

    Returns
    -------
    list of ViewFace
    """
    import dlib

    detector, predictor, recogniser = _models()
    out = []
    for k, view in enumerate(np.asarray(views)):
        gray = np.ascontiguousarray(view, dtype=np.uint8)
        rgb = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
        dets, scores, _ = detector.run(gray, upsample, SCORE_FLOOR)
        best = int(np.argmax(scores)) if len(scores) else -1
        score = float(scores[best]) if best >= 0 else SCORE_FLOOR
        detected = score > DETECTION_THRESHOLD
        if detected:
            source, rect = "detected", dets[best]
        elif reference is not None and reference[k].source in ("detected", "reference"):
            source, rect = "reference", None
        elif best >= 0:
            source, rect = "candidate", dets[best]
        else:
            source, rect = "fixed", dlib.rectangle(*_fixed_box(gray.shape))
        if rect is None:
            ref = reference[k]
            rect = dlib.rectangle(*ref.box)
            pts = [dlib.point(int(x), int(y)) for x, y in ref.landmarks]
            shape = dlib.full_object_detection(rect, pts)
        else:
            shape = predictor(gray, rect)
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=float)
        emb = np.asarray(recogniser.compute_face_descriptor(rgb, shape, 0), dtype=np.float64)
        out.append(ViewFace(detected, max(score, SCORE_FLOOR),
                            (rect.left(), rect.top(), rect.right(), rect.bottom()), source,
                            landmarks, emb))
    return out


def best_scores(views: np.ndarray, *, upsample: int = 0) -> list[float]:
    """The detector's best score per view (floored at :data:`SCORE_FLOOR`), nothing else."""
    detector = _models()[0]
    out = []
    for view in np.asarray(views):
        _, scores, _ = detector.run(np.ascontiguousarray(view, dtype=np.uint8), upsample,
                                    SCORE_FLOOR)
        out.append(max([SCORE_FLOOR, *map(float, scores)]))
    return out


def head_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Distance of two heads: mean over views of the Euclidean descriptor distance.

    Parameters
    ----------
    a, b
        Descriptors, shape (n_views, 128), views in the same order.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.mean(np.linalg.norm(a - b, axis=-1)))


def write_render_png(
    views: np.ndarray, path: str | os.PathLike[str], *, mode: int | None = None
) -> Path:
    """Write the views side by side as an 8-bit grey PNG (atomic; optional file mode)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(np.hstack(list(np.asarray(views, dtype=np.uint8))), mode="L").save(tmp, "PNG")
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def _save_embeddings(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _summary(faces: Sequence[ViewFace]) -> dict[str, Any]:
    return {"face_detected": bool(any(f.detected for f in faces)),
            "face_score": float(max(f.score for f in faces)),
            "view_scores": [round(f.score, 4) for f in faces]}


def audit_defaced(
    original: np.ndarray,
    affine: np.ndarray,
    defaced: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike[str] | None,
    subject: str,
    *,
    keep_original: bool = False,
    yaws: tuple[float, ...] = VIEW_YAWS,
    denoise: bool | None = None,
    deep_fraction: float | None = DEEP_FRACTION,
) -> dict[str, dict[str, Any]]:
    """Render and audit the original head and each defaced copy.

    Parameters
    ----------
    original
        The undefaced T1w (any voxel order; the face direction is RAS anterior in world
        coordinates, so the closest-canonical grid and the stored grid give the same views).
    affine
        Voxel-to-RAS affine shared by ``original`` and every defaced array.
    defaced
        ``{template: defaced array}`` on the same grid.
    out_dir
        Derivatives root: writes ``sub-X/figures/sub-X_desc-defaced<T>_render.png`` per
        template and the descriptors ``sub-X/audit/sub-X_desc-face_embeddings.npz`` (mode
        0600; keys ``original`` and ``defaced<T>``, each (n_views, 128)). ``None`` writes
        nothing.
    subject
        Subject label.
    keep_original
        Also write the original's render (``sub-X_desc-original_render.png``, mode 0600).
    yaws
        View angles (degrees).
    denoise
        Render from the 3x3x3 medians (a noisy background). ``None``: decided here by
        :func:`isyb_dask.deface.skin.noisy_background` of ``original``; the deface stage
        passes the decision it already made for the masking.
    deep_fraction
        Second iso-level (fraction of the Otsu threshold) checked with the detector only;
        ``None``: the skin level alone.

    Returns
    -------
    dict
        Per template: ``face_detected`` (bool: a face at the skin level or at the second
        one), ``face_score`` (best detector score over the views at the skin level),
        ``face_score_deep`` (the same at ``deep_fraction``; NaN without it),
        ``reid_distance`` (:func:`head_distance` defaced vs original), ``view_scores``,
        ``original_face_score``, ``rendered_on`` (``"image"``, or ``"median"`` for a
        noisy background), ``audit_seconds``, ``render`` (path or None).
    """
    sub = subject if subject.startswith("sub-") else f"sub-{subject}"
    t0 = time.perf_counter()
    if denoise is None:
        denoise = noisy_background(original, skin_threshold(original))
    if denoise:
        original = skin_image(original, True)
    geom = render_geometry(original, affine)
    deep = (render_geometry(original, affine, threshold_fraction=deep_fraction)
            if deep_fraction is not None else None)
    orig_views = render_views(original, affine, geom, yaws=yaws)
    orig_faces = analyse_views(orig_views)
    base = time.perf_counter() - t0
    orig = _summary(orig_faces)
    emb = {"original": np.stack([f.embedding for f in orig_faces])}
    fig_dir = Path(out_dir) / sub / "figures" if out_dir is not None else None
    if keep_original and fig_dir is not None:
        write_render_png(orig_views, render_path(out_dir, sub, None), mode=0o600)
    results: dict[str, dict[str, Any]] = {}
    for name, arr in defaced.items():
        t1 = time.perf_counter()
        image = skin_image(arr, True) if denoise else arr
        views = render_views(image, affine, geom, yaws=yaws)
        faces = analyse_views(views, reference=orig_faces)
        e = np.stack([f.embedding for f in faces])
        emb[f"defaced{name}"] = e
        row = _summary(faces)
        row["face_score_deep"] = float("nan")
        if deep is not None:
            row["face_score_deep"] = max(best_scores(render_views(image, affine, deep,
                                                                  yaws=yaws)))
            row["face_detected"] |= row["face_score_deep"] > DETECTION_THRESHOLD
        row.update(reid_distance=head_distance(e, emb["original"]),
                   original_face_score=orig["face_score"],
                   rendered_on="median" if denoise else "image", render=None)
        if fig_dir is not None:
            png = render_path(out_dir, sub, name)
            row["render"] = str(write_render_png(views, png))
            write_sidecar(png, {
                "Description": f"3-D skin-surface renders of the T1w defaced with template "
                               f"{name} (views: yaw {', '.join(f'{y:g}' for y in yaws)} deg)",
                "Template": name, "FaceDetected": row["face_detected"],
                "FaceScore": row["face_score"], "ViewScores": row["view_scores"],
                "FaceScoreDeep": row["face_score_deep"], "DeepIsoLevelOtsu": deep_fraction,
                "OriginalFaceScore": row["original_face_score"],
                "RenderedOn": row["rendered_on"],
            })
        row["audit_seconds"] = time.perf_counter() - t1 + base / max(len(defaced), 1)
        results[name] = row
    if out_dir is not None:
        epath = embeddings_path(out_dir, sub)
        _save_embeddings(epath, emb)
        write_sidecar(epath, {
            "Description": "128-d dlib face descriptors of the original and defaced renders, "
                           "one row per view; biometric identifiers (file mode 0600), never "
                           "copied into results.zarr; used only for the group re-identification "
                           "test",
            "Arrays": sorted(emb),
        })
    return results


AUDIT_FIELDS = ("face_detected", "face_score", "reid_distance", "view_scores", "audit_seconds",
                "render", "original_face_score", "rendered_on", "face_score_deep")


def attach_audit(
    rows: dict[str, dict[str, Any]],
    original: np.ndarray,
    affine: np.ndarray,
    defaced: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike[str],
    subject: str,
    *,
    keep_original: bool = False,
    denoise: bool | None = None,
) -> str | None:
    """Run :func:`audit_defaced` and add its fields to the deface stage's per-template rows.

    ``denoise`` is handed to :func:`audit_defaced` (the stage's noisy-background decision).

    For the deface stage: ``rows`` is its ``results`` dict (template -> row); each audited
    template's row gains :data:`AUDIT_FIELDS`. Without the ``audit`` extra nothing is added
    and a note is returned (the stage carries on); other errors propagate.

    Returns
    -------
    str or None
        ``None`` when audited, else why not: the audit did not run, or it ran but found no
        face on the original's render either (then its "no face" after defacing says
        nothing).
    """
    if not defaced:
        return None
    try:
        audit = audit_defaced(original, affine, defaced, out_dir, subject,
                              keep_original=keep_original, denoise=denoise)
    except AuditUnavailableError as exc:
        return f"face audit skipped: {exc}"
    for name, row in audit.items():
        rows.setdefault(name, {}).update({k: row[k] for k in AUDIT_FIELDS})
    best = max((row["original_face_score"] for row in audit.values()), default=float("nan"))
    if not best > 0.0:
        return (f"face audit cannot judge: no face found on the original's render either "
                f"(best score {best:.2f}); the defaced renders' 'no face' says nothing")
    return None
