"""Is the face hidden for renderers and detectors other than the audit's own?

The pipeline's audit renders the skin with its ray caster at half the Otsu threshold and asks
dlib's HOG detector. A reviewer with other tools picks another iso-level, another renderer
and another detector. This check defaces heads with the pipeline (``maskface``, built-in
template and FSL MNI152 2 mm + mydeface mask) and looks at every defaced head with

* two renderers: the pipeline's ray caster (:func:`isyb_dask.deface.render.render_views`)
  and an independent one written here: a marching-cubes mesh (scikit-image) of the
  1 mm-smoothed image, sampled densely per triangle into a z-buffer and shaded with
  its own vertex normals (Lambert, light from the camera and slightly above);
* iso-levels from 0.25 to 1.4 x the image's Otsu threshold, frontal and +-30 degree views;
* detectors: dlib's HOG detector (score > 0 = face), dlib's CNN detector
  (``mmod_human_face_detector.dat`` from ``face_recognition_models``; any detection = face)
  and, when OpenCV is importable, its Haar cascades (frontal ``alt2``; reported only: the
  ``default`` cascade also fires on the back of the volunteer's head).

Heads: the volunteer as stored and written again with Rician noise (sigma 60, 134), its nose
cut by the field of view, 4 mm slices and a 30 % ghost (the variants of
``check_deface_variants.py``), and generated subjects. Printed per head and template: the
original's best HOG score (to show the detectors see a face there) and, for the defaced head,
every (renderer, iso-level, view, detector) that finds a face.

Usage::

    ISYB_SHARED_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \\
        benchmarks/check_face_detectors.py WORK [N_GENERATED [VARIANT ...]]
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage as ndi

from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.render import RenderGeometry, otsu_threshold, render_geometry, render_views
from isyb_dask.deface.skin import noisy_background, skin_image, skin_threshold
from isyb_dask.deface.stage import run_deface

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_deface_variants import mni152_templates, variants  # noqa: E402

SHARED = Path(os.environ.get("ISYB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FRACTIONS = (0.25, 0.5, 0.8, 1.0, 1.2, 1.4)
YAWS = (0.0, -30.0, 30.0)
VARIANTS = ("base", "noise60", "noise134", "nosecut", "slices4mm", "ghost30")


class Detectors:
    """dlib HOG and CNN, OpenCV Haar when available."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models

        models = Path(face_recognition_models.__file__).parent / "models"
        self.hog = dlib.get_frontal_face_detector()
        self.cnn = dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
        try:
            import cv2

            self.haar = cv2.CascadeClassifier(
                str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_alt2.xml"))
        except ImportError:
            self.haar = None

    def __call__(self, img: np.ndarray) -> dict[str, float]:
        _, scores, _ = self.hog.run(img, 1, -1.0)
        out = {"hog": float(max(scores)) if len(scores) else -9.0}
        dets = self.cnn(img, 1)
        out["cnn"] = float(max(d.confidence for d in dets)) if len(dets) else -9.0
        if self.haar is not None:
            out["haar"] = float(len(self.haar.detectMultiScale(img, 1.05, 3, minSize=(48, 48))))
        return out


def found(scores: dict[str, float]) -> list[str]:
    """Detectors that report a face (HOG > 0, any CNN detection, any Haar detection)."""
    hits = [f"hog {scores['hog']:+.2f}"] if scores["hog"] > 0 else []
    if scores["cnn"] > -9.0:
        hits.append(f"cnn {scores['cnn']:.2f}")
    if scores.get("haar", 0) > 0:
        hits.append("haar")
    return hits


def mesh_render(data: np.ndarray, affine: np.ndarray, geom: RenderGeometry, yaw: float,
                level: float) -> np.ndarray:
    """Marching-cubes mesh of ``data`` at ``level`` splatted into a z-buffer (uint8 image)."""
    from skimage.measure import marching_cubes

    from isyb_dask.deface.render import view_camera

    vox = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    vol = ndi.gaussian_filter(np.asarray(data, np.float32), 1.0 / vox)
    verts, faces, normals, _ = marching_cubes(vol, level)
    # enough samples per triangle that the longest edge (the largest voxel side) leaves no
    # gap wider than half a pixel (tall triangles of thick slices striped the image)
    k = max(3, int(np.ceil(2.0 * vox.max() / (geom.fov_mm / geom.size))))
    bary = np.array([(a, b, k - a - b) for a in range(k + 1) for b in range(k + 1 - a)],
                    float) / k
    pts = np.einsum("kj,fjc->fkc", bary, verts[faces]).reshape(-1, 3)
    nrm = np.einsum("kj,fjc->fkc", bary, normals[faces]).reshape(-1, 3)
    pts = pts @ affine[:3, :3].T + affine[:3, 3]
    nrm = nrm @ np.linalg.inv(affine[:3, :3])  # normals map with the inverse transpose
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-9
    right, up, d = view_camera(geom, yaw)
    rel = pts - np.asarray(geom.centre)
    size, pix = geom.size, geom.fov_mm / geom.size
    col = np.round(rel @ right / pix + (size - 1) / 2).astype(int)
    row = np.round(-(rel @ up) / pix + (size - 1) / 2).astype(int)
    depth = rel @ d
    ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    light = -d + 0.3 * up
    light /= np.linalg.norm(light)
    shade = np.clip(nrm[ok] @ light, 0.0, 1.0)  # the gradient normal points inwards
    order = np.argsort(-depth[ok])  # far first: nearer points overwrite
    img = np.zeros(size * size)
    hit = np.zeros(size * size, bool)
    idx = (row[ok] * size + col[ok])[order]
    img[idx] = 0.15 + 0.85 * shade[order]
    hit[idx] = True
    img, hit = img.reshape(size, size), hit.reshape(size, size)
    img = np.where(hit, img, ndi.grey_closing(img, size=3))  # pinholes between samples
    return np.round(255 * img).astype(np.uint8)


def renders(data: np.ndarray, affine: np.ndarray, ref: np.ndarray):
    """Yield ``(label, image)`` for both renderers, every iso-level and view; the geometry
    (centre, face direction, threshold) comes from the original ``ref``."""
    otsu = otsu_threshold(ref)
    for f in FRACTIONS:
        geom = render_geometry(ref, affine, threshold_fraction=f)
        for yaw, img in zip(YAWS, render_views(data, affine, geom, yaws=YAWS)):
            yield f"ray x{f:g} yaw {yaw:+.0f}", img
        for yaw in YAWS:
            yield f"mesh x{f:g} yaw {yaw:+.0f}", mesh_render(data, affine, geom, yaw, f * otsu)


def defaced_heads(name: str, path: Path, templates, work: Path):
    """Deface ``path`` (maskface, no audit) and return what the renders are made of.

    Returns ``(affine, ref, defaced, errors, denoise)``: ``ref`` is the original as rendered
    (its 3x3x3 median in a noisy background, as the audit renders it), ``defaced`` maps each
    template to its defaced image treated likewise, ``errors`` each failed template to its
    error.
    """
    cfg = dataclasses.replace(DefaceConfig(), audit=False)
    res = run_deface(path, "sub-v", templates, cfg, work / f"out_{name}")
    img = nb.load(path)
    orig = np.asarray(img.dataobj, np.float32)
    denoise = noisy_background(orig, skin_threshold(orig))
    ref = skin_image(orig, True) if denoise else orig
    defaced, errors = {}, {}
    for t, row in res["templates"].items():
        if row.get("error"):
            errors[t] = row["error"]
            continue
        p = work / f"out_{name}" / "sub-v" / "anat" / f"sub-v_desc-defaced{t}_T1w.nii.gz"
        d = np.asarray(nb.load(p).dataobj, np.float32)
        defaced[t] = skin_image(d, True) if denoise else d
    return img.affine, ref, defaced, errors, denoise


def check(name: str, path: Path, templates, work: Path, detect: Detectors) -> None:
    affine, ref, defaced, errors, denoise = defaced_heads(name, path, templates, work)
    orig_best = max(detect(im)["hog"] for _, im in renders(ref, affine, ref)
                    if _.endswith("yaw +0"))
    # control: the back of the original head, which has no face, at every iso-level
    back = [found(detect(render_views(ref, affine, render_geometry(
        ref, affine, threshold_fraction=f), yaws=(180.0,))[0])) for f in FRACTIONS]
    print(f"{name:12s} control: back of the original head, {len(FRACTIONS)} iso-levels: dlib "
          f"{sum(any(not x.startswith('haar') for x in b) for b in back)}, Haar alt2 "
          f"{sum('haar' in b for b in back)} with a 'face'", flush=True)
    for t, error in errors.items():
        print(f"{name:12s} {t:9s} ERROR {error}", flush=True)
    for t, d in defaced.items():
        hits, best, n = [], -9.0, 0
        for label, im in renders(d, affine, ref):
            s = detect(im)
            best = max(best, s["hog"])
            n += 1
            h = [x for x in found(s) if not x.startswith("haar")]
            if h:
                hits.append(f"{label}: {', '.join(h)}")
            elif "haar" in found(s):
                hits.append(f"{label}: haar only")
        strong = [h for h in hits if "haar only" not in h]
        print(f"{name:12s} {t:9s} original best HOG (frontal views) {orig_best:+.2f}; defaced: "
              f"{n} renders, best HOG {best:+.2f}, dlib finds a face in {len(strong)}"
              f"{' (' + '; '.join(strong) + ')' if strong else ''}; Haar alt2 only: "
              f"{len(hits) - len(strong)}{' (median renders)' if denoise else ''}", flush=True)


def main(work: Path, n_generated: int, only: tuple[str, ...] = VARIANTS) -> None:
    work.mkdir(parents=True, exist_ok=True)
    templates = mni152_templates(work)
    detect = Detectors()
    img = nb.load(SHARED / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz")
    for name, (data, affine) in variants(np.asarray(img.dataobj, np.float32), img.affine).items():
        if name in only:
            path = work / f"{name}.nii.gz"
            nb.save(nb.Nifti1Image(data, affine), path)
            check(name, path, templates, work, detect)
    if n_generated:
        from isyb_dask.synth.cohort import generate_study

        root = generate_study(work / "bids", n_generated, "chinese", seed=7, modalities=("anat",))
        for p in sorted(root.glob("sub-*/anat/*_T1w.nii.gz")):
            check(p.name.split("_")[0], p, templates, work, detect)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3,
         tuple(sys.argv[3:]) or VARIANTS)
