"""The :class:`Panel`: composes the parts, wires their events, follows the session."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ipywidgets as widgets

from nanobanana_jupyter._core.defaults import get_default_session
from nanobanana_jupyter._core.events import TaskEvent
from nanobanana_jupyter._core.session import Session
from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._store.annotations import Annotation
from nanobanana_jupyter._wire.models import TaskStatus

from .balance import BalanceLabel
from .cards import Cards
from .compare import Compare
from .composer import Composer
from .context import PanelContext, close_widget
from .gallery import Gallery, GalleryItem
from .history import HISTORY_PAGE, HistoryPager
from .notebook_slot import NotebookSlot
from .rating import Curation
from .references import ReferencePicker
from .showing import BADGE_COLOURS, Ticker, count, escape, format_cost
from .theme import stylesheet

__all__ = ["SANDBOX_BADGE", "Panel"]

SANDBOX_BADGE = "sandbox — pretend credits, nothing is sent to defapi.org"
"""What the header's badge says while the session talks to a sandbox."""


class Panel(widgets.VBox):
    """An interactive panel over one session: compose, generate, compare, iterate.

    Display it (it is a widget), or use ``%nanobanana panel``. Its parts are attributes, so
    a notebook or a test can read and drive them: ``prompt_box.value``, ``model_box``,
    ``aspect_box``, ``size_box``, ``count_box``, ``generate_button``, ``url_box``,
    ``upload``, ``status_html``; :meth:`generate`, :meth:`add_reference`,
    :meth:`use_as_reference`, :meth:`show_history_page`. The parts themselves are
    :attr:`composer`, :attr:`picker`, :attr:`cards`, :attr:`gallery`, :attr:`pager` (with
    its search row, ``pager.search``), :attr:`curation` (the stars and tags), :attr:`slot` and
    :attr:`compare` (compare mode: its toggle turns the options into axes and Generate into
    one ``session.grid``); they share :attr:`context` (the session, the one lock, the status
    line).

    Args:
        session: the session to use; default: the default session (the magic's).
        history_page_size: rows per history page.
    """

    def __init__(self, session: Session | None = None, *, history_page_size: int = HISTORY_PAGE):
        self._unsubscribe: Any = None
        self._unsubscribe_annotations: Any = None
        ctx = self.context = PanelContext(session if session is not None else get_default_session())
        self.ticker = Ticker(ctx.lock, ctx.start, self._flush, active=lambda: not ctx.closed)
        self.picker = ReferencePicker(ctx)
        self.composer = Composer(
            ctx,
            # In compare mode the Generate starts a grid instead (compare.take_over).
            prepare=lambda: self.picker.add_typed_url() and not self.compare.take_over(),
            references=self.picker.payloads,
            show=self._show_started,
            changed=self.ticker.ensure,
        )
        self.curation = Curation(ctx)  # stars and tags on cards and in the gallery
        self.cards = Cards(
            ctx, retry=self.composer.retry, changed=self.ticker.ensure, curation=self.curation
        )
        self.gallery = Gallery(
            ctx, use=self._use_item, branch=self._branch_from, curation=self.curation
        )
        self.pager = HistoryPager(
            ctx,
            page_size=history_page_size,
            totals=self._totals,
            models=list(self.composer.model_box.options),
        )
        self.slot = NotebookSlot(ctx, totals=self._totals)
        self.balance = BalanceLabel(ctx)
        self.compare = Compare(
            ctx,
            self.composer,
            references=self.picker.payloads,
            open_image=self._open_image,
            changed=self.ticker.ensure,
        )
        self.composer.row.children = (*self.composer.row.children, self.compare.toggle)

        # The widgets a notebook or a test reads, under the names they always had.
        composer, picker, gallery, pager = self.composer, self.picker, self.gallery, self.pager
        self.prompt_box, self.has_shortcut = composer.prompt_box, composer.has_shortcut
        self.model_box, self.aspect_box = composer.model_box, composer.aspect_box
        self.size_box, self.count_box = composer.size_box, composer.count_box
        self.generate_button = composer.generate_button
        self.url_box, self.add_url_button = picker.url_box, picker.add_url_button
        self.upload = picker.upload
        self.refs_label, self.refs_box = picker.refs_label, picker.refs_box
        self.status_html = ctx.status_html
        self.cards_box = self.cards.cards_box
        self.detail_image, self.detail_path = gallery.detail_image, gallery.detail_path
        self.detail_box = gallery.detail_box
        self.gallery_box, self.gallery_empty = gallery.gallery_box, gallery.gallery_empty
        self.history_html, self.page_label = pager.history_html, pager.page_label
        self.newer_button, self.older_button = pager.newer_button, pager.older_button
        self.cost_label = pager.cost_label
        self.tabs = ctx.own(
            widgets.Tab(children=[gallery.view, pager.view], titles=("Gallery", "History"))
        )
        self.tabs.add_class("nanobanana-tabs")

        super().__init__(
            children=[
                self._header(),
                self.prompt_box,
                composer.row,
                self.compare.options_box,
                picker.row,
                self.refs_box,
                self.status_html,
                self.compare.view,
                self.cards_box,
                self.tabs,
            ],
            layout=widgets.Layout(
                padding="8px 10px", border="1px solid var(--jp-border-color2, #ccc)"
            ),
        )
        self.add_class("nanobanana-panel")

        with ctx.lock:
            gallery.load_from_history()
            pager.render()
        self._unsubscribe = ctx.session.subscribe(self._on_change)
        # A rating, tag or note (from this panel or a cell) shows in the history tab too.
        self._unsubscribe_annotations = ctx.session.subscribe_annotations(self._on_annotated)

    # -- public ---------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        return self.context.session

    @property
    def tasks(self) -> list[Task]:
        """The tasks started from this panel, newest first."""
        return self.composer.tasks

    @property
    def references(self) -> list[str]:
        """What the chosen reference images are called in the panel (URL or file name)."""
        return self.picker.labels

    @property
    def gallery_paths(self) -> list[str]:
        """Full-size files shown in the gallery, newest first."""
        return self.gallery.paths

    @property
    def status_text(self) -> str:
        """The status line's message as plain text (what the user reads in the panel)."""
        return self.context.status_text

    def generate(self) -> list[Task]:
        """What Generate (or Ctrl/Cmd+Enter) does; returns the tasks started.

        Ignored (returns ``[]``) while a submit is under way or within a second of the last
        one, so a double click starts one batch. Never raises: problems show in the panel.
        """
        return self.composer.generate()

    def add_reference(self, obj: object, *, label: str | None = None) -> bool:
        """Add a reference image: an http(s) URL, a file path, bytes, a PIL image or a task.

        Returns whether it was added; the reason for a refusal shows in the panel.
        """
        return self.picker.add_reference(obj, label=label)

    def use_as_reference(self, path: str) -> bool:
        """Use a gallery image (by its full-size path) as a reference image."""
        item = self.gallery.find(path)
        if item is None:
            return self.picker.add_reference(path)
        return self._use_item(item)

    def remove_reference(self, index: int) -> None:
        """Drop the ``index``-th chosen reference image."""
        self.picker.remove_reference(index)

    def show_history_page(self, page: int) -> None:
        """Show page ``page`` (0 = newest tasks) of the history."""
        self.pager.show_page(page)

    def close(self) -> None:
        """Stop following the session and close every widget of the panel."""
        ctx = self.context
        with ctx.lock:
            if ctx.closed:
                return
            if self.slot.dirty:
                # The plain output under the panel is what a saved notebook keeps: bring it
                # up to date before the ticker that would have done so stops.
                self.slot.update(ctx.clock())
            self.cards.clear_pending()
            owned = ctx.shut()
        self.balance.close()
        for unsubscribe in (self._unsubscribe, self._unsubscribe_annotations):
            if unsubscribe is not None:
                unsubscribe()
        for widget in owned:
            close_widget(widget)
        for part in (getattr(self, "layout", None), getattr(self, "style", None)):
            if isinstance(part, widgets.Widget):
                part.close()
        super().close()

    # -- display --------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"NanoBanana panel ({self._totals()}; interactive, needs the running kernel). "
            "The images generated here are also in the output below, and every task is in "
            "the history: %nanobanana history"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/plain"] = repr(self)
        return bundle

    def _ipython_display_(self) -> None:
        """Show the widget, and right below it the plain output slot kept up to date."""
        self.slot.display_below(self._repr_mimebundle_())

    def _totals(self, images: int | None = None) -> str:
        """``2 tasks, 1 credit`` (or ``2 tasks, 2 images, 1 credit``): this panel so far.

        Pretend credits in a sandbox; tasks handed back for an identical earlier request
        are counted apart: ``2 tasks, 0.5 credits spent, 1 reused (no new charge)``.
        """
        composer, compare = self.composer, self.compare
        tasks = composer.tasks + [t for t in compare.tasks if not composer.started(t.local_id)]
        cost: Decimal = composer.paid_cost() + compare.paid_cost()
        reused = composer.reused_count() + compare.reused_count()
        parts = [count(len(tasks), "task")]
        if images is not None:
            parts.append(count(images, "image"))
        spent = format_cost(cost, pretend=self.context.pretend)
        if reused:
            parts += [f"{spent} spent", f"{reused} reused (no new charge)"]
        else:
            parts.append(spent)
        return ", ".join(parts)

    def results_bundle(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The plain mimebundle of the panel's results: what a saved notebook shows."""
        return self.slot.bundle()

    def _header(self) -> Any:
        """Title, a sandbox badge when the session talks to a sandbox, and the costs."""
        ctx = self.context
        title = ctx.own(
            widgets.HTML(
                '<b style="font-size:1.15em">NanoBanana</b>', layout={"margin": "0 8px 0 0"}
            )
        )
        header = [title, ctx.own(stylesheet())]
        if ctx.pretend:
            header.append(self._sandbox_badge())
        spacer = ctx.own(widgets.Box(layout=widgets.Layout(flex="1 1 auto")))
        return ctx.row([*header, spacer, self.balance.widget, self.cost_label], width="100%")

    def _sandbox_badge(self) -> Any:
        """The amber badge that says the session talks to a sandbox, not to the service."""
        background, foreground = BADGE_COLOURS["warning"]
        tooltip = (
            "This session talks to a sandbox server: it draws the images itself, its costs "
            "are pretend credits, and no request goes to defapi.org."
        )
        style = (
            f"background:{background};color:{foreground};font-weight:bold;"
            "padding:1px 8px;border-radius:10px;white-space:nowrap"
        )
        badge = self.context.own(
            widgets.HTML(
                f'<span style="{style}" title="{escape(tooltip)}">{escape(SANDBOX_BADGE)}</span>',
                layout={"margin": "0 8px 0 0"},
            )
        )
        badge.add_class("nanobanana-sandbox-badge")
        return badge

    # -- wiring ---------------------------------------------------------------------------

    def _use_item(self, item: GalleryItem) -> bool:
        return self.picker.add_image(item.key, item.image, item.thumb)

    def _open_image(self, path: str) -> bool:
        """A compare cell's image in the gallery's larger view (the Gallery tab shown)."""
        item = self.gallery.find(path)
        if item is None:
            return False
        self.gallery.show_detail(item)
        with self.context.lock:
            self.tabs.selected_index = 0
        return True

    def _branch_from(self, item: GalleryItem) -> bool:
        """Start an edit of a result: its prompt to edit, it the only reference. The task
        made next is its child in the history's lineage (``task.parents``)."""
        ctx = self.context
        with ctx.lock:
            if ctx.closed:
                return False
            self.picker.clear()
            if not self.picker.add_image(item.key, item.image, item.thumb):
                return False
            self.prompt_box.value = item.prompt
        ctx.say("Branching from this image: edit the prompt, then Generate.")
        return True

    def _show_started(self, task: Task) -> None:
        """A task handed back by the composer: a card, and if it ended, what follows (lock held)."""
        if self.cards.add(task) and task.done():
            self._finished(task)

    def _on_annotated(self, local_id: str, annotation: Annotation) -> None:
        """Annotation listener (the writing thread, after the write): the history tab reads
        the store again at its next flush. Never raises."""
        del local_id, annotation
        ctx = self.context
        with ctx.lock:
            if ctx.closed:
                return
            self.pager.mark_dirty()
        self.ticker.ensure()

    def _on_change(self, event: TaskEvent) -> None:
        """Session listener (the event delivery thread): set traits only."""
        task = event.task
        ctx = self.context
        with ctx.lock:
            if ctx.closed:
                return
            followed = self.compare.follow(task) | self.cards.follow(task, ctx.clock())
            if task.done():
                self._finished(task)
            elif not followed:
                return
        self.ticker.ensure()

    def _finished(self, task: Task) -> None:
        """A task ended: gallery, output slot and costs follow (caller holds the lock)."""
        record = task.record
        if record.status is TaskStatus.SUCCESS:
            self.gallery.add(record)
        if self.composer.started(task.local_id) or self.compare.started(task.local_id):
            self.slot.collect(record)
            self.pager.mark_dirty()
            self.balance.refresh()  # a charge lowered it: look again (once a minute at most)

    def _flush(self, now: float) -> bool:
        """Apply what is due in every part; return whether there is more to do (lock held)."""
        cards = self.cards.flush(now)
        slot = self.slot.flush(now)
        history = self.pager.flush(now)
        grid = self.compare.flush(now)
        return cards or slot or history or grid
