"""``isyb demo``: the paper's design on a generated study, end to end.

1. A Chinese-shaped study (``OUT/bids``) with T1w, BOLD, DWI and ASL per subject.
2. Two Chinese-shaped template cohorts, disjoint from the study: one at the study's
   resolution and contrast (stands in for CN200), one at lower resolution and SNR (stands in
   for Chinese2020); each is turned into a head template with ``isyb template build``.
3. ``isyb run`` with three templates: the built-in Western one (pydeface's head, standing in
   for MNI152) and the two built ones; participant and group levels.

Each step is skipped when its output already exists, so re-running resumes.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["run_demo", "DEMO_DEFAULTS"]

#: Sizes chosen so that ``make demo`` stays under 10 minutes on 2 cores (see README).
DEMO_DEFAULTS = {
    "voxel_size": 2.0,
    "template_subjects": 5,
    "template_iterations": 2,
    "cn2020_voxel_size": 3.0,
    "cn2020_snr": 12.0,
}


def _generate_once(out: Path, n: int, population: str, seed: int, **kwargs) -> Path:
    from isyb_dask.synth.cohort import generate_study

    if not (out / "dataset_description.json").exists():
        generate_study(out, n, population, seed, **kwargs)
    return out


def _build_once(bids: Path, prefix: Path, iterations: int, seed: int) -> str:
    from isyb_dask.deface.builder import build_template_from_bids

    head = prefix.parent / f"{prefix.name}_T1w.nii.gz"
    mask = prefix.parent / f"{prefix.name}_desc-face_mask.nii.gz"
    if not (head.exists() and mask.exists()):
        tpl = build_template_from_bids(bids, prefix, iterations=iterations, seed=seed)
        head, mask = Path(tpl.head), Path(tpl.face_mask)
    return f"{head}:{mask}"


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    n_subjects: int = 12,
    seed: int = 2022,
    workers: int | None = None,
) -> int:
    """Generate the demo study and templates, then run both analysis levels.

    Returns the exit code of the run (0 when every subject and group step succeeded).
    """
    from isyb_dask.config import RunConfig
    from isyb_dask.pipeline.cluster import ClusterSpec
    from isyb_dask.pipeline.progress import Progress
    from isyb_dask.pipeline.runner import run_pipeline

    out = Path(out_dir).resolve()
    say = Progress(total=0).message
    d = DEMO_DEFAULTS
    say(f"demo: generating {n_subjects} Chinese-shaped subjects in {out / 'bids'}")
    bids = _generate_once(out / "bids", n_subjects, "chinese", seed, voxel_size=d["voxel_size"])
    say("demo: generating the two template cohorts")
    cn200 = _generate_once(out / "template-cohorts" / "cn200", d["template_subjects"], "chinese",
                           seed + 1, voxel_size=d["voxel_size"], first_index=1001,
                           modalities=("anat",))
    cn2020 = _generate_once(out / "template-cohorts" / "chinese2020", d["template_subjects"],
                            "chinese", seed + 2, voxel_size=d["cn2020_voxel_size"],
                            first_index=2001, snr=d["cn2020_snr"], modalities=("anat",))
    say("demo: building the CN200 and Chinese2020 stand-in templates (isyb template build)")
    tdir = out / "templates"
    tdir.mkdir(parents=True, exist_ok=True)
    specs = (
        "CN200=" + _build_once(cn200, tdir / "tpl-CN200synth", d["template_iterations"], seed),
        "Chinese2020=" + _build_once(cn2020, tdir / "tpl-Chinese2020synth", d["template_iterations"], seed),
    )
    cfg = RunConfig(templates=specs)
    say("demo: running the pipeline (participant and group levels)")
    summary = run_pipeline(bids, out / "output", cfg, cluster=ClusterSpec(workers=workers))
    say(
        f"demo finished: open {out / 'output' / 'report.html'}; results in "
        f"{out / 'output' / 'results.zarr'} (xr.open_zarr(path, group='deface'))"
    )
    return summary.exit_code
