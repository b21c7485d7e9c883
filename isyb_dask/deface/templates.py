"""Head templates for face masking: the built-in one, user templates and their masks.

A :class:`Template` is a head image with a face, a face mask on the same grid in pydeface's
convention (1 = keep, 0 = face) and optionally a brain mask. Templates are given as

* ``pydeface`` (built in): pydeface's ``mean_reg2mean`` head and ``facemask`` (package data)
  with the brain mask of :func:`isyb_dask.atlas.get_reference_atlas`;
* ``NAME=HEAD.nii.gz[:FACEMASK.nii.gz[:BRAINMASK.nii.gz]]`` specs (``--template``, repeatable);
* entries of a YAML file (``configs/templates.yaml``)::

      templates:
        - name: CN200
          head: /data/templates/CN200.nii.gz
          face_mask: /data/templates/CN200_facemask.nii.gz   # optional
          brain_mask: /data/templates/CN200_brainmask.nii.gz # optional

A template without a face (or brain) mask gets one carried over from the built-in template
by a 12-parameter affine registration (built-in head -> template head;
:mod:`isyb_dask.deface.template_carryover`); the masks are written into
``work_dir/templates/`` and the provenance says so.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
import yaml

from isyb_dask.errors import ConfigError, InputError
from isyb_dask.io.nifti import load_image
from isyb_dask.registration.heads import REGISTRATION_STEP_MM, write_head_on_grid

__all__ = [
    "BUILTIN_NAME",
    "Template",
    "builtin_template",
    "grid_head_for",
    "parse_spec",
    "read_template_config",
    "resolve_templates",
    "validate_template",
]

BUILTIN_NAME = "pydeface"
_NAME_RE = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Template:
    """A head template with its face (KEEP) mask and optional brain mask.

    Attributes
    ----------
    name
        Alphanumeric label used in BIDS ``desc`` entities (``desc-defaced<name>``).
    head
        Head image with a face.
    face_mask
        KEEP mask on the head grid (1 keep, 0 face).
    brain_mask
        Brain mask on the head grid (None until carried over).
    provenance
        Where the files come from and how missing masks were made.
    to_builtin
        ITK transform file (``.tfm``) of the template -> built-in head registration done once
        per run (template head points to built-in head points; None for the built-in
        template). Composed with a subject's atlas registration it seeds the subject ->
        template registration.
    """

    name: str
    head: Path
    face_mask: Path | None
    brain_mask: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    to_builtin: Path | None = field(default=None, compare=False, hash=False)
    grid_head: Path | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(
                f"template name {self.name!r}: use letters and digits only (it becomes a BIDS "
                "desc label)"
            )


def _same_grid(a: nb.spatialimages.SpatialImage, b: nb.spatialimages.SpatialImage) -> bool:
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=1e-3)


def validate_template(t: Template) -> None:
    """Check a template's files.

    Raises
    ------
    InputError
        Unreadable head or mask, a mask off the head grid, a face mask without face voxels
        (all ones) or without kept voxels (all zeros / empty).
    """
    head = load_image(t.head, ndim=3)
    for kind, path in (("face mask", t.face_mask), ("brain mask", t.brain_mask)):
        if path is None:
            continue
        img = load_image(path, ndim=3, check_values=False)
        if not _same_grid(head, img):
            raise InputError(
                f"template {t.name}: {kind} {Path(path).name} is off the head grid "
                f"({img.shape} vs {head.shape} or a different affine)"
            )
        data = np.asarray(img.dataobj, dtype=np.float32) > 0.5
        if kind == "face mask":
            if data.all():
                raise InputError(f"template {t.name}: face mask {Path(path).name} is all ones (no face)")
            if not data.any():
                raise InputError(f"template {t.name}: face mask {Path(path).name} is empty (keeps nothing)")
            if (~data).mean() > 0.6:
                raise InputError(
                    f"template {t.name}: face mask {Path(path).name} marks {100 * (~data).mean():.0f}% "
                    "of the grid as face; expected 1 = keep, 0 = face (pydeface convention)"
                )
        elif not data.any():
            raise InputError(f"template {t.name}: brain mask {Path(path).name} is empty")


def builtin_template(atlas: Any | None = None) -> Template:
    """pydeface's head and face mask with the reference atlas brain mask.

    Parameters
    ----------
    atlas
        A :class:`isyb_dask.atlas.ReferenceAtlas`; computed/cached when None.
    """
    from isyb_dask.atlas import builtin_head_paths, get_reference_atlas

    head, face = builtin_head_paths()
    atlas = atlas if atlas is not None else get_reference_atlas()
    return Template(
        name=BUILTIN_NAME,
        head=head,
        face_mask=face,
        brain_mask=Path(atlas.brain_mask),
        provenance={
            "head": "pydeface data/mean_reg2mean.nii.gz",
            "face_mask": "pydeface data/facemask.nii.gz",
            "brain_mask": "isyb_dask.atlas reference brain mask (MNI152 2009a mapped affinely)",
        },
    )


def parse_spec(spec: str, base: Path | None = None) -> Template:
    """Parse ``NAME=HEAD[:FACEMASK[:BRAINMASK]]`` (paths relative to ``base``)."""
    if "=" not in spec:
        raise ConfigError(f"template spec {spec!r}: expected NAME=HEAD.nii.gz[:FACEMASK.nii.gz]")
    name, rest = spec.split("=", 1)
    parts = [p for p in rest.split(":")]
    if not parts[0] or len(parts) > 3:
        raise ConfigError(f"template spec {spec!r}: expected NAME=HEAD.nii.gz[:FACEMASK.nii.gz]")

    def _p(s: str | None) -> Path | None:
        if not s:
            return None
        p = Path(os.path.expanduser(s))
        return p if p.is_absolute() or base is None else base / p

    return Template(
        name=name.strip(),
        head=_p(parts[0]),
        face_mask=_p(parts[1] if len(parts) > 1 else None),
        brain_mask=_p(parts[2] if len(parts) > 2 else None),
        provenance={"spec": spec},
    )


def read_template_config(path: str | os.PathLike[str]) -> list[Template]:
    """Templates listed in a YAML file (format in the module docstring).

    Relative paths are relative to the file's folder.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path.name}: cannot read template config ({exc})") from None
    entries = data.get("templates") or [] if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path.name}: 'templates' must be a list")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "name" not in e or "head" not in e:
            raise ConfigError(f"{path.name}: entry {i} needs 'name' and 'head'")
        unknown = set(e) - {"name", "head", "face_mask", "brain_mask", "description"}
        if unknown:
            raise ConfigError(f"{path.name}: entry {e['name']}: unknown keys {sorted(unknown)}")

        def _p(s: str | None) -> Path | None:
            if not s:
                return None
            p = Path(os.path.expanduser(str(s)))
            return p if p.is_absolute() else path.parent / p

        out.append(
            Template(
                name=str(e["name"]),
                head=_p(e["head"]),
                face_mask=_p(e.get("face_mask")),
                brain_mask=_p(e.get("brain_mask")),
                provenance={"config": str(path), "description": e.get("description", "")},
            )
        )
    return out


