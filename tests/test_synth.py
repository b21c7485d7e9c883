"""Tests of the synthetic study generator (isyb_dask.synth)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from isyb_dask.errors import ConfigError
from isyb_dask.synth.anatomy import SubjectAnatomy, draw_anatomy, head_extents, load_template_maps
from isyb_dask.synth.asl import pcasl_cbf
from isyb_dask.synth.bold import draw_motion, synth_bold
from isyb_dask.synth.cohort import generate_study
from isyb_dask.synth.dwi import tensor_eigen_stats
from isyb_dask.synth.fields import Grid, SmoothField, power_fd
from isyb_dask.synth.t1w import sample_anatomy, synth_t1w

TRUTH = Path("derivatives") / "synth-truth"


@pytest.fixture(scope="module")
def clean_study(tmp_path_factory) -> Path:
    """One noise-free subject with every modality, T1w at 4 mm, 12 BOLD volumes."""
    out = tmp_path_factory.mktemp("synth") / "bids"
    return generate_study(
        out, 1, "chinese", seed=3, voxel_size=4.0, snr=float("inf"), bold_volumes=12
    )


def _load(path: Path) -> tuple[np.ndarray, nb.Nifti1Image]:
    img = nb.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float64), img


def test_layout_and_sidecars(clean_study: Path) -> None:
    sub = clean_study / "sub-0001"
    desc = json.loads((clean_study / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "raw" and "BIDSVersion" in desc and "License" in desc
    tdesc = json.loads((clean_study / TRUTH / "dataset_description.json").read_text())
    assert tdesc["DatasetType"] == "derivative"
    with open(clean_study / "participants.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [r["participant_id"] for r in rows] == ["sub-0001"]
    assert rows[0]["population"] == "chinese" and 18 <= int(rows[0]["age"]) <= 30
    assert rows[0]["sex"] in {"M", "F"}

    t1, t1img = _load(sub / "anat" / "sub-0001_T1w.nii.gz")
    assert t1img.get_data_dtype() == np.int16 and t1.shape == (48, 64, 64)
    assert 300 < np.percentile(t1[t1 > 0], 99) < 5000

    bold, bimg = _load(sub / "func" / "sub-0001_task-rest_bold.nii.gz")
    assert bold.shape == (44, 54, 40, 12)
    bmeta = json.loads((sub / "func" / "sub-0001_task-rest_bold.json").read_text())
    assert bmeta["TaskName"] == "rest" and bmeta["RepetitionTime"] == 2.0
    st = np.asarray(bmeta["SliceTiming"])
    assert st.shape == (40,) and st.min() == 0 and st.max() < 2.0
    assert bimg.header.get_zooms()[3] == pytest.approx(2.0)

    dwi, _ = _load(sub / "dwi" / "sub-0001_dwi.nii.gz")
    bvals = np.loadtxt(sub / "dwi" / "sub-0001_dwi.bval")
    bvecs = np.loadtxt(sub / "dwi" / "sub-0001_dwi.bvec")
    assert dwi.shape[3] == bvals.size == 32 and bvecs.shape == (3, 32)
    assert (bvals == 0).sum() == 2 and set(np.unique(bvals)) == {0.0, 1000.0}
    norms = np.linalg.norm(bvecs[:, bvals > 0], axis=0)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)

    asl, _ = _load(sub / "perf" / "sub-0001_asl.nii.gz")
    ameta = json.loads((sub / "perf" / "sub-0001_asl.json").read_text())
    for key in (
        "ArterialSpinLabelingType",
        "PostLabelingDelay",
        "LabelingDuration",
        "M0Type",
        "MagneticFieldStrength",
        "BackgroundSuppression",
        "RepetitionTimePreparation",
        "SliceTiming",
    ):
        assert key in ameta
    assert ameta["ArterialSpinLabelingType"] == "PCASL" and ameta["M0Type"] == "Separate"
    with open(sub / "perf" / "sub-0001_aslcontext.tsv") as fh:
        ctx = [r["volume_type"] for r in csv.DictReader(fh, delimiter="\t")]
    assert len(ctx) == asl.shape[3] and set(ctx) == {"control", "label"}
    assert (sub / "perf" / "sub-0001_m0scan.nii.gz").exists()
    assert (sub / "perf" / "sub-0001_m0scan.json").exists()

    tdir = clean_study / TRUTH / "sub-0001"
    truth = json.loads((tdir / "sub-0001_truth.json").read_text())
    assert truth["population"] == "chinese" and len(truth["head_scales_LR_AP_SI"]) == 3
    assert float(truth["snr"]["t1w"]) == float("inf")  # strict JSON: written as "inf"
    assert (clean_study / TRUTH / "cohort-0001_settings.json").exists()
    face = np.asarray(nb.load(str(tdir / "anat/sub-0001_desc-face_mask.nii.gz")).dataobj) > 0
    brain = np.asarray(nb.load(str(tdir / "anat/sub-0001_desc-brain_mask.nii.gz")).dataobj) > 0
    head = np.asarray(nb.load(str(tdir / "anat/sub-0001_desc-head_mask.nii.gz")).dataobj) > 0
    assert (face & head).sum() > 100 and brain.sum() > 1000
    assert not (face & brain).any()  # removing the true face never touches the brain
    for rel in (
        "anat/sub-0001_label-GM_probseg.nii.gz",
        "anat/sub-0001_desc-brain_mask.nii.gz",
        "func/sub-0001_task-rest_space-bold_label-WM_probseg.nii.gz",
        "dwi/sub-0001_space-dwi_model-tensor_param-tensor_dwimap.nii.gz",
        "perf/sub-0001_space-asl_cbf.nii.gz",
        "xfm/sub-0001_desc-displacement_xfm.nii.gz",
    ):
        assert (tdir / rel).exists(), rel


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    kwargs = {"voxel_size": 4.0, "modalities": ("anat", "func"), "bold_volumes": 10}
    a = generate_study(tmp_path / "a", 1, "western", seed=5, **kwargs)
    b = generate_study(tmp_path / "b", 1, "western", seed=5, **kwargs)
    c = generate_study(tmp_path / "c", 1, "western", seed=6, **kwargs)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) > 10
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    t1 = "sub-0001/anat/sub-0001_T1w.nii.gz"
    assert (a / t1).read_bytes() != (c / t1).read_bytes()


def _fit_dwi(study: Path) -> tuple[np.ndarray, ...]:
    """Log-linear OLS tensor fit of the written DWI (world frame) and the truth maps."""
    sub = study / "sub-0001"
    dwi, img = _load(sub / "dwi" / "sub-0001_dwi.nii.gz")
    bvals = np.loadtxt(sub / "dwi" / "sub-0001_dwi.bval")
    bvecs = np.loadtxt(sub / "dwi" / "sub-0001_dwi.bvec").T
    tdir = study / TRUTH / "sub-0001" / "dwi"

    def truth(name: str) -> np.ndarray:
        return np.asarray(nb.load(str(tdir / f"sub-0001_space-dwi_{name}.nii.gz")).dataobj)

    mask = (truth("desc-brain_mask") > 0) & (dwi.min(axis=3) > 20)
    # FSL bvecs -> world: voxel axes, x negated for a positive-determinant affine.
    rot = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    if np.linalg.det(img.affine[:3, :3]) > 0:
        bvecs = bvecs * np.array([-1.0, 1.0, 1.0])
    g = bvecs @ rot.T
    design = np.column_stack(
        [
            -bvals * g[:, 0] ** 2,
            -2 * bvals * g[:, 0] * g[:, 1],
            -bvals * g[:, 1] ** 2,
            -2 * bvals * g[:, 0] * g[:, 2],
            -2 * bvals * g[:, 1] * g[:, 2],
            -bvals * g[:, 2] ** 2,
            np.ones_like(bvals),
        ]
    )
    coef, *_ = np.linalg.lstsq(design, np.log(dwi[mask]).T, rcond=None)
    fit = coef[:6].T
    return (
        fit,
        truth("model-tensor_param-tensor_dwimap")[mask],
        truth("model-tensor_param-fa_dwimap")[mask],
        truth("model-tensor_param-md_dwimap")[mask],
        truth("label-WM_probseg")[mask],
    )


def _check_fit(study: Path) -> None:
    fit, tensor, fa_t, md_t, wm = _fit_dwi(study)
    fa, md = tensor_eigen_stats(fit)
    # int16 rounding: |d log S| <= 0.5 / S (S >= 20 here) -> diffusivity error ~1e-5 mm^2/s.
    assert np.abs(md - md_t).max() < 3e-5
    assert np.abs(fa - fa_t).max() < 0.03
    assert np.abs(md - md_t).mean() < 2e-6
    assert np.abs(fit - tensor).max() < 3e-5  # full tensor: checks the bvec convention
    assert 0.45 <= fa_t[wm > 0.9].mean() <= 0.75
    assert md_t[wm > 0.9].mean() == pytest.approx(7e-4, rel=0.05)


def test_dwi_loglinear_fit_recovers_tensor(clean_study: Path) -> None:
    _check_fit(clean_study)


def test_orientation_option(clean_study: Path, tmp_path: Path) -> None:
    """LPI storage: same world image as the RAS study, bvecs still consistent (det < 0)."""
    out = generate_study(
        tmp_path / "lpi",
        1,
        "chinese",
        seed=3,
        voxel_size=4.0,
        snr=float("inf"),
        modalities=("anat", "dwi"),
        orientation="LPI",
    )
    name = "sub-0001/anat/sub-0001_T1w.nii.gz"
    lpi = nb.load(str(out / name))
    ras = nb.load(str(clean_study / name))
    assert nb.aff2axcodes(lpi.affine) == ("L", "P", "I")
    canon = nb.as_closest_canonical(lpi)
    np.testing.assert_allclose(canon.affine, ras.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(canon.dataobj), np.asarray(ras.dataobj))
    assert np.linalg.det(nb.load(str(out / "sub-0001/dwi/sub-0001_dwi.nii.gz")).affine) < 0
    _check_fit(out)


def test_asl_white_paper_reproduces_cbf(clean_study: Path) -> None:
    sub = clean_study / "sub-0001"
    asl, _ = _load(sub / "perf" / "sub-0001_asl.nii.gz")
    m0, _ = _load(sub / "perf" / "sub-0001_m0scan.nii.gz")
    meta = json.loads((sub / "perf" / "sub-0001_asl.json").read_text())
    with open(sub / "perf" / "sub-0001_aslcontext.tsv") as fh:
        ctx = np.array([r["volume_type"] for r in csv.DictReader(fh, delimiter="\t")])
    dm = asl[..., ctx == "control"].mean(3) - asl[..., ctx == "label"].mean(3)
    pld = meta["PostLabelingDelay"] + np.asarray(meta["SliceTiming"])
    cbf = pcasl_cbf(dm, m0, pld, tau=meta["LabelingDuration"])
    tdir = clean_study / TRUTH / "sub-0001" / "perf"
    truth = np.asarray(nb.load(str(tdir / "sub-0001_space-asl_cbf.nii.gz")).dataobj)
    mask = np.asarray(nb.load(str(tdir / "sub-0001_space-asl_desc-brain_mask.nii.gz")).dataobj) > 0
    mask &= m0 > 0.2 * m0.max()
    # float32 storage: relative error of dM ~ 1e-7 * M0 / dM ~ 1e-5.
    np.testing.assert_allclose(cbf[mask], truth[mask], rtol=1e-3, atol=0.05)
    gm = np.asarray(nb.load(str(tdir / "sub-0001_space-asl_label-GM_probseg.nii.gz")).dataobj)
    wm = np.asarray(nb.load(str(tdir / "sub-0001_space-asl_label-WM_probseg.nii.gz")).dataobj)
    info = json.loads((clean_study / TRUTH / "sub-0001" / "sub-0001_truth.json").read_text())
    ratio = truth[mask & (gm > 0.5)] / (60 * gm + 20 * wm)[mask & (gm > 0.5)]
    assert np.median(ratio) == pytest.approx(info["asl"]["subject_cbf_factor"], abs=0.1)
    assert ratio.min() > 0.69 * info["asl"]["subject_cbf_factor"]
    # Ignoring the per-slice PLD would bias CBF by exp(-slice time / T1b) in the top slices.
    flat = pcasl_cbf(dm, m0, meta["PostLabelingDelay"], tau=meta["LabelingDuration"])
    top = mask.copy()
    top[..., : mask.shape[2] // 2] = False
    assert np.median(flat[top] / truth[top]) < 0.8


def test_bold_motion_matches_stored_parameters() -> None:
    maps = load_template_maps(4)
    rng = np.random.default_rng(11)
    anat = draw_anatomy(rng, "western", "M", maps)
    grid = Grid.centred((32, 40, 32), 4.0, anat.to_scanner(maps.brain_centre[:, None])[:, 0])
    out = synth_bold(
        anat,
        maps,
        grid,
        rng,
        n_volumes=8,
        tr=2.0,
        snr=float("inf"),
        target_fd=0.8,
        n_spikes=1,
        amplitude=0.0,
        drift_sd=0.0,
    )
    data, params = out["bold"], out["params"]
    assert np.all(params[0] == 0)
    assert power_fd(params)[1:].mean() == pytest.approx(0.8, rel=1e-6)
    ref = data[..., 0]
    idx = np.indices(grid.shape).reshape(3, -1).astype(float)
    world = grid.affine[:3, :3] @ idx + grid.affine[:3, 3:4]
    c = grid.centre[:, None]
    inner = np.zeros(grid.shape, bool)
    inner[4:-4, 4:-4, 4:-4] = True
    spikes = {v: (z, f) for v, z, f in out["spikes"]}
    for t in range(1, 8):
        rot = Rotation.from_euler("xyz", params[t, 3:]).as_matrix()  # = Rz Ry Rx
        src = rot.T @ (world - c - params[t, :3, None]) + c
        vox = np.linalg.inv(grid.affine[:3, :3]) @ (src - grid.affine[:3, 3:4])
        expect = ndi.map_coordinates(ref, vox, order=1).reshape(grid.shape)
        if t in spikes:
            z, f = spikes[t]
            expect[:, :, z] *= f
        err = np.abs(data[..., t] - expect)[inner]
        assert err.max() < 1e-2 * ref.max(), t
    # large motion really moves the image
    assert np.abs(data[..., 7] - ref)[inner].mean() > 1.0


def test_bold_has_left_right_symmetric_signal() -> None:
    """Half of the low-frequency components are mirror-symmetric (homotopic correlation)."""
    maps = load_template_maps(4)
    c = maps.brain_centre
    mirrored = maps.mirror[:3, :3] @ c + maps.mirror[:3, 3]
    xmid = 0.5 * (c[0] + mirrored[0])  # x of the mid-sagittal plane at the brain centre
    still = SubjectAnatomy(
        c, np.ones(3), np.zeros(6), SmoothField(np.zeros((3, 2, 2, 2)), np.eye(4)), np.ones(3)
    )
    grid = Grid.centred((36, 44, 32), 4.0, np.array([xmid, c[1], c[2]]))
    out = synth_bold(
        still,
        maps,
        grid,
        np.random.default_rng(0),
        n_volumes=60,
        tr=2.0,
        snr=60.0,
        target_fd=0.0,
        n_spikes=0,
    )
    assert np.all(out["params"] == 0)
    z = out["bold"] - out["bold"].mean(-1, keepdims=True)
    z /= z.std(-1, keepdims=True) + 1e-6
    gm = (out["gm"] > 0.5) & (out["gm"][::-1] > 0.5)
    homotopic = (z * z[::-1]).mean(-1)[gm].mean()
    shifted = (z * np.roll(z, 7, axis=1)).mean(-1)[gm].mean()  # 28 mm apart, same hemisphere
    assert homotopic > 0.3 and homotopic > shifted + 0.2


def test_motion_levels_and_high_movers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for target in (0.05, 0.15, 0.5):
        p = draw_motion(rng, 80, target, 3)
        assert power_fd(p)[1:].mean() == pytest.approx(target, rel=1e-9)
        assert np.abs(p[:, 3:]).max() < 0.1  # radians: a few degrees at most
    out = generate_study(
        tmp_path / "m", 3, "chinese", seed=1, voxel_size=4.0, modalities=("func",), bold_volumes=20
    )
    fds = {}
    for i in (1, 2, 3):
        info = json.loads((out / TRUTH / f"sub-000{i}" / f"sub-000{i}_truth.json").read_text())
        fds[i] = info["bold"]["mean_fd"]
        tsv = np.loadtxt(
            out
            / TRUTH
            / f"sub-000{i}"
            / "func"
            / f"sub-000{i}_task-rest_desc-motion_timeseries.tsv",
            skiprows=1,
        )
        assert tsv.shape == (20, 7)
        assert power_fd(tsv[:, :6])[1:].mean() == pytest.approx(fds[i], rel=1e-6)
    assert fds[1] < 0.2 and fds[2] < 0.2 and fds[3] > 0.2  # sub-0003 is the 10 % high mover


def _head_ratio(anat, maps, grid) -> float:
    sampled, _ = sample_anatomy(anat, maps, grid, ("head",))
    ext = head_extents(sampled["head"] > 0.5, grid.affine)
    return ext[1] / ext[0]


def test_population_head_shape() -> None:
    maps = load_template_maps(4)
    grid = Grid.centred((52, 68, 64), 4.0, maps.head_centre)
    ratios = {}
    for pop in ("chinese", "western"):
        rng = np.random.default_rng(42)
        vals = []
        for _ in range(8):
            anat = draw_anatomy(rng, pop, "M", maps)
            vals.append(_head_ratio(anat, maps, grid))
        ratios[pop] = np.array(vals)
    # Same random draws for both populations, so only the population means differ:
    # expected AP/LR ratio 0.975 / 1.03 = 0.947 of the Western one, a little less with the
    # flatter Chinese face (+-1 voxel of 4 mm).
    rel = ratios["chinese"].mean() / ratios["western"].mean()
    assert 0.90 < rel < 0.975
    assert np.all(ratios["chinese"] < ratios["western"])


def test_chinese_faces_are_flatter() -> None:
    """Nose projection of generated subjects: smaller in Chinese-shaped heads (face model)."""
    from isyb_dask.synth.face_model import measure
    from isyb_dask.synth.subject import _add_face

    maps = load_template_maps(2)
    proj = {}
    for pop in ("chinese", "western"):
        rng = np.random.default_rng(5)
        vals = []
        for _ in range(12):
            anat = draw_anatomy(rng, pop, "M", maps, face_sd_mm=0.0, rotation_sd_deg=0.0,
                                translation_sd_mm=0.0)
            assert anat.face_depth == 1.0  # the old global face-depth factor is off
            vals.append(measure(_add_face(anat, pop, rng)[2])["nasal_projection"])
        proj[pop] = np.mean(vals)
    # published difference -3 mm (SD 2 mm, 12 subjects each: SE of the difference ~0.8 mm)
    assert -5.5 < proj["chinese"] - proj["western"] < -0.5


def test_faces_differ_between_subjects() -> None:
    maps = load_template_maps(4)
    rng = np.random.default_rng(7)
    a1 = draw_anatomy(rng, "western", "M", maps)
    a2 = draw_anatomy(rng, "western", "M", maps)
    # Displacements differ much more in the face than in the brain.
    face_pts = np.argwhere(maps.maps["face"] > 0.9) @ maps.affine[:3, :3].T + maps.affine[:3, 3]
    brain_pts = np.argwhere(maps.maps["brain"] > 0.9) @ maps.affine[:3, :3].T + maps.affine[:3, 3]

    def diff(pts: np.ndarray) -> float:
        d = a1.displacement(pts.T) - a2.displacement(pts.T)
        return float(np.sqrt((d**2).sum(0)).mean())

    assert diff(face_pts) > 1.5 * diff(brain_pts)
    # and the heads themselves differ in the face region (Dice of head masks)
    grid = Grid.centred((52, 68, 64), 4.0, maps.head_centre)
    h1 = sample_anatomy(a1, maps, grid, ("head", "face"))[0]
    h2 = sample_anatomy(a2, maps, grid, ("head", "face"))[0]
    region = (h1["face"] > 0.5) | (h2["face"] > 0.5)
    m1, m2 = (h1["head"] > 0.5) & region, (h2["head"] > 0.5) & region
    dice = 2 * (m1 & m2).sum() / (m1.sum() + m2.sum())
    assert dice < 0.95


def test_t1w_noise_matches_truth(clean_study: Path, tmp_path: Path) -> None:
    """Default (noisy) T1w = the noise-free one + Rician noise of the recorded SD."""
    noisy = generate_study(
        tmp_path / "noisy", 1, "chinese", seed=3, voxel_size=4.0, modalities=("anat",)
    )
    name = "sub-0001/anat/sub-0001_T1w.nii.gz"
    a, _ = _load(noisy / name)
    b, _ = _load(clean_study / name)
    info = json.loads((noisy / TRUTH / "sub-0001" / "sub-0001_truth.json").read_text())
    sigma = info["t1w"]["noise_sigma"]
    snr = info["snr"]["t1w"]
    assert 35 * 2**1.5 <= snr <= 60 * 2**1.5  # 2 mm range scaled to 4 mm voxels
    assert sigma == pytest.approx(info["t1w"]["wm_mean"] / snr, rel=1e-6)
    bright = b > 0.5 * np.percentile(b, 99)  # S >> sigma: Rician ~ Gaussian
    assert np.std(a[bright] - b[bright]) == pytest.approx(sigma, rel=0.05)


def test_t1w_texture_only_outside_brain() -> None:
    maps = load_template_maps(4)
    anat = draw_anatomy(np.random.default_rng(2), "western", "F", maps)
    grid = Grid.centred((48, 64, 64), 4.0, maps.head_centre)
    kw = {"snr": float("inf"), "gain": 2.5, "bias_sd": 0.0}
    plain = synth_t1w(anat, maps, grid, np.random.default_rng(9), **kw)
    tex = synth_t1w(anat, maps, grid, np.random.default_rng(9), texture_sd=0.1, **kw)
    a = plain["t1w"].astype(float)
    b = tex["t1w"].astype(float)
    inside = (plain["brain"] > 0.999) & (a > 100)
    outside = (plain["head"] > 0.999) & (plain["brain"] < 0.001) & (a > 100)
    # residual outside-fraction < 1e-3 times |texture - 1| < 0.5 can flip one int16 rounding
    np.testing.assert_allclose(b[inside], a[inside], atol=1.0)
    log_ratio = np.log(b[outside] / a[outside])
    assert 0.05 < log_ratio.std() < 0.15  # texture SD 0.1 (smooth field, finite sample)


def test_two_cohorts_share_a_dataset(tmp_path: Path) -> None:
    kw = {"voxel_size": 4.0, "modalities": ("anat",), "seed": 0}
    generate_study(tmp_path, 2, "chinese", **kw)
    generate_study(tmp_path, 1, "western", first_index=3, **kw)
    with open(tmp_path / "participants.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [(r["participant_id"], r["population"]) for r in rows] == [
        ("sub-0001", "chinese"),
        ("sub-0002", "chinese"),
        ("sub-0003", "western"),
    ]
    for i in (1, 3):
        assert (tmp_path / TRUTH / f"cohort-000{i}_settings.json").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        generate_study(tmp_path, 1, "martian")
    with pytest.raises(ConfigError):
        generate_study(tmp_path, 0)
    with pytest.raises(ConfigError):
        generate_study(tmp_path, 1, modalities=("pet",))


@pytest.mark.slow
def test_one_millimetre_t1w(generated_1mm_bids: Path) -> None:
    out = generated_1mm_bids  # session fixture: "chinese", seed 3, shared with surface tests
    img = nb.load(str(out / "sub-0001/anat/sub-0001_T1w.nii.gz"))
    assert img.shape == (192, 256, 256) and img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.header.get_zooms(), (1.0, 1.0, 1.0))
    head = np.asarray(
        nb.load(str(out / TRUTH / "sub-0001/anat/sub-0001_desc-head_mask.nii.gz")).dataobj
    )
    ext = head_extents(head, img.affine)
    assert 140 < ext[0] < 200 and 180 < ext[1] < 256
