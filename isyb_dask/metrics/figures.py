"""Surface figures of the group maps (paper Figures 3 and 4), matplotlib only.

Each map is drawn on the S1200 inflated fsLR 32k surface in four views (left lateral, left
medial, right lateral, right medial). Rendering is a small software rasteriser: for each view
the front-facing triangles are sampled at barycentric points, projected orthographically and
z-buffered into a pixel -> vertex lookup image (gaps inside the silhouette are filled with the
nearest hit pixel), with Lambert shading. That lookup is computed once per view, so each map
panel is one ``imshow``; this is far faster than ``mplot3d`` for 32k-vertex meshes.
Medial wall and NaN vertices are grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from isyb_dask.metrics.fslr import N_VERTICES_HEMI, FsLR32k, load_fslr32k

__all__ = [
    "VIEWS",
    "ViewRaster",
    "omitted_metrics",
    "plot_group_maps",
    "plot_surface_maps",
    "rasterize_view",
    "surface_maps_figure",
]

#: (hemisphere, view name, viewing direction from the eye to the brain, in MNI axes)
VIEWS: tuple[tuple[str, str, tuple[float, float, float]], ...] = (
    ("L", "lateral", (1.0, 0.0, 0.0)),
    ("L", "medial", (-1.0, 0.0, 0.0)),
    ("R", "lateral", (-1.0, 0.0, 0.0)),
    ("R", "medial", (1.0, 0.0, 0.0)),
)

# barycentric sampling points inside each triangle (vertices, edge midpoints, inner points)
_BARY = np.array(
    [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [0.5, 0.5, 0],
        [0, 0.5, 0.5],
        [0.5, 0, 0.5],
        [1 / 3, 1 / 3, 1 / 3],
        [2 / 3, 1 / 6, 1 / 6],
        [1 / 6, 2 / 3, 1 / 6],
        [1 / 6, 1 / 6, 2 / 3],
    ]
)


@dataclass(frozen=True)
class ViewRaster:
    """Pixel -> vertex lookup of one view.

    Attributes
    ----------
    vertex
        ``(h, w) int`` hemisphere-local vertex index per pixel, -1 for background.
    shade
        ``(h, w)`` Lambert shading factor in [0.45, 1].
    """

    vertex: np.ndarray
    shade: np.ndarray


def rasterize_view(
    coords: np.ndarray,
    faces: np.ndarray,
    direction: tuple[float, float, float],
    width: int = 220,
) -> ViewRaster:
    """Orthographic z-buffered rasterisation of one hemisphere.

    Parameters
    ----------
    coords
        ``(n, 3)`` vertex coordinates.
    faces
        ``(f, 3)`` triangles.
    direction
        Viewing direction (from the eye towards the surface).
    width
        Image width in pixels (height follows the aspect ratio).

    Returns
    -------
    ViewRaster
    """
    d = np.asarray(direction, dtype=np.float64)
    d /= np.linalg.norm(d)
    up = np.array([0.0, 0.0, 1.0])
    right = np.cross(d, up)
    tri = coords[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normal, axis=1)
    facing = -(normal @ d) / np.where(norm > 0, norm, 1.0)
    front = facing > 0
    tri, faces_f, facing = tri[front], faces[front], facing[front]
    pts = np.einsum("kj,fjc->fkc", _BARY, tri).reshape(-1, 3)
    nearest = faces_f[:, np.argmax(_BARY, axis=1)].reshape(-1)
    shade_pts = np.repeat(0.45 + 0.55 * facing, len(_BARY))
    u, v, depth = pts @ right, pts @ up, pts @ d
    all_u, all_v = coords @ right, coords @ up
    scale = (width - 1) / (all_u.max() - all_u.min())
    height = int(np.ceil((all_v.max() - all_v.min()) * scale)) + 1
    col = np.round((u - all_u.min()) * scale).astype(np.int64)
    row = np.round((all_v.max() - v) * scale).astype(np.int64)
    pix = row * width + col
    order = np.argsort(depth, kind="stable")  # nearest (smallest depth along d) first
    uniq, first = np.unique(pix[order], return_index=True)
    vert = np.full(height * width, -1, dtype=np.int64)
    shade = np.ones(height * width)
    vert[uniq] = nearest[order][first]
    shade[uniq] = shade_pts[order][first]
    vert = vert.reshape(height, width)
    shade = shade.reshape(height, width)
    hit = vert >= 0
    inside = ndimage.binary_fill_holes(ndimage.binary_closing(hit, iterations=2))
    _, (ri, ci) = ndimage.distance_transform_edt(~hit, return_indices=True)
    fill = inside & ~hit
    vert[fill] = vert[ri[fill], ci[fill]]
    shade[fill] = shade[ri[fill], ci[fill]]
    return ViewRaster(vertex=vert, shade=shade)


def _row_limits(values: np.ndarray) -> tuple[float, float]:
    """Colour limits of one row: 2nd-98th percentile of the finite values."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [2, 98]))
    return lo, (hi if hi > lo else lo + 1.0)


