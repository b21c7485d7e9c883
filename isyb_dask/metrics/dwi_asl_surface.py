"""Diffusion and perfusion surface metrics of one subject (FA/MD, CBF) on fsLR 32k.

* DWI: WLS tensor fit, FA/MD sampled in the cortical ribbon (``*_GM``, depths 0.1-0.9) and
  in the superficial white matter just below the white surface (``*_WM``, depths -1 to
  -0.25 of the local thickness);
* ASL: white-paper CBF sampled in the ribbon.

Each modality is registered rigidly to the T1w from a 3-D reference (mean b0; M0 or mean
control) and sampled through the subject's surfaces.
"""

from __future__ import annotations

import numpy as np

from isyb_dask.errors import InputError
from isyb_dask.io.nifti import load_image
from isyb_dask.metrics.bold_surface import named_input_error
from isyb_dask.metrics.config import MetricsConfig
from isyb_dask.metrics.sampling import build_sampler
from isyb_dask.metrics.spaces import SpaceChain, modality_to_t1w, resample_to_grid
from isyb_dask.metrics.volume_writer import VolumeWriter

__all__ = ["asl_metrics", "dwi_metrics"]


def dwi_metrics(inp, cfg: MetricsConfig, chain: SpaceChain, t1w, surf,
                writer: VolumeWriter) -> dict:
    """FA/MD of the WLS tensor fit, sampled in the ribbon (``*_GM``) and below it (``*_WM``)."""
    from isyb_dask.metrics.dti import fit_tensor, read_bvals_bvecs
    from isyb_dask.metrics.func_preproc import epi_mask

    img = load_image(inp.dwi, ndim=4)
    if inp.bval is None or inp.bvec is None:
        raise InputError(f"{inp.dwi.name}: no .bval/.bvec files")
    bvals, bvecs = read_bvals_bvecs(inp.bval, inp.bvec)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if bvals.size != data.shape[-1]:
        raise InputError(f"{inp.bval.name}: {bvals.size} b-values for {data.shape[-1]} volumes")
    b0_idx = np.flatnonzero(bvals <= 50)
    if b0_idx.size == 0:
        raise InputError(f"{inp.bval.name}: no b=0 volume")
    b0 = data[..., b0_idx].mean(axis=-1)
    mask = epi_mask(b0)
    try:
        fit = fit_tensor(data, bvals, bvecs, mask=mask)
    except InputError as exc:
        raise named_input_error(inp.dwi, exc) from None
    to_t1, checks = modality_to_t1w(
        b0, img.affine, t1w, chain.brain, seed=cfg.seed, threads=cfg.threads
    )
    to_surf = chain.sampling_affine @ to_t1  # modality -> world of the sampling surfaces
    stack = np.stack([fit.fa, fit.md], axis=-1)
    out = {}
    for tissue, depths in (("GM", cfg.gm_depths), ("WM", cfg.wm_depths)):
        s = build_sampler(
            data.shape, img.affine, native_to_mni=to_surf, mask=mask, depths=depths, surf=surf
        ).apply(stack)
        out[f"FA_{tissue}"], out[f"MD_{tissue}"] = s[:, 0], s[:, 1]
    src = [inp.dwi, inp.bval, inp.bvec]
    writer.write(
        fit.fa,
        img,
        to_t1,
        "dwi",
        "dwimap",
        desc="FA",
        sources=src,
        meta={"Units": "1", "Description": "fractional anisotropy (WLS tensor)"},
    )
    writer.write(
        fit.md,
        img,
        to_t1,
        "dwi",
        "dwimap",
        desc="MD",
        sources=src,
        meta={"Units": "mm2/s", "Description": "mean diffusivity (WLS tensor)"},
    )
    writer.write(
        mask,
        img,
        to_t1,
        "dwi",
        "mask",
        desc="brain",
        sources=src,
        mask=True,
        meta={"Type": "Brain"},
    )
    return {"values": out, "info": {"dwi_to_t1w_metric": checks["metric"]}}


def asl_metrics(inp, cfg: MetricsConfig, chain: SpaceChain, t1w, surf,
                writer: VolumeWriter) -> dict:
    """White-paper CBF sampled in the cortical ribbon."""
    from isyb_dask.metrics.cbf import cbf_from_asl, read_aslcontext
    from isyb_dask.metrics.func_preproc import epi_mask

    img = load_image(inp.asl, ndim=(3, 4))
    if inp.aslcontext is None:
        raise InputError(f"{inp.asl.name}: no aslcontext.tsv")
    types = read_aslcontext(inp.aslcontext)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 3:
        data = data[..., None]
    m0 = None
    if inp.m0 is not None:
        m0_img = load_image(inp.m0, ndim=(3, 4))
        m0 = np.asarray(m0_img.dataobj, dtype=np.float32)
        m0 = m0.mean(axis=-1) if m0.ndim == 4 else m0
        if m0.shape != data.shape[:3] or not np.allclose(m0_img.affine, img.affine, atol=1e-3):
            m0 = resample_to_grid(m0, m0_img.affine, np.eye(4), data.shape[:3], img.affine)
    ctrl = [i for i, t in enumerate(types) if t in ("control", "m0scan")]
    ref = m0 if m0 is not None else data[..., ctrl or list(range(data.shape[-1]))].mean(-1)
    mask = epi_mask(ref)
    try:
        cbf = cbf_from_asl(data, types, m0, inp.asl_meta or {}, mask=mask)
    except InputError as exc:
        raise named_input_error(inp.asl, exc) from None
    to_t1, checks = modality_to_t1w(
        ref, img.affine, t1w, chain.brain, seed=cfg.seed, threads=cfg.threads
    )
    to_surf = chain.sampling_affine @ to_t1  # modality -> world of the sampling surfaces
    out = {
        "CBF": build_sampler(
            data.shape,
            img.affine,
            native_to_mni=to_surf,
            mask=mask,
            depths=cfg.gm_depths,
            surf=surf,
        ).apply(cbf)
    }
    src = [p for p in (inp.asl, inp.aslcontext, inp.m0) if p is not None]
    writer.write(
        cbf,
        img,
        to_t1,
        "perf",
        "cbf",
        desc="CBF",
        sources=src,
        meta={"Units": "ml/100g/min", "Description": "CBF, ASL white-paper model"},
    )
    writer.write(
        mask,
        img,
        to_t1,
        "perf",
        "mask",
        desc="brain",
        sources=src,
        mask=True,
        meta={"Type": "Brain"},
    )
    return {"values": out, "info": {"asl_to_t1w_metric": checks["metric"]}}
