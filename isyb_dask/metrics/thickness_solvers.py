"""Iterative solvers of the thickness PDEs on a list of grid voxels (:mod:`.thickness`).

Both equations are solved on the GM voxels only, through neighbour index tables: the
7-point Laplace equation for ``u`` and the upwind Eulerian length equations for ``L0`` and
``L1`` (Yezzi & Prince 2003). The sweeps are red-black Gauss-Seidel: a voxel's six face
neighbours have the other parity of ``i + j + k``, so one colour is updated at once from
the other's newest values. The fixed points are Jacobi's; on a 1 mm head the sweeps drop
from 80 / 40 / 42 to 44 / 22 / 23 and the thickness stays within 2e-3 mm.
"""

from __future__ import annotations

import numpy as np

__all__ = ["colours", "neighbours", "solve_laplace", "solve_length"]


def neighbours(flat_idx: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(n, 6) flat indices of the -x, +x, -y, +y, -z, +z neighbours (clipped at edges)."""
    coords = np.unravel_index(flat_idx, shape)
    out = np.empty((flat_idx.size, 6), dtype=np.int64)
    for ax in range(3):
        for k, step in enumerate((-1, 1)):
            c = [np.asarray(a) for a in coords]
            c[ax] = np.clip(c[ax] + step, 0, shape[ax] - 1)
            out[:, 2 * ax + k] = np.ravel_multi_index(tuple(c), shape)
    return out


def colours(flat_idx: np.ndarray, shape: tuple[int, ...], parity: int = 0) -> list[np.ndarray]:
    """Positions in ``flat_idx`` of the "red" and "black" voxels ((i + j + k) even / odd).

    The six face neighbours of a voxel have the other colour, so all voxels of one colour
    can be updated at once from the other's newest values (red-black Gauss-Seidel).
    ``parity`` is that of the grid's origin in a larger grid (a crop), so that a crop
    sweeps its voxels in the same order as the whole grid.
    """
    parity = (np.add.reduce(np.unravel_index(flat_idx, shape)) + int(parity)) & 1
    return [np.flatnonzero(parity == 0), np.flatnonzero(parity == 1)]


def solve_laplace(
    u0: np.ndarray, gm_idx: np.ndarray, nbr: np.ndarray, zooms: tuple[float, ...],
    init: np.ndarray, max_iter: int, tol: float, shape: tuple[int, ...], parity: int = 0,
) -> tuple[np.ndarray, int]:
    """Red-black Gauss-Seidel sweeps of the 7-point Laplace equation in the GM.

    ``u0`` holds the boundary values on the flattened grid of shape ``shape`` (0 in the WM,
    1 outside); ``gm_idx`` are the free (GM) voxels, ``nbr`` their face neighbours
    (:func:`neighbours`) and ``init`` their starting values. The discrete equation is
    Jacobi's; each sweep updates the red voxels from the black ones, then the black from the
    new red, which halves the sweeps to the same tolerance (largest change of a sweep below
    ``tol``) and gives the same thickness (to 2e-3 mm on a 1 mm head). Over-relaxation was tried and dropped: it converges in fewer sweeps but moves the
    length solutions where the gradient of ``u`` vanishes (isolated GM pockets).
    """
    u = np.array(u0, dtype=np.float64).ravel()
    u[gm_idx] = init
    w = np.repeat(1.0 / np.asarray(zooms, dtype=np.float64) ** 2, 2)
    wsum = w.sum()
    parts = [(gm_idx[c], (nbr[c],)) for c in colours(gm_idx, shape, parity)]
    return u, _sweep(u, parts, lambda nb: (u[nb] @ w) / wsum, max_iter, tol)


def _sweep(values: np.ndarray, parts: list, update, max_iter: int, tol: float) -> int:
    """Red-black sweeps of ``values`` in place until the largest change is below ``tol``.

    ``parts`` holds, per colour, the flat indices it updates and the arguments of
    ``update``, which returns their new values from the current ``values``. Returns the
    number of sweeps.
    """
    it = 0
    for it in range(1, max_iter + 1):
        delta = 0.0
        for idx, args in parts:
            new = update(*args)
            if new.size:
                delta = max(delta, float(np.max(np.abs(new - values[idx]))))
            values[idx] = new
        if delta < tol:
            break
    return it


def solve_length(
    tangent: np.ndarray, gm_idx: np.ndarray, nbr: np.ndarray, zooms: tuple[float, ...],
    fixed_idx: np.ndarray, fixed_val: np.ndarray, upwind_sign: int, max_iter: int,
    tol: float, n_total: int, cap: np.ndarray, shape: tuple[int, ...], parity: int = 0,
) -> tuple[np.ndarray, int]:
    """Red-black Gauss-Seidel sweeps of the upwind Eulerian length equation.

    ``tangent`` is the unit streamline direction at the GM voxels ``gm_idx`` (flat indices
    into a grid of ``n_total`` voxels and shape ``shape``), ``nbr`` their face neighbours;
    the voxels ``fixed_idx`` hold the boundary lengths ``fixed_val``. ``upwind_sign`` = +1
    for L0 (look against T, towards the WM), -1 for L1. ``cap`` (per GM voxel) bounds the
    length: near saddles of ``u`` two voxels can be upwind of each other and the plain
    iteration would grow without bound. The upwind neighbours of a voxel are face
    neighbours, so they have the other colour (``parity``: as in :func:`colours`).

    Returns
    -------
    (numpy.ndarray, int)
        Lengths on the flat grid (NaN away from the GM and the boundary) and the sweeps run.
    """
    length = np.full(n_total, np.nan)
    length[fixed_idx] = fixed_val
    is_fixed = np.zeros(length.size, dtype=bool)
    is_fixed[fixed_idx] = True
    free = ~is_fixed[gm_idx]
    cols, weights = [], []
    for ax in range(3):
        t = upwind_sign * tangent[:, ax]
        # neighbour in direction -sign(t) along this axis
        col = np.where(t >= 0, nbr[:, 2 * ax], nbr[:, 2 * ax + 1])
        cols.append(col)
        weights.append(np.abs(t) / zooms[ax])
    cols_a = np.stack(cols, axis=1)[free]
    w_a = np.stack(weights, axis=1)[free]
    target = gm_idx[free]
    cap_free = cap[free]
    length[target] = 0.0
    # neighbours that are neither GM nor fixed contribute nothing (weights dropped)
    known = is_fixed.copy()
    known[gm_idx] = True
    w_all = w_a.sum(axis=1)
    w_a = w_a * known[cols_a]
    # unknown upwind neighbours drop out; keep the denominator from collapsing
    wsum = np.maximum(w_a.sum(axis=1), 0.5 * w_all)
    ok = wsum > 0
    wsum = np.where(ok, wsum, 1.0)
    parts = [(target[g], (cols_a[g], w_a[g], wsum[g], ok[g], cap_free[g]))
             for g in colours(target, shape, parity)]

    def update(col, wt, ws, good, cp):
        vals = np.nan_to_num(length[col])
        return np.minimum(np.where(good, (1.0 + (wt * vals).sum(axis=1)) / ws, 0.0), cp)

    return length, _sweep(length, parts, update, max_iter, tol)
