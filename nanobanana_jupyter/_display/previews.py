"""The images a view embeds: one function gives a task's previews for an embed mode and a size.

:func:`previews_for` is what the magic's live cards, a task shown as a cell's result
(:mod:`.present`) and the panel embed, so the same task shows the same image everywhere:

- ``embed="thumb"``: the stored thumbnail when ``side`` is its size (512), else a preview
  made at ``side`` (long side, in pixels);
- ``embed="full"``: the image file itself;
- ``embed="none"``: nothing.

Also the small images the panel needs: a file's bytes (:func:`read_bytes`), a tile of a
thumbnail (:func:`tile`), a contact sheet of tiles (:func:`contact_sheet`) and a thumbnail of
a reference given as a data URI (:func:`reference_thumb`). Pillow is imported on first use.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, TypeAlias

from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.models import RASTER_TYPES

__all__ = [
    "EMBED_MODES",
    "HISTORY_THUMB_SIDE",
    "THUMB_SIDE",
    "TILE_SIDE",
    "Preview",
    "PreviewLike",
    "as_preview",
    "contact_sheet",
    "history_thumbs",
    "preview_for",
    "previews_for",
    "read_bytes",
    "reference_thumb",
    "tile",
    "usable_previews",
]

EMBED_MODES = ("thumb", "full", "none")
"""What an output embeds: a small preview, the full image, or none (the magic's ``--embed``)."""
THUMB_SIDE = 512
"""The long side of the thumbnails the image store keeps."""
TILE_SIDE = 192
"""The long side of a tile of the panel's saved-notebook slot."""
_MAX_DIMENSION = 100_000
_CACHE_LIMIT = 512


class Preview(NamedTuple):
    """A small image to embed: bytes already made (a thumbnail) and their raster type."""

    data: bytes
    media_type: str
    """``image/png``, ``image/jpeg``, ``image/webp`` or ``image/gif``; others are dropped."""
    width: int | None = None
    height: int | None = None


PreviewLike: TypeAlias = Preview | tuple[bytes, str] | tuple[bytes, str, tuple[int, int] | None]
"""A :class:`Preview`, or a plain ``(bytes, media_type)`` / ``(bytes, media_type, (w, h))``."""


def _dimension(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_DIMENSION:
        return value
    return None


def as_preview(item: PreviewLike) -> Preview | None:
    """Normalise the accepted preview shapes; ``None`` for anything that may not be embedded.

    Rendering never raises over a bad preview: a display call that fails shows the user a
    traceback instead of their task, so a malformed or non-raster preview is just left out.
    """
    try:
        data, kind = item[0], item[1]
    except (TypeError, IndexError):
        return None
    width: object = None
    height: object = None
    try:
        if isinstance(item, Preview) or len(item) == 4:
            width, height = item[2:4]  # (bytes, type, w, h)
        elif len(item) == 3 and item[2] is not None:
            width, height = item[2]
    except (TypeError, ValueError):
        pass  # a size that cannot be read is no reason to hide the image
    if not isinstance(data, (bytes, bytearray, memoryview)) or not isinstance(kind, str):
        return None
    kind = kind.strip().lower()
    if kind not in RASTER_TYPES or len(data) == 0:
        return None
    return Preview(bytes(data), kind, _dimension(width), _dimension(height))


def usable_previews(items: Sequence[PreviewLike]) -> list[Preview]:
    """The items that may be embedded, normalised, in their order."""
    return [p for p in map(as_preview, items) if p is not None]


# -- a task's previews ------------------------------------------------------------------------

_cache: dict[tuple[str, int, str], Preview | None] = {}
_cache_lock = threading.Lock()


def previews_for(record: TaskRecord, *, embed: str, side: int) -> list[Preview]:
    """The previews of a task's images for an embed mode and a long side, in image order.

    Images that cannot be read (a file gone, not an image) are left out. Results are cached
    by path, side and mode, so a card redrawn every second reads and scales each file once.
    """
    if embed == "none":
        return []
    previews: list[Preview] = []
    for image in record.images:
        preview = preview_for(image.path, image.thumb_path, embed=embed, side=side)
        if preview is not None:
            previews.append(preview)
    return previews


def preview_for(path: str, thumb: str | None, *, embed: str, side: int) -> Preview | None:
    """The preview bytes for one image: the stored thumbnail, or one made at ``side``."""
    key = (path, side, embed)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    preview: Preview | None = None
    try:
        if embed == "full":
            from nanobanana_jupyter._wire.models import sniff_image_type

            data = Path(path).read_bytes()
            media = sniff_image_type(data) or "image/png"
            preview = Preview(data, media)
        elif thumb is not None and side == THUMB_SIDE and Path(thumb).is_file():
            preview = Preview(Path(thumb).read_bytes(), "image/jpeg")
        else:
            from nanobanana_jupyter._store.decoding import make_preview

            data, media = make_preview(path, side=side)
            preview = Preview(data, media)
        if preview is not None and preview.width is None:
            preview = _with_size(preview)
    except (OSError, ValueError):
        preview = None
    with _cache_lock:
        if len(_cache) > _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = preview
    return preview


def _with_size(preview: Preview) -> Preview:
    from PIL import Image

    with Image.open(io.BytesIO(preview.data)) as img:
        return Preview(preview.data, preview.media_type, img.width, img.height)


# -- what the panel shows -------------------------------------------------------------------


def read_bytes(path: str | None) -> bytes | None:
    """A file's bytes (a stored thumbnail), or ``None`` when there is none or it is gone."""
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


HISTORY_THUMB_SIDE = 48
"""The long side of the previews in a history table's rows."""


def history_thumbs(
    records: Sequence[TaskRecord], *, side: int = HISTORY_THUMB_SIDE
) -> dict[str, Preview]:
    """A tiny preview of each record's first image, by ``local_id``, for a history table.

    Made from the stored thumbnail when there is one (a small JPEG, quick to decode), cached
    like every preview; records without a readable image are left out.
    """
    out: dict[str, Preview] = {}
    for record in records:
        if not record.images:
            continue
        image = record.images[0]
        source = (
            image.thumb_path
            if image.thumb_path and Path(image.thumb_path).is_file()
            else image.path
        )
        preview = preview_for(source, None, embed="thumb", side=side)
        if preview is not None:
            out[record.local_id] = preview
    return out


def tile(thumb_path: str, *, side: int = TILE_SIDE) -> bytes | None:
    """A JPEG of a stored thumbnail scaled to ``side``, or ``None`` if it cannot be read."""
    from nanobanana_jupyter._store.decoding import make_preview

    try:
        data, _ = make_preview(thumb_path, side=side, quality=80)
    except (OSError, ValueError):
        return None
    return data


def reference_thumb(payload: str, *, side: int = 128) -> bytes | None:
    """A small JPEG of a reference given as a ``data:image/...;base64,`` URI, else ``None``."""
    if not payload.startswith("data:image/"):
        return None
    from nanobanana_jupyter._store.decoding import make_preview

    try:
        raw = base64.b64decode(payload.split(",", 1)[1])
        data, _ = make_preview(raw, side=side, quality=80)
    except (ValueError, OSError, IndexError):
        return None
    return data


def contact_sheet(
    tiles: Sequence[bytes], columns: int = 4, *, tile_side: int = TILE_SIDE
) -> bytes | None:
    """One JPEG of the tiles in a grid, for front ends that show images but not HTML.

    Tiles that cannot be read are left out; ``None`` when none is left.
    """
    if not tiles:
        return None
    from PIL import Image

    opened = []
    for data in tiles:
        try:
            with Image.open(io.BytesIO(data)) as img:
                opened.append(img.convert("RGB"))
        except (OSError, ValueError):
            continue
    if not opened:
        return None
    gap = 6
    cols = max(1, min(columns, len(opened)))
    rows = -(-len(opened) // cols)
    step = tile_side + gap
    sheet = Image.new("RGB", (cols * step + gap, rows * step + gap), (255, 255, 255))
    for index, img in enumerate(opened):
        x = gap + (index % cols) * step + (tile_side - img.width) // 2
        y = gap + (index // cols) * step + (tile_side - img.height) // 2
        sheet.paste(img, (x, y))
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=80, optimize=True)
    return out.getvalue()
