"""The saved-notebook slot: a plain output below the panel, with a contact sheet of its images.

Widget views are saved as a stale ``text/plain`` and, by default, no widget state
(research/jupyter-async.md section 4). So displaying the panel (on the main thread while
the cell runs) also creates a second output right below it, a plain mimebundle with a
display id. Background code updates that slot (``update_display``, which lands in the right
cell even after other cells ran) with the images generated from this panel: ``text/html``
(escaped captions, ``data:`` images) plus an ``image/jpeg`` contact sheet and a
``text/plain`` list of paths. A saved notebook, nbconvert HTML and GitHub show the images
without any widget JavaScript.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from IPython.display import display, update_display

from nanobanana_jupyter._store.records import TaskRecord

from .context import PanelContext
from .showing import (
    MUTED,
    SLOT_INTERVAL,
    WRAP,
    contact_sheet,
    data_uri,
    escape,
    safe_src,
    shorten,
    tile,
)

__all__ = ["SLOT_IMAGES", "NotebookSlot"]

logger = logging.getLogger("nanobanana_jupyter")

SLOT_IMAGES = 12


@dataclass
class _SlotImage:
    prompt: str
    path: str
    tile: bytes


class NotebookSlot:
    """The plain output under the panel and the images it shows.

    Args:
        context: the panel's shared context.
        totals: the panel's totals with an image count (``2 tasks, 2 images, 1 credit``).
    """

    def __init__(
        self, context: PanelContext, *, totals: Callable[[int], str] = lambda images: ""
    ) -> None:
        self._ctx = context
        self._totals = totals
        self._images: dict[str, _SlotImage] = {}
        self._id: str | None = None
        self._dirty = False
        self._at = 0.0

    @property
    def dirty(self) -> bool:
        """Whether images arrived that the output does not show yet."""
        with self._ctx.lock:
            return self._dirty

    def display_below(self, bundle: Any) -> None:
        """Display the panel's own ``bundle``, and right below it this slot (main thread)."""
        if isinstance(bundle, tuple):
            display(bundle[0], raw=True, metadata=bundle[1])
        else:
            display(bundle, raw=True)
        with self._ctx.lock:
            if self._id is None:
                self._id = f"nanobanana-panel-{uuid.uuid4().hex}"
            data, metadata = self.bundle()
            slot = self._id
        display(data, raw=True, metadata=metadata, display_id=slot)

    # -- the panel's calls (lock held) ----------------------------------------------------

    def collect(self, record: TaskRecord) -> None:
        """Take the images of a task that ended (started from this panel)."""
        for image in record.images:
            if image.sha256 in self._images or not image.thumb_path:
                continue
            made = tile(image.thumb_path)
            if made is not None:
                self._images[image.sha256] = _SlotImage(record.prompt, image.path, made)
                self._dirty = True

    def flush(self, now: float) -> bool:
        """Update the output if new images are due; return whether some are still to show."""
        if self._dirty and now - self._at >= SLOT_INTERVAL:
            self.update(now)
        return self._dirty

    def update(self, now: float) -> None:
        """Bring the output up to date now."""
        self._dirty = False
        self._at = now
        if self._id is None:
            return
        data, metadata = self.bundle()
        try:
            update_display(data, raw=True, metadata=metadata, display_id=self._id)
        except Exception:  # a closed kernel channel must not break the engine
            logger.debug("could not update the panel's output slot", exc_info=True)

    # -- the bundle -----------------------------------------------------------------------

    def bundle(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The plain mimebundle of the panel's results: what a saved notebook shows."""
        with self._ctx.lock:
            images = list(self._images.values())
        if not images:
            text = "NanoBanana panel: no images yet (images generated in the panel appear here)"
            html = (
                '<div class="nanobanana-panel-results" style="opacity:0.6;font-size:0.85em">'
                "Images generated in the panel above also appear here, so a saved notebook "
                "shows them.</div>"
            )
            return {"text/plain": text, "text/html": html}, {}
        shown = images[-SLOT_IMAGES:][::-1]
        summary = f"NanoBanana panel: {self._totals(len(images))}"
        lines = [summary + " — files:"] + [f"  {i.path}" for i in images[::-1][:50]]
        figures = []
        for item in shown:
            src = safe_src(data_uri(item.tile, "image/jpeg")) or ""
            figures.append(
                '<figure style="margin:0;max-width:200px">'
                f'<img src="{src}" alt="{escape(shorten(item.prompt, 300))}" '
                'style="display:block;max-width:100%;height:auto;border-radius:4px">'
                f'<figcaption style="font-size:0.78em;{MUTED};{WRAP}">'
                f"<code>{escape(item.path)}</code></figcaption></figure>"
            )
        html = (
            '<div class="nanobanana-panel-results tex2jax_ignore mathjax_ignore" '
            'style="text-align:left">'
            f'<div style="{MUTED};margin-bottom:4px">{escape(summary)}</div>'
            f'<div style="display:flex;flex-wrap:wrap;gap:8px">{"".join(figures)}</div></div>'
        )
        data: dict[str, Any] = {"text/plain": "\n".join(lines), "text/html": html}
        metadata: dict[str, Any] = {
            "nanobanana": {"panel": True, "paths": [i.path for i in images]}
        }
        sheet = contact_sheet([i.tile for i in shown])
        if sheet is not None:
            data["image/jpeg"] = base64.b64encode(sheet).decode("ascii")
        return data, metadata
