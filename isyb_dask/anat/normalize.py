"""Non-linear normalisation of a subject's T1w into the space of the fsLR surfaces.

Route (docs/metrics_surface.md has the numbers):

1. the subject's bias-corrected brain (``n4 * brain_mask``), block-averaged to 4 mm, is
   registered to the packaged MNI152NLin2009aSym T1 brain (nilearn, block-averaged to 4 mm
   and cropped to the brain's bounding box plus 8 mm) by ANTs SyN through ``antspyx``
   (symmetric diffeomorphic, Mattes MI, fixed seed, 8 and 4 mm levels): the field's standard
   tool, with a documented inverse. Its start is the subject's atlas
   registration (T1w -> built-in head, composed with the atlas's head -> 2009aSym affine),
   so only the deformable stage runs (``SyNOnly``); without a start ANTs' own affine stage
   runs first;
2. the cached bridge MNI152NLin2009aSym <-> MNI152NLin6Asym (:mod:`isyb_dask.anat.bridge`)
   takes the result into MNI152NLin6Asym, the space of the S1200 surfaces.

Both directions are kept as dense fields (:class:`isyb_dask.anat.warpfield.DenseField`):
``to_t1w`` on the NLin6Asym 2 mm grid (standard point -> T1w point, the transform that
resamples a T1w image into standard space) and ``to_standard`` on the subject's 4 mm grid
(the SyN grid: its finest level is 4 mm, so a finer copy would only interpolate it).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi

from isyb_dask.anat.bridge import NLIN6_GRID, get_bridge, sample_volume, template_maps
from isyb_dask.anat.warpfield import (
    DenseField,
    ants_from_array,
    grid_points,
    seeded_registration,
    syn_fields,
)
from isyb_dask.blocks import block_affine, block_reduce, padded_box
from isyb_dask.io.outputs import transform_paths

__all__ = ["SPACE", "StandardNormalization", "normalize_to_standard", "write_transforms"]

#: TemplateFlow identifier of the space the surfaces are sampled in.
SPACE = "MNI152NLin6Asym"


@dataclass(frozen=True, eq=False)
class StandardNormalization:
    """Subject T1w <-> standard space (``space``), as two dense point maps.

    Attributes
    ----------
    space
        TemplateFlow id of the standard space (``"MNI152NLin6Asym"``).
    to_t1w
        Standard-space points (RAS mm) -> T1w world points; sampled on the standard grid.
    to_standard
        T1w world points -> standard-space points; sampled on the subject's SyN grid (4 mm).
    grid
        ``(shape, affine)`` of the standard 2 mm grid.
    info
        Registration settings, metric values and CPU seconds.
    """

    space: str
    to_t1w: DenseField
    to_standard: DenseField
    grid: tuple[tuple[int, int, int], np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    def points_to_t1w(self, xyz_ras_standard: np.ndarray) -> np.ndarray:
        """Map ``(N, 3)`` standard-space RAS mm points into the T1w's world (RAS mm)."""
        return self.to_t1w(np.asarray(xyz_ras_standard, dtype=np.float64))

    def points_to_standard(self, xyz_ras_t1w: np.ndarray) -> np.ndarray:
        """Map ``(N, 3)`` T1w world points (RAS mm) into standard space."""
        return self.to_standard(np.asarray(xyz_ras_t1w, dtype=np.float64))

    def image_to_standard(
        self,
        data: np.ndarray,
        affine: np.ndarray,
        *,
        interpolation: str = "linear",
        grid: tuple[tuple[int, int, int], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Resample a 3-D map in T1w world space onto a standard-space grid.

        Parameters
        ----------
        data, affine
            The map and its voxel-to-RAS affine (any grid in the T1w's world).
        interpolation
            ``"linear"`` or ``"nearest"``.
        grid
            ``(shape, affine)`` in standard space; default :attr:`grid`.

        Returns
        -------
        np.ndarray
            float32, 0 outside the map's field of view.
        """
        if interpolation not in ("linear", "nearest"):
            raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
        shape, g_aff = grid if grid is not None else self.grid
        pts = self.points_to_t1w(grid_points(shape, g_aff).reshape(-1, 3))
        inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
        ijk = pts @ inv[:3, :3].T + inv[:3, 3]
        out = ndi.map_coordinates(np.asarray(data, dtype=np.float32), ijk.T,
                                  order=1 if interpolation == "linear" else 0,
                                  mode="constant", cval=0.0)
        return out.reshape(tuple(shape)).astype(np.float32)

    def log_jacobian_standard(self) -> tuple[np.ndarray, np.ndarray]:
        """Log Jacobian determinant of the standard -> T1w map on the standard grid.

        Positive where the subject's tissue is larger than the template's. Returns
        ``(log_jacobian, affine)``.
        """
        return self.to_t1w.log_jacobian(), self.grid[1].copy()


def _block_mean(
    data: np.ndarray, affine: np.ndarray, step_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Block mean of ``data`` to about ``step_mm`` voxels, and the coarse grid's affine."""
    zooms = voxel_sizes(affine)
    f = [int(k) for k in np.maximum(1, np.rint(step_mm / zooms).astype(int))]
    coarse = block_reduce(data.astype(np.float32), f)
    return coarse.astype(np.float32), block_affine(affine, f)


def _cropped_template(step_mm: float, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The 2009aSym T1 brain at ``step_mm``, cropped to its bounding box + ``margin_mm``."""
    data, affine = template_maps(step_mm)["t1"]
    pad = int(np.ceil(margin_mm / step_mm))
    box = padded_box(data > 0.05, pad)
    lo = np.array([b.start for b in box], dtype=np.float64)
    aff = np.asarray(affine, dtype=np.float64).copy()
    aff[:3, 3] = aff[:3, :3] @ lo + aff[:3, 3]
    return np.ascontiguousarray(data[box], dtype=np.float32), aff


def normalize_to_standard(
    canonical_n4: nb.Nifti1Image,
    brain_mask: np.ndarray,
    posteriors: dict[str, np.ndarray] | None,
    *,
    seed: int,
    threads: int,
    cache_dir: Path | None = None,
    syn_iterations: tuple[int, ...] = (40, 10),
    aff_sampling_rate: float = 0.2,
    initial: np.ndarray | None = None,
    step_mm: float = 4.0,
    margin_mm: float = 8.0,
) -> StandardNormalization:
    """Register a subject's brain non-linearly to MNI152NLin6Asym (via 2009aSym).

    Parameters
    ----------
    canonical_n4
        Bias-corrected T1w on the RAS-conformed grid (image data and world affine).
    brain_mask
        Boolean brain mask on the same grid.
    posteriors
        Optional ``{"csf", "gm", "wm"}`` posteriors on that grid; when given, the moving
        image is restricted to ``gm + wm + csf > 0.5`` inside the brain mask (a tighter brain).
    seed
        ANTs random seed (metric sampling).
    threads
        ITK threads: ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` is set for the call, but ANTs'
        ITK reads it only once per process, at its first use; later calls keep that count
        (measured: threads=2 after a first call with 1 gives the 1-thread result). Workers
        export it at start (:mod:`isyb_dask.pipeline.worker_setup`).
    cache_dir
        Cache root of the bridge (:func:`isyb_dask.anat.bridge.get_bridge`).
    syn_iterations
        SyN iterations per level; antspyx shrinks the ``step_mm`` images by ``2**k`` for the
        ``k``-th level from the end, so the default (40, 10) runs 40 iterations at 8 mm and
        10 at 4 mm. (Until 2026-12-07 the images were 2 mm with (40, 10, 0): the same 8 and
        4 mm levels and a 2 mm level of no iterations, whose field was the 4 mm one
        upsampled.) The 4 mm level costs about 0.3 s CPU per iteration (Mattes gradient,
        field smoothing and inversion).
    aff_sampling_rate
        Fraction of the template voxels (regular grid, seeded) that the Mattes metric of the
        affine stage samples (antspyx's default, 0.2). antspyx runs that stage with its own
        fixed schedule (shrink 4/2/2, up to 2100/1200/1200 iterations to convergence)
        whatever ``aff_iterations`` says. 0.1 takes about 3 s CPU off a 1 mm subject
        (benchmarks/results_anatomy_speed.md) but is not robust: with ITK running two
        threads (the sampling then differs from run to run), the known-shift test landed in
        a wrong optimum in 2 of 20 runs (95th-percentile point error 5.4 and 6.1 mm, against
        0.3-0.6 mm), 0.2 in none of 40. The shrink factors apply to the ``step_mm`` images.
        Not used with ``initial`` (the pipeline's route always gives one, and is
        deterministic with any thread count; this route is kept for callers without an
        atlas registration and tested to recover a known shift within 1 mm).
    initial
        Optional 4x4 world (RAS mm) affine T1w -> MNI152NLin2009aSym already close to the
        solution (the atlas registration's chain). ANTs then runs only the SyN stage
        (``SyNOnly``) from it, with the affine folded into the written fields; this saves
        ANTs' affine stage (about 2 s CPU of a 1 mm subject) and gives the same placement
        (mean GM posterior at the refined midthickness 0.691 against 0.692 on the generated
        1 mm head; docs/metrics_surface.md).
    step_mm
        Voxel size (an integer multiple of 1 mm) of both registration images: the subject's
        brain and the template are block-averaged to it.
    margin_mm
        The fixed (template) image is cropped to the template brain's bounding box grown by
        this margin. ANTs' SyN holds the displacement at zero on the fixed image's border,
        so the fields are continuous where they end; the crop takes 35-40 % off the SyN
        (docs/metrics_surface.md has the measurement).

    Returns
    -------
    StandardNormalization

    Raises
    ------
    ValueError
        If the mask does not match the image or is (nearly) empty, or ``initial`` is not
        an invertible 4x4 affine.
    """
    t_cpu = time.process_time()
    if initial is not None:
        initial = np.asarray(initial, dtype=np.float64)
        if initial.shape != (4, 4) or not np.all(np.isfinite(initial)) \
                or abs(np.linalg.det(initial[:3, :3])) < 1e-6:
            raise ValueError("normalize_to_standard: initial must be an invertible 4x4 affine")
    data = np.asarray(canonical_n4.dataobj, dtype=np.float32)
    mask = np.asarray(brain_mask, dtype=bool)
    if mask.shape != data.shape[:3]:
        raise ValueError(f"brain mask shape {mask.shape} != image shape {data.shape}")
    if posteriors is not None:
        tissue = sum(np.asarray(posteriors[k], dtype=np.float32) for k in ("csf", "gm", "wm"))
        mask = mask & (tissue > 0.5)
    if int(mask.sum()) < 1000:
        raise ValueError("normalize_to_standard: the brain mask is (nearly) empty")
    brain = np.where(mask, np.clip(data, 0, None), 0.0)
    brain = brain / max(float(np.percentile(brain[mask], 99)), 1e-6)
    moving_d, moving_aff = _block_mean(brain, canonical_n4.affine, step_mm)
    fixed_d, fixed_aff = _cropped_template(step_mm, margin_mm)
    fixed_d = fixed_d / max(float(np.percentile(fixed_d[fixed_d > 0], 99)), 1e-6)

    old = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))
    try:
        fixed = ants_from_array(fixed_d, fixed_aff)
        moving = ants_from_array(moving_d, moving_aff)
        with tempfile.TemporaryDirectory(prefix="isyb-syn-") as tmp:
            if initial is None:
                stages = {"type_of_transform": "SyN", "aff_metric": "mattes",
                          "aff_random_sampling_rate": float(aff_sampling_rate)}
            else:
                stages = {"type_of_transform": "SyNOnly",
                          "initial_transform": _write_initial(initial, Path(tmp))}
            reg = seeded_registration(
                fixed, moving, random_seed=int(seed), syn_metric="mattes",
                reg_iterations=tuple(syn_iterations), outprefix=str(Path(tmp) / "s_"),
                **stages,
            )
            s_fwd, s_inv = syn_fields(reg["fwdtransforms"], reg["invtransforms"],
                                      moving_d.shape, moving_aff)
    finally:
        if old is None:
            os.environ.pop("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", None)
        else:
            os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = old
    bridge = get_bridge(cache_dir)
    to_t1w = bridge.to_2009a.then(s_fwd)
    to_standard = s_inv.then(bridge.to_nlin6)
    warped = sample_volume(moving_d, moving_aff,
                           s_fwd(grid_points(fixed_d.shape, fixed_aff).reshape(-1, 3))
                           ).reshape(fixed_d.shape)
    inside = fixed_d > 0.05
    cc = float(np.corrcoef(warped[inside], fixed_d[inside])[0, 1])
    info = {
        "method": f"ANTs SyN (antspyx): subject brain {step_mm:g} mm -> MNI152NLin2009aSym "
                  f"brain {step_mm:g} mm (cropped to its bounding box + {margin_mm:g} mm), "
                  "then the cached 2009aSym -> NLin6Asym bridge",
        "start": ("the atlas registration's T1w -> MNI152NLin2009aSym affine (SyNOnly)"
                  if initial is not None else "ANTs affine stage (SyN)"),
        "syn_iterations": list(syn_iterations),
        "syn_step_mm": float(step_mm),
        "seed": int(seed),
        "threads": int(threads),
        **({} if initial is not None else {"affine_sampling_rate": float(aff_sampling_rate)}),
        "template_correlation": cc,
        "bridge_accuracy": bridge.accuracy,
        "cpu_seconds": time.process_time() - t_cpu,
    }
    shape, aff = NLIN6_GRID
    return StandardNormalization(SPACE, to_t1w, to_standard, (shape, aff.copy()), info)


def _write_initial(t1w_to_mni: np.ndarray, folder: Path) -> str:
    """Write a T1w -> 2009aSym world affine as the ITK start of an ANTs registration.

    ANTs' fixed image is the template and its moving image the subject, so the transform
    maps template (fixed) points to subject (moving) points: the inverse of ``t1w_to_mni``.
    """
    import SimpleITK as sitk

    from isyb_dask.registration import transform_from_ras

    path = folder / "initial.mat"
    sitk.WriteTransform(transform_from_ras(np.linalg.inv(t1w_to_mni)), str(path))
    return str(path)


def write_transforms(
    norm: StandardNormalization, out_dir: str | os.PathLike[str], subject: str
) -> list[Path]:
    """Write both transforms as ITK HDF5 composite transforms, with JSON sidecars.

    ``from-T1w_to-<Space>`` resamples a T1w-space image into ``<Space>`` (it maps standard
    points to T1w points, the ITK/ANTs image-mode convention); ``from-<Space>_to-T1w`` is its
    inverse. Each holds one displacement field (the affine is folded into it), readable by
    SimpleITK ``ReadTransform`` and ``antsApplyTransforms``.
    """
    import SimpleITK as sitk

    from isyb_dask.io.derivatives import write_sidecar

    fwd, inv = transform_paths(out_dir, subject, norm.space)
    fwd.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for path, fld, src, dst in ((fwd, norm.to_t1w, "T1w", norm.space),
                                (inv, norm.to_standard, norm.space, "T1w")):
        comp = sitk.CompositeTransform(3)
        comp.AddTransform(fld.to_sitk_transform())
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        sitk.WriteTransform(comp, str(tmp))
        os.replace(tmp, path)
        meta = {"FromSpace": src, "ToSpace": dst, "Mode": "image",
                "Description": f"Resamples a {src} image onto a {dst} grid (maps {dst} points "
                               f"to {src} points, LPS, ITK convention).",
                "Normalization": {k: v for k, v in norm.info.items() if k != "cpu_seconds"}}
        write_sidecar(path, meta)
        written += [path, path.with_suffix(".json")]
    return written
