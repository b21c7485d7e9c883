"""Audit of the project's own defacing on the real volunteer (issue 10 acceptance check).

Defaces ``../shared/data/heads/xa30_sub1_T1w_tfl_2mm.nii.gz`` with the built-in pydeface
template, FSL MNI152 2 mm (+ mydeface mask) and SPM avg152 (+ niivue mask), with each method
given on the command line, then runs :func:`isyb_dask.deface.audit.audit_defaced` on the
written images and prints, per method and template: face found, best detector score per view,
descriptor distance to the original, the stage's median facial depth change and brain voxels
changed. Renders go to ``WORK/<method>/sub-xa30/figures``.

Usage::

    ISYB_SHARED_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \
        benchmarks/audit_volunteer.py WORK maskface zero reface
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np

from isyb_dask.atlas import get_reference_atlas
from isyb_dask.deface.audit import audit_defaced
from isyb_dask.deface.config import DefaceConfig
from isyb_dask.deface.stage import run_deface
from isyb_dask.deface.templates import resolve_templates

SHARED = Path(os.environ.get("ISYB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main(work: Path, methods: list[str]) -> None:
    tpl = SHARED / "templates"
    specs = [f"MNI152={tpl / 'mni152_fsl_T1_2mm_head.nii.gz'}:{tpl / 'mni152_2mm_defacemask_mydeface.nii.gz'}",
             f"SPM152={tpl / 'spm_avg152T1_2mm_head.nii.gz'}:{tpl / 'spm_avg152T1_2mm_defacemask.nii.gz'}"]
    templates = resolve_templates(specs, None, work, atlas=get_reference_atlas())
    head = SHARED / "heads" / "xa30_sub1_T1w_tfl_2mm.nii.gz"
    img = nb.load(head)
    orig = np.asarray(img.dataobj, np.float32)
    for method in methods:
        cfg = dataclasses.replace(DefaceConfig(), method=method)
        out = work / method
        t0 = time.process_time()
        res = run_deface(head, "sub-xa30", templates, cfg, out)
        defaced = {}
        for name, row in res["templates"].items():
            if row.get("error"):
                print(f"{method} {name}: ERROR {row['error']}")
                continue
            p = out / "sub-xa30" / "anat" / f"sub-xa30_desc-defaced{name}_T1w.nii.gz"
            defaced[name] = np.asarray(nb.load(p).dataobj, np.float32)
        t1 = time.process_time()
        audit = audit_defaced(orig, img.affine, defaced, out, "sub-xa30")
        print(f"{method}: deface {t1 - t0:.1f} s CPU, audit {time.process_time() - t1:.1f} s CPU")
        for name, row in audit.items():
            r = res["templates"][name]
            print(f"  {name:9s} face={row['face_detected']!s:5s} scores={row['view_scores']} "
                  f"reid_distance={row['reid_distance']:.3f} "
                  f"depth_mm={r.get('surface_depth_change_mm', float('nan')):.1f} "
                  f"brain_changed={r['brain_voxels_changed']} "
                  f"debris_cleared={r.get('debris_voxels_cleared', 0)}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] or ["maskface", "zero", "reface"])
