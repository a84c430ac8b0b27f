"""Rating and tagging in the panel: five clickable stars, a tag field and removable tag chips.

A :class:`RatingBar` shows one task's rating and tags (on the larger view, on a finished
card; a gallery item's are drawn by the gallery's one widget, :mod:`.gallery_view`, through
the same :class:`Marks` interface); :class:`Curation` owns every bar of a panel, writes through the
session's :class:`History` (``rate``, ``tag``, ``untag``: short SQLite writes, kept in the
callback), and after each write shows the stored result on every bar of that task. What a
bar shows always comes from the store, so a reopened panel (or another kernel on the same
data directory) shows the same stars.

Decisions: a click on the star of the current rating clears the rating (``None``: not
rated); ``0`` ("no stars", a rating) is key 0 in the larger view, or ``task.rate(0)``. The
tag field adds its text when Enter is pressed (or it loses focus); commas separate several
tags. A bad tag, or a store that cannot be written, shows in the status line; callbacks
never raise.

Keys: the larger view holds a tiny anywidget (:func:`make_key_listener`) that takes the
focus when the view opens; while the focus is anywhere in the larger view but a text field,
keys 0 to 5 rate the image shown.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import ipywidgets as widgets
import traitlets

from nanobanana_jupyter._store.annotations import MAX_RATING, Annotation
from nanobanana_jupyter._wire.errors import NanoBananaError

from .context import PanelContext
from .theme import STAR_TEXT

__all__ = ["Curation", "Marks", "RatingBar", "key_listener_class", "make_key_listener"]

logger = logging.getLogger("nanobanana_jupyter")

FULL, EMPTY = "★", "☆"
TAG_PLACEHOLDER = "tag, Enter"


class RatingBar:
    """Five star buttons, a tag field and the task's tags as chips (click one to remove it).

    Args:
        curation: the panel's :class:`Curation`, which writes and refreshes.
        local_id: the task shown; ``None`` for a bar bound later (the larger view's).
        width: the width of the tag field.
    """

    def __init__(self, curation: Curation, local_id: str | None, *, width: str = "86px") -> None:
        self._curation = curation
        self.local_id = local_id
        self.rating: int | None = None
        self.tags: tuple[str, ...] = ()
        self.stars = [self._star(n) for n in range(1, MAX_RATING + 1)]
        self.tag_box = widgets.Text(
            placeholder=TAG_PLACEHOLDER,
            continuous_update=False,  # the value arrives on Enter (or when it loses focus)
            layout=widgets.Layout(width=width, margin="0 0 0 4px"),
        )
        self.tag_box.add_class("nanobanana-tag-input")
        self.tag_box.observe(self._on_tag_text, names="value")
        self.chips = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.chips.add_class("nanobanana-tag-chips")
        star_row = widgets.HBox(
            [*self.stars, self.tag_box], layout=widgets.Layout(align_items="center")
        )
        self.view = widgets.VBox([star_row, self.chips], layout=widgets.Layout(margin="2px 0"))
        self.view.add_class("nanobanana-rating-bar")
        self.widgets: list[Any] = [*self.stars, self.tag_box, self.chips, star_row, self.view]
        for widget in self.widgets:
            curation.context.own(widget)

    def _star(self, n: int) -> Any:
        star = widgets.Button(
            description=EMPTY,
            tooltip=f"Rate {n} of {MAX_RATING} (click the current rating to clear it)",
            layout=widgets.Layout(width="24px", height="24px", padding="0", margin="0"),
        )
        star.style.button_color = "transparent"
        star.style.text_color = STAR_TEXT
        star.style.font_size = "16px"
        star.add_class("nanobanana-star")
        star.on_click(lambda _b: self._curation.click_star(self, n))
        return star

    @property
    def closed(self) -> bool:
        """Whether its widgets were closed (its gallery item or card left the panel)."""
        return self.view.comm is None

    def show(self, annotation: Annotation) -> None:
        """Show a stored rating and tags (caller holds the panel lock)."""
        self.rating = annotation.rating
        for n, star in enumerate(self.stars, 1):
            star.description = (
                FULL if annotation.rating is not None and n <= annotation.rating else EMPTY
            )
        self.view.layout.display = "" if self.local_id is not None else "none"
        if annotation.tags == self.tags and len(self.chips.children) == len(self.tags):
            return
        self.tags = annotation.tags
        old = list(self.chips.children)
        self.chips.children = [self._chip(tag) for tag in annotation.tags]
        for chip in old:
            self._curation.context.drop(chip)

    def _chip(self, tag: str) -> Any:
        chip = self._curation.context.own(
            widgets.Button(
                description=f"{tag} ×",
                tooltip=f"Remove the tag {tag!r}",
                layout=widgets.Layout(
                    width="auto", height="22px", padding="0 6px", margin="0 4px 2px 0"
                ),
            )
        )
        chip.style.font_size = "11px"
        chip.add_class("nanobanana-tag-chip")
        chip.on_click(lambda _b: self._curation.remove_tag(self, tag))
        return chip

    def _on_tag_text(self, change: dict[str, Any]) -> None:
        text = str(change.get("new") or "")
        if text.strip():
            self._curation.add_tags(self, text)

    def clear_input(self) -> None:
        """Empty the tag field (its text was taken)."""
        self.tag_box.value = ""

    def chip_of(self, tag: str) -> Any | None:
        """The chip button of a tag, if shown."""
        return next((c for c in self.chips.children if c.description == f"{tag} ×"), None)


class Marks(Protocol):
    """What :class:`Curation` needs of a bar: a :class:`RatingBar`, or a gallery item's marks
    (drawn by the gallery's widget, :class:`.gallery.ItemMarks`)."""

    local_id: str | None
    rating: int | None

    @property
    def closed(self) -> bool: ...

    def show(self, annotation: Annotation) -> None: ...

    def clear_input(self) -> None: ...


class Curation:
    """Every rating bar of one panel, by task, and the writes they make.

    Args:
        context: the panel's shared context (its session's history is written).
    """

    def __init__(self, context: PanelContext) -> None:
        self.context = context
        self._bars: dict[str, list[Marks]] = {}

    def bar(self, local_id: str | None, **options: Any) -> RatingBar:
        """A new bar showing a task's stored rating and tags (caller holds the lock)."""
        bar = RatingBar(self, local_id, **options)
        self.bind(bar, local_id)
        return bar

    def bind(self, bar: Marks, local_id: str | None) -> None:
        """Show another task on a bar (the larger view's); ``None`` hides it."""
        with self.context.lock:
            if bar.local_id is not None:
                same = self._bars.get(bar.local_id, [])
                if bar in same:
                    same.remove(bar)
            bar.local_id = local_id
            if local_id is None:
                bar.show(Annotation())
                return
            self._bars.setdefault(local_id, []).append(bar)
        self._refresh(local_id, self._read(local_id))

    def bars_of(self, local_id: str) -> list[Marks]:
        """The open bars showing a task."""
        with self.context.lock:
            return [b for b in self._bars.get(local_id, []) if not b.closed]

    # -- what the bars' widgets do (any thread; never raises) -----------------------------

    def click_star(self, bar: Marks, n: int) -> None:
        """Star ``n`` clicked: rate ``n``, or clear the rating when it is ``n`` already."""
        local_id = bar.local_id
        if local_id is not None:
            self.rate(local_id, None if bar.rating == n else n)

    def rate(self, local_id: str, rating: int | None) -> bool:
        """Rate a task (``None`` clears); every bar of it follows. Returns whether it was kept."""
        return self._write(local_id, lambda h: h.rate(local_id, rating))

    def add_tags(self, bar: Marks, text: str) -> bool:
        """Add the tags typed in a bar's field (commas separate several); empty the field."""
        local_id = bar.local_id
        names = [part for part in text.split(",") if part.strip()]
        with self.context.lock:
            if not self.context.closed:
                bar.clear_input()
        if local_id is None or not names:
            return False
        return self._write(local_id, lambda h: h.tag(local_id, *names))

    def remove_tag(self, bar: Marks, tag: str) -> bool:
        local_id = bar.local_id
        if local_id is None:
            return False
        return self._write(local_id, lambda h: h.untag(local_id, tag))

    # -- the store ------------------------------------------------------------------------

    def _write(self, local_id: str, write: Callable[[Any], Annotation]) -> bool:
        # The store's own lock guards the write: the panel's lock is not held meanwhile.
        try:
            annotation = write(self.context.session.history)
        except NanoBananaError as exc:
            self.context.say(exc.message, error=True)
            return False
        except Exception as exc:  # a locked or damaged store: say so, never raise
            logger.exception("the panel could not keep a rating or tag")
            self.context.say(f"Could not keep that in the history: {exc}", error=True)
            return False
        self._refresh(local_id, annotation)
        return True

    def _read(self, local_id: str) -> Annotation:
        try:
            return self.context.session.history.annotation(local_id)
        except Exception:  # not stored (yet), or an unreadable store: shown as not rated
            logger.debug("no annotation for %s", local_id, exc_info=True)
            return Annotation()

    def _refresh(self, local_id: str, annotation: Annotation) -> None:
        with self.context.lock:
            if self.context.closed:
                return
            bars = [b for b in self._bars.get(local_id, []) if not b.closed]
            if bars:
                self._bars[local_id] = bars
            else:
                self._bars.pop(local_id, None)
            for bar in bars:
                bar.show(annotation)


# -- keys in the larger view -----------------------------------------------------------------

_KEYS_ESM = """
function render({ model, el }) {
  const hint = document.createElement("div");
  hint.className = "nanobanana-keys";
  hint.tabIndex = 0;
  hint.textContent = "Keys 0–5 rate this image";
  // Lumino (JupyterLab, Notebook 7) leaves the keys of events from inside such an element
  // alone: 1 to 5 here rate instead of turning the cell into a heading.
  hint.setAttribute("data-lm-suppress-shortcuts", "true");
  Object.assign(hint.style, { fontSize: "0.85em", opacity: "0.72", padding: "2px 4px",
                              outlineOffset: "1px" });
  const onKey = (event) => {
    const target = event.target;
    const typing = "input, textarea, select, [contenteditable]";
    if (target && target.closest && target.closest(typing)) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (/^[0-5]$/.test(event.key)) {
      event.preventDefault();
      event.stopPropagation();
      model.send({ event: "rate", rating: Number(event.key) });
    }
  };
  let host = null;
  const attach = () => {
    const found = el.closest(".nanobanana-detail") || el;
    if (found === host) return;
    if (host) host.removeEventListener("keydown", onKey);
    host = found;
    host.setAttribute("data-lm-suppress-shortcuts", "true");
    host.addEventListener("keydown", onKey);
  };
  let tries = 0;
  const wait = () => { attach(); if (host === el && tries++ < 100) setTimeout(wait, 50); };
  setTimeout(wait, 0);
  const onMessage = (msg) => {
    if (msg && msg.event === "focus") {
      setTimeout(() => { attach(); hint.focus({ preventScroll: true }); }, 30);
    }
  };
  model.on("msg:custom", onMessage);
  el.appendChild(hint);
  return () => {
    model.off("msg:custom", onMessage);
    if (host) host.removeEventListener("keydown", onKey);
  };
}
export default { render };
"""


@functools.lru_cache(maxsize=1)
def key_listener_class() -> Any:
    """The anywidget class of the larger view's keys."""
    base: Any = importlib.import_module("anywidget").AnyWidget

    class RatingKeys(base):
        """Sends ``{"event": "rate", "rating": n}`` for keys 0-5 in the larger view."""

        _esm = _KEYS_ESM
        _keys = traitlets.Unicode("0-5").tag(sync=True)

    return RatingKeys


def make_key_listener(rate: Callable[[int], None]) -> Any:
    """The larger view's key listener calling ``rate(n)`` for key ``n``.
    ``listener.send({"event": "focus"})`` gives it the focus."""
    listener = key_listener_class()()

    def on_message(_widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict) or content.get("event") != "rate":
            return
        rating = content.get("rating")
        if isinstance(rating, int) and not isinstance(rating, bool) and 0 <= rating <= MAX_RATING:
            rate(rating)

    listener.on_msg(on_message)
    return listener
