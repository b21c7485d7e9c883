"""Faces from a landmark model: individual, population-specific facial shape.

The base head (pydeface's ``mean_reg2mean``) keeps its face. A subject's face differs from
it by a sum of smooth, local displacements: each anthropometric measure (nasal width,
length and projection, nasal-bridge height, mid-face depth, bizygomatic and bigonial width,
brow ridge, lip thickness, chin projection) moves one or two landmarks of the base head along
one axis, inside a Gaussian window. The amount is the population's published mean
difference from the base head's population (North American / European whites) plus an
individual normal deviate with the published SD (see ``docs/synth.md`` for the sources).

Landmarks are found automatically on the base head's skin surface (:func:`find_landmarks`):
the mid-sagittal profile gives pronasale, nasion, glabella, subnasale, the lips and the chin;
lateral landmarks (alare, zygion, gonion, brow, cheek) are placed at fixed offsets or at the
lateral-most skin point of a level. Nothing here depends on any template used for defacing.

The displacement is *backward* (scanner -> template, as in :mod:`isyb_dask.synth.anatomy`):
to move a feature outward by ``a`` along ``u``, the field is ``-a u`` times the window
centred on the feature's position in the subject frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from isyb_dask.synth.fields import SmoothField

__all__ = [
    "FACE_MEASURES",
    "FaceField",
    "FaceMeasure",
    "base_landmarks",
    "draw_face_parameters",
    "face_displacement",
    "find_landmarks",
    "landmark_distances",
    "subject_landmarks",
]


@dataclass(frozen=True)
class FaceMeasure:
    """One anthropometric measure and how it deforms the base face.

    Attributes
    ----------
    name
        Parameter name (also the key in the truth file).
    landmarks
        ``(landmark, axis, sign)`` moved by the parameter: axis 0 = x (LR), 1 = y (AP),
        2 = z (SI); a pair of opposite signs splits the change between two landmarks.
    sigma_mm
        Gaussian window (SD, mm) of the displacement around each landmark.
    delta_mm
        Mean difference of the measure, population minus European/North-American whites
        (the base head's population), in mm: ``{"western": 0, "chinese": ...}``.
    sd_mm
        Between-subject SD of the measure (mm).
    distance
        ``(landmark_a, landmark_b, axis)`` whose distance measures the parameter (``axis``
        None = Euclidean, else the signed coordinate difference b - a along that axis,
        which grows with the parameter).
    """

    name: str
    landmarks: tuple[tuple[str, int, float], ...]
    sigma_mm: float
    delta_mm: dict[str, float]
    sd_mm: float
    distance: tuple[str, str, int | None]


# Sources and caveats: docs/synth.md ("Faces from a landmark model").
FACE_MEASURES: tuple[FaceMeasure, ...] = (
    FaceMeasure("nasal_width", (("al_r", 0, -0.5), ("al_l", 0, 0.5)), 6.0,
                {"western": 0.0, "chinese": 4.0}, 2.5, ("al_r", "al_l", 0)),
    FaceMeasure("nasal_length", (("sn", 2, -1.0),), 7.0,
                {"western": 0.0, "chinese": -1.5}, 3.3, ("sn", "n", 2)),
    FaceMeasure("nasal_projection", (("prn", 1, 1.0),), 6.0,
                {"western": 0.0, "chinese": -3.0}, 2.0, ("sn", "prn", 1)),
    FaceMeasure("nasal_bridge", (("n", 1, 1.0),), 7.0,
                {"western": 0.0, "chinese": -2.5}, 2.0, ("en_r", "n", 1)),
    FaceMeasure("midface_depth", (("ch_r", 1, 1.0), ("ch_l", 1, 1.0)), 12.0,
                {"western": 0.0, "chinese": -2.0}, 2.5, ("t_r", "ch_r", 1)),
    FaceMeasure("bizygomatic_width", (("zy_r", 0, -0.5), ("zy_l", 0, 0.5)), 14.0,
                {"western": 0.0, "chinese": 7.0}, 5.0, ("zy_r", "zy_l", 0)),
    FaceMeasure("bigonial_width", (("go_r", 0, -0.5), ("go_l", 0, 0.5)), 14.0,
                {"western": 0.0, "chinese": 6.0}, 6.0, ("go_r", "go_l", 0)),
    FaceMeasure("brow_ridge", (("g", 1, 1.0), ("sor_r", 1, 1.0), ("sor_l", 1, 1.0)), 9.0,
                {"western": 0.0, "chinese": -2.0}, 2.0, ("en_r", "g", 1)),
    FaceMeasure("lip_thickness", (("ls", 1, 1.0), ("li", 1, 1.0)), 4.5,
                {"western": 0.0, "chinese": 1.0}, 1.5, ("sn", "ls", 1)),
    FaceMeasure("chin_projection", (("pg", 1, 1.0),), 9.0,
                {"western": 0.0, "chinese": -2.0}, 3.0, ("sn", "pg", 1)),
)


def _surface(head_sample, centre_x: float, y_range, z_range, x_half: float = 90.0,
             step: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Anterior skin height ``y_front(x, z)`` (NaN where no head) on a world grid."""
    xs = np.arange(centre_x - x_half, centre_x + x_half + step / 2, step)
    ys = np.arange(y_range[0], y_range[1] + step / 2, step)
    zs = np.arange(z_range[0], z_range[1] + step / 2, step)
    gx, gy, gz = np.meshgrid(xs, ys, zs, indexing="ij")
    inside = head_sample(np.stack([gx, gy, gz])) > 0.5  # (x, y, z)
    idx = np.where(inside.any(axis=1), inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1), -1)
    front = np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan)  # (x, z)
    return xs, zs, front, inside