def surface_maps_figure(
    maps: np.ndarray,
    titles: list[str],
    *,
    surf: FsLR32k | None = None,
    cmap: str = "viridis",
    suptitle: str | None = None,
    units: list[str] | None = None,
    footnote: str | None = None,
):
    """Draw several vertex maps, one row per map and one column per view.

    Each row has one colour scale (2nd-98th percentile of the map) shared by its four views,
    drawn as a colour bar in the row's own last column (so bar and maps line up), labelled
    with the row's unit.

    Parameters
    ----------
    maps
        ``(n_maps, 64984)`` values; NaN vertices are grey.
    titles
        One row label per map.
    surf
        Surfaces (default :func:`load_fslr32k`); the inflated surface is drawn.
    cmap
        Matplotlib colormap name.
    suptitle
        Figure title.
    units
        Unit of each row (colour-bar label); None for no label.
    footnote
        Text under the maps (e.g. which metrics were left out and why).

    Returns
    -------
    matplotlib.figure.Figure
        Axes: four map axes per row then the row's colour-bar axes.
    """
    from matplotlib import colormaps
    from matplotlib import colors as mcolors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

    surf = surf if surf is not None else load_fslr32k()
    maps = np.atleast_2d(np.asarray(maps, dtype=np.float64))
    rasters = {}
    for hemi, name, direction in VIEWS:
        sl = surf.hemi_slice(hemi)
        rasters[(hemi, name)] = rasterize_view(
            surf.coords["inflated"][sl], surf.hemi_faces(hemi), direction
        )
    colormap = colormaps[cmap]
    n_rows = max(len(maps), 1)
    foot = 0.35 if footnote else 0.0
    height = 1.5 * n_rows + 0.6 + foot
    fig = Figure(figsize=(2.2 * len(VIEWS) + 1.6, height))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        n_rows, len(VIEWS) + 1, width_ratios=[1.0] * len(VIEWS) + [0.07],
        top=1.0 - 0.45 / height, bottom=(0.1 + foot) / height, left=0.05, right=0.86,
        wspace=0.05, hspace=0.12,
    )
    for row, (values, title) in enumerate(zip(maps, titles)):
        norm = mcolors.Normalize(*_row_limits(values))
        for col, (hemi, name, _) in enumerate(VIEWS):
            ax = fig.add_subplot(grid[row, col])
            ras = rasters[(hemi, name)]
            off = 0 if hemi == "L" else N_VERTICES_HEMI
            hemi_vals = values[off : off + N_VERTICES_HEMI]
            fg = ras.vertex >= 0
            img = np.ones(ras.vertex.shape + (4,))
            pv = hemi_vals[ras.vertex[fg]]
            rgba = colormap(norm(np.nan_to_num(pv)))
            rgba[~np.isfinite(pv)] = (0.7, 0.7, 0.7, 1.0)
            rgba[:, :3] *= ras.shade[fg][:, None]
            img[fg] = rgba
            ax.imshow(img, interpolation="nearest")
            ax.axis("off")
            if row == 0:
                ax.set_title(f"{hemi} {name}", fontsize=8)
            if col == 0:
                ax.text(-0.05, 0.5, title, transform=ax.transAxes, rotation=90, ha="right",
                        va="center", fontsize=8)
        cax = fig.add_subplot(grid[row, len(VIEWS)])
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), cax=cax)
        bar.ax.tick_params(labelsize=7)
        if units and units[row]:
            bar.set_label(units[row], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, y=1.0 - 0.1 / height)
    if footnote:
        fig.text(0.05, 0.08 / height, footnote, fontsize=7, color="0.3", va="bottom", wrap=True)
    return fig


