"""Names and owners of the per-subject derivatives shared between stages.

One table says which stage writes each shared derivative, so that no two stages write the
same path (issue 11: the brain mask, the GM map and the BOLD brain mask used to be written
twice, the later stage silently replacing the first one's file and sidecar):

* the **anatomical reference** (:mod:`isyb_dask.anat.derivatives`) writes the subject's brain
  and head masks, the CSF/GM/WM posteriors of the one segmentation and the N4 bias field;
* the **anatomical QC** writes the masks only it uses (rotation, air, artifacts) and the IQM
  JSON;
* the **BOLD reference / functional QC** writes the confounds table (motion parameters, FD,
  DVARS), the motion-corrected series, the BOLD brain mask and the IQM JSON;
* per template, **deface** writes ``desc-defaced<T>_T1w``, ``desc-face<T>_mask``, with
  ``--keep-removed-face`` ``desc-removedface<T>_T1w`` (0600), the renders
  ``figures/sub-X_desc-defaced<T>_render.png`` (the original's ``desc-original_render.png``
  only with that flag, 0600) and the face descriptors ``audit/sub-X_desc-face_embeddings.npz``
  (0600): :func:`deface_path`, :func:`render_path`, :func:`embeddings_path`;
* the **standard-space placement** of the anatomy writes the ITK transforms
  ``from-T1w_to-<Space>_mode-image_xfm.h5`` and the inverse (:func:`transform_paths`) and the
  subject surfaces ``hemi-{L,R}_space-T1w_den-32k_{white,midthickness,pial}.surf.gii``
  (:func:`surface_path`);
* the **metrics** write their maps through :class:`isyb_dask.metrics.volume_writer.VolumeWriter`
  (native ``desc-<M>`` and ``space-MNI152NLin6Asym`` maps, the ``desc-thickness_T1w`` map)
  and :mod:`isyb_dask.metrics.surface_files` (``space-fsLR_den-32k_desc-<M>.shape.gii``): one
  writer each, entities given by the metric table.

Functions return paths only; they never write. ``tests/test_contract.py`` runs a subject and
fails if any path is written twice or lacks a sidecar.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from isyb_dask.io.derivatives import derivative_path, subject_label

__all__ = [
    "ANAT_OUTPUTS",
    "DEFACE_OUTPUTS",
    "FUNC_OUTPUTS",
    "Output",
    "anat_path",
    "deface_path",
    "embeddings_path",
    "func_path",
    "owner_of",
    "render_path",
    "surface_path",
    "template_label",
    "transform_paths",
]


class Output(NamedTuple):
    """One derivative: BIDS suffix, entities, extension, owning stage and description."""

    suffix: str
    entities: dict[str, str]
    extension: str
    owner: str
    description: str


ANAT_OUTPUTS: dict[str, Output] = {
    "brain": Output("mask", {"desc": "brain"}, ".nii.gz", "anatomy",
                    "Brain mask: reference-atlas brain mask through the template registration "
                    "(the one brain mask of every stage)."),
    "head": Output("mask", {"desc": "head"}, ".nii.gz", "anatomy",
                   "Head mask (MRIQC gradient recipe)."),
    "csf": Output("probseg", {"label": "CSF"}, ".nii.gz", "anatomy",
                  "CSF posterior of the 3-class EM segmentation (QC, GMV, BOLD nuisance)."),
    "gm": Output("probseg", {"label": "GM"}, ".nii.gz", "anatomy",
                 "GM posterior of the 3-class EM segmentation (QC, GMV, BOLD nuisance)."),
    "wm": Output("probseg", {"label": "WM"}, ".nii.gz", "anatomy",
                 "WM posterior of the 3-class EM segmentation (QC, GMV, BOLD nuisance)."),
    "bias": Output("biasfield", {"desc": "N4"}, ".nii.gz", "anatomy",
                   "Multiplicative N4 bias field: N4-corrected T1w = clip(T1w, 0) / field; IQM "
                   "input = that times harmonization_factor (factor in the IQM JSON)."),
    "rotation": Output("mask", {"desc": "rotation"}, ".nii.gz", "qc_anat",
                       "Rotation (zero-padding) mask, excluded from the FBER background and "
                       "EFC (MRIQC RotationMask)."),
    "air": Output("mask", {"desc": "air"}, ".nii.gz", "qc_anat",
                  "Air mask: hat mask minus artifacts, zero padding and defaced regions."),
    "artifacts": Output("mask", {"desc": "artifacts"}, ".nii.gz", "qc_anat",
                        "Artifact voxels of the hat mask (background / MAD > z-score), used "
                        "by qi_1."),
    "iqms": Output("T1w", {"desc": "iqms"}, ".json", "qc_anat", "T1w IQMs (MRIQC names)."),
}

FUNC_OUTPUTS: dict[str, Output] = {
    "confounds": Output("timeseries", {"desc": "confounds"}, ".tsv", "qc_func",
                        "Motion parameters, framewise displacement (the FD of the exclusion "
                        "rule) and DVARS."),
    "hmc": Output("bold", {"desc": "hmc"}, ".nii.gz", "qc_func",
                  "Head-motion corrected series."),
    "brain": Output("mask", {"desc": "brain"}, ".nii.gz", "qc_func",
                    "BOLD brain mask (3dAutomask-like) shared by the QC and the metrics."),
    "iqms": Output("bold", {"desc": "iqms"}, ".json", "qc_func", "BOLD IQMs (MRIQC names)."),
}


def owner_of(datatype: str, key: str) -> str:
    """Stage that writes a shared derivative (``datatype`` ``"anat"`` or ``"func"``)."""
    table = ANAT_OUTPUTS if datatype == "anat" else FUNC_OUTPUTS
    return table[key].owner


def anat_path(out_dir: str | os.PathLike[str], subject: str, key: str, *,
              session: str | None = None, mkdir: bool = True) -> Path:
    """Path of an anatomical derivative of :data:`ANAT_OUTPUTS`."""
    out = ANAT_OUTPUTS[key]
    return derivative_path(out_dir, subject, "anat", out.suffix, session=session,
                           extension=out.extension, mkdir=mkdir, **out.entities)


def func_path(out_dir: str | os.PathLike[str], subject: str, key: str,
              entities: dict[str, str | None], *, mkdir: bool = True) -> Path:
    """Path of a BOLD derivative of :data:`FUNC_OUTPUTS`.

    ``entities`` are the run's ``session``, ``task``, ``acq``, ``run``
    (:func:`isyb_dask.qc.func_stage.bold_entities`).
    """
    out = FUNC_OUTPUTS[key]
    kw = {k: v for k, v in entities.items() if v is not None}
    return derivative_path(out_dir, subject, "func", out.suffix, extension=out.extension,
                           mkdir=mkdir, **out.entities, **kw)


#: Per-template anatomical derivatives of the deface stage (``{template}``: its label).
DEFACE_OUTPUTS: dict[str, Output] = {
    "defaced": Output("T1w", {"desc": "defaced{template}"}, ".nii.gz", "deface",
                      "Defaced T1w (original grid, dtype and header)."),
    "face": Output("mask", {"desc": "face{template}"}, ".nii.gz", "deface",
                   "Voxels the deface method replaced with this template."),
    "removedface": Output("T1w", {"desc": "removedface{template}"}, ".nii.gz", "deface",
                          "Original minus defaced (face-bearing, mode 0600; only with "
                          "--keep-removed-face)."),
}


def template_label(template: str) -> str:
    """A template's name as a BIDS ``desc`` label (letters and digits only)."""
    return re.sub(r"[^A-Za-z0-9]", "", str(template))


