"""Everything the panel's parts show through: tones, text, previews, tiles, the one ticker.

The parts never import the display layer (or Pillow) themselves; they use this module, so
moving the panel onto a shared display layer changes this file only. What is here:

- the status tones and their colours, and the inline styles the parts share;
- text helpers: shortening, counts, and the display layer's escaping and formatting;
- previews: reading a stored thumbnail, a thumbnail of a ``data:`` reference, the larger
  1024 px view (made in the engine's executor), the tiles and the contact sheet of the
  saved-notebook output;
- :class:`Ticker`: one coroutine on the engine loop that applies throttled, coalesced
  changes while there is something to apply, and the intervals it throttles by.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from nanobanana_jupyter._display.render import (
    data_uri,
    escape,
    format_cost,
    format_duration,
    history_html,
    safe_src,
    status_label,
)
from nanobanana_jupyter._wire.models import TaskStatus

__all__ = [
    "CARD_INTERVAL",
    "ELAPSED_SECONDS",
    "HISTORY_INTERVAL",
    "MUTED",
    "PROMPT_SHOWN",
    "SLOT_INTERVAL",
    "SLOT_TILE",
    "TICK_SECONDS",
    "TONE_COLOURS",
    "WRAP",
    "Ticker",
    "contact_sheet",
    "count",
    "data_uri",
    "escape",
    "format_cost",
    "format_duration",
    "history_html",
    "large_preview",
    "read",
    "reference_thumb",
    "safe_src",
    "shorten",
    "status_label",
    "tile",
    "tone",
]

TICK_SECONDS = 0.25
CARD_INTERVAL = 0.25
"""At most four progress updates a second per task card."""
ELAPSED_SECONDS = 1.0
"""Running cards refresh their elapsed time this often."""
SLOT_INTERVAL = 0.5
HISTORY_INTERVAL = 1.0
SLOT_TILE = 192
PROMPT_SHOWN = 160

TONE_COLOURS = {
    "running": "#1a64c8",
    "success": "#1b7f3b",
    "failed": "#c5221f",
    "warning": "#b06f00",
    "neutral": "#5f6368",
}
_FAILED = {TaskStatus.FAILED, TaskStatus.NOT_SENT}
_WARNING = {TaskStatus.SUBMIT_UNKNOWN, TaskStatus.TIMED_OUT, TaskStatus.UNAVAILABLE}
WRAP = "white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.4"
MUTED = "opacity:0.72"


def tone(status: TaskStatus) -> str:
    """The tone of a status: a key of :data:`TONE_COLOURS`."""
    if status is TaskStatus.SUCCESS:
        return "success"
    if status in _FAILED:
        return "failed"
    if status in _WARNING:
        return "warning"
    if status is TaskStatus.ABANDONED:
        return "neutral"
    return "running"


def shorten(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters (an ellipsis marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def count(n: int, word: str) -> str:
    """``1 task``, ``2 tasks``."""
    return f"{n} {word}{'s' if n != 1 else ''}"


# -- previews -------------------------------------------------------------------------------


def read(path: str | None) -> bytes | None:
    """The bytes of a stored thumbnail, or ``None`` when there is none (or it is gone)."""
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def reference_thumb(payload: str) -> bytes | None:
    """A 128 px JPEG of a ``data:image/`` reference (``None`` for URLs and unreadable data)."""
    if not payload.startswith("data:image/"):
        return None
    from nanobanana_jupyter._store.images import make_preview

    try:
        raw = base64.b64decode(payload.split(",", 1)[1])
        data, _ = make_preview(raw, side=128, quality=80)
    except (ValueError, OSError):
        return None
    return data


async def large_preview(path: str) -> bytes:
    """The 1024 px JPEG of the larger view, made in the executor (raises OSError, ValueError)."""
    from nanobanana_jupyter._store.images import make_preview

    loop = asyncio.get_running_loop()
    data, _ = await loop.run_in_executor(
        None, functools.partial(make_preview, path, side=1024, quality=85)
    )
    return data


def tile(thumb_path: str) -> bytes | None:
    """A tile of the saved-notebook output, from a stored thumbnail."""
    from nanobanana_jupyter._store.images import make_preview

    try:
        data, _ = make_preview(thumb_path, side=SLOT_TILE, quality=80)
    except (OSError, ValueError):
        return None
    return data


def contact_sheet(tiles: Sequence[bytes], columns: int = 4) -> bytes | None:
    """One JPEG of the tiles in a grid, for front ends that show images but not HTML."""
    if not tiles:
        return None
    from PIL import Image

    opened = []
    for item in tiles:
        try:
            with Image.open(io.BytesIO(item)) as img:
                opened.append(img.convert("RGB"))
        except (OSError, ValueError):
            continue
    if not opened:
        return None
    gap = 6
    cols = min(columns, len(opened))
    rows = -(-len(opened) // cols)
    sheet = Image.new(
        "RGB", (cols * (SLOT_TILE + gap) + gap, rows * (SLOT_TILE + gap) + gap), (255, 255, 255)
    )
    for index, img in enumerate(opened):
        x = gap + (index % cols) * (SLOT_TILE + gap) + (SLOT_TILE - img.width) // 2
        y = gap + (index // cols) * (SLOT_TILE + gap) + (SLOT_TILE - img.height) // 2
        sheet.paste(img, (x, y))
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=80, optimize=True)
    return out.getvalue()


# -- the ticker -----------------------------------------------------------------------------


class Ticker:
    """One coroutine that calls ``step(now)`` every :data:`TICK_SECONDS` while it returns True.

    Args:
        lock: held around every step (the panel's one lock).
        start: runs a coroutine in the background (the session's engine loop); may raise
            ``RuntimeError`` when the engine is stopping.
        step: applies what is due; returns whether there is more to do.
        active: whether ticking makes sense at all (False once the panel closed).
        clock: the monotonic clock handed to ``step``.
    """

    def __init__(
        self,
        lock: threading.RLock,
        start: Callable[[Coroutine[Any, Any, None]], object],
        step: Callable[[float], bool],
        *,
        active: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = lock
        self._start = start
        self._step = step
        self._active = active
        self._clock = clock
        self._ticking = False

    @property
    def ticking(self) -> bool:
        with self._lock:
            return self._ticking

    def ensure(self) -> None:
        """Start the coroutine unless it runs already (or the panel closed)."""
        with self._lock:
            if self._ticking or not self._active():
                return
            self._ticking = True
        try:
            self._start(self._run())
        except RuntimeError:
            with self._lock:
                self._ticking = False

    async def _run(self) -> None:
        try:
            while True:
                await asyncio.sleep(TICK_SECONDS)
                with self._lock:
                    if not self._active() or not self._step(self._clock()):
                        self._ticking = False
                        return
        except BaseException:
            with self._lock:
                self._ticking = False
            raise
