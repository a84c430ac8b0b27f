"""History paging: one page of the store at a time, newest first, and the cost line.

The page is the display layer's history table (the one ``%nanobanana history`` shows), with
its thumbnails; in a sandbox its costs, like every cost the panel shows, are pretend credits.
While the search row (:mod:`.search`) has something in it, the pages are of its results,
newest first (``History.search``); cleared, the plain history is back.

The plain pages are keyset pages: each is read from the creation-time index where it
starts (the task just newer than it, ``History.latest(before=...)``), and the count and
costs are the store's kept totals, so a page of a history of 100,000 tasks costs what it
shows, on every click and every refresh. A page stays put while new tasks arrive (its
number and "showing 41-60" say where it is now).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .context import PanelContext
from .search import HistorySearch
from .showing import (
    HISTORY_INTERVAL,
    escape,
    format_cost,
    history_html,
    history_thumbs,
    reuse_words,
)

__all__ = ["HISTORY_PAGE", "HistoryPager"]

logger = logging.getLogger("nanobanana_jupyter")

HISTORY_PAGE = 20
SEARCH_COUNTED = 1000
"""A search counts its matches up to this many; beyond, pages are read as they are shown."""
TABLE_LINE_HEIGHT = "line-height:1.4"


class HistoryPager:
    """The history tab (Newer, Older, Refresh, the page) and the header's cost line:
    ``this panel: 2 tasks, 0.5 credits spent, 1 reused (no new charge) · this session: ...
    · all: 45 tasks, 22.5 credits`` (the session's part when it reports its credits).

    Args:
        context: the panel's shared context.
        page_size: rows per page.
        totals: this panel's own totals for the cost line (``2 tasks, 1 credit``).
    """

    def __init__(
        self,
        context: PanelContext,
        *,
        page_size: int = HISTORY_PAGE,
        totals: Callable[[], str] = lambda: "",
        models: list[str] | None = None,
    ) -> None:
        self._ctx = context
        self._totals = totals
        self._page_size = max(1, int(page_size))
        self._offset = 0
        self._total = 0
        # The plain history's page: bounded by the key of the task just newer than it
        # (None: the newest page); the keys of its first and last rows, for Newer/Older.
        self._anchor: tuple[float, str] | None = None
        self._first: tuple[float, str] | None = None
        self._last: tuple[float, str] | None = None
        self._dirty = False
        self._at = 0.0
        own = context.own
        self.cost_label = own(widgets.Label(""))
        self.cost_label.add_class("nanobanana-cost")
        self.history_html = own(widgets.HTML(""))
        self.history_html.add_class("nanobanana-history")
        button = context.button
        self.newer_button = button("Newer", "chevron-left", "nanobanana-newer", "Newer tasks")
        self.older_button = button("Older", "chevron-right", "nanobanana-older", "Older tasks")
        refresh = button("Refresh", "refresh", "nanobanana-refresh", "Read the store again")
        self.newer_button.on_click(lambda _b: self.show_page(self._offset - 1))
        self.older_button.on_click(lambda _b: self.show_page(self._offset + 1))
        refresh.on_click(lambda _b: self.show_page(self._offset))
        self.page_label = own(widgets.Label(""))
        self.page_label.add_class("nanobanana-page")
        self.search = HistorySearch(context, changed=lambda: self.show_page(0), models=models)
        self.view = own(
            widgets.VBox(
                [
                    self.search.row,
                    context.row([self.newer_button, self.older_button, refresh, self.page_label]),
                    self.history_html,
                ]
            )
        )

    def show_page(self, page: int) -> None:
        """Show page ``page`` (0 = newest tasks). Never raises: problems show in the panel."""
        with self._ctx.lock:
            pages = max(1, -(-self._total // self._page_size))
            target = min(max(0, int(page)), pages - 1)
            try:
                if self.search.query() is None:
                    self._anchor = self._anchor_for(target)
                self._offset = target
                self.render()
            except Exception as exc:  # a bad search term or an unreadable store
                message = getattr(exc, "message", None) or f"Could not read the history: {exc}"
                logger.debug("history page failed", exc_info=True)
                self._ctx.say(message, error=True)

    def _anchor_for(self, target: int) -> tuple[float, str] | None:
        """Where page ``target`` starts: a step from the page shown (Older, Newer,
        Refresh) by its keys; any other page by its position (a jump, read once)."""
        size = self._page_size
        history = self._ctx.session.history
        if target == 0:
            return None
        if target == self._offset:
            return self._anchor
        if target == self._offset + 1 and self._last is not None:
            return self._last
        if target == self._offset - 1 and self._first is not None:
            newer = history.earliest(size + 1, after=self._first)
            if len(newer) <= size:
                return None
            return (newer[size].created_at, newer[size].local_id)
        position = target * size  # newest first; its anchor is the row just before it
        total = len(history)
        if position > total:
            return self._anchor
        anchor = history[total - position]
        return (anchor.created_at, anchor.local_id)

    def mark_dirty(self) -> None:
        """Read the store again at the next flush (caller holds the lock)."""
        self._dirty = True

    def flush(self, now: float) -> bool:
        """Re-read the store if it changed and is due; return whether that is still to do."""
        if self._dirty and now - self._at >= HISTORY_INTERVAL:
            try:
                self.render()
            except Exception:  # the next change tries again
                logger.exception("the panel could not read the history")
                self._dirty = False
        return self._dirty

    def render(self) -> None:
        """Read one page of the store, newest first (caller holds the lock)."""
        if self._ctx.closed:
            return
        history = self._ctx.session.history
        all_cost = history.total_cost
        pretend = self._ctx.pretend
        query = self.search.query()
        if query is None:
            total = len(history)
            self._total = total
            size = self._page_size
            records = history.latest(size + 1, before=self._anchor)
            if not records and self._anchor is not None:  # nothing older: the newest page
                self._anchor = None
                records = history.latest(size + 1)
            more = len(records) > size
            records = records[:size]
            newest = 0
            if records and self._anchor is not None:
                newest = history.count_newer(records[0])
            self._first = None if not records else (records[0].created_at, records[0].local_id)
            self._last = None if not records else (records[-1].created_at, records[-1].local_id)
            pages = max(1, -(-total // size), -(-(newest + len(records)) // size))
            self._offset = newest // size
            table = history_html(
                records,
                total=total,
                offset=newest,
                total_cost=all_cost,
                thumbs=history_thumbs(records),
                pretend=pretend,
                annotations=history.annotations(records),
            )
            label = f"page {self._offset + 1} of {pages:,}"
        else:
            records, newest, label, more, table = self._search_page(history, query, pretend)
            total = len(history)
        # An HTML widget's content has the widgets' line height (28 px in JupyterLab): a
        # wrapped prompt would take three times the room it takes in a cell's output.
        self.history_html.value = f'<div style="{TABLE_LINE_HEIGHT}">{table}</div>'
        self.page_label.value = label
        self.newer_button.disabled = self._offset == 0
        self.older_button.disabled = not more
        parts = [f"this panel: {self._totals()}"]
        session = self._session_credits(pretend)
        if session:
            parts.append(f"this session: {session}")
        parts.append(f"all: {total:,} tasks, {format_cost(all_cost, pretend=pretend)}")
        self.cost_label.value = " · ".join(parts)
        self._at = self._ctx.clock()
        self._dirty = False

    def _search_page(
        self, history: Any, query: dict[str, Any], pretend: bool
    ) -> tuple[list[Any], int, str, bool, str]:
        """One page of the search's results: records, offset, page label, whether there
        are more, and the table. Matches are counted up to :data:`SEARCH_COUNTED`."""
        size = self._page_size
        newest = self._offset * size
        found = history.search(**query, limit=max(SEARCH_COUNTED, newest + size) + 1)
        counted = len(found) <= max(SEARCH_COUNTED, newest + size)
        if counted:
            pages = max(1, -(-len(found) // size))
            self._offset = min(self._offset, pages - 1)
            newest = self._offset * size
            self._total = len(found)
        else:  # more than counted: as many pages as it takes, one more each time
            self._total = len(found) + size
        records = found[newest : newest + size]
        more = len(found) > newest + size
        what = self.search.describe()
        matches = f"{len(found):,}" if counted else f"more than {len(found) - 1:,}"
        label = f"page {self._offset + 1} · {matches} {'match' if len(found) == 1 else 'matches'}"
        table = history_html(
            records,
            total=len(found) if counted else len(found) - 1,
            offset=newest,
            thumbs=history_thumbs(records),
            pretend=pretend,
            annotations=history.annotations(records),
        )
        head = (
            f'<div class="nanobanana-search-said" style="opacity:0.72">search: {escape(what)}</div>'
        )
        if not records:
            head += '<div class="nanobanana-search-none">No task matches this search.</div>'
        return records, newest, label, more, head + table

    def _session_credits(self, pretend: bool) -> str:
        """``1 credit spent; reused 3 times (1.5 credits not charged again)``: the session's
        credits, spent and reused apart (``session.credits``), once it has reused a task
        (before that, this panel's and the history's totals say it all)."""
        credits = self._ctx.session.credits
        again = reuse_words(credits.reuses, credits.reused, pretend=pretend)
        if again is None:
            return ""
        return f"{format_cost(credits.spent, pretend=pretend)} spent; {again}"
