"""Per-subject surface metrics stage: volumetric metrics -> MNI -> fsLR 32k vertices.

``run_metrics`` computes, for one subject, the 13 vertex-wise metrics of
:data:`isyb_dask.metrics.names.SURFACE_METRICS`:

* T1w: registration chain T1w -> head template -> MNI (:mod:`isyb_dask.metrics.spaces`), GM
  segmentation and Jacobian-modulated GMV (:mod:`isyb_dask.metrics.gmv`);
* BOLD: preprocessing (:func:`isyb_dask.metrics.func_preproc.preprocess_bold`), ALFF/fALFF of
  the cleaned series, volume ReHo (27 voxels) of the band-passed series, all sampled to the
  surface; VMHC on the surface: ``atanh(corr(L_i(t), R_i(t)))`` of the band-passed series
  sampled at the homologous fsLR vertices, the same value on both hemispheres;
* DWI: WLS tensor fit, FA/MD sampled in the cortical ribbon (``*_GM``, depths 0.1-0.9) and
  in the superficial white matter just below the white surface (``*_WM``, depths -1 to
  -0.25 of the local thickness);
* ASL: white-paper CBF sampled in the ribbon;
* CT/SA/LGI from a derivatives folder when given (:mod:`isyb_dask.metrics.structural`),
  else computed from the T1w's tissue posteriors (:mod:`isyb_dask.metrics.morphometry`);
  ``info["surface_provenance"]`` and the GIFTI sidecars say which.

Failure policy: a corrupt image file (unreadable, truncated, constant, non-finite, wrong
dimensions; every input image is checked before any computation) raises ``InputError``
naming the file, and a failed T1w -> MNI registration raises ``RegistrationError``
(nothing can be projected): the runner records the subject as failed. An absent modality,
one whose content or metadata is unusable for its metrics (too short a BOLD run for the
nuisance model, no b=0 volume, a missing ASL sidecar field: ``InputError`` raised while
processing, message naming the file) or one whose processing fails otherwise (e.g. an
implausible rigid registration) leaves only its metrics NaN with the reason in ``missing``;
the subject still succeeds with the other metrics.
"""

from __future__ import annotations

import dataclasses

import re
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from isyb_dask.errors import InputError, RegistrationError
from isyb_dask.io.derivatives import derivative_path, write_sidecar
from isyb_dask.io.nifti import load_image, save_like
from isyb_dask.metrics import gmv as gmv_mod
from isyb_dask.metrics.config import MetricsConfig
from isyb_dask.metrics.fslr import N_VERTICES, N_VERTICES_HEMI, FsLR32k, load_fslr32k
from isyb_dask.metrics.names import METRIC_LONG_NAMES, METRIC_UNITS, SURFACE_METRICS
from isyb_dask.metrics.sampling import build_sampler
from isyb_dask.metrics.spaces import (
    SpaceChain,
    chain_from_anatomy,
    mni_grid,
    modality_to_t1w,
    resample_to_grid,
)
from isyb_dask.metrics.structural import read_structural_metrics

__all__ = ["bandpass", "run_metrics", "surface_vmhc", "write_surface_metric"]

_FAILURES = (RegistrationError, ValueError, RuntimeError, np.linalg.LinAlgError)


def bandpass(series: np.ndarray, tr: float, band: tuple[float, float]) -> np.ndarray:
    """Ideal FFT band-pass along the last axis (mean removed).

    Parameters
    ----------
    series
        Array with time last.
    tr
        Repetition time (s).
    band
        ``(f_lo, f_hi)`` in Hz; bins with ``f_lo <= f <= f_hi`` are kept.

    Returns
    -------
    np.ndarray
        float32 filtered series.
    """
    n = series.shape[-1]
    freqs = np.fft.rfftfreq(n, d=tr)
    spec = np.fft.rfft(np.asarray(series, dtype=np.float64), axis=-1)
    spec[..., (freqs < band[0]) | (freqs > band[1])] = 0.0
    return np.fft.irfft(spec, n=n, axis=-1).astype(np.float32)


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


