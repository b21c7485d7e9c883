"""Registration: SimpleITK affine/rigid registration and the grid conventions it uses.

* :mod:`isyb_dask.registration.grid`: nibabel <-> SimpleITK images (RAS <-> LPS), closest-
  canonical reorientation, resampling, down-sampling, thread pinning;
* :mod:`isyb_dask.registration.affine`: the multi-resolution rigid/affine registration
  (:func:`register_affine`);
* :mod:`isyb_dask.registration.checks`: the plausibility check of its result;
* :mod:`isyb_dask.registration.heads`: template heads on the registration grid, read once per
  process and shared by the atlas and deface registrations.

Callers use the package namespace (``from isyb_dask import registration as reg``;
``reg.register_affine``); tests that count registrations patch ``register_affine`` here.
"""

from isyb_dask.registration.affine import AffineRegistration, register_affine
from isyb_dask.registration.checks import PlausibilityLimits, check_transform
from isyb_dask.registration.grid import (  # noqa: F401  (_as_affine, _lps_matrix: deface.builder)
    _as_affine,
    _lps_matrix,
    affine_from_lps,
    compose_affine,
    downsample,
    from_canonical,
    matrix_ras,
    resample_to,
    sitk_affine,
    sitk_threads,
    sitk_to_array,
    to_canonical,
    to_sitk,
    transform_from_ras,
)

__all__ = [
    "AffineRegistration",
    "affine_from_lps",
    "PlausibilityLimits",
    "check_transform",
    "compose_affine",
    "downsample",
    "from_canonical",
    "matrix_ras",
    "register_affine",
    "resample_to",
    "sitk_affine",
    "sitk_threads",
    "sitk_to_array",
    "to_canonical",
    "to_sitk",
    "transform_from_ras",
]
