"""What the objects of the lower layers show as: a task's card, the history's table.

Installed by the package's top into :mod:`nanobanana_jupyter._store.presenter`, so that a
``Task`` or ``History`` shown as a cell's result uses the same renderer as every view.

A task shown as a cell's result embeds the same preview as its live card: the previews come
from :func:`.previews.previews_for`, with the embed mode and size the magic was configured
with (:func:`configure`; ``%config NanoBananaMagics.embed`` and ``preview_size``), or, for a
task the magic showed with ``--embed``, the choice of its card (:func:`remember`).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._store.history import HTML_ROWS, History
from nanobanana_jupyter._store.presenter import Bundle

from .bundles import record_bundle, shown_as
from .html import history_html
from .previews import EMBED_MODES, THUMB_SIDE, history_thumbs
from .words import format_cost, task_text

__all__ = ["configure", "embedding", "mimebundle", "remember", "show_compact_once", "text"]

# Tasks whose live output already shows their card: their next Out[] repr is one line.
_COMPACT_ONCE: weakref.WeakSet[Task] = weakref.WeakSet()
# The embed mode and size of each task's live card, when a view showed one.
_CHOSEN: weakref.WeakKeyDictionary[Task, tuple[str, int]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_default: tuple[str, int] = ("thumb", THUMB_SIDE)


def _checked(embed: str, side: int) -> tuple[str, int]:
    if embed not in EMBED_MODES:
        raise ValueError(f"embed must be one of {', '.join(EMBED_MODES)}, not {embed!r}")
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ValueError(f"the preview size must be a positive number of pixels, not {side!r}")
    return embed, side


def configure(*, embed: str, side: int) -> None:
    """What a task shown as a cell's result embeds (the magic's ``embed`` and ``preview_size``).

    Raises:
        ValueError: ``embed`` is not ``thumb``, ``full`` or ``none``, or ``side`` is not a
            positive integer.
    """
    global _default
    with _lock:
        _default = _checked(embed, side)


def remember(task: Task, *, embed: str, side: int) -> None:
    """``task``'s live card embeds ``embed`` at ``side``: its cell result shows the same."""
    with _lock:
        _CHOSEN[task] = _checked(embed, side)


def embedding(task: Task | None = None) -> tuple[str, int]:
    """The ``(embed, side)`` a cell result of ``task`` uses (the configured one by default)."""
    with _lock:
        chosen = None if task is None else _CHOSEN.get(task)
        return _default if chosen is None else chosen


def show_compact_once(task: Task) -> None:
    """The next time ``task`` is shown as a cell's result, show one line, not a second card
    (the line magic's live output already shows it)."""
    _COMPACT_ONCE.add(task)


def text(obj: object) -> str:
    if isinstance(obj, Task):
        record = obj.record
        return task_text(record, elapsed=None if obj.done() else obj.elapsed, **shown_as(obj))
    if isinstance(obj, History):
        cost = format_cost(obj.total_cost, pretend=obj.is_sandbox)
        return f"<History: {len(obj)} tasks, {cost}>"
    return repr(obj)


def mimebundle(obj: object) -> Bundle:
    if isinstance(obj, Task):
        if obj in _COMPACT_ONCE:
            _COMPACT_ONCE.discard(obj)
            return {"text/plain": text(obj)}
        return _task_bundle(obj)
    if isinstance(obj, History):
        return {"text/plain": text(obj), "text/html": _history_html(obj)}
    return {"text/plain": repr(obj)}


def _task_bundle(task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    embed, side = embedding(task)
    return record_bundle(task.record, embed=embed, side=side, **shown_as(task))


def _history_html(history: History) -> str:
    records = history.latest(HTML_ROWS)
    return history_html(
        records,
        total=len(history),
        offset=0,
        total_cost=history.total_cost,
        thumbs=history_thumbs(records),
        pretend=history.is_sandbox,
    )
