"""Subject heads: a real head template deformed into individual, population-specific heads.

Every synthetic subject is the pydeface head template (``mean_reg2mean``, a head *with* a
face) seen through a known backward map from scanner world ``y`` to template world ``x``::

    y' = P^-1 y                              (undo the pose P, a rigid transform about c)
    x  = c + (y' - c) / s + d(y')            (undo the head-shape scaling s, then displace)

``c`` is the template head centre, ``s`` the per-axis (LR, AP, SI) head scale factors
(population mean x individual variation x sex factor) and ``d`` a smooth displacement:
a global field plus a larger, shorter-range field confined to the face region (nose, lips,
jaw and chin differ between subjects) and a population-specific face depth (the face in front
of the brain is compressed along AP by a factor ``f``: Chinese faces flatter). The tissue
maps of the reference atlas are sampled through the same map, so labels are exact for every
modality grid. Inside the brain the template's intensity is given the class means of a real
MPRAGE (:mod:`isyb_dask.synth.brain_contrast`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import nibabel as nb
import numpy as np
from scipy import ndimage as ndi

from isyb_dask.rigid import rigid_matrix
from isyb_dask.synth.brain_contrast import calibrate_brain_contrast
from isyb_dask.synth.fields import Grid, SmoothField, block_mean, random_smooth_field

__all__ = [
    "FACE_DEPTH",
    "POPULATION_SHAPE",
    "SEX_SCALE",
    "SubjectAnatomy",
    "TemplateMaps",
    "draw_anatomy",
    "head_extents",
    "load_template_maps",
    "template_factor",
]

#: Mean and SD of the head scale factors (LR width, AP length, SI height) relative to the
#: pydeface template (taken as a Western head). See docs/synth.md for sources.
POPULATION_SHAPE: dict[str, dict[str, tuple[float, float, float]]] = {
    "western": {"mean": (1.00, 1.00, 1.00), "sd": (0.040, 0.040, 0.040)},
    "chinese": {"mean": (1.03, 0.975, 1.02), "sd": (0.040, 0.040, 0.040)},
}
#: Mean and SD of a global face depth factor (AP stretch of the face). Off (1, 0): facial
#: shape comes from the landmark model in :mod:`isyb_dask.synth.face_model`.
FACE_DEPTH: dict[str, tuple[float, float]] = {"western": (1.0, 0.0), "chinese": (1.0, 0.0)}
#: Overall isotropic head-size factor by sex.
SEX_SCALE = {"M": 1.0, "F": 0.96}

_MAP_NAMES = ("t1", "gm", "wm", "csf", "brain", "head", "face")


@dataclass(frozen=True)
class TemplateMaps:
    """Template-space arrays (float32, same grid) and their affine.

    ``face`` is 1 inside pydeface's face region (its face mask is 1 = keep), ``head`` is the
    template's head mask, ``brain``/``gm``/``wm``/``csf`` come from the reference atlas.
    ``face_base_y`` is the world y of the front of the brain, from which face depth is
    measured; ``mirror`` reflects template points through the MNI mid-sagittal plane;
    ``brain_contrast`` holds the template's and the calibrated class means of ``t1``.
    """

    maps: dict[str, np.ndarray]
    affine: np.ndarray
    head_centre: np.ndarray
    brain_centre: np.ndarray
    mirror: np.ndarray = field(default_factory=lambda: np.eye(4))
    face_base_y: float = 0.0
    brain_contrast: dict[str, dict[str, float]] = field(default_factory=dict)

    def sample(self, name: str, points: np.ndarray, order: int = 1) -> np.ndarray:
        """Map ``name`` at template-world ``points`` ``(3, ...)`` (0 outside the template)."""
        inv = np.linalg.inv(self.affine)
        flat = points.reshape(3, -1)
        vox = inv[:3, :3] @ flat + inv[:3, 3:4]
        out = ndi.map_coordinates(self.maps[name], vox, order=order, mode="constant", cval=0.0)
        return out.reshape(points.shape[1:]).astype(np.float32)


def _head_mask(t1: np.ndarray) -> np.ndarray:
    """Head mask of the template: threshold, largest component, closing, slice-wise fill.

    Computed on a 2x block-averaged copy (fast) and brought back to the full grid.
    """
    small, _ = block_mean(t1, np.eye(4), 2)
    thr = 0.1 * float(np.percentile(small[small > 0], 99))
    mask = ndi.binary_opening(small > thr, iterations=1)
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        mask = lab == (1 + int(np.argmax(sizes)))
    mask = ndi.binary_closing(mask, iterations=2)
    for z in range(mask.shape[2]):  # fill sinuses/ear canals slice by slice
        mask[:, :, z] = ndi.binary_fill_holes(mask[:, :, z])
    full = np.zeros(t1.shape, dtype=bool)
    up = mask.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(t1.shape, up.shape))
    full[sl] = up[sl]
    return full


@lru_cache(maxsize=1)
def _raw_template() -> tuple[
    dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, dict
]:
    from isyb_dask.atlas import get_reference_atlas

    atlas = get_reference_atlas()
    head_img = nb.load(str(atlas.head))
    t1 = np.asarray(head_img.dataobj, dtype=np.float32)

    def load(path) -> np.ndarray:
        return np.asarray(nb.load(str(path)).dataobj, dtype=np.float32)

    raw = {
        "t1": t1,
        "gm": load(atlas.gm_prob),
        "wm": load(atlas.wm_prob),
        "csf": load(atlas.csf_prob),
        "brain": load(atlas.brain_mask),
        "head": _head_mask(t1).astype(np.float32),
        "face": 1.0 - load(atlas.face_mask),
    }
    raw["t1"], contrast = calibrate_brain_contrast(
        t1, {k: raw[k] for k in ("gm", "wm", "csf")}, raw["brain"]
    )
    aff = head_img.affine
    centres = []
    for key in ("head", "brain"):
        small, saff = block_mean(raw[key], aff, 2)
        com = np.array(ndi.center_of_mass(small))
        centres.append(saff[:3, :3] @ com + saff[:3, 3])
    # Mirror through the brain's midsagittal plane: MNI x -> -x (MNI template is symmetric).
    h2m = atlas.head_to_mni_affine()
    mirror = np.linalg.inv(h2m) @ np.diag([-1.0, 1.0, 1.0, 1.0]) @ h2m
    brain_vox = np.argwhere(raw["brain"][:, ::2, ::2] > 0.5) * np.array([1, 2, 2])
    face_base_y = float((brain_vox @ aff[:3, :3].T + aff[:3, 3])[:, 1].max())
    return raw, aff, centres[0], centres[1], mirror, face_base_y, contrast


@lru_cache(maxsize=4)
def load_template_maps(factor: int = 1) -> TemplateMaps:
    """Template maps block-averaged by ``factor`` (1 = native ~1 mm), cached per process."""
    raw, aff, head_centre, brain_centre, mirror, face_base_y, contrast = _raw_template()
    maps: dict[str, np.ndarray] = {}
    affine = aff
    for name in _MAP_NAMES:
        maps[name], affine = block_mean(raw[name], aff, factor)
    return TemplateMaps(maps, affine, head_centre, brain_centre, mirror, face_base_y, contrast)


def template_factor(voxel_size: float) -> int:
    """Block-average factor of the template used for a target voxel size (anti-aliasing)."""
    return int(max(1, min(4, np.floor(voxel_size + 1e-6))))


@dataclass(frozen=True)
class SubjectAnatomy:
    """Known head geometry of one subject (see module docstring for the map)."""

    centre: np.ndarray
    scales: np.ndarray
    pose: np.ndarray
    displacement: SmoothField
    population_scales: np.ndarray
    face_depth: float = 1.0
    thinning: dict | None = None  # cortical-thinning truth (isyb_dask.synth.thinning)

    @property
    def pose_matrix(self) -> np.ndarray:
        """4x4 world matrix of the pose (unposed subject frame -> scanner)."""
        return rigid_matrix(self.pose, self.centre)

    def to_template(self, points: np.ndarray) -> np.ndarray:
        """Template-world coordinates ``(3, ...)`` of scanner-world ``points`` ``(3, ...)``."""
        shape = points.shape[1:]
        flat = points.reshape(3, -1)
        inv = np.linalg.inv(self.pose_matrix)
        unposed = inv[:3, :3] @ flat + inv[:3, 3:4]
        c = self.centre[:, None]
        x = c + (unposed - c) / self.scales[:, None]
        x = x + self.displacement(unposed)
        return x.reshape((3, *shape))

    def to_scanner(self, template_points: np.ndarray) -> np.ndarray:
        """Approximate inverse (ignores the small displacement ``d``), for FOV centring."""
        flat = template_points.reshape(3, -1)
        c = self.centre[:, None]
        unposed = c + (flat - c) * self.scales[:, None]
        pm = self.pose_matrix
        out = pm[:3, :3] @ unposed + pm[:3, 3:4]
        return out.reshape(template_points.shape)


def draw_anatomy(
    rng: np.random.Generator,
    population: str,
    sex: str,
    maps: TemplateMaps,
    *,
    global_sd_mm: float = 2.0,
    face_sd_mm: float = 4.0,
    rotation_sd_deg: float = 3.0,
    translation_sd_mm: float = 3.0,
) -> SubjectAnatomy:
    """Draw one subject's head geometry.

    Parameters
    ----------
    rng
        Random generator (the subject's own stream).
    population
        ``"chinese"`` or ``"western"`` (keys of :data:`POPULATION_SHAPE`).
    sex
        ``"M"`` or ``"F"`` (:data:`SEX_SCALE`).
    maps
        Template maps (any factor; used for the face region and head centre).
    global_sd_mm, face_sd_mm
        SD of each displacement component for the global (60 mm FWHM) and face
        (20 mm FWHM) random fields.
    rotation_sd_deg, translation_sd_mm
        SD of the pose rotations and translations.

    Returns
    -------
    SubjectAnatomy
    """
    if population not in POPULATION_SHAPE:
        raise ValueError(
            f"population must be one of {sorted(POPULATION_SHAPE)}, got {population!r}"
        )
    shape = POPULATION_SHAPE[population]
    pop = np.asarray(shape["mean"]) + np.asarray(shape["sd"]) * rng.standard_normal(3)
    scales = pop * SEX_SCALE.get(sex, 1.0)
    centre = maps.head_centre
    extent, spacing = 280.0, 5.0
    glob = random_smooth_field(rng, centre, extent, spacing, 60.0, global_sd_mm, 3)
    face = random_smooth_field(rng, centre, extent, spacing, 20.0, face_sd_mm, 3)
    # Face weight at each control point: smoothed face region, sampled at the point's
    # (affine-only) template location.
    n = glob.values.shape[1]
    pts = Grid((n, n, n), glob.affine).world()
    xt = (
        centre[:, None, None, None]
        + (pts - centre[:, None, None, None]) / scales[:, None, None, None]
    )
    weight = maps.sample("face", xt, order=1)
    weight = ndi.gaussian_filter(weight, 1.5)
    values = glob.values + face.values * weight[None]
    # Face depth: the face in front of the brain is compressed (f < 1) or stretched along AP.
    mean_depth, sd_depth = FACE_DEPTH[population]
    depth = float(np.clip(mean_depth + sd_depth * rng.standard_normal(), 0.7, 1.3))
    base = centre[1] + scales[1] * (maps.face_base_y - centre[1])  # in the subject frame
    values[1] += weight * np.clip(pts[1] - base, 0.0, None) * (1.0 / depth - 1.0)
    disp = SmoothField(values.astype(np.float64), glob.affine)
    rot = np.deg2rad(rotation_sd_deg) * rng.standard_normal(3)
    trans = translation_sd_mm * rng.standard_normal(3)
    pose = np.concatenate([trans, rot])
    from isyb_dask.synth.thinning import draw_thinning

    thinning = draw_thinning(rng, maps)  # last draw of the stream: earlier draws unchanged
    return SubjectAnatomy(centre.copy(), scales, pose, disp, pop, depth, thinning)


def head_extents(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Extent (mm) of a head mask along the world x, y, z axes (voxel-size aware)."""
    idx = np.argwhere(mask > 0.5)
    if idx.size == 0:
        return np.zeros(3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    vox = np.sqrt((affine[:3, :3] ** 2).sum(0))
    return world.max(0) - world.min(0) + vox
