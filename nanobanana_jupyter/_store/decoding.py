"""Decoding images within a pixel budget, and making previews of them.

Only raster images are accepted (PNG, JPEG, WebP, GIF by their magic bytes, never by a
declared type), and only once Pillow decoded them fully within a pixel budget, so an SVG with
script, an HTML page, a truncated download or a decompression bomb is refused before it
reaches the disk or the notebook. Thread-safe; the process-wide ``warnings`` filters are
never touched.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO

from PIL import (
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

from nanobanana_jupyter._wire.models import sniff_image_type

__all__ = [
    "PREVIEW_QUALITY",
    "TooManyPixelsError",
    "decode_as",
    "decode_image",
    "encode_preview",
    "make_preview",
]

# Each format's own class: opening with it reads the header without Pillow's global bomb check.
_OPENERS: dict[str, Callable[[IO[bytes]], ImageFile.ImageFile]] = {
    "image/png": PngImagePlugin.PngImageFile,
    "image/jpeg": JpegImagePlugin.JpegImageFile,
    "image/webp": WebPImagePlugin.WebPImageFile,
    "image/gif": GifImagePlugin.GifImageFile,
}
# JPEG quality of the previews notebooks embed: a 512 px preview of a photo is about 27 KB
# (35 KB as base64) at 75, against 39 KB at 85 (benchmarks: "Notebook weight").
PREVIEW_QUALITY = 75

_PREVIEW_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_WHITE = (255, 255, 255)


def make_preview(
    source: bytes | str | Path,
    *,
    side: int = 512,
    fmt: str = "JPEG",
    quality: int = PREVIEW_QUALITY,
    max_pixels: int = 64_000_000,
) -> tuple[bytes, str]:
    """A downscaled copy of an image for notebooks: ``(bytes, media type)``.

    The longest side becomes at most ``side`` (never upscaled). ``fmt`` is ``"JPEG"``
    (transparency flattened on white), ``"PNG"`` or ``"WEBP"``. A JPEG source is decoded at
    reduced scale directly (``Image.draft``), which makes previews of large photos cheap.

    Raises:
        ValueError: an unknown ``fmt``, or a source that is no decodable raster image
            within ``max_pixels``.
        OSError: a path that cannot be read.
    """
    fmt = fmt.upper()
    if fmt == "JPG":
        fmt = "JPEG"
    if fmt not in _PREVIEW_TYPES:
        raise ValueError(f"preview format must be JPEG, PNG or WEBP, not {fmt!r}")
    if side < 1:
        raise ValueError("side must be positive")
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    media_type = sniff_image_type(data)
    if media_type is None:
        raise ValueError("the source is not a PNG, JPEG, WebP or GIF image")
    image = decode_as(data, media_type, max_pixels, draft=side)
    return encode_preview(image, side, fmt, quality), _PREVIEW_TYPES[fmt]


def decode_as(
    data: bytes | IO[bytes], media_type: str, max_pixels: int, *, draft: int | None = None
) -> Image.Image:
    """Fully decode ``data`` (frame 0), refusing bombs and broken files with ValueError.

    The pixel count is checked by this module, on the size the header declares, before
    anything is decoded. The file is opened with its format's own class rather than
    :func:`PIL.Image.open`, which would run Pillow's process-wide decompression-bomb check
    (a warning, or an error at twice ``Image.MAX_IMAGE_PIXELS``) first. Turning that warning
    into an error with ``warnings.catch_warnings()`` is not thread-safe: decodes run in
    executor threads, and interleaved save/restore pairs left ``error::DecompressionBombWarning``
    in the process-wide filters (issue 14, H17). Nothing here touches ``warnings``.
    """
    try:
        img = _OPENERS[media_type](io.BytesIO(data) if isinstance(data, bytes) else data)
        # Opening reads the header only: the size is known before any decoding.
        width, height = img.size
        if width * height > max_pixels:
            raise TooManyPixelsError(
                f"image declares {width}x{height} pixels, more than the {max_pixels} "
                "pixel limit (refused before decoding)",
                size=(width, height),
            )
        if draft is not None and img.format == "JPEG" and max(width, height) > draft:
            # Let the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding: far less
            # work. Twice the final size keeps room for a clean resampling step, as
            # Image.thumbnail's own reducing_gap does.
            scale = 2 * draft / max(width, height)
            img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        # load() decodes every byte of frame 0: a truncated file fails here.
        img.load()
        if img.width * img.height > max_pixels:  # a GIF frame may outgrow its screen
            raise TooManyPixelsError(
                f"image decodes to more than the {max_pixels} pixel limit", size=img.size
            )
    except TooManyPixelsError:
        raise
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image declares too many pixels (refused): {exc}") from exc
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        IndexError,
        TypeError,
        MemoryError,
        struct.error,
    ) as exc:
        # Pillow reports damaged data with any of these, depending on the codec.
        raise ValueError(f"the {media_type} image is truncated or damaged: {exc}") from exc
    return img


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode a PNG, JPEG, WebP or GIF (frame 0) fully, within ``max_pixels``.

    Thread-safe, and leaves the process-wide ``warnings`` filters alone.

    Raises:
        TooManyPixelsError: more pixels than ``max_pixels`` (checked on the header, before
            decoding); its ``size`` is the declared size.
        ValueError: not one of those types, or truncated/damaged data.
    """
    media_type = sniff_image_type(data)
    if media_type is None:
        raise ValueError("the data is not a PNG, JPEG, WebP or GIF image")
    return decode_as(data, media_type, max_pixels)


class TooManyPixelsError(ValueError):
    """An image refused for its pixel count (not a decoding failure); ``size`` says why."""

    def __init__(self, message: str, *, size: tuple[int, int]) -> None:
        super().__init__(message)
        self.size = size


def encode_preview(image: Image.Image, side: int, fmt: str, quality: int) -> bytes:
    """Scale to fit ``side`` x ``side`` and encode; JPEG gets transparency on white."""
    keeps_alpha = fmt != "JPEG" and _has_alpha(image)
    # Resample in a true-colour mode: palette and 1-bit images would be resized by nearest
    # neighbour, which looks ragged; and with alpha, Pillow resizes premultiplied.
    work = image.convert("RGBA" if _has_alpha(image) else "RGB")
    # Photos (uploaded references) carry their orientation in EXIF; previews honour it.
    work = ImageOps.exif_transpose(work) if image.getexif() else work
    work.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if work.mode == "RGBA" and not keeps_alpha:
        flat = Image.new("RGB", work.size, _WHITE)
        flat.paste(work, mask=work.getchannel("A"))
        work = flat
    out = io.BytesIO()
    if fmt == "JPEG":
        work.save(out, format="JPEG", quality=quality, optimize=True)
    elif fmt == "WEBP":
        work.save(out, format="WEBP", quality=quality)
    else:
        work.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
