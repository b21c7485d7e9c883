"""Geometry and random-field helpers for the synthetic study.

Pure functions on arrays: image grids, smooth random fields, Rician noise, block means and
reorientation (rigid transforms: :mod:`isyb_dask.rigid`). Everything random takes a :class:`numpy.random.Generator`.

Conventions
-----------
* World coordinates are RAS millimetres (NIfTI ``sform``).
* Rigid parameters follow :mod:`isyb_dask.rigid` (the convention the realignment estimates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from isyb_dask.blocks import block_affine, block_reduce

__all__ = [
    "Grid",
    "SmoothField",
    "add_rician_noise",
    "block_mean",
    "power_fd",
    "random_smooth_field",
    "reorient",
]


@dataclass(frozen=True)
class Grid:
    """A regular RAS image grid: ``shape`` (3 ints) and a 4x4 voxel-to-world ``affine``."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @classmethod
    def centred(cls, shape: tuple[int, int, int], voxel: float, centre: np.ndarray) -> Grid:
        """Axis-aligned RAS grid of isotropic ``voxel`` mm whose FOV centre is ``centre``."""
        aff = np.diag([voxel, voxel, voxel, 1.0])
        half = (np.asarray(shape, dtype=float) - 1.0) / 2.0
        aff[:3, 3] = np.asarray(centre, dtype=float) - voxel * half
        return cls(tuple(int(s) for s in shape), aff)

    def world(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """World coordinates of voxel centres, shape ``(3, *shape)`` float64.

        ``start``/``stop`` restrict the first axis to a slab (to bound memory).
        """
        stop = self.shape[0] if stop is None else stop
        sub = (stop - start, self.shape[1], self.shape[2])
        idx = np.indices(sub, dtype=np.float64).reshape(3, -1)
        idx[0] += start
        pts = self.affine[:3, :3] @ idx + self.affine[:3, 3:4]
        return pts.reshape((3, *sub))

    def slabs(self, max_voxels: int = 2_000_000) -> list[tuple[int, int]]:
        """``(start, stop)`` ranges of the first axis with at most ``max_voxels`` each."""
        step = max(1, max_voxels // max(1, self.shape[1] * self.shape[2]))
        return [(i, min(i + step, self.shape[0])) for i in range(0, self.shape[0], step)]

    @property
    def centre(self) -> np.ndarray:
        """World coordinate of the FOV centre."""
        half = (np.asarray(self.shape, dtype=float) - 1.0) / 2.0
        return self.affine[:3, :3] @ half + self.affine[:3, 3]


@dataclass(frozen=True)
class SmoothField:
    """A smooth vector/scalar field given by values on a coarse world grid.

    Evaluated anywhere by (tri)linear interpolation of the coarse samples, with constant
    extrapolation outside the coarse FOV.

    Attributes
    ----------
    values
        Array ``(n_components, nx, ny, nz)``.
    affine
        Voxel-to-world affine of the coarse grid.
    """

    values: np.ndarray
    affine: np.ndarray

    def __call__(self, points: np.ndarray, order: int = 1) -> np.ndarray:
        """Field at world ``points`` of shape ``(3, ...)``; returns ``(n_components, ...)``."""
        pts = np.asarray(points, dtype=np.float64)
        shape = pts.shape[1:]
        flat = pts.reshape(3, -1)
        inv = np.linalg.inv(self.affine)
        vox = inv[:3, :3] @ flat + inv[:3, 3:4]
        out = np.empty((self.values.shape[0], flat.shape[1]), dtype=np.float64)
        for k, comp in enumerate(self.values):
            out[k] = ndi.map_coordinates(comp, vox, order=order, mode="nearest", prefilter=False)
        return out.reshape((self.values.shape[0], *shape))


def random_smooth_field(
    rng: np.random.Generator,
    centre: np.ndarray,
    extent_mm: float,
    spacing_mm: float,
    correlation_mm: float,
    sd: float,
    n_components: int = 1,
) -> SmoothField:
    """Gaussian random field with (approximately) unit-variance-scaled amplitude ``sd``.

    White noise on a cubic coarse grid (side ``extent_mm``, step ``spacing_mm``) is smoothed
    with a Gaussian of FWHM ``correlation_mm`` and rescaled so that each component has
    standard deviation ``sd`` over the grid.

    Parameters
    ----------
    rng
        Random generator.
    centre
        World centre of the coarse grid (mm).
    extent_mm, spacing_mm
        Side length and step of the coarse grid.
    correlation_mm
        FWHM of the Gaussian smoothing.
    sd
        Standard deviation of each component.
    n_components
        Number of independent components.

    Returns
    -------
    SmoothField
    """
    n = int(np.ceil(extent_mm / spacing_mm)) + 1
    sigma = correlation_mm / 2.3548 / spacing_mm
    vals = rng.standard_normal((n_components, n, n, n))
    for k in range(n_components):
        vals[k] = ndi.gaussian_filter(vals[k], sigma, mode="wrap")
        std = vals[k].std()
        vals[k] *= sd / std if std > 0 else 0.0
    grid = Grid.centred((n, n, n), spacing_mm, np.asarray(centre, dtype=float))
    return SmoothField(vals, grid.affine)


def add_rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``signal`` plus complex Gaussian noise of SD ``sigma`` per channel.

    ``sigma <= 0`` or non-finite returns a float32 copy of ``signal`` (noise-free mode).
    """
    sig = np.asarray(signal, dtype=np.float32)
    if not np.isfinite(sigma) or sigma <= 0:
        return sig.copy()
    real = sig + rng.standard_normal(sig.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(sig.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imag * imag)


def block_mean(arr: np.ndarray, affine: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Average ``factor``^3 blocks (crop to a multiple) and return ``(array, new_affine)``."""
    if factor <= 1:
        return arr.astype(np.float32, copy=False), affine
    f = int(factor)
    return block_reduce(arr.astype(np.float32), f), block_affine(affine, f)


def reorient(
    data: np.ndarray, affine: np.ndarray, orientation: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Store an RAS-ordered array in another axis orientation (e.g. ``"LAS"``, ``"LPI"``).

    Returns ``(data, affine, ornt)`` where ``ornt`` is the nibabel transform that was applied
    (identity for ``None``/``"RAS"``). The world positions of all voxels are unchanged.
    """
    import nibabel.orientations as nbo

    if orientation is None or orientation.upper() == "RAS":
        return data, affine, nbo.axcodes2ornt(("R", "A", "S"))
    codes = tuple(orientation.upper())
    alias = {"I": "I", "S": "S", "L": "L", "R": "R", "A": "A", "P": "P"}
    if len(codes) != 3 or any(c not in alias for c in codes):
        raise ValueError(f"orientation must be three axis codes like 'LAS', got {orientation!r}")
    start = nbo.io_orientation(affine)
    target = nbo.axcodes2ornt(codes)
    xform = nbo.ornt_transform(start, target)
    out = nbo.apply_orientation(data, xform)
    new_aff = affine @ nbo.inv_ornt_aff(xform, data.shape[:3])
    return np.ascontiguousarray(out), new_aff, xform


def power_fd(params: np.ndarray, radius: float = 50.0) -> np.ndarray:
    """Power framewise displacement (mm) of a ``(T, 6)`` parameter array; FD[0] = 0.

    :func:`isyb_dask.qc.motion.framewise_displacement` (the one FD) padded with a leading 0.
    """
    from isyb_dask.qc.motion import framewise_displacement

    return np.concatenate([[0.0], framewise_displacement(params, radius=radius)])
