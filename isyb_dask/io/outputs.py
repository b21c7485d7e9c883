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
* deface writes its ``desc-defaced<T>_T1w`` / ``desc-face<T>_mask`` files, metrics its maps
  (not listed here: one writer each, names built in their modules).

Functions return paths only; they never write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from isyb_dask.io.derivatives import derivative_path

__all__ = ["ANAT_OUTPUTS", "FUNC_OUTPUTS", "Output", "anat_path", "func_path", "owner_of"]


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
