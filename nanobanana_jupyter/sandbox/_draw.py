"""Offline image drawing with Pillow: a deterministic picture for a prompt.

The picture is a seeded gradient with translucent shapes, the prompt's words on a band, the
model id in a corner, and the reference images as inset tiles (a labelled placeholder tile for
a reference the sandbox will not fetch). Same inputs, same PNG bytes: tests compare bytes, and
the sandbox can drop cached images and redraw them identically.

Everything here is pure and CPU-bound; the server calls ``render_png`` in a thread pool.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import random
import threading
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

ASPECT_RATIOS: tuple[str, ...] = (
    "auto",
    "1:1",
    "2:3",
    "3:2",
    "3:4",
    "4:3",
    "4:5",
    "5:4",
    "9:16",
    "16:9",
    "21:9",
)
IMAGE_SIZES: dict[str, int] = {"1K": 1024, "2K": 2048, "4K": 4096}

# References larger than this are not decoded: a sandbox must not be a decompression bomb target.
_MAX_REF_PIXELS = 40_000_000
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_fonts = threading.local()


@dataclass(frozen=True)
class Reference:
    """A reference image to composite: encoded bytes, a data URI, or only a label.

    A reference with neither ``data`` nor ``data_uri`` (a URL the offline sandbox does not
    fetch), or one that fails to decode, becomes a placeholder tile showing ``label``.
    """

    label: str
    data: bytes | None = None
    data_uri: str | None = None


@dataclass(frozen=True)
class DrawSpec:
    """Everything that determines one picture."""

    prompt: str
    model: str
    index: int
    aspect_ratio: str
    long_side: int
    refs: tuple[Reference, ...] = ()
    repeat: int = 0
    """Earlier tasks with the same request: each repeat is a different sample."""
    image_size: str = ""
    """The size asked for: a picture of its own even when capped to the same pixels."""


def long_side_for(image_size: str, *, max_side: int, image_side: int | None) -> int:
    """Pixel length of the long side: ``image_side`` if set, else the size tier capped."""
    if image_side is not None:
        return image_side
    return min(IMAGE_SIZES.get(image_size, 1024), max_side)


def _dimensions(
    aspect_ratio: str, long_side: int, first_ref: Image.Image | None
) -> tuple[int, int]:
    if aspect_ratio == "auto" or aspect_ratio not in ASPECT_RATIOS:
        # "auto" follows the first reference's shape, as an edit would; square otherwise.
        a, b = first_ref.size if first_ref is not None else (1, 1)
    else:
        left, _, right = aspect_ratio.partition(":")
        a, b = int(left), int(right)
    if a >= b:
        return long_side, max(1, round(long_side * b / a))
    return max(1, round(long_side * a / b)), long_side


def _font(size: int) -> _Font:
    # FreeType faces are not safe to share between threads, so each pool thread keeps its own.
    cache: dict[int, _Font] | None = getattr(_fonts, "cache", None)
    if cache is None:
        cache = {}
        _fonts.cache = cache
    font = cache.get(size)
    if font is None:
        font = ImageFont.load_default(size=size)
        cache[size] = font
    return font


def decode_data_uri(uri: str) -> bytes | None:
    """The bytes of a ``data:...;base64,`` URI, or ``None`` if it is not one."""
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        return None
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        return None


def _open(ref: Reference) -> Image.Image | None:
    data = ref.data if ref.data is not None else None
    if data is None and ref.data_uri is not None:
        data = decode_data_uri(ref.data_uri)
    if not data:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > _MAX_REF_PIXELS:
            return None
        image.load()
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _background(rng: random.Random, width: int, height: int) -> Image.Image:
    first = tuple(rng.randrange(256) for _ in range(3))
    second = tuple(rng.randrange(256) for _ in range(3))
    mask = Image.linear_gradient("L")
    mask = mask.transpose(
        rng.choice(
            (
                Image.Transpose.ROTATE_90,
                Image.Transpose.ROTATE_180,
                Image.Transpose.ROTATE_270,
                Image.Transpose.TRANSPOSE,
            )
        )
    )
    mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    return Image.composite(
        Image.new("RGB", (width, height), second),
        Image.new("RGB", (width, height), first),
        mask,
    ).convert("RGBA")


def _shapes(rng: random.Random, canvas: Image.Image) -> Image.Image:
    width, height = canvas.size
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    scale = min(width, height)
    for _ in range(rng.randrange(5, 11)):
        colour = (
            rng.randrange(256),
            rng.randrange(256),
            rng.randrange(256),
            rng.randrange(60, 170),
        )
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(max(2, scale // 12), max(3, scale // 3))
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        elif kind == 1:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
        else:
            points = [
                (x + rng.randrange(-r, r + 1), y + rng.randrange(-r, r + 1)) for _ in range(3)
            ]
            draw.polygon(points, fill=colour)
    return Image.alpha_composite(canvas, overlay)


def _wrap(text: str, font: _Font, width: float, max_lines: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1] + " …"]
    return lines


def _caption(canvas: Image.Image, prompt: str, model: str) -> Image.Image:
    width, height = canvas.size
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    size = max(10, min(width, height) // 16)
    font = _font(size)
    lines = _wrap(prompt, font, width * 0.9, max_lines=4)
    line_height = round(size * 1.25)
    band_top = height - line_height * len(lines) - size
    draw.rectangle((0, band_top, width, height), fill=(0, 0, 0, 110))
    y = band_top + size // 2
    for line in lines:
        draw.text((width // 20, y), line, font=font, fill=(255, 255, 255, 255))
        y += line_height
    small = _font(max(8, size // 2))
    draw.text((size // 3, size // 3), model, font=small, fill=(255, 255, 255, 220))
    return Image.alpha_composite(canvas, overlay)


def _tiles(
    canvas: Image.Image, refs: tuple[Reference, ...], opened: list[Image.Image | None]
) -> None:
    width, height = canvas.size
    tile = max(16, min(width, height) // 4)
    pad = max(2, tile // 12)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(8, tile // 8))
    for i, (ref, image) in enumerate(zip(refs, opened, strict=True)):
        x = width - (i + 1) * (tile + pad)
        y = pad
        if x < 0:
            break
        draw.rectangle((x - 2, y - 2, x + tile + 1, y + tile + 1), fill=(255, 255, 255, 255))
        if image is not None:
            thumb = image.copy()
            thumb.thumbnail((tile, tile), Image.Resampling.BILINEAR)
            offset = (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2)
            canvas.paste(thumb, offset)
        else:
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=(90, 90, 90, 255))
            draw.line((x, y, x + tile - 1, y + tile - 1), fill=(150, 150, 150, 255), width=2)
            draw.line((x, y + tile - 1, x + tile - 1, y), fill=(150, 150, 150, 255), width=2)
            draw.text((x + pad, y + pad), ref.label[:24], font=font, fill=(255, 255, 255, 255))


def render_png(spec: DrawSpec) -> bytes:
    """Draw the picture for ``spec`` and encode it as PNG."""
    text = f"{spec.model}\n{spec.prompt}\n{spec.index}"
    if spec.repeat:
        text += f"\nrepeat {spec.repeat}"
    if spec.image_size:
        text += f"\nsize {spec.image_size}"
    seed = hashlib.sha256(text.encode()).digest()
    rng = random.Random(seed)
    opened = [_open(ref) for ref in spec.refs]
    width, height = _dimensions(spec.aspect_ratio, spec.long_side, opened[0] if opened else None)
    canvas = _shapes(rng, _background(rng, width, height))
    canvas = _caption(canvas, spec.prompt, spec.model)
    _tiles(canvas, spec.refs, opened)
    out = io.BytesIO()
    # Level 1: encoding speed matters more than size for a loopback server.
    canvas.convert("RGB").save(out, format="PNG", compress_level=1)
    return out.getvalue()
