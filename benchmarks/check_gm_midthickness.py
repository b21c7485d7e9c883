"""GM probability at the subject midthickness for any T1w (issue 11's placement measure).

For each T1w given by path: the pipeline's anatomical route (anatomy, SyN, surfaces placed
and refined) and the affine-only placement, scored with our own GM posterior and with an
independent ANTs N4 + Atropos segmentation (``isyb_dask.testing.surface_check``). With
``--resample MM`` and/or ``--orient CODES`` the image is first resampled (trilinear) to
another isotropic voxel size and stored in another axis order, to check that the result
does not depend on the grid (the input file is never changed; the copy goes to a temporary
folder).

    ISYB_SHARED_DATA=../shared/data .venv/bin/python benchmarks/check_gm_midthickness.py \\
        PATH [PATH ...] [--resample 0.88] [--orient LIA]

Prints one row per image: voxel size, axis codes, GM@mid (affine / SyN / refined) for each
segmentation, and CPU seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage as ndi


def regrid(path: Path, out: Path, voxel_mm: float | None, orient: str | None) -> Path:
    """Write a resampled and/or reoriented copy of ``path`` to ``out``."""
    img = nb.load(path)
    if voxel_mm:
        zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
        shape = tuple(int(round(s * z / voxel_mm)) for s, z in zip(img.shape[:3], zooms))
        affine = img.affine.copy()
        affine[:3, :3] = img.affine[:3, :3] / zooms * voxel_mm
        m = np.linalg.inv(img.affine) @ affine
        data = ndi.affine_transform(img.get_fdata(dtype=np.float32), m[:3, :3], m[:3, 3],
                                    output_shape=shape, order=1)
        img = nb.Nifti1Image(data.astype(np.float32), affine)
    if orient:
        now = nb.orientations.io_orientation(img.affine)
        img = img.as_reoriented(
            nb.orientations.ornt_transform(now, nb.orientations.axcodes2ornt(tuple(orient))))
    nb.save(img, out)
    return out


def main(argv: list[str] | None = None) -> None:
    from isyb_dask.testing.surface_check import gm_scores, independent_gm, place_subject

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("t1w", nargs="+", type=Path)
    ap.add_argument("--resample", type=float, default=None, help="isotropic voxel size, mm")
    ap.add_argument("--orient", default=None, help="axis codes of the copy, e.g. LIA")
    args = ap.parse_args(argv)
    print("| image | voxel mm | axes | own GM: affine / SyN / refined | Atropos GM: affine / SyN"
          " / refined | CPU s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.t1w:
            src = path
            if args.resample or args.orient:
                src = regrid(path, Path(tmp) / "regrid_T1w.nii.gz", args.resample, args.orient)
            t0 = time.process_time()
            subject = place_subject(src)
            own = gm_scores(subject, subject.anatomy.posteriors["gm"])
            atropos = gm_scores(subject, independent_gm(subject.anatomy))
            img = nb.load(src)
            zooms = [float(z) for z in img.header.get_zooms()[:3]]
            voxel = (f"{zooms[0]:.2f}" if np.allclose(zooms, zooms[0], atol=1e-3)
                     else " x ".join(f"{z:.2f}" for z in zooms))
            print(f"| {path.name} | {voxel} | "
                  f"{''.join(nb.aff2axcodes(img.affine))} | "
                  + " / ".join(f"{own[k]:.3f}" for k in ("affine", "syn", "refined")) + " | "
                  + " / ".join(f"{atropos[k]:.3f}" for k in ("affine", "syn", "refined"))
                  + f" | {time.process_time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