def find_landmarks(head_sample, head_centre: np.ndarray, brain_centre: np.ndarray, *,
                   lateral: bool = True) -> dict[str, np.ndarray]:
    """Facial landmarks (template world mm) on the base head's skin surface.

    Parameters
    ----------
    head_sample
        Callable mapping world points ``(3, ...)`` to the head mask (0..1).
    head_centre, brain_centre
        World centres of the head and brain (the brain's x is the mid-sagittal plane).
    lateral
        Also place the lateral landmarks (alare ... gonion); False gives the mid-sagittal
        profile landmarks only.

    Returns
    -------
    dict
        Landmark name -> ``(3,)`` world position. Names follow Farkas: ``g`` glabella,
        ``n`` nasion, ``prn`` pronasale, ``sn`` subnasale, ``ls``/``li`` labrale superius /
        inferius, ``pg`` pogonion, ``al_*`` alare, ``en_*`` endocanthion (inner eye
        corner, on the surface), ``sor_*`` supra-orbital brow, ``ch_*`` cheek (infra-orbital
        soft tissue), ``zy_*`` zygion, ``go_*`` gonion, ``t_*`` tragus level reference.
    """
    cx, cz = float(brain_centre[0]), float(brain_centre[2])
    yc = float(head_centre[1])
    xs, zs, front, inside = _surface(head_sample, cx, (yc - 120.0, yc + 150.0),
                                     (cz - 140.0, cz + 20.0))
    ix0 = int(np.argmin(np.abs(xs - cx)))
    prof = np.nanmax(np.where(np.isfinite(front[ix0 - 1: ix0 + 2]), front[ix0 - 1: ix0 + 2], -np.inf),
                     axis=0)  # mid-sagittal profile y(z)
    prof[~np.isfinite(prof)] = np.nan

    def arg(fn, lo, hi):
        sel = np.where((zs >= lo) & (zs <= hi) & np.isfinite(prof))[0]
        if sel.size == 0:
            raise ValueError(f"base head: no skin between z={lo:.0f} and {hi:.0f} mm")
        return int(sel[fn(prof[sel])])

    def mid(k):
        return np.array([cx, prof[k], zs[k]])

    k_prn = arg(np.argmax, cz - 100.0, cz - 30.0)
    z_prn = zs[k_prn]
    k_n = arg(np.argmin, z_prn + 12.0, z_prn + 45.0)
    k_g = arg(np.argmax, zs[k_n] + 5.0, zs[k_n] + 30.0)
    k_sn = arg(np.argmin, z_prn - 30.0, z_prn - 8.0)
    z_sn = zs[k_sn]
    lo_z = zs[np.isfinite(prof)].min()
    k_ls = arg(np.argmax, z_sn - 10.0, z_sn - 3.0)
    k_li = arg(np.argmax, z_sn - 24.0, z_sn - 14.0)
    k_pg = arg(np.argmax, max(z_sn - 50.0, lo_z + 4.0), max(z_sn - 30.0, lo_z + 8.0))
    out = {"prn": mid(k_prn), "n": mid(k_n), "g": mid(k_g), "sn": mid(k_sn),
           "ls": mid(k_ls), "li": mid(k_li), "pg": mid(k_pg)}

    def on_surface(x, z):
        i = int(np.argmin(np.abs(xs - x)))
        k = int(np.argmin(np.abs(zs - z)))
        return np.array([xs[i], front[i, k], zs[k]])

    def side_point(z, y_lo, y_hi, side):
        k = int(np.argmin(np.abs(zs - z)))
        ys = np.arange(yc - 120.0, yc + 150.0 + 0.5, 1.0)
        sel = (ys >= y_lo) & (ys <= y_hi)
        cols = inside[:, sel, k].any(axis=1)
        xi = np.where(cols)[0]
        if xi.size == 0:
            raise ValueError(f"base head: no skin at z={z:.0f} mm")
        i = xi.max() if side > 0 else xi.min()
        yy = ys[sel][np.where(inside[i, sel, k])[0]]
        return np.array([xs[i], float(yy.mean()), zs[k]])

    if not lateral:
        return out
    y_prn = out["prn"][1]
    z_n = out["n"][2]
    for side, tag in ((1, "l"), (-1, "r")):  # RAS: +x is the subject's left
        s = float(side)
        out[f"al_{tag}"] = on_surface(cx + s * 17.0, z_sn + 5.0)
        out[f"en_{tag}"] = on_surface(cx + s * 17.0, z_n - 8.0)
        out[f"sor_{tag}"] = on_surface(cx + s * 25.0, out["g"][2])
        out[f"ch_{tag}"] = on_surface(cx + s * 35.0, z_prn - 5.0)
        out[f"zy_{tag}"] = side_point(z_n - 25.0, y_prn - 100.0, y_prn - 60.0, side)
        out[f"go_{tag}"] = side_point(z_sn - 30.0, y_prn - 110.0, y_prn - 80.0, side)
        t = out[f"zy_{tag}"].copy()
        t[1] = y_prn - 105.0
        out[f"t_{tag}"] = t
    return out


