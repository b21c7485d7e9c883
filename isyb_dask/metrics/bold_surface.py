"""BOLD surface metrics of one subject: ALFF/fALFF, ReHo and VMHC on fsLR 32k.

From the run's shared :class:`~isyb_dask.bold.reference.BoldReference` (motion, mask and
mean computed once): preprocessing (:func:`isyb_dask.metrics.func_preproc.preprocess_bold`
with the reference's motion parameters and WM/CSF regressors from the anatomy), ALFF/fALFF
of the cleaned series, volume ReHo (27 voxels) of the band-passed series, both sampled to
the surface; VMHC on the surface: ``atanh(corr(L_i(t), R_i(t)))`` of the band-passed series
sampled at the homologous fsLR vertices, the same value on both hemispheres.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from isyb_dask.errors import InputError
from isyb_dask.metrics.config import MetricsConfig
from isyb_dask.metrics.fslr import N_VERTICES_HEMI
from isyb_dask.metrics.names import METRIC_LONG_NAMES, METRIC_UNITS
from isyb_dask.metrics.sampling import build_sampler
from isyb_dask.metrics.spaces import SpaceChain, modality_to_t1w, resample_to_grid
from isyb_dask.metrics.volume_writer import VolumeWriter

__all__ = ["bold_metrics", "named_input_error", "surface_vmhc"]


def surface_vmhc(series: np.ndarray) -> np.ndarray:
    """VMHC on fsLR 32k: Fisher z of corr(L_i, R_i), same value on both hemispheres.

    Parameters
    ----------
    series
        ``(64984, T)`` vertex series (NaN rows where not sampled).

    Returns
    -------
    np.ndarray
        ``(64984,)`` float32; NaN where either homologous vertex has no series.
    """
    from isyb_dask.metrics.vmhc import vmhc_pairs

    left, right = series[:N_VERTICES_HEMI], series[N_VERTICES_HEMI:]
    ok = np.isfinite(left).all(axis=1) & np.isfinite(right).all(axis=1)
    out = np.full(N_VERTICES_HEMI, np.nan, dtype=np.float32)
    if ok.any():
        out[ok] = vmhc_pairs(left[ok], right[ok])
    return np.concatenate([out, out])


def _task(path: Path) -> str:
    m = re.search(r"task-([a-zA-Z0-9]+)", path.name)
    return m.group(1) if m else "rest"


def named_input_error(path: Path, exc: Exception) -> InputError:
    """The error with the input file's name in front (unless it already names it)."""
    msg = str(exc)
    return InputError(msg if path.name in msg else f"{path.name}: {msg}")


def bold_metrics(inp, cfg: MetricsConfig, chain: SpaceChain, t1w, surf, writer: VolumeWriter,
                 *, bold_ref=None, anatomy=None) -> dict:
    """BOLD metrics from the run's shared reference (motion, mask, mean computed once).

    The QC's motion parameters are applied after despiking and slice-timing correction
    (fMRIPrep does the same); the mean WM and CSF signals of the nuisance model come from
    the subject anatomy's posteriors carried onto the BOLD grid by the BOLD -> T1w rigid
    transform.
    """
    from isyb_dask.bold.reference import build_bold_reference
    from isyb_dask.metrics.alff import alff_falff
    from isyb_dask.metrics.func_preproc import preprocess_bold
    from isyb_dask.metrics.nuisance import bandpass
    from isyb_dask.metrics.reho import reho_volume
    from isyb_dask.qc.config import QCConfig
    from isyb_dask.bold.rigid import apply_parameters

    if isinstance(bold_ref, Exception):
        raise bold_ref
    ref = bold_ref if bold_ref is not None else build_bold_reference(
        inp.bold, inp.bold_meta, QCConfig(seed=cfg.seed, threads=cfg.threads),
        threads=cfg.threads)
    img, data, tr, meta = ref.image, ref.data, ref.tr, ref.meta
    dummy = max(int(cfg.dummy_volumes), ref.dummy)
    if data.shape[3] - dummy < 10:
        raise InputError(f"{inp.bold.name}: {data.shape[3]} volumes; at least {dummy + 10} "
                         f"needed after dropping {dummy}")
    axis = {"i": 0, "j": 1, "k": 2}.get(str(meta.get("SliceEncodingDirection", "k"))[0], 2)
    rows = ref.params_from(dummy)

    def realign(y, affine, threads=1):
        return apply_parameters(y, affine, rows, threads=threads), rows

    mean = np.where(ref.mask, ref.mean, 0).astype(np.float32)
    to_t1, checks = modality_to_t1w(
        mean, img.affine, t1w, chain.brain, seed=cfg.seed, threads=cfg.threads
    )
    tissue = None
    if anatomy is not None:
        tissue = {
            k: resample_to_grid(anatomy.posteriors[k], t1w.affine, np.linalg.inv(to_t1),
                                data.shape[:3], img.affine)
            for k in ("wm", "csf")
        }
    try:
        cleaned, mask, info = preprocess_bold(
            data,
            img.affine,
            tr,
            meta.get("SliceTiming"),
            mask=ref.mask,
            dummy_volumes=dummy,
            tissue_probs=tissue,
            threads=cfg.threads,
            slice_axis=axis,
            realign=realign,
            fd_radius=ref.fd_radius,
        )
        alff, falff = alff_falff(cleaned, tr, cfg.band, mask=mask, variant=cfg.alff_variant)
    except InputError as exc:
        raise named_input_error(inp.bold, exc) from None
    filtered = bandpass(cleaned, tr, cfg.band, mask=mask)  # 0 outside the mask
    reho = reho_volume(filtered, mask, neighbourhood=cfg.reho_neighbourhood)
    to_surf = chain.sampling_affine @ to_t1  # modality -> world of the sampling surfaces
    sampler = build_sampler(
        data.shape, img.affine, native_to_mni=to_surf, mask=mask, depths=cfg.gm_depths, surf=surf
    )
    maps = sampler.apply(np.stack([alff, falff, reho], axis=-1))
    series = sampler.apply(filtered)
    vmhc = surface_vmhc(series)
    sampled = np.isfinite(series).all(axis=1)
    paired = sampled[:N_VERTICES_HEMI] & sampled[N_VERTICES_HEMI:]
    n_flat = int((paired & ~np.isfinite(vmhc[:N_VERTICES_HEMI])).sum())
    out = {
        "ALFF": maps[:, 0],
        "fALFF": maps[:, 1],
        "ReHo": maps[:, 2],
        "VMHC": vmhc,
    }
    task = _task(inp.bold)
    src = [inp.bold]
    for name, arr, unit in (
        ("ALFF", alff, METRIC_UNITS["ALFF"]),
        ("fALFF", falff, "1"),
        ("ReHo", reho, "1"),
    ):
        writer.write(
            arr,
            img,
            to_t1,
            "func",
            "boldmap",
            desc=name,
            task=task,
            sources=src,
            meta={"Units": unit, "Description": METRIC_LONG_NAMES[name], "Band": list(cfg.band)},
        )
    writer.write(
        mask,
        img,
        to_t1,
        "func",
        "mask",
        desc="brain",
        task=task,
        sources=src,
        mask=True,
        meta={"Type": "Brain"},
        native=False,  # the shared BOLD mask: written once by the functional QC
    )
    return {
        "values": out,
        "info": {
            "bold_fd_mean": ref.fd_mean,
            "bold_to_t1w_metric": checks["metric"],
            "bold_confounds": list(info.get("confound_names", [])),
            "vmhc_flat_vertices": n_flat,
        },
    }