def plot_surface_maps(
    maps: np.ndarray,
    titles: list[str],
    path: str | Path,
    *,
    surf: FsLR32k | None = None,
    cmap: str = "viridis",
    suptitle: str | None = None,
    units: list[str] | None = None,
    footnote: str | None = None,
    dpi: int = 100,
) -> Path:
    """Draw :func:`surface_maps_figure` and save it as a PNG (parents created).

    Parameters are those of :func:`surface_maps_figure`, plus ``path`` (the PNG) and ``dpi``.

    Returns
    -------
    Path
        ``path``.
    """
    fig = surface_maps_figure(maps, titles, surf=surf, cmap=cmap, suptitle=suptitle,
                              units=units, footnote=footnote)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def omitted_metrics(group, missing=None) -> dict[str, str]:
    """Metrics of a group-maps dataset that have no finite value, with the reason.

    Parameters
    ----------
    group
        Dataset with ``mean`` over ``(metric, vertex)`` (and optionally ``n``).
    missing
        Optional ``(subject, metric)`` DataArray of per-subject missing reasons (the store's
        ``surface/missing``); the most frequent non-empty reason names the cause.

    Returns
    -------
    dict
        Metric -> reason, in the metric order of ``group``.
    """
    out: dict[str, str] = {}
    mean = np.asarray(group["mean"].values, dtype=np.float64)
    for i, metric in enumerate(str(m) for m in group["metric"].values):
        if np.isfinite(mean[i]).any():
            continue
        reason = "no subject has a value"
        if missing is not None and metric in [str(m) for m in missing["metric"].values]:
            texts = [str(t) for t in np.asarray(missing.sel(metric=metric).values).ravel()
                     if str(t).strip()]
            if texts:
                vals, counts = np.unique(texts, return_counts=True)
                reason = f"{vals[np.argmax(counts)]} ({counts.max()} of {len(texts)} subjects)"
        out[metric] = reason
    return out


def plot_group_maps(group, fig_dir: str | Path, *, surf: FsLR32k | None = None,
                    missing=None) -> dict:
    """Figures 3 and 4: group mean and SD maps of every metric that has data.

    Metrics without any finite group value get no row; the figure's footnote names them and
    why (see :func:`omitted_metrics`). Rows are labelled with units from
    :data:`isyb_dask.metrics.names.METRIC_UNITS`.

    Parameters
    ----------
    group
        Dataset from :func:`isyb_dask.group.maps.compute_group_maps`.
    fig_dir
        Output folder.
    surf
        Surfaces (default :func:`load_fslr32k`).
    missing
        Optional per-subject missing reasons (``surface/missing``) for the footnote.

    Returns
    -------
    dict
        ``{"group_mean_maps": Path, "group_sd_maps": Path}``.
    """
    from isyb_dask.metrics.names import METRIC_UNITS

    fig_dir = Path(fig_dir)
    metrics = [str(m) for m in group["metric"].values]
    omitted = omitted_metrics(group, missing)
    rows = [i for i, m in enumerate(metrics) if m not in omitted]
    footnote = ("No row for " + "; ".join(f"{m}: {r}" for m, r in omitted.items())
                if omitted else None)
    n_inc = group.attrs.get("n_included", "?")
    out = {}
    for var, fname, cmap in (
        ("mean", "group_mean_maps", "viridis"),
        ("sd", "group_sd_maps", "magma"),
    ):
        values = np.asarray(group[var].values)[rows]
        out[fname] = plot_surface_maps(
            values if rows else np.full((1, values.shape[-1]), np.nan),
            [metrics[i] for i in rows] or ["no metric has data"],
            fig_dir / f"{fname}.png",
            surf=surf,
            cmap=cmap,
            suptitle=f"Group {var} (n = {n_inc})",
            units=[METRIC_UNITS.get(metrics[i], "").split(" (")[0] for i in rows] or None,
            footnote=footnote,
        )
    return out
