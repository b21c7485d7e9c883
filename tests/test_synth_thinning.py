"""The generated study's planted cortical thinning is found by the computed CT."""

from __future__ import annotations

import dataclasses

import numpy as np
from isyb_dask.synth.anatomy import draw_anatomy, load_template_maps
from isyb_dask.synth.fields import Grid
from isyb_dask.synth.t1w import synth_t1w


def test_thinning_truth_is_drawn_and_recorded():
    maps = load_template_maps(2)
    flags = []
    for seed in range(8):
        anat = draw_anatomy(np.random.default_rng(seed), "chinese", "M", maps)
        t = anat.thinning
        assert t["radius_mm"] == 15.0 and t["planted_thinning_mm"] == 0.8
        assert t["thinning_mm"] in (0.0, 0.8) and (t["thinning_mm"] > 0) == t["thinned"]
        assert t["centre_mni_mm"][0] < -20  # left lateral convexity
        flags.append(t["thinned"])
    assert 0 < sum(flags) < 8  # some subjects thinned, some not


def test_computed_ct_finds_the_planted_thinning():
    """Twin comparison on a 1 mm box around the patch (same anatomy and noise, thinning on
    vs off); posteriors from the metrics stage's N4 + GMM with the truth maps as priors.

    The planted 0.8 mm is the depth of the shell of the image's cortex that is turned into
    CSF; its outer voxels are partly CSF already, so the GM it removes is the truth's
    ``removed`` fraction, not a full 0.8 mm layer. At constant cortical area thickness scales
    with GM volume, so the expected change of the mean CT in the 10 mm core is
    ``CT_off x (truth GM removed in the core) / (truth GM in the core)``.
    """
    from isyb_dask.metrics import gmv
    from isyb_dask.metrics.thickness import laplace_thickness

    maps = load_template_maps(1)
    anat = draw_anatomy(np.random.default_rng(3), "chinese", "M", maps)
    centre = anat.to_scanner(np.asarray(anat.thinning["centre_template_mm"])[:, None])[:, 0]
    grid = Grid.centred((72, 72, 72), 1.0, centre)
    xyz = np.indices(grid.shape).reshape(3, -1).T @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    dist = np.linalg.norm(xyz - centre, axis=1).reshape(grid.shape)
    ct, truth_gm = {}, {}
    priors = None
    for on in (False, True):  # the unthinned twin's truth maps are the priors of both
        spec = dict(anat.thinning, thinning_mm=0.8 if on else 0.0)
        out = synth_t1w(
            dataclasses.replace(anat, thinning=spec), maps, grid, np.random.default_rng(5),
            snr=40.0, gain=2.5,
        )
        if on:
            assert out["thinning"]["removed_gm_ml"] > 0.3
        brain = out["brain"] > 0.5
        if priors is None:
            priors = np.stack([out["csf"], out["gm"], out["wm"]])
        _, info = gmv.gm_probability(out["t1w"].astype(np.float32), (1.0,) * 3, brain, priors)
        post = info["posteriors"]
        res = laplace_thickness(post[1], post[2], (1.0, 1.0, 1.0))
        core = res.gm & (dist < 10.0)
        ct[on] = float(np.mean(res.thickness[core]))
        truth_gm[on] = float(out["gm"][dist < 10.0].sum())
    removed = 1.0 - truth_gm[True] / truth_gm[False]
    expected = -ct[False] * removed  # measured: 9.6 % of the core's GM, -0.33 mm
    diff = ct[True] - ct[False]  # measured: -0.34 mm
    assert 0.05 < removed < 0.2
    assert diff < 0  # right sign
    # measured 3 % apart (0.34 against 0.33 mm); a third of a 1 mm voxel is resolved only
    # through partial volume, so the bound is five times the measured gap
    assert abs(diff - expected) <= 0.15 * abs(expected), (ct, diff, expected)
