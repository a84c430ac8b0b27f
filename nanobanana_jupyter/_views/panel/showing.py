"""Everything the panel's parts show through: tones, text, previews, tiles, the one ticker.

The parts never import the display layer (or Pillow) themselves; they use this module.
What is here:

- the status tones and their colours, and the inline styles the parts share;
- text helpers: shortening, counts, and the display layer's escaping and formatting;
- previews: reading a stored thumbnail, a thumbnail of a ``data:`` reference, the larger
  1024 px view (made in the engine's executor), the tiles and the contact sheet of the
  saved-notebook output;
- :class:`Ticker`: the display layer's ticker, applying throttled, coalesced changes under
  the panel's lock while there is something to apply, and the intervals it throttles by.

The tone table, previews, tiles, contact sheet, text helpers and the ticker itself are the
display layer's (``nanobanana_jupyter._display``); this module only binds them to the
panel's sizes, styles and lock.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from nanobanana_jupyter._display import live
from nanobanana_jupyter._display.grid import cell_thumb, grid_html
from nanobanana_jupyter._display.html import data_uri, escape, history_html, safe_src
from nanobanana_jupyter._display.previews import contact_sheet as _contact_sheet
from nanobanana_jupyter._display.previews import history_thumbs, read_bytes, reference_thumb
from nanobanana_jupyter._display.previews import tile as _tile
from nanobanana_jupyter._display.words import (
    REUSED,
    format_cost,
    format_duration,
    one_line,
    plural,
    reuse_words,
    status_label,
    tone_of,
)
from nanobanana_jupyter._display.words import (
    TONE_COLOURS as _TONES,
)
from nanobanana_jupyter._wire.models import TaskStatus

__all__ = [
    "BADGE_COLOURS",
    "CARD_INTERVAL",
    "ELAPSED_SECONDS",
    "GRID_INTERVAL",
    "HISTORY_INTERVAL",
    "MUTED",
    "PROMPT_SHOWN",
    "REUSED",
    "SLOT_INTERVAL",
    "SLOT_TILE",
    "TICK_SECONDS",
    "TONE_COLOURS",
    "WRAP",
    "Ticker",
    "cell_thumb",
    "contact_sheet",
    "count",
    "data_uri",
    "escape",
    "format_cost",
    "format_duration",
    "grid_html",
    "history_html",
    "history_thumbs",
    "large_preview",
    "one_line",
    "read",
    "reference_thumb",
    "reuse_words",
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
GRID_INTERVAL = live.GRID_UPDATE_INTERVAL
"""A compare grid's table (every cell's preview) is redrawn at most this often while it runs."""
HISTORY_INTERVAL = 1.0
SLOT_TILE = 192
PROMPT_SHOWN = 160

# The display layer's one tone table, as the text colours the panel's status lines use.
TONE_COLOURS = {name: colours.text for name, colours in _TONES.items()}
# And as a badge's background and text colours (the sandbox badge in the header).
BADGE_COLOURS = {name: (colours.background, colours.foreground) for name, colours in _TONES.items()}
WRAP = "white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.4"
MUTED = "opacity:0.72"


def tone(status: TaskStatus) -> str:
    """The tone of a status: a key of :data:`TONE_COLOURS` (the display layer's)."""
    return tone_of(status)


def shorten(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters (an ellipsis marks a cut)."""
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def count(n: int, word: str) -> str:
    """``1 task``, ``2 tasks``."""
    return plural(n, word)


# -- previews -------------------------------------------------------------------------------

read = read_bytes


async def large_preview(path: str) -> bytes:
    """The 1024 px JPEG of the larger view, made in the executor (raises OSError, ValueError)."""
    from nanobanana_jupyter._store.decoding import make_preview

    loop = asyncio.get_running_loop()
    data, _ = await loop.run_in_executor(
        None, functools.partial(make_preview, path, side=1024, quality=85)
    )
    return data


def tile(thumb_path: str) -> bytes | None:
    """A tile of the saved-notebook output, from a stored thumbnail."""
    return _tile(thumb_path, side=SLOT_TILE)


def contact_sheet(tiles: Sequence[bytes], columns: int = 4) -> bytes | None:
    """One JPEG of the tiles in a grid, for front ends that show images but not HTML."""
    return _contact_sheet(tiles, columns, tile_side=SLOT_TILE)


# -- the ticker -----------------------------------------------------------------------------


class Ticker:
    """The panel's use of the display layer's one ticker: ``step(now)`` under the panel's
    lock every :data:`TICK_SECONDS` while it returns True and the panel is open.

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
        self._step = step
        self._active = active
        self._ticker = live.Ticker(self._round, interval=TICK_SECONDS, run=start, clock=clock)

    @property
    def ticking(self) -> bool:
        return self._ticker.running

    def ensure(self) -> None:
        """Start ticking unless it runs already (or the panel closed)."""
        if self._active():
            self._ticker.start()

    def _round(self, now: float) -> bool:
        # On the engine loop: never wait for the lock. While an event is being shown (the
        # delivery thread holds it), skip this round; the next one tries again.
        if not self._lock.acquire(blocking=False):
            return True
        try:
            return self._active() and self._step(now)
        finally:
            self._lock.release()
