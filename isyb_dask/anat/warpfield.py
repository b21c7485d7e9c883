"""Dense displacement fields in RAS millimetres, and their exchange with ANTs and ITK.

A :class:`DenseField` is a point map ``y = x + u(x)`` sampled on a voxel grid (``data[i, j, k]``
is the displacement, RAS mm, at the grid point ``affine @ (i, j, k, 1)``), evaluated between
grid points by trilinear interpolation and, outside the grid, with the displacement of the
nearest edge point. ANTs and ITK store displacements in LPS; the conversion happens only in
:func:`field_from_ants` and :meth:`DenseField.to_sitk_transform`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi

__all__ = [
    "DenseField",
    "ants_from_array",
    "field_from_ants",
    "grid_points",
    "seeded_registration",
    "syn_fields",
]

_LPS = np.diag([-1.0, -1.0, 1.0])


def seeded_registration(fixed, moving, *, random_seed: int, **kwargs):
    """``ants.registration`` with its random sampling seeded, so that a run is repeatable.

    antspyx does not forward a ``random_seed`` keyword to ``antsRegistration``: the
    ``--random-seed`` option is only added from ``ants.config._random_seed`` (set by
    ``ants.set_ants_deterministic``). Without it every call draws its metric samples from a
    time-based seed and two runs of the same subject give different warps. The seed is set
    for this call only and the previous value restored.
    """
    import ants
    import ants.config

    previous = ants.config._random_seed
    ants.config._random_seed = int(random_seed)
    try:
        return ants.registration(fixed, moving, **kwargs)
    finally:
        ants.config._random_seed = previous


def grid_points(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World coordinates ``(X, Y, Z, 3)`` of every voxel centre of a grid."""
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape[:3]],
                               indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def ants_from_array(data: np.ndarray, affine: np.ndarray):
    """ANTsImage (float32) of a 3-D array with a voxel-to-RAS affine."""
    import ants

    affine = np.asarray(affine, dtype=np.float64)
    spacing = voxel_sizes(affine)
    direction = _LPS @ affine[:3, :3] / spacing
    origin = _LPS @ affine[:3, 3]
    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=origin.tolist(),
        spacing=spacing.tolist(),
        direction=direction,
    )


def _ants_affine(img) -> np.ndarray:
    aff = np.eye(4)
    direction = np.asarray(img.direction, dtype=np.float64).reshape(3, 3)
    aff[:3, :3] = _LPS @ direction * np.asarray(img.spacing, dtype=np.float64)
    aff[:3, 3] = _LPS @ np.asarray(img.origin, dtype=np.float64)
    return aff


@dataclass(frozen=True, eq=False)
class DenseField:
    """Point map ``y = x + u(x)`` with ``u`` sampled on a grid (RAS mm).

    Attributes
    ----------
    data
        ``(X, Y, Z, 3)`` float32 displacement in RAS mm.
    affine
        Voxel-to-RAS affine of the grid.
    """

    data: np.ndarray
    affine: np.ndarray
    _inv_affine: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.data.ndim != 4 or self.data.shape[-1] != 3:
            raise ValueError(f"DenseField: expected (X, Y, Z, 3), got {self.data.shape}")
        object.__setattr__(self, "_inv_affine", np.linalg.inv(self.affine))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape."""
        return tuple(int(n) for n in self.data.shape[:3])  # type: ignore[return-value]

    def displacement(self, xyz: np.ndarray) -> np.ndarray:
        """Trilinear displacement at world points ``(N, 3)``; edge value outside the grid."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        ijk = xyz @ self._inv_affine[:3, :3].T + self._inv_affine[:3, 3]
        for ax, n in enumerate(self.shape):
            np.clip(ijk[:, ax], 0.0, n - 1.0, out=ijk[:, ax])
        out = np.empty_like(xyz)
        for c in range(3):
            out[:, c] = ndi.map_coordinates(self.data[..., c], ijk.T, order=1, mode="nearest")
        return out

    def __call__(self, xyz: np.ndarray) -> np.ndarray:
        """Mapped points ``x + u(x)`` of ``(N, 3)`` world points."""
        xyz = np.asarray(xyz, dtype=np.float64)
        return (xyz.reshape(-1, 3) + self.displacement(xyz)).reshape(xyz.shape)

    def then(self, other: "DenseField") -> "DenseField":
        """The composition ``other(self(x))`` sampled on this field's grid."""
        pts = grid_points(self.shape, self.affine).reshape(-1, 3)
        mapped = other(self(pts))
        disp = (mapped - pts).reshape(self.data.shape).astype(np.float32)
        return DenseField(disp, self.affine.copy())

    def log_jacobian(self) -> np.ndarray:
        """``log det(I + du/dx)`` on the grid (volume of the image per unit grid volume)."""
        lin = self.affine[:3, :3]
        grads = np.stack(
            [np.stack(np.gradient(self.data[..., c].astype(np.float64), axis=(0, 1, 2)), -1)
             for c in range(3)], axis=-2)  # (..., comp, voxel axis)
        jac = np.eye(3) + grads @ np.linalg.inv(lin)
        det = np.linalg.det(jac)
        return np.log(np.clip(det, 1e-6, None)).astype(np.float32)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as a 4-D NIfTI (RAS displacement in the last axis)."""
        path = Path(path)
        nb.save(nb.Nifti1Image(self.data.astype(np.float32), self.affine), str(path))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "DenseField":
        """Inverse of :meth:`save`."""
        img = nb.load(str(path))
        return cls(np.asarray(img.dataobj, dtype=np.float32), img.affine.copy())

    def to_sitk_transform(self):
        """SimpleITK ``DisplacementFieldTransform`` equivalent to this field (LPS)."""
        import SimpleITK as sitk

        spacing = voxel_sizes(self.affine)
        direction = _LPS @ self.affine[:3, :3] / spacing
        vec = (self.data.astype(np.float64) @ _LPS.T).transpose(2, 1, 0, 3)
        img = sitk.GetImageFromArray(np.ascontiguousarray(vec), isVector=True)
        img.SetSpacing([float(s) for s in spacing])
        img.SetOrigin([float(o) for o in _LPS @ self.affine[:3, 3]])
        img.SetDirection([float(d) for d in direction.ravel()])
        return sitk.DisplacementFieldTransform(img)


def field_from_ants(
    reference_data: np.ndarray,
    reference_affine: np.ndarray,
    transforms: list[str],
    whichtoinvert: list[bool] | None = None,
) -> DenseField:
    """Compose ANTs transforms into one :class:`DenseField` on a reference grid.

    ``transforms`` is in ``antsApplyTransforms`` order for resampling an image onto the
    reference grid, so the resulting field maps reference-grid points to the points where
    that image is sampled.
    """
    import ants

    ref = ants_from_array(reference_data, reference_affine)
    with tempfile.TemporaryDirectory(prefix="isyb-warp-") as tmp:
        out = ants.apply_transforms(
            fixed=ref, moving=ref, transformlist=list(transforms),
            whichtoinvert=whichtoinvert, compose=str(Path(tmp) / "comp"),
        )
        warp = ants.image_read(out)
        disp = np.asarray(warp.numpy(), dtype=np.float64)
        aff = _ants_affine(warp)
    return DenseField((disp @ _LPS.T).astype(np.float32), aff)


def _ants_affine_lps(path: str) -> np.ndarray:
    """4x4 LPS matrix of an ANTs ``*GenericAffine.mat`` (fixed point -> moving point)."""
    import ants

    tx = ants.read_transform(path)
    par = np.asarray(tx.parameters, dtype=np.float64)
    centre = np.asarray(tx.fixed_parameters, dtype=np.float64)[:3]
    lin = par[:9].reshape(3, 3)
    out = np.eye(4)
    out[:3, :3] = lin
    out[:3, 3] = par[9:12] + centre - lin @ centre
    return out


def _warp_lps(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z, 3) LPS displacement of an ANTs warp file and its voxel-to-RAS affine."""
    import ants

    warp = ants.image_read(path)
    return np.asarray(warp.numpy(), dtype=np.float64), _ants_affine(warp)


