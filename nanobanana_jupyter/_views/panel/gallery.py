"""The gallery of results, newest first, and its larger view of one image."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets

from nanobanana_jupyter._store.annotations import Annotation
from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._wire.models import TaskStatus

from .context import PanelContext
from .gallery_view import gallery_view_class
from .rating import Curation, make_key_listener
from .showing import MUTED, WRAP, escape, large_preview, read, shorten

__all__ = ["GALLERY_FROM_HISTORY", "MAX_GALLERY", "Gallery", "GalleryItem", "ItemMarks"]

logger = logging.getLogger("nanobanana_jupyter")

GALLERY_FROM_HISTORY = 12
MAX_GALLERY = 24
BRANCH_TIP = "Start an edit from this image: its prompt in the box, the image the only reference"


@dataclass
class GalleryItem:
    """One image of the gallery (``key`` is its content hash)."""

    key: str
    image: ImageRecord
    prompt: str
    thumb: bytes
    local_id: str | None = None
    """The task the image is a result of (its rating and tags are the task's)."""
    bar: ItemMarks | None = None
    """Its stars and tags, as :class:`Curation` sees them; none: the item has none."""
    entry: dict[str, Any] = field(default_factory=dict)
    """What the page draws of it (an item of :attr:`GalleryView.items`)."""


class ItemMarks:
    """A gallery item's stars and tags, for :class:`Curation` a bar like the larger view's:
    what it shows goes to the gallery widget's ``marks``, and the page draws it."""

    def __init__(self, gallery: Gallery, key: str) -> None:
        self._gallery = gallery
        self.key = key
        self.local_id: str | None = None
        self.rating: int | None = None
        self.tags: tuple[str, ...] = ()

    @property
    def closed(self) -> bool:
        """Whether its item left the gallery (for good: an image that comes back is a new
        item, with new marks) or the panel closed."""
        return not self._gallery.shows(self)

    def show(self, annotation: Annotation) -> None:
        """Show a stored rating and tags (caller holds the panel lock)."""
        self.rating, self.tags = annotation.rating, annotation.tags
        self._gallery.mark(self.key, annotation)

    def clear_input(self) -> None:
        """Nothing to do: the page empties its tag field as it sends the text."""


class Gallery:
    """Thumbnails of the newest results, each with View, Use as reference and Branch; the
    larger view.

    Args:
        context: the panel's shared context.
        use: makes an item a reference image (the picker's :meth:`ReferencePicker.add_image`);
            returns whether it was added.
        branch: starts an edit of an item (its prompt in the box, it the only reference).
        curation: rates and tags the items and the larger view (:mod:`.rating`); none: no
            stars.
    """

    def __init__(
        self,
        context: PanelContext,
        *,
        use: Callable[[GalleryItem], bool] = lambda item: False,
        branch: Callable[[GalleryItem], bool] = lambda item: False,
        curation: Curation | None = None,
    ) -> None:
        self._ctx = context
        self._use = use
        self._branch = branch
        self._curation = curation
        self._items: dict[str, GalleryItem] = {}
        self._order: list[str] = []
        self._detail_key: str | None = None
        self._marks: dict[str, dict[str, Any]] = {}  # what the page shows, by key
        self._holding = False  # while filling: marks are sent once, at the end
        self._page_seen = False  # whether a page has asked for thumbnails (one shows it)
        own = context.own
        self.detail_image = own(
            widgets.Image(format="jpeg", layout=widgets.Layout(max_width="100%", height="auto"))
        )
        self.detail_image.add_class("nanobanana-detail-image")
        self.detail_path = own(widgets.HTML(""))
        self.detail_path.add_class("nanobanana-detail-path")
        use_button = context.button(
            "Use as reference", "plus", "nanobanana-detail-use", "Use this image as a reference"
        )
        use_button.on_click(lambda _b: self._use_detail())
        branch_button = context.button(
            "Branch from here", "code-fork", "nanobanana-detail-branch", BRANCH_TIP
        )
        branch_button.on_click(lambda _b: self._branch_detail())
        close = context.button("Close", "times", "nanobanana-detail-close", "Close")
        close.on_click(lambda _b: self.close_detail())
        # The larger view's stars and tags, and its keys 0-5.
        self.detail_bar = None if curation is None else curation.bar(None, width="140px")
        self.detail_keys = None if curation is None else make_key_listener(self._rate_detail)
        curating = [w.view for w in (self.detail_bar,) if w is not None]
        curating += [own(self.detail_keys)] if self.detail_keys is not None else []
        self.detail_box = own(
            widgets.VBox(
                [
                    self.detail_image,
                    self.detail_path,
                    context.row([use_button, branch_button, close]),
                    *curating,
                ],
                layout=widgets.Layout(display="none", margin="0 0 8px 0"),
            )
        )
        self.detail_box.add_class("nanobanana-detail")
        # Every item in one widget drawn by the page (gallery_view): 12 items of ipywidgets
        # were some 750 widgets, most of a panel's opening time.
        self.gallery_box = own(gallery_view_class()())
        self.gallery_box.add_class("nanobanana-gallery")
        self.gallery_box.on_msg(self._on_message)
        self.gallery_empty = own(widgets.Label("No images yet."))
        self.view = own(widgets.VBox([self.detail_box, self.gallery_empty, self.gallery_box]))

    # -- what the panel reads -------------------------------------------------------------

    @property
    def items(self) -> list[GalleryItem]:
        """The items shown, newest first."""
        with self._ctx.lock:
            return [self._items[k] for k in self._order]

    @property
    def paths(self) -> list[str]:
        """Full-size files shown, newest first."""
        with self._ctx.lock:
            return [self._items[k].image.path for k in self._order]

    def find(self, path: str) -> GalleryItem | None:
        """The item showing the full-size file ``path``, if any."""
        with self._ctx.lock:
            return next((g for g in self._items.values() if g.image.path == path), None)

    # -- filling it (the panel's calls, lock held) ----------------------------------------

    def load_from_history(self) -> None:
        """The newest results of the store, so an opened panel shows earlier work."""
        try:
            records = self._ctx.session.history.filter(status=TaskStatus.SUCCESS).latest(
                GALLERY_FROM_HISTORY
            )
        except Exception:  # a damaged store must not stop the panel from opening
            logger.exception("could not read the history for the gallery")
            return
        self.add(*reversed(records))

    def add(self, *records: TaskRecord) -> bool:
        """Put tasks' images first in the gallery (the last given first); return whether any
        was new. The page gets the new items and their marks in one update each."""
        before = set(self._items)
        self._holding = True  # mark() collects; the page gets all at the end
        try:
            for record in records:
                self._take(record)
        finally:
            self._holding = False
        while len(self._order) > MAX_GALLERY:
            self._marks.pop(self._items.pop(self._order.pop()).key, None)
        new = [k for k in self._order if k not in before]
        added = bool(new)
        if added:
            self.gallery_box.items = [self._items[k].entry for k in self._order]
            self.gallery_empty.layout.display = "none"
            # Sent now too, once a page has shown the gallery: its ask waits in the kernel's
            # queue behind a running cell, and the images would show only once it ends.
            if self._page_seen:
                self._send_thumbs(new)
        if self._marks != self.gallery_box.marks:
            self.gallery_box.marks = dict(self._marks)
        return added

    def _take(self, record: TaskRecord) -> None:
        for image in record.images:
            key = image.sha256
            if key in self._items:
                continue
            thumb = read(image.thumb_path)
            if thumb is None:
                continue
            self._items[key] = self._item(key, image, record.prompt, thumb, record.local_id)
            self._order.insert(0, key)

    def _item(
        self, key: str, image: ImageRecord, prompt: str, thumb: bytes, local_id: str | None = None
    ) -> GalleryItem:
        curating = self._curation is not None and local_id is not None
        entry = {
            "key": key,
            "caption": shorten(prompt, 31),
            "tooltip": shorten(prompt, 2000),
            "branch_tip": BRANCH_TIP,
            "curating": curating,
        }
        item = GalleryItem(key, image, prompt, thumb, local_id=local_id, entry=entry)
        if curating and self._curation is not None:
            item.bar = ItemMarks(self, key)
            self._items[key] = item  # bind shows the stored marks: shows(marks) must hold
            self._curation.bind(item.bar, local_id)
        return item

    # -- the page's clicks (any thread; never raises) --------------------------------------

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("event") == "thumbs":
            self._page_seen = True
            self._send_thumbs(content.get("keys"))
            return
        with self._ctx.lock:
            item = self._items.get(str(content.get("key")))
        if item is None:  # it left the gallery meanwhile
            return
        try:
            self.on_click(item, content)
        except Exception as exc:  # a callback must never raise into the kernel
            logger.exception("the gallery could not do what was clicked")
            what = {"view": "open", "use": "use", "branch": "branch from"}.get(
                str(content.get("event")), "rate or tag"
            )
            self._ctx.say(f"Could not {what} that image: {exc}", error=True)

    def _send_thumbs(self, keys: object) -> None:
        """The JPEGs of the keys still shown, to every page showing the gallery (an answer
        to a page's ask, or new items'); a page takes each once."""
        if not isinstance(keys, list):
            return
        with self._ctx.lock:
            if self._ctx.closed:
                return
            found = [
                (key, self._items[key].thumb)
                for key in keys[:MAX_GALLERY]
                if isinstance(key, str) and key in self._items
            ]
            if found:
                self.gallery_box.send(
                    {"event": "thumbs", "keys": [key for key, _ in found]},
                    buffers=[thumb for _, thumb in found],
                )

    def on_click(self, item: GalleryItem, content: dict[str, Any]) -> None:
        """Do what the page says was clicked on ``item`` (the message's ``event``)."""
        event = content.get("event")
        if event == "view":
            self.show_detail(item)
        elif event == "use":
            self._use(item)
        elif event == "branch":
            self._branch(item)
        elif item.bar is None or self._curation is None:
            return
        elif event == "rate":
            rating = content.get("rating")
            if isinstance(rating, int) and not isinstance(rating, bool) and 1 <= rating <= 5:
                self._curation.click_star(item.bar, rating)
        elif event == "tag" and isinstance(content.get("text"), str):
            self._curation.add_tags(item.bar, content["text"])
        elif event == "untag" and isinstance(content.get("tag"), str):
            self._curation.remove_tag(item.bar, content["tag"])

    # -- what an item's marks show (lock held) --------------------------------------------

    def shows(self, marks: ItemMarks) -> bool:
        """Whether ``marks`` are those of an item in the gallery of an open panel."""
        item = self._items.get(marks.key)
        return not self._ctx.closed and item is not None and item.bar is marks

    def mark(self, key: str, annotation: Annotation) -> None:
        """Show an item's rating and tags on the page."""
        shown = {"rating": annotation.rating, "tags": list(annotation.tags)}
        if self._marks.get(key) == shown:
            return
        self._marks[key] = shown
        if not self._holding:
            self.gallery_box.marks = dict(self._marks)

    # -- the larger view ------------------------------------------------------------------

    def show_detail(self, item: GalleryItem) -> None:
        """Open the larger view of an item: its thumbnail at once, the 1024 px view soon."""
        ctx = self._ctx
        with ctx.lock:
            if ctx.closed:
                return
            self._detail_key = item.key
            self.detail_image.value = item.thumb
            self.detail_path.value = (
                f'<div style="{WRAP};font-size:0.88em"><b>{escape(shorten(item.prompt, 300))}</b>'
                f"<br><code>{escape(item.image.path)}</code>"
                f'<span style="{MUTED}"> · {item.image.width}×{item.image.height}</span></div>'
            )
            self.detail_box.layout.display = ""
        if self._curation is not None and self.detail_bar is not None:
            self._curation.bind(self.detail_bar, item.local_id)
        if self.detail_keys is not None:
            self.detail_keys.send({"event": "focus"})  # so keys 0-5 rate it at once
        ctx.in_background(self._load_large(item))

    async def _load_large(self, item: GalleryItem) -> None:
        try:
            data = await large_preview(item.image.path)
        except (OSError, ValueError) as exc:
            self._ctx.say(f"Could not open {item.image.path}: {exc}", error=True)
            return
        with self._ctx.lock:
            if not self._ctx.closed and self._detail_key == item.key:
                self.detail_image.value = data

    def _use_detail(self) -> None:
        with self._ctx.lock:
            item = self._items.get(self._detail_key or "")
        if item is not None:
            self._use(item)

    def _branch_detail(self) -> None:
        with self._ctx.lock:
            item = self._items.get(self._detail_key or "")
        if item is not None:
            self._branch(item)

    def _rate_detail(self, rating: int) -> None:
        """Key ``rating`` pressed in the larger view: rate the task of the image shown."""
        with self._ctx.lock:
            item = self._items.get(self._detail_key or "")
        if item is not None and item.local_id is not None and self._curation is not None:
            self._curation.rate(item.local_id, rating)

    def close_detail(self) -> None:
        with self._ctx.lock:
            self._detail_key = None
            self.detail_box.layout.display = "none"