def draw_face_parameters(rng: np.random.Generator, population: str) -> dict[str, float]:
    """Each measure's change from the base head (mm): population difference + N(0, SD)."""
    out = {}
    for m in FACE_MEASURES:
        if population not in m.delta_mm:
            raise ValueError(f"face model: unknown population {population!r}")
        out[m.name] = float(m.delta_mm[population] + m.sd_mm * rng.standard_normal())
    return out


def _moves(params: dict[str, float], landmarks: dict[str, np.ndarray], pop_scales: np.ndarray,
           base: dict[str, float]):
    """``(landmark position, displacement vector, sigma)`` for every moved landmark.

    The head-shape scaling changes facial distances too; that change is taken out of the
    width/length parameters so a measure's spread is the published one.
    """
    for m in FACE_MEASURES:
        amount = params[m.name]
        axis = m.distance[2]
        if axis is not None and all(ax == axis for _, ax, _ in m.landmarks):
            amount -= (pop_scales[axis] - 1.0) * base[m.name]
        for name, ax, sign in m.landmarks:
            vec = np.zeros(3)
            vec[ax] = sign * amount
            yield landmarks[name], vec, m.sigma_mm


def measure(landmarks: dict[str, np.ndarray]) -> dict[str, float]:
    """Value (mm) of every measure from a landmark set (see :class:`FaceMeasure`)."""
    out = {}
    for m in FACE_MEASURES:
        a, b, axis = m.distance
        d = landmarks[b] - landmarks[a]
        out[m.name] = float(np.linalg.norm(d) if axis is None else d[axis])
    return out


landmark_distances = measure