def resolve_templates(
    specs: list[str] | tuple[str, ...],
    config_file: str | os.PathLike[str] | None,
    work_dir: str | os.PathLike[str],
    *,
    atlas: Any | None = None,
    include_builtin: bool = True,
    seed: int = 20220531,
    threads: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[Template]:
    """All templates of a run: the built-in one, then ``--template`` specs, then the YAML file.

    Every template is validated and completed (missing masks carried over from the built-in
    template; with ``cache_dir`` a carry-over is computed once per cache, see
    :func:`complete_template`), and its head on the registration grid is written once to
    ``work_dir/templates`` (:attr:`Template.grid_head`).

    Raises
    ------
    ConfigError
        Malformed spec/config, duplicate names.
    InputError
        Unusable template files.
    """
    from isyb_dask.deface.template_carryover import complete_template

    builtin = builtin_template(atlas)
    listed: list[Template] = [parse_spec(s) if s != BUILTIN_NAME else builtin for s in specs]
    if config_file is not None:
        listed += read_template_config(config_file)
    out: list[Template] = [builtin] if include_builtin else []
    for t in listed:
        if t.name in {o.name for o in out}:
            if t is builtin:
                continue
            raise ConfigError(f"template name {t.name!r} is used twice")
        out.append(t)
    if not out:
        raise ConfigError("no templates given")
    done = []
    for t in out:
        for p in (t.head, t.face_mask, t.brain_mask):
            if p is not None and not Path(p).exists():
                raise InputError(f"template {t.name}: {p} does not exist")
        validate_template(t)
        completed = complete_template(t, builtin, work_dir, seed=seed, threads=threads,
                                      cache_dir=cache_dir)
        if (completed.face_mask, completed.brain_mask) != (t.face_mask, t.brain_mask):
            validate_template(completed)  # carried-over masks: checked like given ones
        grid = write_head_on_grid(completed.head, REGISTRATION_STEP_MM,
                                  Path(work_dir) / "templates")
        done.append(dataclasses.replace(completed, grid_head=grid))
    return done


def grid_head_for(templates: list[Template], head: str | os.PathLike[str]) -> Path | None:
    """The run's stored grid copy of ``head`` (a template's :attr:`Template.grid_head`).

    The atlas registration uses the atlas head, which is also the built-in template's head;
    this finds that copy among the resolved templates. None if no template has that head or
    its copy was not written; :func:`isyb_dask.registration.heads.head_on_grid` then computes
    the image.
    """
    return next((t.grid_head for t in templates if Path(t.head) == Path(head)), None)
