"""``isyb audit BIDS_DIR DEFACED_DIR``: the face audit on images defaced by any tool.

Matching rule. For every subject folder ``sub-<label>`` of the BIDS dataset the original is
the first T1w (``sub-<label>[/ses-*]/anat/sub-<label>*_T1w.nii[.gz]``, sorted). A defaced
image of that subject is every ``.nii``/``.nii.gz``/``.mgz`` file under DEFACED_DIR whose
relative path contains the entity ``sub-<label>`` delimited by ``/``, ``_``, ``.`` or the
string's ends (so ``sub-01`` never matches ``sub-010``), except masks (``*_mask.*``) and
the original file itself. Its *label* (the "template" column) is the value of its ``desc-``
entity when it has one (``sub-01_desc-defacedMNI_T1w`` -> ``defacedMNI``), otherwise the
file name without the subject entity and extension (pydeface's ``sub-01_T1w_defaced`` ->
``T1w_defaced``). Defaced images may be on another grid than the original: rendering works
in world (RAS mm) coordinates with the original's geometry.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from isyb_dask.errors import BIDSError, InputError

__all__ = ["match_defaced", "run_audit", "format_summary"]

_NIFTI = (".nii.gz", ".nii", ".mgz")


def _strip(name: str) -> str:
    for ext in _NIFTI:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _label(path: Path, subject: str) -> str:
    stem = _strip(path.name)
    m = re.search(r"(?:^|_)desc-([A-Za-z0-9]+)", stem)
    if m:
        return m.group(1)
    rest = re.sub(rf"(^|_){re.escape(subject)}(?=_|$)", "", stem).strip("_")
    return rest or "defaced"


def match_defaced(bids_dir: str | os.PathLike[str], defaced_dir: str | os.PathLike[str]
                  ) -> dict[str, tuple[Path, list[tuple[str, Path]]]]:
    """Pair each subject's original T1w with its defaced images (rule in the module doc).

    Returns
    -------
    dict
        ``{subject: (original, [(label, defaced path), ...])}`` for subjects with at least
        one defaced image.

    Raises
    ------
    BIDSError
        If the BIDS folder has no ``sub-*`` T1w or DEFACED_DIR does not exist.
    """
    bids, dfd = Path(bids_dir), Path(defaced_dir)
    if not bids.is_dir():
        raise BIDSError(f"{bids}: not a directory")
    if not dfd.is_dir():
        raise BIDSError(f"{dfd}: not a directory")
    candidates = sorted(p for p in dfd.rglob("*") if p.is_file() and p.name.endswith(_NIFTI)
                        and not _strip(p.name).endswith("_mask"))
    pairs: dict[str, tuple[Path, list[tuple[str, Path]]]] = {}
    n_subjects = 0
    for sub_dir in sorted(p for p in bids.glob("sub-*") if p.is_dir()):
        subject = sub_dir.name
        t1 = sorted(q for pat in (f"anat/{subject}*_T1w.nii*", f"ses-*/anat/{subject}*_T1w.nii*")
                    for q in sub_dir.glob(pat))
        if not t1:
            continue
        n_subjects += 1
        pattern = re.compile(rf"(^|[/_.]){re.escape(subject)}([/_.]|$)")
        found = [(_label(p, subject), p) for p in candidates
                 if pattern.search(p.relative_to(dfd).as_posix())
                 and p.resolve() != t1[0].resolve()]
        if found:
            pairs[subject] = (t1[0], found)
    if n_subjects == 0:
        raise BIDSError(f"{bids}: no sub-*/anat/*_T1w.nii[.gz] found")
    return pairs


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        img = nb.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for bad files
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3-D image, got shape {data.shape}")
    return data, img.affine


def run_audit(bids_dir: str | os.PathLike[str], defaced_dir: str | os.PathLike[str],
              out: str | os.PathLike[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Audit every defaced image against every original of the dataset.

    Returns
    -------
    table, summary
        Per image: ``subject``, ``label``, ``file``, ``face_detected``, ``face_score``,
        ``reid_distance``, ``reid_rank``, ``n_candidates``; per label the rank-1 summary
        (:func:`isyb_dask.deface.reid.rank1_summary`). With ``out`` the table is written
        there (TSV) and the summary next to it as ``<stem>_summary.tsv``.
    """
    from isyb_dask.deface.audit import analyse_views
    from isyb_dask.deface.reid import rank1_summary, reidentification_table
    from isyb_dask.deface.render import render_geometry, render_views

    pairs = match_defaced(bids_dir, defaced_dir)
    if not pairs:
        raise BIDSError(f"{defaced_dir}: no defaced image matches a subject of {bids_dir}")
    originals, probes, rows = {}, {}, []
    for subject, (orig_path, found) in pairs.items():
        data, affine = _load(orig_path)
        geom = render_geometry(data, affine)
        ref = analyse_views(render_views(data, affine, geom))
        originals[subject] = np.stack([f.embedding for f in ref])
        for label, path in found:
            d, a = _load(path)
            faces = analyse_views(render_views(d, a, _rescaled(geom, data, d)), reference=ref)
            probes[(subject, label)] = np.stack([f.embedding for f in faces])
            rows.append({"subject": subject, "label": label,
                         "file": str(path.relative_to(defaced_dir)),
                         "face_detected": any(f.detected for f in faces),
                         "face_score": max(f.score for f in faces)})
    table = pd.DataFrame(rows)
    ranks = reidentification_table(originals, probes).rename(columns={"template": "label"})
    table = table.merge(ranks.drop(columns=["nearest"]), on=["subject", "label"], how="left")
    detected = {(r.subject, r.label): r.face_detected for r in table.itertuples()}
    summary = rank1_summary(ranks.rename(columns={"label": "template"}), detected)
    summary = summary.rename(columns={"template": "label"})
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, sep="\t", index=False, float_format="%.6g")
        summary.to_csv(out.with_name(out.stem + "_summary.tsv"), sep="\t", index=False,
                       float_format="%.6g")
    return table, summary


def _rescaled(geom, original: np.ndarray, defaced: np.ndarray):
    """The original's geometry with the skin threshold moved to the defaced image's scale
    (only when its 99th percentile of positive voxels differs by more than 5 %)."""
    import dataclasses

    def p99(x: np.ndarray) -> float:
        v = x[::2, ::2, ::2]
        v = v[v > 0]
        return float(np.percentile(v, 99)) if v.size else 0.0

    po, pd_ = p99(original), p99(defaced)
    if po > 0 and pd_ > 0 and abs(pd_ / po - 1.0) > 0.05:
        return dataclasses.replace(geom, threshold=geom.threshold * pd_ / po)
    return geom


def format_summary(summary: pd.DataFrame) -> str:
    """One line per label: detection rate and rank-1 rate with its 95 % CI and chance."""
    lines = []
    for r in summary.itertuples():
        lines.append(f"{r.label}: face detected {r.n_detected}/{r.n}; rank-1 re-identification "
                     f"{r.rank1}/{r.n} = {r.rank1_rate:.2f} "
                     f"(95% CI {r.ci_low:.2f}-{r.ci_high:.2f}; "
                     f"chance {r.chance:.2f}, p = {r.p_value:.3g})")
    return "\n".join(lines)
