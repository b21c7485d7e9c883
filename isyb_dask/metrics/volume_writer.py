"""Volumetric outputs of the metrics stage: native maps and their standard-space copies.

Every volumetric map (GM probability, modulated GM, thickness, ALFF/fALFF/ReHo, FA/MD, CBF,
brain masks) is written on its native grid and, unless ``write_mni`` is off, resampled into
a standard space named by its TemplateFlow identifier:

* ``space-MNI152NLin6Asym`` when the subject's anatomy carries the non-linear normalisation
  (``SubjectAnatomy.standard``, ANTs SyN through the 2009aSym -> NLin6Asym bridge, the space
  of the fsLR surfaces): the output grid is the FSL MNI152 box at ``mni_step_mm``, each
  standard point is mapped into the T1w by the normalisation's ``to_t1w`` field and from
  there into the modality by the rigid modality -> T1w transform. Modulated GM is multiplied
  by the local Jacobian determinant of the standard -> T1w map (mm^3 of the subject per
  mm^3 of the template, standard VBM modulation);
* ``space-MNI152NLin2009aSym`` otherwise (the affine T1w -> atlas head -> nilearn 2009aSym
  chain), on the nilearn brain's box; modulation by ``1 / det`` of that affine.

The sidecar's ``SpatialReference`` says which transform produced the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi

from isyb_dask.io.derivatives import derivative_path, write_sidecar
from isyb_dask.io.nifti import save_like, write_nifti
from isyb_dask.metrics.config import MetricsConfig
from isyb_dask.metrics.spaces import jacobian_determinant, mni_grid

__all__ = ["AFFINE_SPACE", "VolumeWriter", "standard_grid"]

#: TemplateFlow identifier of the affine route's space (nilearn's MNI152 2009a symmetric).
AFFINE_SPACE = "MNI152NLin2009aSym"


def standard_grid(base: tuple[tuple[int, int, int], np.ndarray],
                  step_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """The box of ``base`` (shape, affine) sampled every ``step_mm``.

    Returns
    -------
    shape, affine
    """
    shape0, aff0 = base
    aff0 = np.asarray(aff0, dtype=np.float64)
    scale = step_mm / voxel_sizes(aff0)
    aff = aff0.copy()
    aff[:3, :3] = aff0[:3, :3] * scale
    shape = tuple(int(np.ceil(n / s)) for n, s in zip(shape0, scale))
    return shape, aff  # type: ignore[return-value]


def _grid_points(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _as3d(img: nb.Nifti1Image) -> nb.Nifti1Image:
    hdr = img.header.copy()
    hdr.set_data_shape(img.shape[:3])
    return nb.Nifti1Image(np.zeros(img.shape[:3], np.float32), img.affine, hdr)


class VolumeWriter:
    """Writes one subject's native maps and their standard-space copies.

    Parameters
    ----------
    out_dir, subject, session
        Derivatives root and BIDS labels.
    cfg
        Metric settings (``write_mni``, ``mni_step_mm``).
    atlas
        :class:`isyb_dask.atlas.ReferenceAtlas` (grid of the affine route).
    t1w_to_mni
        T1w -> MNI152NLin2009aSym world affine (the affine route).
    standard
        The anatomy's :class:`isyb_dask.anat.normalize.StandardNormalization`, or None.
    """

    def __init__(self, out_dir: Path, subject: str, cfg: MetricsConfig, atlas, session: str | None,
                 *, t1w_to_mni: np.ndarray, standard: Any | None = None) -> None:
        self.out_dir, self.subject, self.cfg, self.session = Path(out_dir), subject, cfg, session
        self.standard = standard
        self.t1w_to_mni = np.asarray(t1w_to_mni, dtype=np.float64)
        self._points: np.ndarray | None = None
        self._jacobian: np.ndarray | None = None
        if not cfg.write_mni:
            self.space, self.grid = None, None
        elif standard is not None:
            self.space = str(standard.space)
            self.grid = standard_grid(standard.grid, cfg.mni_step_mm)
            self.reference = (f"{self.space}, {cfg.mni_step_mm} mm (ANTs SyN normalisation of "
                              "the subject anatomy, modality -> T1w rigid)")
        else:
            self.space = AFFINE_SPACE
            self.grid = mni_grid(atlas, cfg.mni_step_mm)
            self.reference = (f"{AFFINE_SPACE}, {cfg.mni_step_mm} mm (affine T1w -> MNI, "
                              "modality -> T1w rigid)")

    def t1w_points(self) -> np.ndarray:
        """T1w world points (N, 3) of the output grid's voxel centres (computed once)."""
        if self._points is None:
            shape, aff = self.grid
            pts = _grid_points(shape, aff)
            if self.standard is not None:
                pts = self.standard.points_to_t1w(pts)
            else:
                inv = np.linalg.inv(self.t1w_to_mni)
                pts = pts @ inv[:3, :3].T + inv[:3, 3]
            self._points = pts
        return self._points

    def jacobian(self) -> np.ndarray | float:
        """T1w volume per standard volume on the output grid (array, or a constant)."""
        if self.standard is None:
            return 1.0 / jacobian_determinant(self.t1w_to_mni)
        if self._jacobian is None:
            fld = self.standard.to_t1w
            shape, aff = self.grid
            ijk = _grid_points(shape, np.linalg.inv(fld.affine) @ aff)
            logj = ndi.map_coordinates(fld.log_jacobian(), ijk.T, order=1, mode="nearest")
            self._jacobian = np.exp(logj).reshape(shape).astype(np.float32)
        return self._jacobian

    def to_standard(self, data: np.ndarray, affine: np.ndarray, native_to_t1w: np.ndarray, *,
                    order: int = 1) -> np.ndarray:
        """Resample a native map (voxel affine ``affine``) onto the output grid."""
        shape, _ = self.grid
        to_vox = np.linalg.inv(np.asarray(affine, np.float64)) @ np.linalg.inv(
            np.asarray(native_to_t1w, np.float64))
        pts = self.t1w_points()
        ijk = pts @ to_vox[:3, :3].T + to_vox[:3, 3]
        out = ndi.map_coordinates(np.asarray(data, dtype=np.float32), ijk.T, order=order,
                                  mode="constant", cval=0.0)
        return out.reshape(shape).astype(np.float32)

    def write(self, data, ref_img, native_to_t1w, datatype, suffix, *, desc, task=None,
              label=None, sources=(), meta=None, mask=False, native=True,
              native_data=None, modulate=False) -> Path:
        """Write the native map (unless another stage owns it: ``native=False``) and its copy.

        Parameters
        ----------
        data
            Native map resampled into standard space.
        ref_img
            Image whose grid ``data`` is on.
        native_to_t1w
            World affine from that grid's world to the T1w world (identity for T1w maps).
        datatype, suffix, desc, task, label
            BIDS entities.
        sources, meta
            Provenance and sidecar fields.
        mask
            uint8 nearest-neighbour output.
        native
            Write the native file too.
        native_data
            What to write natively, when it differs from ``data`` (modulated GM).
        modulate
            Multiply the standard-space copy by the T1w-per-standard volume ratio.

        Returns
        -------
        Path
            The native path.
        """
        dtype = np.uint8 if mask else np.float32
        data = np.asarray(data, dtype=np.float32)
        ents = dict(session=self.session, task=task, label=label, desc=desc)
        path = derivative_path(self.out_dir, self.subject, datatype, suffix, **ents)
        settings = {"surface_metrics": "isyb_dask.metrics.stage"}
        if native:
            nat = data if native_data is None else np.asarray(native_data, np.float32)
            save_like(nat, _as3d(ref_img), path, dtype=dtype)
            write_sidecar(path, meta or {}, sources=sources, settings=settings)
        if self.grid is not None:
            out = self.to_standard(data, ref_img.affine, native_to_t1w, order=0 if mask else 1)
            if modulate:
                out = out * self.jacobian()
            mpath = derivative_path(self.out_dir, self.subject, datatype, suffix,
                                    space=self.space, **ents)
            write_nifti(nb.Nifti1Image(out.astype(dtype), self.grid[1]), mpath)
            extra = {"SpatialReference": self.reference}
            if modulate:
                extra["Modulation"] = ("local Jacobian determinant of the standard -> T1w map"
                                       if self.standard is not None
                                       else "1 / det(T1w -> MNI affine)")
            write_sidecar(mpath, {**(meta or {}), **extra},
                          sources=[path], settings=settings)
        return path
