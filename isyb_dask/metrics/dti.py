"""Diffusion tensor fit by weighted least squares, FA and MD (METHODS §12).

Variant: dipy ``TensorModel(gtab, fit_method="WLS")`` (Chung et al. 2006 two-pass WLS), done
here in numpy over all voxels at once:

1. signals are clipped below at ``min_signal`` (default 1e-4, dipy's MIN_POSITIVE_SIGNAL);
2. design matrix ``B`` (rows per volume) = ``-[b gx^2, 2b gx gy, b gy^2, 2b gx gz, 2b gy gz,
   b gz^2, 1]`` so that ``log S = B @ [Dxx, Dxy, Dyy, Dxz, Dyz, Dzz, -log S0]``;
3. OLS: ``beta0 = pinv(B) log S``; weights ``w = exp(B beta0)`` (the predicted signal), i.e. the
   squared residuals are weighted by ``S_pred^2``; WLS: ``beta = pinv(diag(w) B) (w log S)``;
4. eigenvalues of the tensor (``eigh``, sorted descending) are clipped below at
   ``1e-6 / max(-B)``, the floor dipy's fit functions use (METHODS quotes 0, the
   ``decompose_tensor`` default; the dipy fit passes this tiny positive floor instead);
5. ``FA = sqrt(1/2 ((l1-l2)^2 + (l2-l3)^2 + (l3-l1)^2) / (l1^2 + l2^2 + l3^2))`` (0 when all
   eigenvalues are 0), ``MD = (l1 + l2 + l3) / 3`` in mm^2/s for b in s/mm^2.

b-vectors with non-finite entries (e.g. a ``nan nan nan`` b0 row) are treated as 0.
Voxels outside ``mask`` are 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from isyb_dask.errors import InputError

__all__ = [
    "MIN_POSITIVE_SIGNAL",
    "TensorResult",
    "read_bvals_bvecs",
    "design_matrix",
    "fit_tensor",
    "fa_md",
]

MIN_POSITIVE_SIGNAL = 1e-4
_CHUNK = 20000


@dataclass(frozen=True)
class TensorResult:
    """Output of :func:`fit_tensor`.

    Attributes
    ----------
    fa, md
        float32 maps of the grid shape.
    evals
        ``(..., 3)`` eigenvalues, descending.
    tensor
        ``(..., 6)`` lower-triangular elements ``Dxx, Dxy, Dyy, Dxz, Dyz, Dzz``.
    s0
        Fitted non-diffusion-weighted signal.
    mask
        Boolean mask of fitted voxels.
    """

    fa: np.ndarray
    md: np.ndarray
    evals: np.ndarray
    tensor: np.ndarray
    s0: np.ndarray
    mask: np.ndarray


def read_bvals_bvecs(
    bval_path: str | os.PathLike[str], bvec_path: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Read FSL-style ``.bval``/``.bvec`` files.

    Parameters
    ----------
    bval_path, bvec_path
        Text files; the b-vectors may be laid out 3xN or Nx3.

    Returns
    -------
    bvals, bvecs
        ``(N,)`` and ``(N, 3)`` float arrays; non-finite b-vector entries set to 0.

    Raises
    ------
    InputError
        If the files cannot be parsed or their lengths disagree.
    """
    try:
        bvals = np.loadtxt(bval_path, dtype=np.float64).ravel()
        bvecs = np.loadtxt(bvec_path, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot read b-values/b-vectors {bval_path}, {bvec_path}: {exc}"
        ) from exc
    bvecs = np.atleast_2d(bvecs)
    if bvecs.shape[0] == 3 and bvecs.shape[1] == bvals.size:
        bvecs = bvecs.T
    if bvecs.shape != (bvals.size, 3):
        raise InputError(
            f"{bvec_path}: b-vectors of shape {bvecs.shape} do not match {bvals.size} b-values"
        )
    return bvals, np.nan_to_num(bvecs, nan=0.0, posinf=0.0, neginf=0.0)


def design_matrix(bvals: np.ndarray, bvecs: np.ndarray) -> np.ndarray:
    """Log-linear tensor design matrix, dipy sign convention.

    Parameters
    ----------
    bvals
        ``(N,)`` b-values (s/mm^2).
    bvecs
        ``(N, 3)`` gradient directions; non-finite entries are treated as 0.

    Returns
    -------
    numpy.ndarray
        ``(N, 7)`` matrix ``B`` with ``log S = B @ [Dxx, Dxy, Dyy, Dxz, Dyz, Dzz, -log S0]``.
    """
    b = np.asarray(bvals, dtype=np.float64).ravel()
    g = np.nan_to_num(np.asarray(bvecs, dtype=np.float64).reshape(-1, 3), nan=0.0)
    if g.shape[0] != b.size:
        raise InputError(f"{g.shape[0]} b-vectors for {b.size} b-values")
    gx, gy, gz = g[:, 0], g[:, 1], g[:, 2]
    cols = [b * gx * gx, 2 * b * gx * gy, b * gy * gy, 2 * b * gx * gz, 2 * b * gy * gz,
            b * gz * gz, np.ones_like(b)]
    return -np.stack(cols, axis=1)


