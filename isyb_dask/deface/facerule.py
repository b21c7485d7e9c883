"""One rule for a template's face mask, defined on the template's own face.

The rule is anchored at the nasion of the template's own skin surface (found with
:func:`isyb_dask.synth.face_model.find_landmarks` on the template head):

* face = head voxels within 75 mm of the nasion's sagittal plane, in front of the coronal
  plane 49 mm behind the nasion (``y > y_n - 49``), below an oblique plane rising from
  11 mm under the nasion at that coronal plane to 14 mm above it at the nasion
  (``z < z_n - 11 + 0.53 (y - y_n + 49)``) and below ``z_n + 14``.

The numbers reproduce the geometry of pydeface's face mask on pydeface's own head relative to
its nasion (Dice 0.95 with pydeface's mask on its head voxels, see ``docs/deface.md``), so every
template gets a mask of the same shape placed on its own face, rather than a mask carried
over from another head by registration.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage as ndi

__all__ = ["rule_face_mask", "write_rule_face_mask"]


def _head_mask(data: np.ndarray) -> np.ndarray:
    hi = float(np.percentile(data, 99))
    mask = data > 0.1 * hi
    mask = ndi.binary_opening(mask, iterations=1)
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        mask = lab == (1 + int(np.argmax(sizes)))
    mask = ndi.binary_closing(mask, iterations=2)
    for z in range(mask.shape[2]):
        mask[:, :, z] = ndi.binary_fill_holes(mask[:, :, z])
    return mask


def rule_face_mask(head: np.ndarray, affine: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """KEEP mask (1 keep, 0 face; pydeface convention) of a template head by the rule.

    Parameters
    ----------
    head
        Template head image (with a face).
    affine
        Its voxel-to-world affine.
    brain
        Brain mask on the same grid (its centre sets the mid-sagittal plane and the search
        range for the facial profile).

    Returns
    -------
    numpy.ndarray
        uint8 array on the input grid.
    """
    from isyb_dask.synth.face_model import find_landmarks

    img = nb.Nifti1Image(np.asarray(head, dtype=np.float32), affine)
    canon = nb.as_closest_canonical(img)
    data = np.asarray(canon.dataobj, dtype=np.float64)
    b = np.asarray(nb.as_closest_canonical(nb.Nifti1Image(
        (np.asarray(brain) > 0.5).astype(np.uint8), affine)).dataobj) > 0
    aff = canon.affine
    hm = _head_mask(data).astype(np.float32)
    inv = np.linalg.inv(aff)

    def sample(points: np.ndarray) -> np.ndarray:
        flat = points.reshape(3, -1)
        vox = inv[:3, :3] @ flat + inv[:3, 3:4]
        return ndi.map_coordinates(hm, vox, order=1, mode="constant").reshape(points.shape[1:])

    def centre(mask: np.ndarray) -> np.ndarray:
        com = np.array(ndi.center_of_mass(mask))
        return aff[:3, :3] @ com + aff[:3, 3]

    marks = find_landmarks(sample, centre(hm > 0.5), centre(b), lateral=False)
    xn, yn, zn = marks["n"]
    idx = np.indices(data.shape).reshape(3, -1)
    w = (aff[:3, :3] @ idx + aff[:3, 3:4]).reshape((3, *data.shape))
    x, y, z = w
    face = ((hm > 0.5) & (np.abs(x - xn) < 75.0) & (y > yn - 49.0)
            & (z < zn - 11.0 + 0.53 * (y - yn + 49.0)) & (z < zn + 14.0))
    keep = (~face).astype(np.uint8)
    # back to the input orientation
    back = nb.Nifti1Image(keep, aff).as_reoriented(
        nb.orientations.ornt_transform(nb.io_orientation(aff), nb.io_orientation(affine)))
    return np.asarray(back.dataobj, dtype=np.uint8)


def write_rule_face_mask(head_path: str | Path, brain_path: str | Path, out_path: str | Path) -> Path:
    """Apply :func:`rule_face_mask` to files and write the KEEP mask (uint8)."""
    img = nb.load(str(head_path))
    brain = nb.load(str(brain_path))
    if brain.shape[:3] != img.shape[:3]:
        raise ValueError(f"{Path(brain_path).name}: not on the grid of {Path(head_path).name}")
    keep = rule_face_mask(np.asarray(img.dataobj), img.affine, np.asarray(brain.dataobj))
    out = Path(out_path)
    nb.save(nb.Nifti1Image(keep, img.affine), str(out))
    return out