def write_surface_metric(
    values: np.ndarray,
    out_dir: Path,
    subject: str,
    metric: str,
    sources=(),
    settings=None,
    *,
    session: str | None = None,
) -> list[Path]:
    """Write one metric as two fsLR 32k GIFTI shape files (L, R) with sidecars.

    Parameters
    ----------
    values
        ``(64984,)`` vertex values (left then right).
    out_dir, subject, session
        Derivatives root and BIDS labels.
    metric
        Metric name (``desc-`` entity).
    sources, settings
        Provenance for the sidecar.

    Returns
    -------
    list of Path
        The left and right files.
    """
    paths = []
    for hemi, sl, struct in (
        ("L", slice(0, N_VERTICES_HEMI), "CortexLeft"),
        ("R", slice(N_VERTICES_HEMI, N_VERTICES), "CortexRight"),
    ):
        path = derivative_path(
            out_dir,
            subject,
            "anat",
            "",
            session=session,
            hemi=hemi,
            space="fsLR",
            den="32k",
            desc=metric,
            extension=".shape.gii",
        )
        arr = nb.gifti.GiftiDataArray(
            np.asarray(values[sl], dtype=np.float32),
            intent="NIFTI_INTENT_SHAPE",
            datatype="NIFTI_TYPE_FLOAT32",
            meta=nb.gifti.GiftiMetaData({"AnatomicalStructurePrimary": struct, "Name": metric}),
        )
        img = nb.gifti.GiftiImage(darrays=[arr])
        tmp = path.with_name(f".tmp-{path.name}")
        nb.save(img, str(tmp))
        tmp.replace(path)
        write_sidecar(
            path,
            {
                "Metric": metric,
                "Units": METRIC_UNITS[metric],
                "Description": METRIC_LONG_NAMES[metric],
            },
            sources=sources,
            settings=settings,
        )
        paths.append(path)
    return paths


class _Writer:
    """Writes native and MNI-space volumetric maps of one subject."""

    def __init__(
        self, out_dir: Path, subject: str, cfg: MetricsConfig, atlas, session: str | None
    ) -> None:
        self.out_dir, self.subject, self.cfg = Path(out_dir), subject, cfg
        self.session = session
        self.grid = mni_grid(atlas, cfg.mni_step_mm) if cfg.write_mni else None

    def write(
        self,
        data,
        ref_img,
        to_mni,
        datatype,
        suffix,
        *,
        desc,
        task=None,
        label=None,
        sources=(),
        meta=None,
        mask=False,
        native=True,
    ) -> Path:
        """Write the native map (unless another stage owns it: ``native=False``) and its MNI copy."""
        dtype = np.uint8 if mask else np.float32
        data = np.asarray(data, dtype=np.float32)
        path = derivative_path(
            self.out_dir,
            self.subject,
            datatype,
            suffix,
            session=self.session,
            task=task,
            label=label,
            desc=desc,
        )
        settings = {"surface_metrics": "isyb_dask.metrics.stage"}
        if native:
            save_like(data, _as3d(ref_img), path, dtype=dtype)
            write_sidecar(path, meta or {}, sources=sources, settings=settings)
        if self.grid is not None:
            shape, aff = self.grid
            mni = resample_to_grid(
                data, ref_img.affine, to_mni, shape, aff, order=0 if mask else 1
            )
            mpath = derivative_path(
                self.out_dir,
                self.subject,
                datatype,
                suffix,
                session=self.session,
                task=task,
                space="MNI152",
                label=label,
                desc=desc,
            )
            nb.save(nb.Nifti1Image(mni.astype(dtype), aff), str(mpath))
            write_sidecar(
                mpath,
                {
                    **(meta or {}),
                    "SpatialReference": f"MNI152NLin2009aSym, {self.cfg.mni_step_mm} mm (affine)",
                },
                sources=[path],
                settings=settings,
            )
        return path


def _as3d(img: nb.Nifti1Image) -> nb.Nifti1Image:
    hdr = img.header.copy()
    hdr.set_data_shape(img.shape[:3])
    return nb.Nifti1Image(np.zeros(img.shape[:3], np.float32), img.affine, hdr)


def _task(path: Path) -> str:
    m = re.search(r"task-([a-zA-Z0-9]+)", path.name)
    return m.group(1) if m else "rest"


def _named(path: Path, exc: Exception) -> InputError:
    msg = str(exc)
    return InputError(msg if path.name in msg else f"{path.name}: {msg}")


