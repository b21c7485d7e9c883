"""``isyb demo``: a crossed, symmetric template experiment on a generated study.

1. A study (``OUT/bids``) of Chinese-shaped and Western-shaped subjects (T1w, BOLD, DWI,
   ASL), each with its true face region (``derivatives/synth-truth``).
2. Two template cohorts, one per population, disjoint from the study and from each other,
   generated the same way (same size, resolution and SNR); each becomes a head template with
   ``isyb template build`` (same iterations, affine for both), and each gets its face mask by
   the same rule on its own face (:mod:`isyb_dask.deface.facerule`).
3. ``isyb run`` with both built templates (plus the built-in pydeface head, which is also the
   generator's base head and therefore not a fair competitor); participant and group levels.
4. Population x template tests of NMI and of the true-face coverage
   (``OUT/output/crossed_<score>_{anova,paired,tukey,database}.tsv``).

Each step is skipped when its output already exists, so re-running resumes.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["run_demo", "DEMO_DEFAULTS", "crossed_summary"]

#: Sizes chosen so that ``make demo`` stays under 10 minutes on 2 cores (see README).
DEMO_DEFAULTS = {
    "voxel_size": 2.0,
    "template_subjects": 5,
    "template_iterations": 2,
    "template_nonlinear": False,
}
#: Template built from each population's cohort.
MATCHED = {"chinese": "CNsynth", "western": "EUsynth"}


def _generate_once(out: Path, n: int, population: str, seed: int, **kwargs) -> Path:
    from isyb_dask.synth.cohort import generate_study

    if not (out / "sub-{:04d}".format(kwargs.get("first_index", 1))).exists():
        generate_study(out, n, population, seed, **kwargs)
    return out


def _build_once(bids: Path, prefix: Path, iterations: int, seed: int, nonlinear: bool) -> str:
    from isyb_dask.deface.builder import build_template_from_bids
    from isyb_dask.deface.facerule import write_rule_face_mask

    head = prefix.parent / f"{prefix.name}_T1w.nii.gz"
    brain = prefix.parent / f"{prefix.name}_desc-brain_mask.nii.gz"
    rule = prefix.parent / f"{prefix.name}_desc-facerule_mask.nii.gz"
    if not (head.exists() and brain.exists()):
        build_template_from_bids(bids, prefix, iterations=iterations, seed=seed,
                                 nonlinear=nonlinear)
    if not rule.exists():
        write_rule_face_mask(head, brain, rule)
    return f"{head}:{rule}:{brain}"


def _populations(bids: Path) -> dict[str, str]:
    with open(bids / "participants.tsv", newline="") as fh:
        return {r["participant_id"]: r["population"] for r in csv.DictReader(fh, delimiter="\t")}


def crossed_summary(out_dir: Path, bids: Path) -> dict:
    """Population x template tests of NMI and true-face coverage from the run's store."""
    import numpy as np
    import xarray as xr

    from isyb_dask.stats.crossed import crossed_tests

    store = out_dir / "results.zarr"
    dfc = xr.open_zarr(store, group="deface", consolidated=False).load()
    part = xr.open_zarr(store, group="participants", consolidated=False).load()
    subs = [str(s) for s in dfc["subject"].values]
    templates = [str(t) for t in dfc["template"].values]
    pops = _populations(bids)
    dbs = dict(zip([str(s) for s in part["subject"].values],
                   [str(v) for v in part["database"].values])) if "database" in part else {}
    summary = {}
    for score in ("nmi", "face_coverage", "face_relief_mm"):
        if score not in dfc:
            continue
        y = dfc[score].transpose("subject", "template").values.astype(float)
        if not np.isfinite(y).any():
            continue
        res = crossed_tests(y, templates, [pops.get(s, "") for s in subs], MATCHED,
                            [dbs.get(s, "") for s in subs] if dbs else None)
        for key, tab in res.items():
            if len(tab):
                tab.to_csv(out_dir / f"crossed_{score}_{key}.tsv", sep="\t", index=False,
                           float_format="%.6g")
        summary[score] = res
    return summary


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    n_subjects: int = 8,
    seed: int = 2022,
    workers: int | None = None,
    stages: tuple[str, ...] | None = None,
) -> int:
    """Generate the crossed demo study and templates, run both levels and the crossed tests.

    ``n_subjects`` is split evenly between the two populations. ``stages`` restricts the
    participant level (e.g. ``("deface",)`` for a quick template experiment).
    Returns the exit code of the run (0 when every subject and group step succeeded).
    """
    from isyb_dask.config import RunConfig
    from isyb_dask.pipeline.cluster import ClusterSpec
    from isyb_dask.pipeline.progress import Progress
    from isyb_dask.pipeline.runner import run_pipeline

    out = Path(out_dir).resolve()
    say = Progress(total=0).message
    d = DEMO_DEFAULTS
    n_cn = max(2, n_subjects // 2)
    n_eu = max(2, n_subjects - n_cn)
    mods = ("anat",) if stages == ("deface",) else ("anat", "func", "dwi", "perf")
    say(f"demo: generating {n_cn} Chinese- and {n_eu} Western-shaped subjects in {out / 'bids'}")
    bids = _generate_once(out / "bids", n_cn, "chinese", seed, voxel_size=d["voxel_size"],
                          modalities=mods)
    _generate_once(bids, n_eu, "western", seed, voxel_size=d["voxel_size"],
                   first_index=n_cn + 1, modalities=mods)
    say("demo: generating one template cohort per population (disjoint from the study)")
    tdir = out / "templates"
    tdir.mkdir(parents=True, exist_ok=True)
    specs = []
    for k, (pop, name) in enumerate(MATCHED.items()):
        cohort = _generate_once(out / "template-cohorts" / pop, d["template_subjects"], pop,
                                seed + 1 + k, voxel_size=d["voxel_size"],
                                first_index=1001 + 1000 * k, modalities=("anat",))
        say(f"demo: building {name} from the {pop} cohort (isyb template build)")
        specs.append(f"{name}=" + _build_once(cohort, tdir / f"tpl-{name}",
                                              d["template_iterations"], seed,
                                              d["template_nonlinear"]))
    cfg = RunConfig(templates=tuple(specs)) if stages is None else RunConfig(
        templates=tuple(specs), stages=tuple(stages))
    say("demo: running the pipeline (participant and group levels)")
    summary = run_pipeline(bids, out / "output", cfg, cluster=ClusterSpec(workers=workers))
    try:
        res = crossed_summary(out / "output", bids)
        for score, r in res.items():
            say(f"demo: {score} population x template\n{r['paired'].to_string(index=False)}")
    except (OSError, KeyError, ValueError) as exc:
        say(f"demo: crossed tests skipped ({exc})")
    say(
        f"demo finished: open {out / 'output' / 'report.html'}; results in "
        f"{out / 'output' / 'results.zarr'} (xr.open_zarr(path, group='deface'))"
    )
    return summary.exit_code
