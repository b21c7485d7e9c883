"""Rigid-body geometry of the head-motion parameters (one convention for every stage).

A parameter row ``(trans_x, trans_y, trans_z, rot_x, rot_y, rot_z)`` (mm, radians) maps a
reference point ``p`` (world RAS mm of the NIfTI affine) to ``R (p - c) + c + d`` with
``R = Rz Ry Rx`` and ``c`` the world centre of the voxel grid (:func:`rotation_center`); see
:mod:`isyb_dask.bold.hmc` for how the parameters are estimated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from isyb_dask.rigid import rigid_matrix as _shared_rigid_matrix

__all__ = [
    "PARAM_NAMES",
    "apply_parameters",
    "params_from_matrix",
    "rigid_matrix",
    "rotation_center",
    "to_sitk_affine",
    "volume_to_sitk",
]

PARAM_NAMES = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def _geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin, spacing and orthonormal direction of a NIfTI (RAS) affine."""
    aff = np.asarray(affine, dtype=np.float64)
    lin = aff[:3, :3]
    spacing = np.sqrt((lin**2).sum(axis=0))
    direction = lin / spacing
    # Remove any small shear by the nearest orthonormal matrix (polar decomposition).
    u, _, vt = np.linalg.svd(direction)
    direction = u @ vt
    return aff[:3, 3].copy(), spacing, direction


def volume_to_sitk(volume: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """3-D ``(X, Y, Z)`` array -> float32 SimpleITK image in the affine's (RAS) world space.

    Parameters
    ----------
    volume
        3-D array indexed ``[i, j, k]`` as nibabel returns it.
    affine
        4x4 voxel-to-world affine (RAS mm). Shears are removed (nearest orthonormal
        direction matrix).

    Returns
    -------
    SimpleITK.Image
        Float32 image whose physical points equal ``affine @ [i, j, k, 1]``.
    """
    origin, spacing, direction = _geometry(affine)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume, np.float32).T))
    img.SetOrigin(tuple(float(v) for v in origin))
    img.SetSpacing(tuple(float(v) for v in spacing))
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    return img


def rotation_center(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World (mm) position of the centre of the voxel grid, the rotation centre used here.

    Parameters
    ----------
    shape
        Spatial shape ``(X, Y, Z)``.
    affine
        4x4 voxel-to-world affine.

    Returns
    -------
    numpy.ndarray
        ``affine @ [(X-1)/2, (Y-1)/2, (Z-1)/2, 1]`` (first three entries).
    """
    centre = (np.asarray(shape[:3], dtype=np.float64) - 1.0) / 2.0
    return (np.asarray(affine, dtype=np.float64) @ np.append(centre, 1.0))[:3]


def rigid_matrix(params: Sequence[float], center: Sequence[float]) -> np.ndarray:
    """4x4 world matrix of one parameter row (reference point -> volume point).

    The project's one rigid convention (:func:`isyb_dask.rigid.rigid_matrix`), under the
    name and argument order motion correction uses.

    Parameters
    ----------
    params
        ``(trans_x, trans_y, trans_z, rot_x, rot_y, rot_z)`` in mm and radians.
    center
        Rotation centre in world mm (see :func:`rotation_center`).

    Returns
    -------
    numpy.ndarray
        ``M`` with ``M @ [p, 1] = R (p - c) + c + d`` and ``R = Rz Ry Rx``.
    """
    return _shared_rigid_matrix(params, center)


def params_from_matrix(matrix: np.ndarray, center: Sequence[float]) -> np.ndarray:
    """Inverse of :func:`rigid_matrix`: parameters of a rigid 4x4 world matrix.

    Parameters
    ----------
    matrix
        4x4 rigid matrix (reference point -> volume point).
    center
        Rotation centre in world mm.

    Returns
    -------
    numpy.ndarray
        ``(trans_x, trans_y, trans_z, rot_x, rot_y, rot_z)`` with ``R = Rz Ry Rx``.
    """
    rot = np.asarray(matrix, dtype=np.float64)[:3, :3]
    c = np.asarray(center, dtype=np.float64)
    rot_y = -np.arcsin(np.clip(rot[2, 0], -1.0, 1.0))
    rot_x = np.arctan2(rot[2, 1], rot[2, 2])
    rot_z = np.arctan2(rot[1, 0], rot[0, 0])
    trans = np.asarray(matrix)[:3, 3] - c + rot @ c
    return np.array([*trans, rot_x, rot_y, rot_z])


def to_sitk_affine(matrix: np.ndarray) -> sitk.AffineTransform:
    """SimpleITK affine transform of a 4x4 world matrix (no LPS flip: see the module)."""
    tfm = sitk.AffineTransform(3)
    tfm.SetMatrix(tuple(float(v) for v in matrix[:3, :3].ravel()))
    tfm.SetTranslation(tuple(float(v) for v in matrix[:3, 3]))
    return tfm


def apply_parameters(
    data: np.ndarray, affine: np.ndarray, params: np.ndarray, *, threads: int = 1
) -> np.ndarray:
    """Resample every volume with known motion parameters (no estimation).

    This is the last step of :func:`realign_series` on its own: it lets a later stage (BOLD
    preprocessing after slice-timing correction) reuse the parameters estimated once on the
    raw series, as fMRIPrep does, instead of estimating them again.

    Parameters
    ----------
    data
        Series ``(X, Y, Z, T)``.
    affine
        Its voxel-to-world affine (the grid the parameters were estimated on).
    params
        ``(T, 6)`` rows as returned by :func:`realign_series`.
    threads
        SimpleITK threads.

    Returns
    -------
    numpy.ndarray
        Float32 series on the reference grid (0 outside the field of view).
    """
    arr = np.asarray(data)
    params = np.asarray(params, dtype=np.float64)
    if arr.ndim != 4 or params.shape != (arr.shape[3], 6):
        raise ValueError(f"need (X,Y,Z,T) data and (T,6) params, got {arr.shape}, {params.shape}")
    center = rotation_center(arr.shape, affine)
    reference = volume_to_sitk(np.asarray(arr[..., 0], dtype=np.float32), affine)
    final = sitk.ResampleImageFilter()
    final.SetReferenceImage(reference)
    final.SetInterpolator(sitk.sitkLinear)
    final.SetDefaultPixelValue(0.0)
    final.SetNumberOfThreads(int(threads))
    out = np.empty(arr.shape, dtype=np.float32)
    for t in range(arr.shape[3]):
        if not params[t].any():  # the reference volume: copied, as realign_series does
            out[..., t] = arr[..., t]
            continue
        final.SetTransform(to_sitk_affine(rigid_matrix(params[t], center)))
        moving = volume_to_sitk(np.asarray(arr[..., t], dtype=np.float32), affine)
        resampled = final.Execute(moving)  # keep the image alive while its buffer is viewed
        out[..., t] = sitk.GetArrayViewFromImage(resampled).T
    return out