def _bold(inp, cfg: MetricsConfig, chain: SpaceChain, t1w, surf, writer: _Writer, *,
          bold_ref=None, anatomy=None) -> dict:
    """BOLD metrics from the run's shared reference (motion, mask, mean computed once).

    The QC's motion parameters are applied after despiking and slice-timing correction
    (fMRIPrep does the same); the mean WM and CSF signals of the nuisance model come from
    the subject anatomy's posteriors carried onto the BOLD grid by the BOLD -> T1w rigid
    transform.
    """
    from isyb_dask.bold.reference import build_bold_reference
    from isyb_dask.metrics.alff import alff_falff
    from isyb_dask.metrics.func_preproc import preprocess_bold
    from isyb_dask.metrics.reho import reho_volume
    from isyb_dask.qc.config import QCConfig
    from isyb_dask.qc.hmc import apply_parameters

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
        raise _named(inp.bold, exc) from None
    filtered = bandpass(cleaned, tr, cfg.band) * mask[..., None]
    reho = reho_volume(filtered, mask, neighbourhood=cfg.reho_neighbourhood)
    to_mni = chain.sampling_affine @ to_t1  # modality -> world of the sampling surfaces
    sampler = build_sampler(
        data.shape, img.affine, native_to_mni=to_mni, mask=mask, depths=cfg.gm_depths, surf=surf
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
            to_mni,
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
        to_mni,
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


def _dwi(inp, cfg: MetricsConfig, chain: SpaceChain, t1w, surf, writer: _Writer) -> dict:
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
        raise _named(inp.dwi, exc) from None
    to_t1, checks = modality_to_t1w(
        b0, img.affine, t1w, chain.brain, seed=cfg.seed, threads=cfg.threads
    )
    to_mni = chain.sampling_affine @ to_t1  # modality -> world of the sampling surfaces
    stack = np.stack([fit.fa, fit.md], axis=-1)
    out = {}
    for tissue, depths in (("GM", cfg.gm_depths), ("WM", cfg.wm_depths)):
        s = build_sampler(
            data.shape, img.affine, native_to_mni=to_mni, mask=mask, depths=depths, surf=surf
        ).apply(stack)
        out[f"FA_{tissue}"], out[f"MD_{tissue}"] = s[:, 0], s[:, 1]
    src = [inp.dwi, inp.bval, inp.bvec]
    writer.write(
        fit.fa,
        img,
        to_mni,
        "dwi",
        "dwimap",
        desc="FA",
        sources=src,
        meta={"Units": "1", "Description": "fractional anisotropy (WLS tensor)"},
    )
    writer.write(
        fit.md,
        img,
        to_mni,
        "dwi",
        "dwimap",
        desc="MD",
        sources=src,
        meta={"Units": "mm2/s", "Description": "mean diffusivity (WLS tensor)"},
    )
    writer.write(
        mask,
        img,
        to_mni,
        "dwi",
        "mask",
        desc="brain",
        sources=src,
        mask=True,
        meta={"Type": "Brain"},
    )
    return {"values": out, "info": {"dwi_to_t1w_metric": checks["metric"]}}


def _asl(inp, cfg: MetricsConfig, chain: SpaceChain, t1w, surf, writer: _Writer) -> dict:
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
        raise _named(inp.asl, exc) from None
    to_t1, checks = modality_to_t1w(
        ref, img.affine, t1w, chain.brain, seed=cfg.seed, threads=cfg.threads
    )
    to_mni = chain.sampling_affine @ to_t1  # modality -> world of the sampling surfaces
    out = {
        "CBF": build_sampler(
            data.shape,
            img.affine,
            native_to_mni=to_mni,
            mask=mask,
            depths=cfg.gm_depths,
            surf=surf,
        ).apply(cbf)
    }
    src = [p for p in (inp.asl, inp.aslcontext, inp.m0) if p is not None]
    writer.write(
        cbf,
        img,
        to_mni,
        "perf",
        "cbf",
        desc="CBF",
        sources=src,
        meta={"Units": "ml/100g/min", "Description": "CBF, ASL white-paper model"},
    )
    writer.write(
        mask,
        img,
        to_mni,
        "perf",
        "mask",
        desc="brain",
        sources=src,
        mask=True,
        meta={"Type": "Brain"},
    )
    return {"values": out, "info": {"asl_to_t1w_metric": checks["metric"]}}


def _morphometry(ginfo, t1_img, chain, surf, writer, inputs, found, missing, sources, info,
                 anatomy=None):
    """CT, SA, LGI from the T1w's posteriors unless FreeSurfer-derived values were read."""
    from isyb_dask.metrics.morphometry import surface_provenance, t1w_morphometry

    todo = [m for m in ("CT", "SA", "LGI") if m not in found]
    info["surface_provenance"] = surface_provenance(found, sources, computed=())
    if not todo:
        return
    try:
        res = t1w_morphometry(ginfo, t1_img, chain.t1w_to_mni, surf, anatomy=anatomy)
    except _FAILURES as exc:
        for m in todo:
            missing[m] = f"failed: {type(exc).__name__}: {exc}"
        return
    for m in todo:
        found[m] = res[m]
        sources[m] = [inputs.t1w]
    info["surface_provenance"] = surface_provenance(found, sources, computed=todo)
    info["morphometry"] = res["info"]
    writer.write(
        res["thickness"],
        t1_img,
        chain.t1w_to_mni,
        "anat",
        "T1w",
        desc="thickness",
        sources=[inputs.t1w],
        meta={"Units": "mm", "Description": "cortical thickness, Laplace/Eulerian PDE (GM)"},
    )


def _check_inputs(inp, cfg: MetricsConfig, *, skip: tuple = ()) -> None:
    """Fail fast (before any registration) on a corrupt or truncated image.

    Files in ``skip`` were already read and validated (the shared references).
    """
    for path, ndim in (
        (inp.t1w, 3),
        (inp.bold, 4),
        (inp.dwi, 4),
        (inp.asl, (3, 4)),
        (inp.m0, (3, 4)),
    ):
        if path is not None and path not in skip:
            load_image(path, ndim=ndim)


def _own_anatomy(inputs, cfg: MetricsConfig, out_dir: Path, atlas):
    """Build and write the subject anatomy when the caller did not pass one."""
    from isyb_dask.anat.derivatives import write_anatomy
    from isyb_dask.anat.reference import build_anatomy
    from isyb_dask.qc.config import QCConfig

    qc = QCConfig(seed=cfg.seed, threads=cfg.threads)
    anatomy = build_anatomy(inputs.t1w, inputs.subject, atlas, qc, threads=cfg.threads)
    write_anatomy(anatomy, out_dir)
    return anatomy


_MODALITIES = (
    ("bold", "BOLD run", ("ALFF", "fALFF", "ReHo", "VMHC"), _bold),
    ("dwi", "DWI", ("FA_WM", "MD_WM", "FA_GM", "MD_GM"), _dwi),
    ("asl", "ASL", ("CBF",), _asl),
)
#: modality -> (label, its surface metrics), for reasons given outside this stage.
MODALITY_METRICS = {attr: (label, metrics) for attr, label, metrics, _ in _MODALITIES}


def run_metrics(
    inputs,
    cfg: MetricsConfig,
    out_dir,
    atlas,
    *,
    surf: FsLR32k | None = None,
    anatomy=None,
    bold_ref=None,
) -> dict:
    """Compute and write one subject's surface metrics.

    Parameters
    ----------
    inputs
        :class:`isyb_dask.io.bids.SubjectInputs`.
    cfg
        Metric settings.
    out_dir
        Derivatives root.
    atlas
        :class:`isyb_dask.atlas.ReferenceAtlas`.
    surf
        fsLR 32k surfaces (default :func:`load_fslr32k`).
    anatomy
        The subject's :class:`isyb_dask.anat.reference.SubjectAnatomy` (template registration,
        brain mask, GM/WM/CSF posteriors shared with the QC); built (and its derivatives
        written) here when None.
    bold_ref
        The BOLD run's :class:`isyb_dask.bold.reference.BoldReference` (motion, mask, mean
        shared with the QC), or the exception its construction raised (the BOLD metrics are
        then missing with that reason); built here when None.

    Returns
    -------
    dict
        ``{"values": float32 (13, 64984), "missing": {metric: reason}, "info": {...},
        "provenance": {metric: how it was computed when that is worth recording}}`` (values
        in the order of :data:`SURFACE_METRICS`). A provenance starting with ``"fallback:"``
        (GMV from the atlas GM prior) marks a value the group step leaves out by default.

    Raises
    ------
    InputError
        For a corrupt input image (named in the message).
    RegistrationError
        If the T1w cannot be registered to MNI space.
    """
    surf = surf if surf is not None else load_fslr32k()
    out_dir = Path(out_dir)
    subject = inputs.subject
    values = np.full((len(SURFACE_METRICS), N_VERTICES), np.nan, dtype=np.float32)
    found: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    info: dict[str, Any] = {}
    sources: dict[str, list] = {}
    provenance: dict[str, str] = {}

    skip = tuple(p for p, ref in ((inputs.t1w, anatomy), (inputs.bold, bold_ref))
                 if ref is not None)
    _check_inputs(inputs, cfg, skip=skip)
    struct, miss, src = read_structural_metrics(
        cfg.surface_derivatives, subject, surf=surf, session=inputs.session
    )
    found.update(struct)
    missing.update(miss)
    sources.update(src)

    if inputs.t1w is None:
        for _, _, metrics, _ in _MODALITIES:
            for m in metrics:
                missing[m] = "no T1w image (needed for the registration to MNI)"
        missing["GMV"] = "no T1w image"
    else:
        if anatomy is None:
            anatomy = _own_anatomy(inputs, cfg, out_dir, atlas)
        t1_img = anatomy.canonical
        chain = chain_from_anatomy(anatomy, atlas)
        if getattr(anatomy, "surfaces", None) is not None:
            # sample through the subject's own refined surfaces in T1w space (issue 11)
            from isyb_dask.anat.placement import subject_fslr

            surf = subject_fslr(surf, anatomy.surfaces)
            chain = dataclasses.replace(chain, t1w_to_sampling=np.eye(4))
            info["sampling_surfaces"] = "subject (fsLR 32k placed in T1w space and refined)"
        else:
            info["sampling_surfaces"] = "fsLR 32k in MNI through the T1w->MNI affine"
        info["t1w_to_mni_metric"] = chain.checks.get("metric")
        info["t1w_to_mni_jacobian"] = float(np.linalg.det(chain.t1w_to_mni[:3, :3]))
        writer = _Writer(out_dir, subject, cfg, atlas, inputs.session)
        try:
            gm = np.asarray(anatomy.posteriors["gm"], dtype=np.float32)
            ginfo = {"source": "GM posterior of the subject anatomy's 3-class segmentation "
                     "(the QC's)"}
            info["gm_source"] = ginfo["source"]
            provenance["GMV"] = ginfo["source"]
            found["GMV"] = gmv_mod.gmv_surface(
                gmv_mod.modulated_gm(gm, chain.t1w_to_mni) if chain.t1w_to_sampling is not None
                else gm,
                t1_img.affine,
                chain.sampling_affine,
                brain=chain.brain,
                depths=cfg.gm_depths,
                surf=surf,
            )
            sources["GMV"] = [inputs.t1w]
            writer.write(
                gm,
                t1_img,
                chain.t1w_to_mni,
                "anat",
                "probseg",
                desc=None,
                label="GM",
                sources=[inputs.t1w],
                meta={"Label": "GM", "Source": ginfo["source"]},
                native=False,  # label-GM_probseg is the anatomy's (io.outputs)
            )
            writer.write(
                gmv_mod.modulated_gm(gm, chain.t1w_to_mni),
                t1_img,
                chain.t1w_to_mni,
                "anat",
                "probseg",
                desc="modulated",
                label="GM",
                sources=[inputs.t1w],
                meta={"Label": "GM", "Units": "mm3 GM per mm3 MNI"},
            )
        except _FAILURES as exc:
            missing["GMV"] = f"failed: {type(exc).__name__}: {exc}"
        else:
            _morphometry(ginfo, t1_img, chain, surf, writer, inputs, found, missing, sources, info,
                         anatomy=anatomy)
        for attr, label, metrics, fn in _MODALITIES:
            if getattr(inputs, attr) is None:
                for m in metrics:
                    missing[m] = f"no {label}"
                continue
            try:
                extra = {"bold_ref": bold_ref, "anatomy": anatomy} if attr == "bold" else {}
                res = fn(inputs, cfg, chain, t1_img, surf, writer, **extra)
            except InputError as exc:  # readable file, unusable content or metadata
                for m in metrics:
                    missing[m] = f"{label} unusable: {exc}"
                continue
            except _FAILURES as exc:
                for m in metrics:
                    missing[m] = f"{label} failed: {type(exc).__name__}: {exc}"
                continue
            found.update(res["values"])
            info.update(res["info"])
            if res["info"].get("vmhc_flat_vertices"):
                provenance["VMHC"] = (f"{res['info']['vmhc_flat_vertices']} homotopic vertex "
                                      "pairs with a flat series: NaN (missing), not 0")
            for m in metrics:
                sources[m] = [getattr(inputs, attr)]

    for i, metric in enumerate(SURFACE_METRICS):
        if metric in found:
            vals = np.asarray(found[metric], dtype=np.float32)
            vals[~surf.cortex] = np.nan
            if not np.isfinite(vals).any():
                missing[metric] = "no vertex could be sampled (no overlap with the cortex)"
                continue
            values[i] = vals
            missing.pop(metric, None)
            if cfg.write_gifti:
                write_surface_metric(
                    vals,
                    out_dir,
                    subject,
                    metric,
                    sources=sources.get(metric, ()),
                    settings={
                        "depths_gm": cfg.gm_depths,
                        "depths_wm": cfg.wm_depths,
                        **({"provenance": info["surface_provenance"][metric]}
                           if metric in info.get("surface_provenance", {}) else {}),
                    },
                    session=inputs.session,
                )
    return {"values": values, "missing": missing, "info": info,
            "provenance": {m: provenance[m] for m in provenance if m not in missing}}
