"""Small analytic head phantoms with a face, for tests, benchmarks and demos.

The phantom is built in millimetres (RAS, origin at the head centre) so that its shape
parameters (head length, face depth) are meaningful at any resolution: scalp, skull, CSF,
grey and white matter ellipsoids, a neck, and a face made of a nose, lips, a chin and two
dark eyes. It comes with exact brain and face (KEEP) masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HeadPhantom", "make_head"]


@dataclass(frozen=True)
class HeadPhantom:
    """A generated head.

    Attributes
    ----------
    data
        float32 intensities (about 0..1000).
    affine
        Voxel-to-RAS affine.
    brain
        Boolean brain mask (grey + white matter + inner CSF).
    keep
        uint8 face mask in pydeface convention (1 keep, 0 face).
    """

    data: np.ndarray
    affine: np.ndarray
    brain: np.ndarray
    keep: np.ndarray


def _ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    return (
        ((x - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((z - centre[2]) / radii[2]) ** 2
    )


def make_head(
    voxel_mm: float = 3.0,
    *,
    shape: tuple[int, int, int] | None = None,
    radii: tuple[float, float, float] = (72.0, 92.0, 80.0),
    nose_mm: float = 22.0,
    noise: float = 10.0,
    seed: int = 0,
    affine: np.ndarray | None = None,
) -> HeadPhantom:
    """Generate a head phantom.

    Parameters
    ----------
    voxel_mm
        Isotropic voxel size.
    shape
        Grid shape; by default a 192 x 264 x 216 mm box.
    radii
        Outer scalp semi-axes (left-right, anterior-posterior, inferior-superior) in mm.
    nose_mm
        How far the nose protrudes in front of the scalp.
    noise
        Standard deviation of the Rician-like background and tissue noise.
    seed
        Seed of the noise generator.
    affine
        Voxel-to-RAS affine; by default axis-aligned RAS centred on the head.

    Returns
    -------
    HeadPhantom
    """
    if shape is None:
        shape = tuple(int(round(e / voxel_mm)) for e in (192.0, 264.0, 216.0))
    if affine is None:
        affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
        affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * voxel_mm + np.array([0.0, 0.0, -10.0])
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:4]).astype(np.float32)
    x, y, z = (c.reshape(shape) for c in xyz)
    rx, ry, rz = radii
    c = (0.0, 0.0, 0.0)
    scalp = _ellipsoid(x, y, z, c, radii) <= 1.0
    skull = _ellipsoid(x, y, z, c, (rx - 5, ry - 5, rz - 5)) <= 1.0
    csf = _ellipsoid(x, y, z, c, (rx - 11, ry - 11, rz - 11)) <= 1.0
    brain_c = (0.0, 0.0, 5.0)
    brain_r = (rx - 14, ry - 14, rz - 18)
    gm = _ellipsoid(x, y, z, brain_c, brain_r) <= 1.0
    wm = _ellipsoid(x, y, z, brain_c, (brain_r[0] - 8, brain_r[1] - 8, brain_r[2] - 8)) <= 1.0
    # face features, in front of the lower half of the head
    front = ry
    nose = _ellipsoid(x, y, z, (0.0, front - 4.0, -25.0), (9.0, 4.0 + nose_mm, 20.0)) <= 1.0
    lips = _ellipsoid(x, y, z, (0.0, front - 10.0, -55.0), (22.0, 14.0, 7.0)) <= 1.0
    chin = _ellipsoid(x, y, z, (0.0, front - 22.0, -75.0), (24.0, 20.0, 14.0)) <= 1.0
    neck = (((x / 50.0) ** 2 + ((y + 5.0) / 55.0) ** 2) <= 1.0) & (z < -40.0)
    head = scalp | nose | lips | chin | neck
    eyes = np.zeros(shape, bool)
    for ex in (-32.0, 32.0):
        eyes |= _ellipsoid(x, y, z, (ex, front - 22.0, -8.0), (12.0, 12.0, 12.0)) <= 1.0
    img = np.zeros(shape, np.float32)
    img[head] = 650.0
    img[skull] = 150.0
    img[csf] = 250.0
    img[gm] = 500.0
    img[wm] = 800.0
    img[eyes & ~gm] = 200.0
    rng = np.random.default_rng(seed)
    re = img + rng.normal(0.0, noise, shape)
    im = rng.normal(0.0, noise, shape)
    img = np.sqrt(re**2 + im**2).astype(np.float32)
    keep = ~((y > 15.0) & (z < 10.0) & ~(gm | wm))
    keep &= ~((z < -25.0) & (y > -10.0) & ~(gm | wm))
    return HeadPhantom(
        data=img, affine=affine, brain=gm | wm, keep=keep.astype(np.uint8)
    )
