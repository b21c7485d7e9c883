"""The cost of the head-motion registration: one pyramid level of the reference volume.

:class:`CostLevel` holds what the Gauss-Newton iterations of :mod:`isyb_dask.bold.hmc` need
on one level: the (smoothed, shrunk) reference grid, the cost voxels (:func:`cost_voxels`),
their reference intensities and the inverse-compositional Jacobian.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.bold.rigid import _geometry, volume_to_sitk

__all__ = ["CostLevel", "cost_voxels"]


class CostLevel:
    """One pyramid level of the reference: grid, intensities and IC Jacobian.

    Voxel arrays are flattened in SimpleITK's (z, y, x) memory order so that resampled
    images can be used without copies.
    """

    def __init__(
        self, ref: np.ndarray, affine: np.ndarray, center: np.ndarray, shrink: int, sigma: float
    ) -> None:
        smoothed = ndi.gaussian_filter(ref, sigma, mode="nearest") if sigma > 0 else ref
        sub = np.ascontiguousarray(smoothed[::shrink, ::shrink, ::shrink], dtype=np.float32)
        aff = np.asarray(affine, dtype=np.float64).copy()
        aff[:3, :3] = aff[:3, :3] * shrink
        origin, spacing, direction = _geometry(aff)
        lin = direction * spacing  # orthonormalised voxel -> world matrix
        self.sigma = float(sigma)
        self.grid = volume_to_sitk(sub, aff)
        zyx = np.ascontiguousarray(sub.T)
        self.inv_lin = np.linalg.inv(lin)
        self.sel = cost_voxels(zyx)
        # flat-index offsets of the x, y and z neighbours (every cost voxel is interior)
        self.steps = (1, zyx.shape[2], zyx.shape[1] * zyx.shape[2])
        kji = np.stack(np.unravel_index(self.sel, zyx.shape), axis=1).astype(np.float64)
        self.points = kji[:, ::-1] @ lin.T + (origin - center)
        self.slice_index = kji[:, 0].astype(np.int64)  # array axis 2 = acquisition slices
        self.values = zyx.ravel()[self.sel].astype(np.float64)
        self.jac = self.jacobian(zyx)
        self.hessian = self.jac.T @ self.jac

    def jacobian(self, image_zyx: np.ndarray) -> np.ndarray:
        """d(image at moved point)/d(params) at zero motion, [grad, (x - c) x grad].

        Rows are the cost voxels ``sel``; NaN where the gradient touches a NaN voxel.
        """
        # central differences at the cost voxels only: equal to np.gradient there, since
        # no cost voxel lies on the FOV border
        flat = np.asarray(image_zyx, dtype=np.float32).ravel()
        grad_idx = np.empty((self.sel.size, 3), dtype=np.float64)
        for axis, step in enumerate(self.steps):
            grad_idx[:, axis] = (flat[self.sel + step] - flat[self.sel - step]) / 2.0
        g = grad_idx @ self.inv_lin  # world-space gradient (N, 3)
        r = self.points
        out = np.empty((g.shape[0], 6))
        out[:, :3] = g
        out[:, 3] = r[:, 1] * g[:, 2] - r[:, 2] * g[:, 1]
        out[:, 4] = r[:, 2] * g[:, 0] - r[:, 0] * g[:, 2]
        out[:, 5] = r[:, 0] * g[:, 1] - r[:, 1] * g[:, 0]
        return out


def cost_voxels(ref_zyx: np.ndarray) -> np.ndarray:
    """Flat indices of the voxels in the registration cost.

    The head (reference above 5 % of its 99th percentile, dilated by 2 voxels) minus the
    outermost voxel layer of the field of view. Background voxels carry only noise; the
    edge slices are where interpolation at the FOV border, spin history and slice-profile
    effects differ between volumes, and they would pull the estimate.
    """
    head = ref_zyx > 0.05 * np.percentile(ref_zyx, 99)
    head = ndi.binary_dilation(head, structure=np.ones((3, 3, 3), bool), iterations=2)
    interior = np.zeros(ref_zyx.shape, dtype=bool)
    interior[1:-1, 1:-1, 1:-1] = True
    sel = head & interior
    if sel.sum() < 1000:
        sel = interior
    return np.flatnonzero(sel.ravel())
