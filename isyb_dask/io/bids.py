"""A small, fast BIDS indexer: one table row per image, and per-subject input bundles.

pybids is slow on large studies (pybids#285: 963 subjects in 631 s) and pulls SQLAlchemy; this
indexer walks the tree once with :func:`os.scandir`, parses entities from file names with one
regular expression and reads each JSON sidecar once, applying the BIDS inheritance principle
(top-level ``task-rest_bold.json`` < subject-level < file-level). 10,000 subjects with four
images each index in a few seconds (``tests/test_bids.py``).

Only what the pipeline needs is indexed: ``anat`` T1w, ``func`` bold, ``dwi`` dwi, ``perf``
asl/m0scan (plus their ``.bval``/``.bvec`` and ``aslcontext.tsv`` companions).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from isyb_dask.errors import BIDSError

__all__ = [
    "SubjectInputs",
    "index_bids",
    "select_participants",
    "subject_inputs",
    "participant_columns",
    "check_output_dir",
    "REQUIRED_METADATA",
    "missing_metadata",
]

_NAME_RE = re.compile(
    r"^(?P<sub>sub-[A-Za-z0-9]+)"
    r"(?:_ses-(?P<ses>[A-Za-z0-9]+))?"
    r"(?P<ents>(?:_[a-z]+-[A-Za-z0-9]+)*)"
    r"_(?P<suffix>[A-Za-z0-9]+)"
    r"(?P<ext>\.nii(?:\.gz)?)$"
)
_ENT_RE = re.compile(r"_([a-z]+)-([A-Za-z0-9]+)")
_KNOWN = {("anat", "T1w"), ("func", "bold"), ("dwi", "dwi"), ("perf", "asl"), ("perf", "m0scan")}

#: Sidecar fields without which a modality cannot be processed.
REQUIRED_METADATA: dict[str, tuple[str, ...]] = {
    "bold": ("RepetitionTime",),
    "asl": ("ArterialSpinLabelingType", "PostLabelingDelay"),
}


@dataclass(frozen=True)
class SubjectInputs:
    """Everything the per-subject tasks need, as paths and small metadata dicts.

    Tasks receive this object (a few hundred bytes), never image arrays.
    """

    subject: str
    session: str | None = None
    t1w: Path | None = None
    bold: Path | None = None
    bold_meta: dict[str, Any] = field(default_factory=dict)
    dwi: Path | None = None
    bval: Path | None = None
    bvec: Path | None = None
    dwi_meta: dict[str, Any] = field(default_factory=dict)
    asl: Path | None = None
    asl_meta: dict[str, Any] = field(default_factory=dict)
    aslcontext: Path | None = None
    m0: Path | None = None
    m0_meta: dict[str, Any] = field(default_factory=dict)
    participant: dict[str, Any] = field(default_factory=dict)

    def input_files(self) -> list[Path]:
        """All input files of the subject that exist (for checksums and provenance)."""
        paths = [self.t1w, self.bold, self.dwi, self.bval, self.bvec, self.asl, self.aslcontext, self.m0]
        return [p for p in paths if p is not None and p.exists()]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise BIDSError(f"{path}: unreadable JSON sidecar ({exc})") from None
    if not isinstance(data, dict):
        raise BIDSError(f"{path}: JSON sidecar is not an object")
    return data


def _inherited_sidecars(root: Path) -> list[tuple[dict[str, str], str, dict[str, Any]]]:
    """Top-level sidecars such as ``task-rest_bold.json``: (entities, suffix, metadata)."""
    out = []
    for entry in os.scandir(root):
        if not entry.is_file() or not entry.name.endswith(".json"):
            continue
        stem = entry.name[:-5]
        if stem in ("dataset_description", "participants") or "_" not in stem and "-" in stem:
            continue
        *ents, suffix = stem.split("_")
        try:
            entities = dict(e.split("-", 1) for e in ents)
        except ValueError:
            continue
        out.append((entities, suffix, _read_json(Path(entry.path))))
    return out


def _scan_datatype(folder: str, datatype: str, sub: str, ses: str | None, rows: list[dict]) -> None:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    names = {e.name for e in entries}
    for entry in entries:
        m = _NAME_RE.match(entry.name)
        if m is None or m.group("sub") != sub:
            continue
        suffix = m.group("suffix")
        if (datatype, suffix) not in _KNOWN:
            continue
        ents = dict(_ENT_RE.findall(m.group("ents") or ""))
        stem = entry.name[: -len(m.group("ext"))]
        row: dict[str, Any] = {
            "subject": sub,
            "session": m.group("ses"),
            "datatype": datatype,
            "suffix": suffix,
            "task": ents.get("task"),
            "run": ents.get("run"),
            "acq": ents.get("acq"),
            "path": entry.path,
            "sidecar": os.path.join(folder, stem + ".json") if stem + ".json" in names else None,
        }
        if suffix == "dwi":
            row["bval"] = os.path.join(folder, stem + ".bval") if stem + ".bval" in names else None
            row["bvec"] = os.path.join(folder, stem + ".bvec") if stem + ".bvec" in names else None
        if suffix == "asl":
            base = stem[: -len("_asl")]
            ctx = base + "_aslcontext.tsv"
            row["aslcontext"] = os.path.join(folder, ctx) if ctx in names else None
        rows.append(row)


def index_bids(bids_dir: str | os.PathLike[str], *, read_sidecars: bool = True) -> pd.DataFrame:
    """Index a BIDS dataset into one table, one row per image.

    Parameters
    ----------
    bids_dir
        Root of a BIDS dataset (must contain ``dataset_description.json``).
    read_sidecars
        Read and merge the JSON sidecars into a ``metadata`` column (dicts).

    Returns
    -------
    pandas.DataFrame
        Columns ``subject, session, datatype, suffix, task, run, acq, path, sidecar, bval,
        bvec, aslcontext, metadata`` followed by the ``participants.tsv`` columns.

    Raises
    ------
    BIDSError
        If the directory does not exist or is not a BIDS dataset.
    """
    root = Path(bids_dir)
    if not root.is_dir():
        raise BIDSError(f"{root}: input directory does not exist")
    if not (root / "dataset_description.json").is_file():
        raise BIDSError(
            f"{root}: not a BIDS dataset (no dataset_description.json at its top level)"
        )
    subjects = sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name.startswith("sub-"))
    if not subjects:
        raise BIDSError(f"{root}: BIDS dataset without any sub-* folder")
    rows: list[dict] = []
    for sub in subjects:
        sub_dir = os.path.join(root, sub)
        sessions = [
            e.name for e in os.scandir(sub_dir) if e.is_dir() and e.name.startswith("ses-")
        ]
        containers = [(os.path.join(sub_dir, s), s[4:]) for s in sorted(sessions)] or [(sub_dir, None)]
        for folder, ses in containers:
            for datatype in ("anat", "func", "dwi", "perf"):
                _scan_datatype(os.path.join(folder, datatype), datatype, sub, ses, rows)
    columns = ["subject", "session", "datatype", "suffix", "task", "run", "acq", "path",
               "sidecar", "bval", "bvec", "aslcontext"]
    table = pd.DataFrame(rows, columns=columns)
    if read_sidecars:
        inherited = _inherited_sidecars(root)
        metas = []
        for row in table.itertuples(index=False):
            meta: dict[str, Any] = {}
            for ents, suffix, data in inherited:
                if suffix == row.suffix and all(
                    {"task": row.task, "run": row.run, "acq": row.acq}.get(k) == v
                    for k, v in ents.items()
                ):
                    meta.update(data)
            if isinstance(row.sidecar, str):
                meta.update(_read_json(Path(row.sidecar)))
            metas.append(meta)
        table["metadata"] = metas
    participants = _read_participants(root)
    if participants is not None:
        table = table.merge(participants, how="left", left_on="subject", right_on="participant_id")
        table = table.drop(columns=["participant_id"])
    # attrs are deep-copied by every pandas operation: keep them small and immutable.
    table.attrs["bids_dir"] = str(root.resolve())
    table.attrs["subjects"] = "\n".join(subjects)
    return table


def _read_participants(root: Path) -> pd.DataFrame | None:
    path = root / "participants.tsv"
    if not path.exists():
        return None
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in df.columns:
        raise BIDSError(f"{path}: no participant_id column")
    df["participant_id"] = [p if p.startswith("sub-") else f"sub-{p}" for p in df["participant_id"]]
    reserved = {"subject", "session", "datatype", "suffix", "task", "run", "acq", "path",
                "sidecar", "bval", "bvec", "aslcontext", "metadata"}
    return df.rename(columns={c: f"participant_{c}" for c in df.columns if c in reserved})


def select_participants(
    table: pd.DataFrame, labels: Sequence[str] | None
) -> list[str]:
    """Subjects to process: all, or the requested labels (``01`` or ``sub-01``).

    Raises
    ------
    BIDSError
        If a requested label has no ``sub-`` folder in the dataset.
    """
    listed = table.attrs.get("subjects")
    available = listed.split("\n") if listed else sorted(table["subject"].unique())
    if not labels:
        return available
    wanted = [lab if lab.startswith("sub-") else f"sub-{lab}" for lab in labels]
    unknown = [w for w in wanted if w not in set(available)]
    if unknown:
        raise BIDSError(
            "unknown --participant-label: "
            + ", ".join(unknown)
            + f" (dataset has {len(available)} subjects, e.g. {', '.join(available[:3])})"
        )
    return list(dict.fromkeys(wanted))


def participant_columns(table: pd.DataFrame) -> list[str]:
    """Columns of the inventory that come from ``participants.tsv``."""
    fixed = {"subject", "session", "datatype", "suffix", "task", "run", "acq", "path",
             "sidecar", "bval", "bvec", "aslcontext", "metadata"}
    return [c for c in table.columns if c not in fixed]


def _first(records: list[dict[str, Any]], suffix: str, task: str | None = None) -> dict | None:
    """First record of a suffix (and task), ordered by session, run and path."""
    sel = [r for r in records if r["suffix"] == suffix and (task is None or (r.get("task") or task) == task)]
    if not sel:
        return None
    key = lambda r: tuple("" if not isinstance(r.get(k), str) else r[k] for k in ("session", "run", "path"))  # noqa: E731
    return min(sel, key=key)


def _path(record: dict | None, key: str = "path") -> Path | None:
    value = record.get(key) if record is not None else None
    return Path(value) if isinstance(value, str) else None


def _meta(record: dict | None) -> dict[str, Any]:
    value = record.get("metadata") if record is not None else None
    return dict(value) if isinstance(value, dict) else {}


def subject_inputs(table: pd.DataFrame, subjects: Iterable[str]) -> list[SubjectInputs]:
    """Bundle the inputs of each subject (first session, first run of each modality).

    A subject without a T1w still gets a bundle (``t1w=None``); the runner records it as
    failed with a message instead of dropping it silently. Works on plain records (one
    pass over the table), so 10,000 subjects take a second, not minutes.
    """
    pcols = participant_columns(table)
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for record in table.to_dict("records"):
        by_subject.setdefault(record["subject"], []).append(record)
    out = []
    for sub in subjects:
        records = by_subject.get(sub, [])
        if not records:
            out.append(SubjectInputs(subject=sub))
            continue
        sessions = sorted({r["session"] for r in records if isinstance(r.get("session"), str)})
        session = sessions[0] if sessions else None
        if session is not None:
            records = [r for r in records if r.get("session") == session]
        t1 = _first(records, "T1w")
        bold = _first(records, "bold", task="rest") or _first(records, "bold")
        dwi = _first(records, "dwi")
        asl = _first(records, "asl")
        m0 = _first(records, "m0scan")
        first = records[0]
        participant = {c: first[c] for c in pcols if isinstance(first.get(c), str)}
        out.append(
            SubjectInputs(
                subject=sub,
                session=session,
                t1w=_path(t1),
                bold=_path(bold),
                bold_meta=_meta(bold),
                dwi=_path(dwi),
                bval=_path(dwi, "bval"),
                bvec=_path(dwi, "bvec"),
                dwi_meta=_meta(dwi),
                asl=_path(asl),
                asl_meta=_meta(asl),
                aslcontext=_path(asl, "aslcontext"),
                m0=_path(m0),
                m0_meta=_meta(m0),
                participant=participant,
            )
        )
    return out


def missing_metadata(inputs: SubjectInputs) -> list[str]:
    """Human-readable problems with required sidecars/companions of a subject's inputs."""
    problems = []
    if inputs.t1w is None:
        problems.append(f"{inputs.subject}: no T1w image (expected {inputs.subject}/anat/{inputs.subject}_T1w.nii.gz)")
    if inputs.bold is not None:
        for key in REQUIRED_METADATA["bold"]:
            if key not in inputs.bold_meta:
                problems.append(f"{inputs.bold.name}: missing sidecar field {key}")
    if inputs.dwi is not None:
        if inputs.bval is None:
            problems.append(f"{inputs.dwi.name}: missing .bval file")
        if inputs.bvec is None:
            problems.append(f"{inputs.dwi.name}: missing .bvec file")
    if inputs.asl is not None:
        for key in REQUIRED_METADATA["asl"]:
            if key not in inputs.asl_meta:
                problems.append(f"{inputs.asl.name}: missing sidecar field {key}")
        if inputs.aslcontext is None:
            problems.append(f"{inputs.asl.name}: missing aslcontext.tsv")
    return problems


def check_output_dir(bids_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
    """Refuse an output directory equal to or inside the input (inputs are never modified).

    ``BIDS_DIR/derivatives/<name>`` is the one allowed place inside the input, as in the
    BIDS derivatives convention.
    """
    bids = Path(bids_dir).resolve()
    out = Path(out_dir).resolve()
    if out == bids:
        raise BIDSError(f"output directory {out} is the input directory; choose another one")
    if bids in out.parents:
        rel = out.relative_to(bids)
        if rel.parts[0] != "derivatives":
            raise BIDSError(
                f"output directory {out} is inside the input dataset {bids}; "
                f"use {bids / 'derivatives' / 'isyb-dask'} or a folder outside it"
            )
