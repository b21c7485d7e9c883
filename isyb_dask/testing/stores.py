"""Fake results stores with known ground truth, and a reader of a store's groups."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from isyb_dask.io.store import init_store, write_group

TEMPLATES = ["CN200", "Chinese2020", "MNI152"]
ANAT = ["cnr", "snr_total", "efc", "fber", "fwhm_avg"]
FUNC = ["fd_mean", "dvars_std", "gcor", "tsnr"]
METRICS = ["ct", "alff", "reho"]
N_VERT = 120
TRUE_EFFECT = np.array([0.004, 0.002, 0.0])  # NMI offsets per template (ground truth)


def _region_write(path: Path, group: str, ds: xr.Dataset) -> None:
    ds.to_zarr(path, group=group, mode="r+", region={"subject": slice(0, ds.sizes["subject"])},
               consolidated=False)


def make_fake_store(out_dir: Path, n: int = 30, seed: int = 0) -> Path:
    """Write ``out_dir/results.zarr`` with every group and known effects.

    Built through the real store helpers. Subjects 1-2 are excluded (QC rule), 3 failed, the
    rest ``ok``. NMI has a template effect of ``TRUE_EFFECT``; surface metric ``ct`` differs by
    +0.3 between populations on the first 40 vertices; ``group`` holds the mean/SD/n of the
    ``ok`` subjects.

    Parameters
    ----------
    out_dir : Path
        Output folder (created); the store is ``out_dir / "results.zarr"``.
    n : int
        Number of subjects.
    seed : int
        Seed of every random value.

    Returns
    -------
    Path
        The store path.
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = out_dir / "results.zarr"
    subjects = [f"sub-{i:04d}" for i in range(1, n + 1)]
    pop = np.where(np.arange(n) % 3 == 0, "Other", "Han")
    demo = pd.DataFrame({"age": rng.integers(18, 31, n).astype(float),
                         "sex": np.where(np.arange(n) % 2, "F", "M"), "population": pop},
                        index=subjects)
    attrs = {"software": "isyb-dask", "version": "0.1.0", "bids_dir": str(out_dir / "bids"),
             "config": json.dumps({"stats": {"design": "mixed"}}),
             "versions": json.dumps({"numpy": np.__version__, "xarray": xr.__version__}),
             "timings": json.dumps({"deface": 12.5, "qc": 3.0})}
    hemi = ["L"] * (N_VERT // 2) + ["R"] * (N_VERT // 2)
    init_store(store, subjects, templates=TEMPLATES, anat_iqms=ANAT, func_iqms=FUNC,
               surface_metrics=METRICS, hemi=hemi, participants=demo, attrs=attrs)
    status = np.array(["ok"] * n, dtype=object)
    status[[0, 1]] = "excluded"
    status[2] = "failed"
    reason = np.array([""] * n, dtype=object)
    reason[[0, 1]] = "cnr beyond 3 SD"
    error = np.array([""] * n, dtype=object)
    error[2] = "InputError: sub-0003_T1w.nii.gz is truncated"
    _region_write(store, "participants", xr.Dataset(
        {"status": ("subject", status), "exclusion_reason": ("subject", reason),
         "error": ("subject", error)}))
    nmi = (0.30 + rng.normal(0, 0.02, (n, 1)) + TRUE_EFFECT
           + rng.normal(0, 0.0015, (n, 3)))
    nmi[2] = np.nan
    dvars = {"nmi": nmi, "face_voxels_changed": rng.integers(1e4, 2e4, (n, 3)).astype(float),
             "brain_voxels_changed": np.zeros((n, 3)),
             "registration_metric": rng.uniform(-0.6, -0.4, (n, 3)),
             "seconds": rng.uniform(5, 9, (n, 3)), "transform_plausible": np.ones((n, 3))}
    _region_write(store, "deface", xr.Dataset(
        {k: (("subject", "template"), v) for k, v in dvars.items()}))
    _region_write(store, "qc_anat", xr.Dataset(
        {k: ("subject", rng.normal(10, 2, n)) for k in ANAT}))
    _region_write(store, "qc_func", xr.Dataset(
        {k: ("subject", rng.gamma(2.0, 0.05, n)) for k in FUNC}))
    value = rng.normal(2.5, 0.2, (n, len(METRICS), N_VERT)).astype(np.float32)
    value[pop == "Other", 0, :40] += 0.3
    value[:, :, 58:62] = np.nan  # "medial wall"
    missing = np.full((n, len(METRICS)), "", dtype=object)
    missing[min(5, n - 1), 1] = "no BOLD run"
    value[min(5, n - 1), 1] = np.nan
    _region_write(store, "surface", xr.Dataset(
        {"value": (("subject", "metric", "vertex"), value),
         "missing": (("subject", "metric"), missing)}))
    ok = status == "ok"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN medial wall
        mean, sd = np.nanmean(value[ok], 0), np.nanstd(value[ok], 0, ddof=1)
    grp = xr.Dataset({"mean": (("metric", "vertex"), mean),
                      "sd": (("metric", "vertex"), sd),
                      "n": (("metric", "vertex"), np.isfinite(value[ok]).sum(0))},
                     coords={"metric": np.array(METRICS, dtype=object),
                             "vertex": np.arange(N_VERT),
                             "hemi": ("vertex", np.array(hemi, dtype=object))})
    write_group(store, "group", grp)
    return store


def read_store_groups(out_dir: Path) -> dict[str, xr.Dataset]:
    """Every group of ``out_dir/results.zarr``, loaded, with attributes dropped.

    For comparing two runs' stores (attributes hold timings and paths, which differ).
    """
    import zarr

    root = zarr.open_group(out_dir / "results.zarr", mode="r")
    groups = {}
    for name in sorted(k for k, _ in root.groups()):
        ds = xr.open_zarr(out_dir / "results.zarr", group=name, consolidated=False).load()
        ds.attrs = {}
        groups[name] = ds
    return groups