def syn_fields(
    fwdtransforms: list[str],
    invtransforms: list[str],
    moving_shape: tuple[int, int, int],
    moving_affine: np.ndarray,
) -> tuple[DenseField, DenseField]:
    """Both dense fields of an ANTs ``SyN`` result, composed in NumPy.

    ``ants.registration(type_of_transform="SyN")`` returns ``[Warp, Affine]`` (forward) and
    ``[Affine, InverseWarp]`` (inverse, the affine to be inverted), the warps on the fixed
    grid. For a fixed-grid point ``x`` the forward map is ``A(x + u(x))`` and, for a point
    ``y`` of the moving grid, the inverse map is ``z + v(z)`` with ``z = A^-1(y)`` (``v``
    trilinear, 0 outside the fixed grid as in ITK's displacement-field transform). This equals
    :func:`field_from_ants` on the same grids (antsApplyTransforms ``--compose``) without
    writing and reading two composed fields.

    Returns
    -------
    (DenseField, DenseField)
        Forward field on the fixed grid (fixed point -> moving point) and inverse field on the
        moving grid (moving point -> fixed point), RAS mm.
    """
    if len(fwdtransforms) != 2 or len(invtransforms) != 2:
        raise ValueError("syn_fields expects the two transforms of a SyN registration")
    u, fixed_aff = _warp_lps(fwdtransforms[0])
    v, _ = _warp_lps(invtransforms[1])
    a = _ants_affine_lps(fwdtransforms[1])
    # forward, on the fixed grid (LPS throughout, RAS displacement at the end)
    x = grid_points(u.shape[:3], fixed_aff) @ _LPS.T
    y = (x + u) @ a[:3, :3].T + a[:3, 3]
    fwd = DenseField(((y - x) @ _LPS.T).astype(np.float32), fixed_aff)
    # inverse, on the moving grid
    pts = grid_points(tuple(moving_shape), moving_affine).reshape(-1, 3) @ _LPS.T
    ainv = np.linalg.inv(a)
    z = pts @ ainv[:3, :3].T + ainv[:3, 3]
    inv_f = np.linalg.inv(fixed_aff)
    ijk = (z @ _LPS.T) @ inv_f[:3, :3].T + inv_f[:3, 3]
    # ITK's displacement-field transform: linear inside the buffer, the edge value within half
    # a voxel of it, 0 beyond
    inside = np.all((ijk >= -0.5) & (ijk <= np.asarray(v.shape[:3]) - 0.5), axis=1)
    disp = np.stack([ndi.map_coordinates(v[..., c], ijk.T, order=1, mode="nearest")
                     for c in range(3)], axis=1)
    disp[~inside] = 0.0
    back = z + disp
    inv = DenseField(((back - pts) @ _LPS.T).reshape(*moving_shape, 3).astype(np.float32),
                     np.asarray(moving_affine, dtype=np.float64).copy())
    return fwd, inv