def fa_md(evals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional anisotropy and mean diffusivity from eigenvalues.

    Parameters
    ----------
    evals
        ``(..., 3)`` eigenvalues.

    Returns
    -------
    fa, md
        Arrays of shape ``evals.shape[:-1]``.
    """
    ev = np.asarray(evals, dtype=np.float64)
    l1, l2, l3 = ev[..., 0], ev[..., 1], ev[..., 2]
    num = (l1 - l2) ** 2 + (l2 - l3) ** 2 + (l3 - l1) ** 2
    den = (ev * ev).sum(-1)
    all_zero = np.all(ev == 0, axis=-1)
    fa = np.sqrt(0.5 * num / (den + all_zero))
    return fa, ev.mean(-1)


def _fit_chunk(bmat: np.ndarray, pinv_b: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """OLS then WLS for a chunk of voxels (``sig`` is ``(n, g)``, already clipped)."""
    log_s = np.log(sig)
    beta_ols = log_s @ pinv_b.T
    w2 = np.exp(2.0 * (beta_ols @ bmat.T))  # squared predicted signal = WLS weights, (n, g)
    # weighted normal equations on column-scaled B (scaling keeps the 7x7 systems well
    # conditioned; same minimiser as dipy's per-voxel pinv of diag(w) B)
    scale = np.linalg.norm(bmat, axis=0)
    scale[scale == 0] = 1.0
    bs = bmat / scale
    gram = np.einsum("gi,ng,gj->nij", bs, w2, bs)
    rhs = np.einsum("gi,ng->ni", bs, w2 * log_s)
    beta = np.linalg.solve(gram, rhs[..., None])[..., 0] / scale
    # where the weights span many decades (clipped or near-zero signals) the normal equations
    # lose precision: redo those voxels with the SVD-based pseudo-inverse of diag(w) B
    bad = w2.max(axis=1) > 1e6 * w2.min(axis=1)
    bad |= ~np.all(np.isfinite(beta), axis=1)
    if bad.any():
        w = np.sqrt(w2[bad])
        beta[bad] = np.einsum(
            "nij,nj->ni", np.linalg.pinv(bmat[None, :, :] * w[:, :, None]), w * log_s[bad]
        )
    return beta


def fit_tensor(
    data: np.ndarray,
    bvals: np.ndarray,
    bvecs: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    min_signal: float = MIN_POSITIVE_SIGNAL,
) -> TensorResult:
    """Fit the diffusion tensor by two-pass WLS and return FA, MD and the tensor.

    Parameters
    ----------
    data
        ``(..., N)`` DWI signal (grid axes first, volumes last).
    bvals, bvecs
        ``(N,)`` b-values and ``(N, 3)`` directions.
    mask
        Boolean mask over the grid; default all voxels.
    min_signal
        Lower clip of the signal before the log (must be > 0).

    Returns
    -------
    TensorResult
        FA, MD, eigenvalues, tensor, S0 and the mask.

    Raises
    ------
    InputError
        On inconsistent shapes, ``min_signal <= 0`` or fewer than 6 independent directions.
    """
    data = np.asarray(data)
    bmat = design_matrix(bvals, bvecs)
    if data.shape[-1] != bmat.shape[0]:
        raise InputError(f"DWI has {data.shape[-1]} volumes but {bmat.shape[0]} b-values")
    if not min_signal > 0:
        raise InputError(f"min_signal must be > 0, got {min_signal}")
    if np.linalg.matrix_rank(bmat) < 7:
        raise InputError("DWI gradient table has fewer than 6 non-collinear directions "
                         "plus a b0: the tensor is not identifiable")
    grid = data.shape[:-1]
    m = np.ones(grid, bool) if mask is None else np.asarray(mask, bool)
    if m.shape != grid:
        raise InputError(f"DTI mask shape {m.shape} does not match data {grid}")
    sig = np.maximum(data[m].astype(np.float64), min_signal)
    pinv_b = np.linalg.pinv(bmat)
    params = np.zeros((sig.shape[0], 7))
    for start in range(0, sig.shape[0], _CHUNK):  # chunks of voxels bound the memory
        params[start:start + _CHUNK] = _fit_chunk(bmat, pinv_b, sig[start:start + _CHUNK])
    lo = params[:, :6]
    tens = np.empty((lo.shape[0], 3, 3))
    tens[:, 0, 0], tens[:, 1, 1], tens[:, 2, 2] = lo[:, 0], lo[:, 2], lo[:, 5]
    tens[:, 0, 1] = tens[:, 1, 0] = lo[:, 1]
    tens[:, 0, 2] = tens[:, 2, 0] = lo[:, 3]
    tens[:, 1, 2] = tens[:, 2, 1] = lo[:, 4]
    evals = np.linalg.eigvalsh(tens)[:, ::-1]
    evals = np.maximum(evals, 1e-6 / -bmat.min())
    fa_v, md_v = fa_md(evals)

    fa = np.zeros(grid, np.float32)
    md = np.zeros(grid, np.float32)
    ev_out = np.zeros(grid + (3,))
    t_out = np.zeros(grid + (6,))
    s0 = np.zeros(grid)
    fa[m], md[m] = fa_v, md_v
    ev_out[m] = evals
    t_out[m] = lo
    s0[m] = np.exp(np.clip(-params[:, 6], -700.0, 700.0))
    return TensorResult(fa=fa, md=md, evals=ev_out, tensor=t_out, s0=s0, mask=m)
