"""A third face detector on the defaced heads: MediaPipe's BlazeFace, in its own environment.

MediaPipe 0.10.14 ships BlazeFace's short-range (selfie) and full-range models inside its wheel
(``mediapipe/modules/face_detection/*.tflite``), so it runs offline. It pins NumPy < 2 and its
own protobuf, so it is not installed in the project's venv: this check runs in two steps.

1. ``render`` (project venv): deface heads as :mod:`check_face_detectors` does (``maskface``,
   built-in template and FSL MNI152 2 mm + mydeface mask; the volunteer as stored, with
   Rician noise sigma 134, its nose cut by the field of view and 4 mm slices; generated
   subjects from a BIDS folder) and save every render of the original and the defaced
   heads as PNG (its two renderers, six iso-levels 0.25-1.4 x Otsu, yaw 0 and +-30 degrees),
   plus controls with no face: the back and sides of the original volunteer head at four
   iso-levels, and a plain ellipsoid.
2. ``detect`` (an environment with ``mediapipe==0.10.14`` and Pillow): run both models on
   every PNG and count the renders with a detection of score >= 0.5 (MediaPipe's default
   ``min_detection_confidence``).

Usage::

    ISYB_SHARED_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \\
        benchmarks/check_face_blazeface.py render WORK [BIDS_DIR SUBJECT ...]
    python3 -m venv /tmp/mpvenv && /tmp/mpvenv/bin/pip install mediapipe==0.10.14 pillow
    /tmp/mpvenv/bin/python benchmarks/check_face_blazeface.py detect WORK
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HEADS = ("base", "noise134", "nosecut", "slices4mm")


def render(work: Path, bids: Path | None, subjects: list[str]) -> None:
    """Deface the heads and write every render as ``WORK/png/<head>/<version>/<view>.png``."""
    import nibabel as nb
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from check_face_detectors import (SHARED, defaced_heads, mni152_templates, renders,
                                      variants)

    from isyb_dask.deface.render import render_geometry, render_views

    templates = mni152_templates(work)
    png = work / "png"

    def save_all(name: str, path: Path) -> None:
        affine, ref, defaced, errors, _ = defaced_heads(name, path, templates, work)
        for version, data in {"original": ref, **defaced}.items():
            folder = png / name / version
            folder.mkdir(parents=True, exist_ok=True)
            for label, im in renders(data, affine, ref):
                Image.fromarray(im).save(folder / (label.replace(" ", "_") + ".png"))
        print(name, "rendered", *(f"({t}: {e})" for t, e in errors.items()), flush=True)

    img = nb.load(SHARED / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz")
    vol = np.asarray(img.dataobj, np.float32)
    for name, (data, affine) in variants(vol, img.affine).items():
        if name in HEADS:
            path = work / f"{name}.nii.gz"
            nb.save(nb.Nifti1Image(data, affine), path)
            save_all(name, path)
    for s in subjects:
        save_all(s, bids / s / "anat" / f"{s}_T1w.nii.gz")
    ctrl = png / "control" / "no-face"
    ctrl.mkdir(parents=True, exist_ok=True)
    yaws = (180.0, 150.0, 210.0, 90.0, -90.0)
    for f in (0.25, 0.5, 0.8, 1.0):
        geom = render_geometry(vol, img.affine, threshold_fraction=f)
        for yaw, im in zip(yaws, render_views(vol, img.affine, geom, yaws=yaws)):
            Image.fromarray(im).save(ctrl / f"back_x{f:g}_yaw_{yaw:+.0f}.png")
    x, y, z = np.mgrid[-70:70, -80:80, -70:70].astype(np.float32)
    ell = 1000.0 * ((x / 37.5) ** 2 + (y / 47.5) ** 2 + (z / 42.5) ** 2 < 1)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-140.0, -160.0, -140.0]
    geom = render_geometry(ell, aff, threshold_fraction=0.5)
    for yaw, im in zip((0.0, 30.0, -30.0), render_views(ell, aff, geom, yaws=(0.0, 30.0, -30.0))):
        Image.fromarray(im).save(ctrl / f"ellipsoid_yaw_{yaw:+.0f}.png")


def detect(work: Path) -> None:
    """Both BlazeFace models on every PNG; prints counts of renders scoring >= 0.5."""
    import mediapipe as mp
    from PIL import Image

    models = {name: mp.solutions.face_detection.FaceDetection(
        model_selection=m, min_detection_confidence=0.05)
        for name, m in (("short", 0), ("full", 1))}

    def scores(p: Path) -> dict[str, float]:
        im = np.asarray(Image.open(p).convert("RGB"))
        out = {}
        for name, fd in models.items():
            dets = fd.process(im).detections or []
            out[name] = max((d.score[0] for d in dets), default=0.0)
        return out

    totals: dict[str, list[int]] = {}
    for head in sorted((work / "png").iterdir()):
        for version in sorted(head.iterdir(), key=lambda p: (p.name != "original", p.name)):
            rows = [(p.stem, scores(p)) for p in sorted(version.glob("*.png"))]
            kind = ("control" if head.name == "control" else
                    "original" if version.name == "original" else "defaced")
            n = {m: sum(r[m] >= 0.5 for _, r in rows) for m in models}
            best = {m: max(r[m] for _, r in rows) for m in models}
            t = totals.setdefault(kind, [0, 0, 0])
            t[0] += len(rows)
            t[1] += n["short"]
            t[2] += n["full"]
            hits = [f"{s} {r['full']:.2f}" for s, r in rows if r["full"] >= 0.5]
            print(f"{head.name:10s} {version.name:9s} {len(rows):3d} renders | short-range: "
                  f"best {best['short']:.2f}, >= 0.5 in {n['short']} | full-range: best "
                  f"{best['full']:.2f}, >= 0.5 in {n['full']}"
                  + (f" ({'; '.join(hits)})" if hits and kind != "original" else ""), flush=True)
    for kind, (n, short, full) in totals.items():
        print(f"{kind}: {n} renders; short-range >= 0.5: {short}; full-range >= 0.5: {full}")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("render", "detect"):
        sys.exit(__doc__)
    if sys.argv[1] == "render":
        render(Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None, sys.argv[4:])
    else:
        detect(Path(sys.argv[2]))
