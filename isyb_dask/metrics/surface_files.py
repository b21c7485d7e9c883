"""Per-metric fsLR 32k GIFTI files (``..._hemi-{L,R}_space-fsLR_den-32k_desc-<M>.shape.gii``)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np

from isyb_dask.io.derivatives import derivative_path, write_sidecar
from isyb_dask.metrics.fslr import N_VERTICES, N_VERTICES_HEMI
from isyb_dask.metrics.names import METRIC_LONG_NAMES, METRIC_UNITS

__all__ = ["write_surface_metric"]


def write_surface_metric(
    values: np.ndarray,
    out_dir: Path,
    subject: str,
    metric: str,
    sources=(),
    settings=None,
    *,
    session: str | None = None,
) -> list[Path]:
    """Write one metric as two fsLR 32k GIFTI shape files (L, R) with sidecars.

    Parameters
    ----------
    values
        ``(64984,)`` vertex values (left then right).
    out_dir, subject, session
        Derivatives root and BIDS labels.
    metric
        Metric name (``desc-`` entity).
    sources, settings
        Provenance for the sidecar.

    Returns
    -------
    list of Path
        The left and right files.
    """
    paths = []
    for hemi, sl, struct in (
        ("L", slice(0, N_VERTICES_HEMI), "CortexLeft"),
        ("R", slice(N_VERTICES_HEMI, N_VERTICES), "CortexRight"),
    ):
        path = derivative_path(
            out_dir,
            subject,
            "anat",
            "",
            session=session,
            hemi=hemi,
            space="fsLR",
            den="32k",
            desc=metric,
            extension=".shape.gii",
        )
        arr = nb.gifti.GiftiDataArray(
            np.asarray(values[sl], dtype=np.float32),
            intent="NIFTI_INTENT_SHAPE",
            datatype="NIFTI_TYPE_FLOAT32",
            meta=nb.gifti.GiftiMetaData({"AnatomicalStructurePrimary": struct, "Name": metric}),
        )
        img = nb.gifti.GiftiImage(darrays=[arr])
        tmp = path.with_name(f".tmp-{path.name}")
        nb.save(img, str(tmp))
        tmp.replace(path)
        write_sidecar(
            path,
            {
                "Metric": metric,
                "Units": METRIC_UNITS[metric],
                "Description": METRIC_LONG_NAMES[metric],
            },
            sources=sources,
            settings=settings,
        )
        paths.append(path)
    return paths
