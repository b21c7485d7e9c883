"""Framewise displacement (Power et al. 2012) and its MRIQC summaries (METHODS §6).

FD_t = |Δtrans_x| + |Δtrans_y| + |Δtrans_z| + r (|Δrot_x| + |Δrot_y| + |Δrot_z|) for
t = 2..T, with translations in mm, rotations in radians and r the head radius (mm), i.e.
the arc length of a rotation on a sphere of radius r. Identical to nipype
``FramewiseDisplacement`` (``normalize=False``) once its parameters are in
(trans, rot-in-radians) order, which is what :func:`isyb_dask.bold.hmc.realign_series`
returns.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fd_summary", "framewise_displacement"]


def framewise_displacement(params: np.ndarray, radius: float = 50.0) -> np.ndarray:
    """Power framewise displacement of a motion-parameter series.

    Parameters
    ----------
    params
        ``(T, 6)`` array: ``trans_x, trans_y, trans_z`` (mm), ``rot_x, rot_y, rot_z``
        (radians). Columns beyond the sixth are ignored.
    radius
        Head radius in mm that converts rotations to displacements (Power: 50 mm).

    Returns
    -------
    numpy.ndarray
        ``T - 1`` float64 values in mm; element ``i`` is the displacement between volumes
        ``i`` and ``i + 1``.

    Raises
    ------
    ValueError
        If ``params`` is not 2-D with at least 6 columns, or radius is not positive.
    """
    pars = np.asarray(params, dtype=np.float64)
    if pars.ndim != 2 or pars.shape[1] < 6:
        raise ValueError(f"motion parameters must be (T, 6), got shape {pars.shape}")
    if not radius > 0:
        raise ValueError(f"FD radius must be positive, got {radius}")
    diff = np.abs(np.diff(pars[:, :6], axis=0))
    return diff[:, :3].sum(axis=1) + radius * diff[:, 3:].sum(axis=1)


def fd_summary(fd: np.ndarray, threshold: float = 0.2) -> dict[str, float]:
    """MRIQC FD summaries ``fd_mean``, ``fd_num`` and ``fd_perc``.

    Parameters
    ----------
    fd
        The ``T - 1`` FD values of a run (see :func:`framewise_displacement`).
    threshold
        Per-volume FD threshold in mm (MRIQC ``fd_thres``, default 0.2).

    Returns
    -------
    dict
        ``fd_mean`` = mean of the T-1 values; ``fd_num`` = number of values strictly above
        ``threshold``; ``fd_perc`` = 100 * fd_num / T, i.e. the percentage of the *T
        volumes* (MRIQC divides by ``len(fd) + 1``, not by the number of FD values).

    Raises
    ------
    ValueError
        If ``fd`` is empty.
    """
    vals = np.asarray(fd, dtype=np.float64).ravel()
    if vals.size == 0:
        raise ValueError("FD series is empty (need at least 2 volumes)")
    num = int(np.count_nonzero(vals > threshold))
    return {
        "fd_mean": float(vals.mean()),
        "fd_num": float(num),
        "fd_perc": float(100.0 * num / (vals.size + 1)),
    }
