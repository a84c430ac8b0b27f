"""What the objects of the lower layers show as: a task's card, the history's table.

Installed by the package's top into :mod:`nanobanana_jupyter._store.presenter`, so that a
``Task`` or ``History`` shown as a cell's result uses the same renderer as every view.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Any

from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._store.history import HTML_ROWS, History
from nanobanana_jupyter._store.presenter import Bundle

from .render import Preview, format_cost, history_html, task_bundle, task_text

__all__ = ["mimebundle", "show_compact_once", "text"]

# Tasks whose live output already shows their card: their next Out[] repr is one line.
_COMPACT_ONCE: weakref.WeakSet[Task] = weakref.WeakSet()


def show_compact_once(task: Task) -> None:
    """The next time ``task`` is shown as a cell's result, show one line, not a second card
    (the line magic's live output already shows it)."""
    _COMPACT_ONCE.add(task)


def text(obj: object) -> str:
    if isinstance(obj, Task):
        record = obj.record
        return task_text(record, elapsed=None if obj.done() else obj.elapsed)
    if isinstance(obj, History):
        return f"<History: {len(obj)} tasks, {format_cost(obj.total_cost)}>"
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
    previews = []
    for image in task.record.images:
        if image.thumb_path is None:
            continue
        try:
            data = Path(image.thumb_path).read_bytes()
        except OSError:
            continue
        previews.append(Preview(data, "image/jpeg"))
    record = task.record
    elapsed = None if task.done() else max(0.0, time.time() - record.created_at)
    return task_bundle(record, previews=previews, elapsed=elapsed)


def _history_html(history: History) -> str:
    return history_html(
        history.latest(HTML_ROWS), total=len(history), offset=0, total_cost=history.total_cost
    )
