"""Reference images: turn what a user hands us into what the API takes.

The API takes up to four http(s) URLs or ``data:image/`` URIs. People have local files, PIL
images, bytes and earlier results; those become data URIs, downscaled so that a request
stays small, and refused with a clear message when they are not images or too large.
Conversion is deterministic (same input, same bytes), so re-running a cell gives the same
request fingerprint and reuses the earlier result.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._wire.errors import ValidationError
from nanobanana_jupyter._wire.models import MAX_REFERENCE_IMAGES, sniff_image_type

__all__ = ["MAX_REFERENCE_SIDE", "to_reference", "to_references"]

MAX_REFERENCE_SIDE = 1536
"""Long side, in pixels, that inline reference images are reduced to."""
MAX_INLINE_BYTES = 7 * 1024 * 1024
"""Largest data URI payload sent for one reference image, after downscaling."""
MAX_SOURCE_BYTES = 64 * 1024 * 1024
"""Largest file read as a reference image before downscaling."""
MAX_SOURCE_PIXELS = 100_000_000
"""Most pixels a reference image may declare; checked on its header, before decoding."""


class Reference(str):
    """A reference image as sent (a data URI), remembering the sha256 of the image bytes it
    was made from (``source_sha256``): a stored result's own hash, so the history can join a
    task to the result it edits even though what is sent is re-encoded."""

    source_sha256: str | None = None

    @classmethod
    def made_from(cls, uri: str, source: bytes) -> Reference:
        ref = cls(uri)
        ref.source_sha256 = hashlib.sha256(source).hexdigest()
        return ref


def _encode(image: Any) -> str:
    """Downscale a PIL image and encode it as a data URI (PNG with alpha, else JPEG)."""
    from PIL import Image

    img: Image.Image = image
    if max(img.size) > MAX_REFERENCE_SIDE:
        img = img.copy()
        img.thumbnail((MAX_REFERENCE_SIDE, MAX_REFERENCE_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    has_alpha = img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        img.save(buf, format="PNG", optimize=False)
        media = "image/png"
    else:
        img.convert("RGB").save(buf, format="JPEG", quality=90)
        media = "image/jpeg"
    data = buf.getvalue()
    if len(data) > MAX_INLINE_BYTES:
        raise ValidationError(
            f"a reference image is {len(data) // 1024} KiB even after downscaling; "
            "use a smaller image or pass a URL"
        )
    return f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"


def _from_bytes(data: bytes, what: str) -> str:
    from nanobanana_jupyter._store.decoding import TooManyPixelsError, decode_image

    if sniff_image_type(data) is None:
        raise ValidationError(f"{what} is not a PNG, JPEG, WebP or GIF image")
    try:
        # The pixel count is checked on the header before decoding, without Pillow's
        # process-wide bomb check (which raised DecompressionBombError past 179 MP).
        img = decode_image(data, max_pixels=MAX_SOURCE_PIXELS)
    except TooManyPixelsError as exc:
        width, height = exc.size
        raise ValidationError(
            f"{what} is {width}x{height} pixels ({width * height / 1e6:.0f} MP), more than "
            f"the {MAX_SOURCE_PIXELS // 1_000_000} MP a reference image may have; downscale "
            f"it ({MAX_REFERENCE_SIDE} px on the long side is enough: larger references are "
            "reduced to that anyway) and pass the smaller file. Nothing was sent"
        ) from None
    except ValueError as exc:
        raise ValidationError(f"{what} could not be read as an image ({exc})") from None
    with img:
        return Reference.made_from(_encode(img), data)


def _from_path(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        raise ValidationError(
            f"reference image {str(path)!r} does not exist; give a URL, a file path, "
            "a PIL image or an earlier task"
        ) from None
    if not path.is_file():
        raise ValidationError(f"reference image {str(path)!r} is not a file")
    if size > MAX_SOURCE_BYTES:
        raise ValidationError(f"reference image {str(path)!r} is larger than 64 MiB")
    return _from_bytes(path.read_bytes(), f"reference image {path.name!r}")


def _from_images(images: Sequence[ImageRecord], what: str) -> str:
    if not images:
        raise ValidationError(f"{what} has no image to use as a reference")
    return _from_path(Path(images[0].path))


def to_reference(obj: object) -> str:
    """Turn one reference (URL, data URI, path, PIL image, bytes, task, record) into a string.

    Raises:
        ValidationError: saying what was wrong with it and what is accepted.
    """
    if isinstance(obj, Reference):  # made here already (the panel's picker): keep its hash
        return obj
    if isinstance(obj, str):
        text = obj.strip()
        if text.startswith(("http://", "https://", "data:image/")):
            return text
        return _from_path(Path(os.path.expanduser(text)))
    if isinstance(obj, os.PathLike):
        return _from_path(Path(obj))
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(obj), "reference image bytes")
    if isinstance(obj, ImageRecord):
        return _from_path(Path(obj.path))
    if isinstance(obj, TaskRecord):
        return _from_images(obj.images, f"task {obj.task_id or obj.local_id}")
    images = getattr(obj, "images", None)
    record = getattr(obj, "record", None)
    if isinstance(record, TaskRecord) and isinstance(images, (list, tuple)):
        return _from_images(record.images, f"task {record.task_id or record.local_id}")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(obj, Image.Image):
        return _encode(obj)
    name = type(obj).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    raise ValidationError(
        f"cannot use {article} {name} as a reference image; give an http(s) URL, "
        "a data:image/ URI, a file path, a PIL image, bytes, or an earlier task"
    )


def to_references(objs: object) -> tuple[str, ...]:
    """Convert up to four references; a single item may be given without a list."""
    if objs is None:
        return ()
    if isinstance(objs, (str, bytes, os.PathLike)) or not isinstance(objs, Sequence):
        items: Sequence[object] = [objs]
    else:
        items = objs
    if len(items) > MAX_REFERENCE_IMAGES:
        raise ValidationError(
            f"{len(items)} reference images given; the API takes at most {MAX_REFERENCE_IMAGES}"
        )
    return tuple(to_reference(item) for item in items)
