"""Moved: head-motion correction is shared preprocessing and lives in :mod:`isyb_dask.bold.hmc`
(parameter geometry in :mod:`isyb_dask.bold.rigid`). This module only re-exports them for
code written against the old location."""

from isyb_dask.bold.hmc import apply_parameters, realign_series
from isyb_dask.bold.rigid import (
    PARAM_NAMES,
    params_from_matrix,
    rigid_matrix,
    rotation_center,
    volume_to_sitk,
)

__all__ = [
    "PARAM_NAMES",
    "apply_parameters",
    "params_from_matrix",
    "realign_series",
    "rigid_matrix",
    "rotation_center",
    "volume_to_sitk",
]
