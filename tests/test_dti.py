"""Tests of the WLS tensor fit, FA and MD (against ground truth and dipy)."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest

from isyb_dask.errors import InputError
from isyb_dask.metrics.dti import design_matrix, fa_md, fit_tensor, read_bvals_bvecs


def _directions(n: int, rng: np.random.Generator) -> np.ndarray:
    g = rng.normal(size=(n, 3))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def test_noise_free_tensor_recovered_exactly():
    rng = np.random.default_rng(0)
    bvals = np.r_[0, np.full(30, 1000.0), np.full(30, 2000.0)]
    bvecs = np.vstack([[0, 0, 0], _directions(60, rng)])
    n_vox = 50
    evals_true = np.sort(rng.uniform(0.1e-3, 2.0e-3, size=(n_vox, 3)), axis=1)[:, ::-1]
    rot = np.linalg.qr(rng.normal(size=(n_vox, 3, 3)))[0]
    tensors = np.einsum("nij,nj,nkj->nik", rot, evals_true, rot)
    s0 = rng.uniform(500, 2000, size=n_vox)
    adc = np.einsum("gi,nij,gj->ng", bvecs, tensors, bvecs)
    signal = s0[:, None] * np.exp(-bvals[None] * adc)
    res = fit_tensor(signal.reshape(5, 10, -1), bvals, bvecs)
    assert np.allclose(res.evals.reshape(n_vox, 3), evals_true, rtol=1e-9, atol=1e-15)
    assert np.allclose(res.s0.ravel(), s0, rtol=1e-9)
    lo = res.tensor.reshape(n_vox, 6)
    assert np.allclose(lo[:, [0, 2, 5, 1, 3, 4]],
                       tensors[:, [0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]], atol=1e-15)
    l1, l2, l3 = evals_true.T
    fa_true = np.sqrt(0.5 * ((l1 - l2) ** 2 + (l2 - l3) ** 2 + (l3 - l1) ** 2)
                      / (l1**2 + l2**2 + l3**2))
    # outputs are float32: 1e-6 relative covers their rounding (eps 6e-8)
    assert np.allclose(res.fa.ravel(), fa_true, rtol=1e-6)
    assert np.allclose(res.md.ravel(), evals_true.mean(1), rtol=1e-6)


def test_fa_limits_and_design_matrix():
    fa, md = fa_md(np.array([[1e-3, 1e-3, 1e-3], [1e-3, 0, 0], [0, 0, 0]]))
    assert np.allclose(fa, [0, 1, 0]) and np.allclose(md, [1e-3, 1e-3 / 3, 0])
    b = design_matrix(np.array([1000.0]), np.array([[1.0, 0, 0]]))
    assert np.allclose(b, [[-1000, 0, 0, 0, 0, 0, -1]])


def test_too_few_directions_rejected():
    bvecs = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], float)
    with pytest.raises(InputError, match="directions"):
        fit_tensor(np.ones((2, 5)), np.r_[0, 1000, 1000, 1000, 1000], bvecs)


def _dipy_fit(data, bvals, bvecs):
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    return TensorModel(gradient_table(bvals, bvecs=bvecs), fit_method="WLS").fit(data)


@pytest.mark.parametrize(
    "name, slab",
    [("dipy_small_64D", slice(None)), ("xa30_sub1_dwi_b2500_PA", slice(16, 20))],
)
def test_equals_dipy_wls_on_real_dwi(shared_data, name, slab):
    pytest.importorskip("dipy")
    base = shared_data / "dwi" / name
    data = np.asanyarray(nb.load(f"{base}.nii.gz").dataobj)[:, :, slab].astype(np.float64)
    bvals, bvecs = read_bvals_bvecs(f"{base}.bval", f"{base}.bvec")
    assert np.all(np.isfinite(bvecs))  # the NaN b0 row of dipy_small_64D becomes 0
    ours = fit_tensor(data, bvals, bvecs)
    ref = _dipy_fit(data, bvals, bvecs)
    # Same estimator and floor; the only differences are float32 storage (FA <= 1 so
    # absolute 6e-8) and solver round-off (normal equations vs pinv, ~1e-10 relative).
    brain = data[..., 0] > np.percentile(data[..., 0], 60)
    assert np.abs(ours.fa - ref.fa).max() < 1e-6
    assert np.allclose(ours.md[brain], ref.md[brain], rtol=1e-6, atol=0)
    # background voxels (mostly zero signal, clipped to 1e-4: weights span ~8 decades) are
    # ill-conditioned, so both solvers' round-off shows there
    assert np.allclose(ours.md, ref.md, rtol=1e-5, atol=1e-12)
    assert 0.1 < np.median(ours.fa[brain]) < 0.5
    assert 3e-4 < np.median(ours.md[brain]) < 3e-3
