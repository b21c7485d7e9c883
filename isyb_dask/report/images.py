"""Images for the report: base64 embedding and mid-sagittal before/after pictures.

Pictures of faces are rendered in memory and embedded only into the local HTML report; they
are never written to the store or to separate files.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
         ".jpeg": "image/jpeg"}


def data_uri(payload: bytes, mime: str = "image/png") -> str:
    """``data:`` URI of some bytes.

    Parameters
    ----------
    payload
        File content.
    mime
        MIME type.

    Returns
    -------
    str
        ``data:<mime>;base64,...``.
    """
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def img_tag(path: Path, alt: str, *, css_class: str = "fig") -> str:
    """``<img>`` element embedding an image file.

    Parameters
    ----------
    path
        PNG/SVG/JPEG file.
    alt
        Alternative text (escaped).
    css_class
        CSS class of the element.

    Returns
    -------
    str
        HTML fragment.
    """
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return (f'<img class="{css_class}" alt="{html.escape(alt)}" '
            f'src="{data_uri(path.read_bytes(), mime)}">')


def _mid_sagittal(path: Path) -> np.ndarray:
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    sl = data[data.shape[0] // 2]  # RAS: axis 0 is left-right
    return np.rot90(sl)  # anterior to the right, superior up


def render_before_after(original: Path, defaced: Sequence[tuple[str, Path]]) -> bytes:
    """PNG bytes of mid-sagittal slices: the original and each defaced image.

    Parameters
    ----------
    original
        Original T1w NIfTI.
    defaced
        ``[(template name, defaced T1w NIfTI)]``.

    Returns
    -------
    bytes
        PNG image (in memory only).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [("original", _mid_sagittal(original))]
    panels += [(name, _mid_sagittal(p)) for name, p in defaced]
    vmax = float(np.percentile(panels[0][1], 99.5)) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.6), squeeze=False)
    for ax, (name, sl) in zip(axes[0], panels):
        ax.imshow(sl, cmap="gray", vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def find_t1w(bids_dir: Path, subject: str) -> Path | None:
    """First T1w image of a subject in a BIDS directory (sessions allowed)."""
    hits = sorted((bids_dir / subject).glob("**/anat/*_T1w.nii*"))
    return hits[0] if hits else None


def find_defaced(out_dir: Path, subject: str, template: str) -> Path | None:
    """The defaced derivative ``sub-X[_ses-Y]_desc-defaced<Template>_T1w.nii.gz``."""
    for label in dict.fromkeys([template, re.sub(r"[^A-Za-z0-9]", "", template)]):
        hits = sorted((out_dir / subject).glob(f"**/anat/{subject}*_desc-defaced{label}_T1w.nii*"))
        if hits:
            return hits[0]
    return None