def face_displacement(points: np.ndarray, params: dict[str, float],
                      landmarks: dict[str, np.ndarray], centre: np.ndarray,
                      scales: np.ndarray, pop_scales: np.ndarray) -> np.ndarray:
    """Backward face displacement ``(3, ...)`` at subject-frame ``points`` ``(3, ...)``.

    Parameters
    ----------
    points
        Unposed subject-frame world points.
    params
        Output of :func:`draw_face_parameters`.
    landmarks
        Base-head landmarks (template world).
    centre, scales
        Head centre and total per-axis head scales of the subject (template -> subject
        frame: ``c + s (x - c)``).
    pop_scales
        Population x individual part of the scales (without the sex factor).
    """
    pts = np.asarray(points, dtype=np.float64)
    flat = pts.reshape(3, -1)
    out = np.zeros_like(flat)
    base = measure(landmarks)
    c = np.asarray(centre, dtype=float)
    s = np.asarray(scales, dtype=float)
    moves = []
    for pos, vec, sigma in _moves(params, landmarks, np.asarray(pop_scales, float), base):
        # window centred where the landmark ends up, so it lands exactly at L' + s * vec
        moves.append((c + s * (pos - c) + s * vec, vec, sigma))
    # windows are cut at 4 SD (weight < 3.4e-4): only points in their bounding box count
    lo = np.min([m[0] - 4.0 * m[2] for m in moves], axis=0)
    hi = np.max([m[0] + 4.0 * m[2] for m in moves], axis=0)
    near = np.all((flat >= lo[:, None]) & (flat <= hi[:, None]), axis=0)
    sub = flat[:, near]
    acc = np.zeros_like(sub)
    for centre_subject, vec, sigma in moves:
        r2 = ((sub - centre_subject[:, None]) ** 2).sum(0)
        hit = np.flatnonzero(r2 < 16.0 * sigma * sigma)
        acc[:, hit] -= vec[:, None] * np.exp(-r2[hit] / (2.0 * sigma * sigma))[None]
    out[:, near] = acc
    return out.reshape(pts.shape)


def subject_landmarks(landmarks: dict[str, np.ndarray], to_template, centre: np.ndarray,
                      scales: np.ndarray, iterations: int = 30) -> dict[str, np.ndarray]:
    """Positions of the base landmarks in a subject's unposed frame.

    Inverts the backward map ``to_template`` (unposed point -> template point) by fixed-point
    iteration started from the scaled position.
    """
    c = np.asarray(centre, dtype=float)
    s = np.asarray(scales, dtype=float)
    names = list(landmarks)
    target = np.stack([landmarks[k] for k in names], axis=1)  # (3, n)
    y = c[:, None] + s[:, None] * (target - c[:, None])
    for _ in range(iterations):
        err = to_template(y) - target
        y = y - s[:, None] * err
    return {k: y[:, i] for i, k in enumerate(names)}


@lru_cache(maxsize=1)
def _base_landmarks_cached() -> tuple[tuple[str, tuple[float, float, float]], ...]:
    from isyb_dask.synth.anatomy import load_template_maps

    maps = load_template_maps(1)
    found = find_landmarks(lambda p: maps.sample("head", p, order=1), maps.head_centre,
                           maps.brain_centre)
    return tuple((k, tuple(float(v) for v in pos)) for k, pos in found.items())


def base_landmarks() -> dict[str, np.ndarray]:
    """Landmarks of the base head (pydeface ``mean_reg2mean``), found once per process."""
    return {k: np.array(v) for k, v in _base_landmarks_cached()}


@dataclass(frozen=True)
class FaceField(SmoothField):
    """A subject's displacement: the smooth random field on its control grid plus the face.

    The face term is evaluated exactly (not through the coarse grid), so 6-mm windows keep
    their amplitude. ``values``/``affine`` hold the random part only; :meth:`sampled`
    gives the total on the control grid (for the truth file).
    """

    params: dict = None  # type: ignore[assignment]
    landmarks: dict = None  # type: ignore[assignment]
    centre: np.ndarray = None  # type: ignore[assignment]
    scales: np.ndarray = None  # type: ignore[assignment]
    pop_scales: np.ndarray = None  # type: ignore[assignment]

    def __call__(self, points: np.ndarray, order: int = 1) -> np.ndarray:
        base = super().__call__(points, order)
        return base + face_displacement(points, self.params, self.landmarks, self.centre,
                                        self.scales, self.pop_scales)

    def sampled(self) -> np.ndarray:
        """Total displacement ``(3, nx, ny, nz)`` at the control-grid points."""
        from isyb_dask.synth.fields import Grid

        pts = Grid(tuple(self.values.shape[1:]), self.affine).world()
        return self.values + face_displacement(pts, self.params, self.landmarks, self.centre,
                                               self.scales, self.pop_scales)
