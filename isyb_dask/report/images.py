"""Embedding image files into a page as ``data:`` URIs."""

from __future__ import annotations

import base64
import html
from pathlib import Path

__all__ = ["data_uri", "img_tag", "compact_image"]

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
         ".jpeg": "image/jpeg"}


def data_uri(payload: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...`` URI of some bytes."""
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def compact_image(path: Path, max_width: int = 900, max_bytes: int = 350_000,
                  quality: int = 72) -> tuple[bytes, str]:
    """Bytes and MIME type of an image small enough to embed.

    Images over ``max_bytes`` are scaled down to ``max_width`` pixels and JPEG-encoded (with
    Pillow, which matplotlib already requires); smaller ones are returned as they are.

    Parameters
    ----------
    path
        Image file.
    max_width
        Largest width in pixels of a re-encoded image.
    max_bytes
        Size above which the image is re-encoded.
    quality
        JPEG quality.

    Returns
    -------
    tuple
        ``(payload, mime)``.
    """
    raw = path.read_bytes()
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    if len(raw) <= max_bytes or mime not in ("image/png", "image/jpeg"):
        return raw, mime
    import io

    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        img = img.convert("RGB")
        if img.width > max_width:
            img = img.resize((max_width, round(img.height * max_width / img.width)),
                             Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue(), "image/jpeg"


def img_tag(path: Path, alt: str, *, css_class: str = "fig") -> str:
    """``<img>`` element embedding an image file (so the page needs no other file); large
    images are embedded as a smaller JPEG (:func:`compact_image`).

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
    payload, mime = compact_image(path)
    return (f'<img class="{css_class}" alt="{html.escape(alt)}" '
            f'src="{data_uri(payload, mime)}">')
