"""The history tab's search box and filters: prompt text, tag, model, status, lowest rating.

:class:`HistorySearch` owns the widgets and turns them into the arguments of
``History.search`` (:meth:`HistorySearch.query`; ``None`` while every one is empty: the
plain history). The text and tag fields search when Enter is pressed (or they lose
focus); the menus search when changed; Clear empties all of them and shows the plain
history again. The pager (:mod:`.history`) runs the search and pages its results. The
search is indexed (full text, tags, ratings) and takes milliseconds on 100,000 tasks, so it
runs in the callback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from nanobanana_jupyter._wire.models import TaskStatus

from .context import PanelContext

__all__ = ["ANY", "HistorySearch"]

ANY = "any"
RATING_CHOICES: list[tuple[str, int | None]] = [
    ("any rating", None),
    ("rated", 0),
    *((f"{'★' * n}{'☆' * (5 - n)} or more" if n < 5 else "★★★★★", n) for n in range(1, 6)),
]


class HistorySearch:
    """The search row of the history tab.

    Args:
        context: the panel's shared context.
        changed: called when the search changed (the pager shows its first page).
        models: the model names offered (the field also takes any typed name).
    """

    def __init__(
        self,
        context: PanelContext,
        *,
        changed: Callable[[], None] = lambda: None,
        models: list[str] | None = None,
    ) -> None:
        self._ctx = context
        self._changed = changed
        self._quiet = False
        own = context.own
        self.text_box = own(
            widgets.Text(
                placeholder="search prompts, Enter",
                continuous_update=False,
                layout=widgets.Layout(width="220px"),
            )
        )
        self.text_box.add_class("nanobanana-search-text")
        self.tag_box = own(
            widgets.Text(
                placeholder="tag", continuous_update=False, layout=widgets.Layout(width="100px")
            )
        )
        self.tag_box.add_class("nanobanana-search-tag")
        self.model_box = own(
            widgets.Combobox(
                placeholder="any model",
                options=list(models or []),
                ensure_option=False,
                continuous_update=False,
                layout=widgets.Layout(width="170px"),
            )
        )
        self.model_box.add_class("nanobanana-search-model")
        self.status_box = own(
            widgets.Dropdown(
                options=[("any status", ANY)] + [(s.value, s.value) for s in TaskStatus],
                value=ANY,
                layout=widgets.Layout(width="130px"),
            )
        )
        self.status_box.add_class("nanobanana-search-status")
        self.rating_box = own(
            widgets.Dropdown(
                options=RATING_CHOICES, value=None, layout=widgets.Layout(width="150px")
            )
        )
        self.rating_box.add_class("nanobanana-search-rating")
        self.clear_button = context.button(
            "Clear", "times", "nanobanana-search-clear", "Clear the search: the whole history"
        )
        self.clear_button.on_click(lambda _b: self.clear())
        for box in (self.text_box, self.tag_box, self.model_box, self.status_box, self.rating_box):
            box.observe(self._on_change, names="value")
        self.row = context.row(
            [
                self.text_box,
                self.tag_box,
                self.model_box,
                self.status_box,
                self.rating_box,
                self.clear_button,
            ]
        )
        self.row.add_class("nanobanana-search")

    @property
    def active(self) -> bool:
        return self.query() is not None

    def query(self) -> dict[str, Any] | None:
        """The keyword arguments of ``History.search`` the fields say; ``None`` when all
        are empty (the plain history)."""
        query: dict[str, Any] = {}
        text = self.text_box.value.strip()
        if text:
            query["text"] = text
        tags = [t for t in self.tag_box.value.split(",") if t.strip()]
        if tags:
            query["tags"] = tags
        model = self.model_box.value.strip()
        if model:
            query["model"] = model
        if self.status_box.value != ANY:
            query["status"] = self.status_box.value
        if self.rating_box.value is not None:
            query["rating"] = (self.rating_box.value, None)
        return query or None

    def describe(self) -> str:
        """``prompt "fox" · tag portrait · ★★★☆☆ or more``: what is searched, in words."""
        query = self.query() or {}
        parts = []
        if "text" in query:
            parts.append(f"prompt {query['text']!r}")
        if "tags" in query:
            parts.append("tag " + ", ".join(t.strip() for t in query["tags"]))
        if "model" in query:
            parts.append(f"model {query['model']}")
        if "status" in query:
            parts.append(f"status {query['status']}")
        if "rating" in query:
            parts.append({v: k for k, v in RATING_CHOICES}[self.rating_box.value])
        return " · ".join(parts)

    def clear(self) -> None:
        """Empty every field and show the plain history."""
        with self._ctx.lock:
            if self._ctx.closed:
                return
            self._quiet = True
            try:
                self.text_box.value = ""
                self.tag_box.value = ""
                self.model_box.value = ""
                self.status_box.value = ANY
                self.rating_box.value = None
            finally:
                self._quiet = False
        self._changed()

    def _on_change(self, _change: dict[str, Any]) -> None:
        if not self._quiet:
            self._changed()
