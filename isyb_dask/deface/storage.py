"""How a defaced image is stored: its on-disk dtype and the cast into it."""

from __future__ import annotations

import nibabel as nb
import numpy as np

__all__ = ["cast_like", "output_dtype"]


def output_dtype(img: nb.Nifti1Image, data: np.ndarray) -> np.dtype:
    """On-disk dtype of a defaced image: the input's, unless its integers are scaled.

    Scaled integers (``scl_slope`` != 1 or ``scl_inter`` != 0, e.g. SPM's uint8 templates or
    Philips data converted by dcm2niix) cannot hold the real values after defacing, so the
    output is float32. nibabel moves a loaded image's scaling from the header to its array
    proxy, so the proxy is asked first; an in-memory float array behind an integer header
    dtype is treated the same way.
    """
    dtype = img.get_data_dtype()
    slope = getattr(img.dataobj, "slope", None)
    inter = getattr(img.dataobj, "inter", None)
    if slope is None:
        slope, inter = img.header.get_slope_inter()
    scaled = slope is not None and (float(slope) != 1.0 or float(inter or 0.0) != 0.0)
    if scaled or (np.issubdtype(dtype, np.integer) and not np.issubdtype(data.dtype, np.integer)):
        return np.dtype(np.float32)
    return np.dtype(dtype)


def cast_like(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``arr`` in ``dtype``: integers rounded and clipped to the type's range (no wrap-around)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(arr), info.min, info.max).astype(dtype)
    return arr.astype(dtype)