def deface_path(out_dir: str | os.PathLike[str], subject: str, key: str, template: str, *,
                mkdir: bool = True) -> Path:
    """Path of a per-template deface derivative of :data:`DEFACE_OUTPUTS`."""
    out = DEFACE_OUTPUTS[key]
    ents = {k: v.format(template=template_label(template)) for k, v in out.entities.items()}
    return derivative_path(out_dir, subject, "anat", out.suffix, extension=out.extension,
                           mkdir=mkdir, **ents)


def render_path(out_dir: str | os.PathLike[str], subject: str, template: str | None) -> Path:
    """``sub-X/figures/sub-X_desc-defaced<T>_render.png``; ``template=None``: the original's
    render (``desc-original``, written only with ``--keep-removed-face``)."""
    sub = subject_label(subject)
    desc = "original" if template is None else f"defaced{template_label(template)}"
    return Path(out_dir) / sub / "figures" / f"{sub}_desc-{desc}_render.png"


def embeddings_path(out_dir: str | os.PathLike[str], subject: str) -> Path:
    """``sub-X/audit/sub-X_desc-face_embeddings.npz`` (biometric: file mode 0600)."""
    sub = subject_label(subject)
    return Path(out_dir) / sub / "audit" / f"{sub}_desc-face_embeddings.npz"


def surface_path(out_dir: str | os.PathLike[str], subject: str, hemi: str, kind: str, *,
                 mkdir: bool = True) -> Path:
    """``sub-X_hemi-<H>_space-T1w_den-32k_<kind>.surf.gii`` (white, midthickness, pial)."""
    if kind not in ("white", "midthickness", "pial"):
        raise ValueError(f"surface kind must be white, midthickness or pial, got {kind!r}")
    return derivative_path(out_dir, subject, "anat", kind, hemi=hemi, space="T1w", den="32k",
                           extension=".surf.gii", mkdir=mkdir)


def transform_paths(out_dir: str | os.PathLike[str], subject: str, space: str) -> tuple[Path, Path]:
    """``(T1w -> space, space -> T1w)`` ITK HDF5 transforms (``mode-image_xfm.h5``)."""
    sub = subject_label(subject)
    folder = Path(out_dir) / sub / "anat"
    return (folder / f"{sub}_from-T1w_to-{space}_mode-image_xfm.h5",
            folder / f"{sub}_from-{space}_to-T1w_mode-image_xfm.h5")

