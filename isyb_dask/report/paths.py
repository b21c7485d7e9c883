"""Where a subject's report inputs are: the one place that knows the file names.

Every name follows :func:`isyb_dask.io.derivatives.derivative_path`; sessions are allowed
(the first match in session order is used). Absent files are None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from isyb_dask.io.outputs import render_path, template_label

__all__ = ["MAP_FILES", "MNI_SPACES", "SubjectFiles", "render_path", "subject_files",
           "template_head"]

#: Standard spaces of the metrics stage's volumetric copies, in order of preference.
MNI_SPACES: tuple[str, ...] = ("MNI152NLin6Asym", "MNI152NLin2009aSym")

#: Volumetric maps shown on the subject page: name -> (datatype, file-name tail).
MAP_FILES: dict[str, tuple[str, str]] = {
    "FA": ("dwi", "desc-FA_dwimap.nii.gz"),
    "MD": ("dwi", "desc-MD_dwimap.nii.gz"),
    "CBF": ("perf", "desc-CBF_cbf.nii.gz"),
    "ALFF": ("func", "desc-ALFF_boldmap.nii.gz"),
    "fALFF": ("func", "desc-fALFF_boldmap.nii.gz"),
    "ReHo": ("func", "desc-ReHo_boldmap.nii.gz"),
}


@dataclass
class SubjectFiles:
    """Report inputs of one subject (None / empty when absent)."""

    t1w: Path | None = None
    brain_mask: Path | None = None
    probseg: dict[str, Path] = field(default_factory=dict)
    defaced: dict[str, Path] = field(default_factory=dict)
    renders: dict[str, Path] = field(default_factory=dict)
    mni_t1w: Path | None = None
    mni_gm: Path | None = None
    mni_space: str | None = None
    bold: Path | None = None
    bold_mask: Path | None = None
    confounds: Path | None = None
    maps: dict[str, Path] = field(default_factory=dict)
    log: Path | None = None


def _first(folder: Path, datatype: str, pattern: str) -> Path | None:
    if not folder.is_dir():
        return None
    hits = sorted(folder.glob(f"{datatype}/{pattern}")) + sorted(
        folder.glob(f"ses-*/{datatype}/{pattern}"))
    return hits[0] if hits else None


def subject_files(out_dir: Path, subject: str, templates: list[str],
                  bids_dir: Path | None = None) -> SubjectFiles:
    """Find every report input of one subject.

    Parameters
    ----------
    out_dir
        Run output directory (derivatives ``OUT_DIR/sub-X/...``).
    subject
        ``sub-X``.
    templates
        Template names (defaced images and renders per template).
    bids_dir
        Raw dataset (the T1w); None: the T1w is not looked for.

    Returns
    -------
    SubjectFiles
    """
    der = Path(out_dir) / subject
    s = subject
    files = SubjectFiles()
    if bids_dir is not None:
        files.t1w = _first(Path(bids_dir) / s, "anat", f"{s}*_T1w.nii*")
    files.brain_mask = _first(der, "anat", f"{s}*_desc-brain_mask.nii*")
    for tissue in ("CSF", "GM", "WM"):
        p = _first(der, "anat", f"{s}_label-{tissue}_probseg.nii*") or _first(
            der, "anat", f"{s}_ses-*_label-{tissue}_probseg.nii*")
        if p is not None:
            files.probseg[tissue] = p
    for t in templates:
        p = _first(der, "anat", f"{s}*_desc-defaced{template_label(t)}_T1w.nii*")
        if p is not None:
            files.defaced[t] = p
        r = render_path(Path(out_dir), s, t)
        if r.is_file():
            files.renders[t] = r
    # standard-space copies written by the metrics stage: the SyN route's MNI152NLin6Asym
    # first, else the affine route's MNI152NLin2009aSym (TemplateFlow identifiers); the
    # "T1w"-suffixed file of that folder is the thickness map, not a T1w image
    for space in MNI_SPACES:
        files.mni_gm = _first(der, "anat", f"{s}*_space-{space}_label-GM_probseg.nii*")
        if files.mni_gm is not None:
            files.mni_space = space
            break
    files.bold = _first(der, "func", f"{s}*_desc-hmc_bold.nii*")
    if files.bold is not None:
        stem = files.bold.name.split("_desc-hmc_bold")[0]
        for attr, name in (("bold_mask", f"{stem}_desc-brain_mask.nii.gz"),
                           ("confounds", f"{stem}_desc-confounds_timeseries.tsv")):
            p = files.bold.parent / name
            setattr(files, attr, p if p.is_file() else None)
    for name, (datatype, tail) in MAP_FILES.items():
        hits = [p for p in ([_first(der, datatype, f"{s}_{tail}"),
                             _first(der, datatype, f"{s}_*{tail}")]) if p is not None]
        hits = [p for p in hits if "space-" not in p.name]
        if hits:
            files.maps[name] = hits[0]
    log = Path(out_dir) / "logs" / f"{s}.log"
    files.log = log if log.is_file() else None
    return files


def template_head(defaced_sidecar: Path) -> tuple[Path, list[list[float]]] | None:
    """Template head image and subject-to-template RAS affine from a defaced T1w's sidecar.

    The deface stage records the template head as the second provenance source (after the
    T1w) and the registration as ``SubjectToTemplateRAS``.

    Returns
    -------
    tuple or None
        ``(head path, 4x4 matrix)`` or None when the sidecar lacks them.
    """
    path = Path(str(defaced_sidecar).replace(".nii.gz", ".json").replace(".nii", ".json"))
    try:
        meta = json.loads(path.read_text())
        matrix = meta["SubjectToTemplateRAS"]
        sources = [Path(src["path"]) for src in meta["provenance"]["sources"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    heads = [p for p in sources[1:] if "_mask" not in p.name and p.is_file()]
    return (heads[0], matrix) if heads else None
