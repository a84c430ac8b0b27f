"""The gallery of results, newest first, and its larger view of one image."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets

from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._wire.models import TaskStatus

from .context import PanelContext
from .rating import Curation, RatingBar, make_key_listener
from .showing import MUTED, WRAP, escape, large_preview, read, shorten

__all__ = ["GALLERY_FROM_HISTORY", "MAX_GALLERY", "Gallery", "GalleryItem"]

logger = logging.getLogger("nanobanana_jupyter")

GALLERY_FROM_HISTORY = 12
MAX_GALLERY = 24
BRANCH_TIP = "Start an edit from this image: its prompt in the box, the image the only reference"


@dataclass
class GalleryItem:
    """One image of the gallery (``key`` is its content hash) and its widgets."""

    key: str
    image: ImageRecord
    prompt: str
    thumb: bytes
    box: Any
    widgets: list[Any] = field(default_factory=list)
    local_id: str | None = None
    """The task the image is a result of (its rating and tags are the task's)."""
    bar: RatingBar | None = None


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
        # The larger view's stars and tags, and its keys 0-5 (with anywidget).
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
        self.gallery_box = context.row([], align_items="flex-start")
        self.gallery_box.add_class("nanobanana-gallery")
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
        for record in reversed(records):
            self.add(record)

    def add(self, record: TaskRecord) -> bool:
        """Put a task's images first in the gallery; return whether any was new."""
        added = False
        for image in record.images:
            key = image.sha256
            if key in self._items:
                continue
            thumb = read(image.thumb_path)
            if thumb is None:
                continue
            self._items[key] = self._item(key, image, record.prompt, thumb, record.local_id)
            self._order.insert(0, key)
            added = True
        while len(self._order) > MAX_GALLERY:
            old = self._items.pop(self._order.pop())
            self._ctx.drop(old.box)
        if added:
            self.gallery_box.children = [self._items[k].box for k in self._order]
            self.gallery_empty.layout.display = "none"
        return added

    def _item(
        self, key: str, image: ImageRecord, prompt: str, thumb: bytes, local_id: str | None = None
    ) -> GalleryItem:
        picture = widgets.Image(
            value=thumb, format="jpeg", layout=widgets.Layout(width="216px", height="auto")
        )
        picture.add_class("nanobanana-thumb")
        caption = widgets.Label(
            shorten(prompt, 31), tooltip=shorten(prompt, 2000), layout={"width": "216px"}
        )
        view = widgets.Button(
            description="View", icon="search-plus", tooltip="Larger view and file path",
            layout=widgets.Layout(width="auto"),
        )  # fmt: skip
        view.add_class("nanobanana-view")
        use = widgets.Button(
            description="Use as reference", tooltip="Add to the reference images",
            layout=widgets.Layout(width="auto"),
        )  # fmt: skip
        use.add_class("nanobanana-use-ref")
        branch = widgets.Button(
            description="Branch", icon="code-fork", tooltip=BRANCH_TIP,
            layout=widgets.Layout(width="auto"),
        )  # fmt: skip
        branch.add_class("nanobanana-branch")
        # Wrapped: the three do not fit the item's width in every theme's font.
        buttons = widgets.HBox([view, use, branch], layout=widgets.Layout(flex_flow="row wrap"))
        bar = None
        if self._curation is not None and local_id is not None:
            bar = self._curation.bar(local_id)
        box = widgets.VBox(
            [picture, caption, buttons, *([bar.view] if bar is not None else [])],
            layout=widgets.Layout(width="224px", margin="0 8px 8px 0", align_items="flex-start"),
        )
        box.add_class("nanobanana-gallery-item")
        item = GalleryItem(
            key, image, prompt, thumb, box, [picture, caption, view, use, branch, buttons, box],
            local_id=local_id, bar=bar,
        )  # fmt: skip
        for w in item.widgets:
            self._ctx.own(w)
        view.on_click(lambda _b: self.show_detail(item))
        use.on_click(lambda _b: self._use(item))
        branch.on_click(lambda _b: self._branch(item))
        return item

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
