"""Per-subject report pictures: slice mosaics with contours, edge overlays, carpet plot, maps.

Every function draws with matplotlib's Agg canvas at low resolution and writes one PNG;
inputs are read with nibabel and never modified. Volumes are brought to RAS orientation
(:func:`nibabel.as_closest_canonical`) so that every mosaic is drawn the same way: axial
slices, anterior up, left on the left of the picture.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["load_ras", "slice_indices", "contour_mosaic", "overlay_edges", "carpet_plot",
           "maps_mosaic", "resample_to", "tile", "edge_check"]

DPI = 72
_COLOURS = ("#4daf4a", "#377eb8", "#ff7f00", "#e41a1c")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def load_ras(path: Path):
    """A NIfTI image reoriented to RAS (first volume of a 4D image), data in memory.

    The last few images are cached (keyed by path and modification time): a subject page
    reads its T1w for several pictures.
    """
    path = Path(path)
    return _load_ras(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_ras(path: str, mtime_ns: int):
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(path))
    if img.ndim == 4:
        img = img.slicer[..., 0]
    data = np.asarray(img.dataobj, dtype=np.float32)
    data.setflags(write=False)
    return nib.Nifti1Image(data, img.affine)


def resample_to(img, ref, matrix: np.ndarray | None = None, order: int = 1,
                slices: Sequence[int] | None = None) -> np.ndarray:
    """Values of ``img`` on the grid of ``ref``.

    Parameters
    ----------
    img, ref
        Nibabel images (3D).
    matrix
        Optional 4x4 world transform from ``ref`` world coordinates to ``img`` world
        coordinates (e.g. a subject-to-template affine); identity when None.
    order
        Spline order.
    slices
        Only these axial slices (third axis) of ``ref``: the result has ``len(slices)``
        slices, in that order (far cheaper than the whole volume).

    Returns
    -------
    numpy.ndarray
        Array with the shape of ``ref`` (or of the selected slices).
    """
    from scipy import ndimage

    world = np.eye(4) if matrix is None else np.asarray(matrix, dtype=float)
    vox = np.linalg.inv(img.affine) @ world @ ref.affine
    data = np.asarray(img.dataobj, dtype=np.float32)
    nx, ny, nz = ref.shape[:3]
    ks = np.arange(nz) if slices is None else np.asarray(slices)
    grid = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), ks, indexing="ij"), 0)
    coords = np.tensordot(vox[:3, :3], grid.reshape(3, -1), 1) + vox[:3, 3:4]
    res = ndimage.map_coordinates(data, coords, order=order, mode="constant", cval=0.0)
    return res.reshape(nx, ny, len(ks)).astype(np.float32)


def slice_indices(mask: np.ndarray, n: int, axis: int = 2) -> list[int]:
    """``n`` evenly spaced slices along ``axis`` through the non-zero extent of ``mask``."""
    other = tuple(i for i in range(mask.ndim) if i != axis)
    idx = np.flatnonzero(np.asarray(mask).any(axis=other))
    lo, hi = (int(idx[0]), int(idx[-1])) if idx.size else (0, mask.shape[axis] - 1)
    return [int(round(v)) for v in np.linspace(lo, hi, n + 2)[1:-1]]


def _slice(vol: np.ndarray, k: int) -> np.ndarray:
    return np.rot90(vol[:, :, k])  # anterior up, left on the left (RAS)


def tile(vol: np.ndarray, ks: Sequence[int], cols: int | None = None) -> np.ndarray:
    """Axial slices ``ks`` of a volume side by side (rows of ``cols``), one picture.

    One ``imshow`` of a tiled array is much faster than one axes per slice.
    """
    cols = cols or len(ks)
    tiles = [_slice(vol, k) for k in ks]
    h, w = tiles[0].shape
    rows = -(-len(tiles) // cols)
    out = np.zeros((rows * h, cols * w), dtype=np.float32)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = t
    return out


def _limits(vol: np.ndarray) -> tuple[float, float]:
    fin = vol[np.isfinite(vol) & (vol != 0)]
    if not fin.size:
        return 0.0, 1.0
    lo, hi = np.percentile(fin, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def contour_mosaic(background, contours: Mapping[str, np.ndarray], out: Path, *,
                   n_slices: int = 8, title: str = "") -> Path:
    """Axial mosaic of a volume with the 0.5 iso-contour of each given map.

    Parameters
    ----------
    background
        RAS nibabel image (the T1w).
    contours
        Label -> array on the background grid (masks or probability maps).
    out
        PNG path.
    n_slices
        Number of axial slices (two rows).
    title
        Figure title.

    Returns
    -------
    Path
    """
    from matplotlib.lines import Line2D

    bg = np.asarray(background.dataobj, dtype=np.float32)
    ref = np.asarray(next(iter(contours.values()))) > 0.5 if contours else bg > 0
    ks = slice_indices(ref, n_slices)
    cols = (len(ks) + 1) // 2
    img = tile(bg, ks, cols)
    fig = _figure(7.0, 7.0 * img.shape[0] / img.shape[1] + 0.5)
    ax = fig.add_axes((0, 0.06, 1, 0.88))
    lo, hi = _limits(bg)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    for j, arr in enumerate(contours.values()):
        t = tile(np.asarray(arr, dtype=np.float32), ks, cols)
        if t.min() < 0.5 < t.max():
            ax.contour(t, levels=[0.5], colors=_COLOURS[j % len(_COLOURS)], linewidths=0.8)
    ax.set_axis_off()
    handles = [Line2D([], [], color=_COLOURS[j % len(_COLOURS)], label=lab)
               for j, lab in enumerate(contours)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
                   frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, out)


def overlay_edges(background: np.ndarray, moving: np.ndarray, out: Path, *,
                  title: str = "") -> Path:
    """Edges of one picture (red iso-contours) over another of the same shape.

    Parameters
    ----------
    background
        2D array shown in grey (e.g. tiled slices, :func:`tile`).
    moving
        2D array of the same shape whose edges are drawn (two intensity iso-levels: its
        head/background border and an inner tissue border).
    out
        PNG path.
    title
        Figure title.

    Returns
    -------
    Path
    """
    fin = moving[np.isfinite(moving)]
    fin = fin[fin > 0.1 * fin.max()] if fin.size and fin.max() > 0 else fin[:0]
    levels = sorted(set(float(v) for v in np.percentile(fin, [15, 75]))) if fin.size else []
    fig = _figure(8.0, 8.0 * background.shape[0] / background.shape[1] + 0.35)
    ax = fig.add_axes((0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    lo, hi = _limits(background)
    ax.imshow(background, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    levels = [v for v in levels if moving.min() < v < moving.max()]
    if levels:
        ax.contour(moving, levels=levels, colors="#e41a1c", linewidths=0.7)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, out)


def edge_check(background, moving_img, out: Path, *, matrix: np.ndarray | None = None,
               n_slices: int = 6, title: str = "") -> Path:
    """Edges of ``moving_img`` mapped onto ``background`` (RAS images), axial slices.

    Parameters
    ----------
    background
        RAS nibabel image shown in grey.
    moving_img
        Nibabel image whose edges are drawn, resampled onto the background grid.
    out
        PNG path.
    matrix
        World transform from background to ``moving_img`` coordinates (None: identity,
        both already in the same space).
    n_slices
        Number of slices (one row).
    title
        Figure title.

    Returns
    -------
    Path
    """
    bg = np.asarray(background.dataobj, dtype=np.float32)
    fin = bg[bg > 0]
    thr = float(np.percentile(fin, 20)) if fin.size else 0.0
    ks = slice_indices(bg > thr, n_slices)
    moved = resample_to(moving_img, background, matrix, slices=ks)
    return overlay_edges(tile(bg, ks), tile(moved, range(len(ks))), out, title=title)


def carpet_plot(bold: np.ndarray, mask: np.ndarray, confounds: pd.DataFrame, out: Path, *,
                fd_threshold: float = 0.2, max_voxels: int = 3000, title: str = "") -> Path:
    """MRIQC/fMRIPrep-style carpet plot with FD and DVARS traces; spikes marked.

    Parameters
    ----------
    bold
        4D series (x, y, z, t).
    mask
        3D brain mask on the same grid.
    confounds
        Table with ``framewise_displacement`` and ``std_dvars`` (``dvars`` if absent); one
        row per volume.
    out
        PNG path.
    fd_threshold
        FD (mm) above which a volume is a spike: red line on the FD trace and red ticks
        over all panels.
    max_voxels
        Voxels shown (evenly subsampled, sorted by mean signal).
    title
        Figure title.

    Returns
    -------
    Path
    """
    ts = np.asarray(bold, dtype=np.float32)[np.asarray(mask) > 0]
    if ts.shape[0] > max_voxels:
        ts = ts[np.linspace(0, ts.shape[0] - 1, max_voxels).astype(int)]
    ts = ts[np.argsort(ts.mean(1))]
    sd = ts.std(1, keepdims=True)
    z = (ts - ts.mean(1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    n_t = bold.shape[-1]
    empty = pd.Series(np.nan, index=range(n_t))
    fd = pd.to_numeric(confounds.get("framewise_displacement", empty),
                       errors="coerce").to_numpy(float)
    dv_col = "std_dvars" if "std_dvars" in confounds else "dvars"
    dv = pd.to_numeric(confounds.get(dv_col, empty), errors="coerce").to_numpy(float)
    spikes = np.flatnonzero(np.nan_to_num(fd) > fd_threshold)
    fig = _figure(8.0, 4.6)
    grid = fig.add_gridspec(3, 1, height_ratios=[1, 1, 3.2], hspace=0.08,
                            left=0.09, right=0.98, top=0.92, bottom=0.1)
    ax_fd, ax_dv, ax_c = (fig.add_subplot(grid[i]) for i in range(3))
    t = np.arange(len(fd))
    ax_fd.plot(t, fd, color="#377eb8", lw=1)
    ax_fd.axhline(fd_threshold, color="#e41a1c", lw=0.8, ls="--")
    ax_fd.set_ylabel("FD (mm)", fontsize=8)
    ax_dv.plot(np.arange(len(dv)), dv, color="#4daf4a", lw=1)
    ax_dv.set_ylabel("std DVARS" if dv_col == "std_dvars" else "DVARS", fontsize=8)
    ax_c.imshow(z, aspect="auto", cmap="gray", vmin=-2, vmax=2, interpolation="nearest")
    ax_c.set_ylabel("brain voxels", fontsize=8)
    ax_c.set_yticks([])
    ax_c.set_xlabel("volume", fontsize=8)
    for ax in (ax_fd, ax_dv, ax_c):
        ax.set_xlim(-0.5, n_t - 0.5)
        ax.tick_params(labelsize=7)
        for s in spikes:
            ax.axvline(s, color="#e41a1c", lw=0.8, alpha=0.7)
    for ax in (ax_fd, ax_dv):
        ax.set_xticklabels([])
    fig.suptitle(title or f"Carpet plot ({len(spikes)} volumes with FD > {fd_threshold:g} mm)",
                 fontsize=9)
    return _save(fig, out)


def maps_mosaic(maps: Sequence[tuple[str, object, str]], out: Path, *, n_slices: int = 6) -> Path:
    """One row of axial slices per map, each row with its own colour bar and unit.

    Parameters
    ----------
    maps
        ``[(name, RAS nibabel image, unit)]``.
    out
        PNG path.
    n_slices
        Slices per row.

    Returns
    -------
    Path
    """
    from matplotlib import colors as mcolors
    from matplotlib.cm import ScalarMappable

    first = np.asarray(maps[0][1].dataobj) if maps else np.zeros((1, 1, 1))
    row_h = 7.5 * first.shape[1] / (n_slices * first.shape[0]) + 0.1
    fig = _figure(9.0, row_h * len(maps) + 0.2)
    grid = fig.add_gridspec(len(maps), 2, width_ratios=[1, 0.015], left=0.06, right=0.9,
                            top=0.99, bottom=0.01, wspace=0.02, hspace=0.06)
    for row, (name, img, unit) in enumerate(maps):
        vol = np.asarray(img.dataobj, dtype=np.float32)
        vol = np.where(np.isfinite(vol), vol, 0.0)
        lo, hi = _limits(vol)
        norm = mcolors.Normalize(lo, hi)
        ax = fig.add_subplot(grid[row, 0])
        ax.imshow(np.ma.masked_equal(tile(vol, slice_indices(vol != 0, n_slices)), 0.0),
                  cmap="viridis", norm=norm, interpolation="nearest")
        ax.set_facecolor("black")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, fontsize=9)
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"),
                           cax=fig.add_subplot(grid[row, 1]))
        bar.ax.tick_params(labelsize=7)
        bar.set_label(unit, fontsize=7)
    return _save(fig, out)
