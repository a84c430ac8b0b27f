"""What the objects of the lower layers show as: a task's card, the history's table.

Installed by the package's top into :mod:`nanobanana_jupyter._store.presenter`, so that a
``Task`` or ``History`` shown as a cell's result uses the same renderer as every view.

A task shown as a cell's result embeds the same preview as its live card: the previews come
from :func:`.previews.previews_for`, with the embed mode and size the magic was configured
with (:func:`configure`; ``%config NanoBananaMagics.embed`` and ``preview_size``), or, for a
task the magic showed with ``--embed``, the choice of its card (:func:`remember`).
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from nanobanana_jupyter._core.grid import Grid
from nanobanana_jupyter._core.spending import SessionCredits
from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._core.task_list import TaskList
from nanobanana_jupyter._store.annotations import Annotation
from nanobanana_jupyter._store.history import HTML_ROWS, History
from nanobanana_jupyter._store.lineage import Lineage
from nanobanana_jupyter._store.presenter import Bundle

from .bundles import record_bundle, shown_as
from .grid import grid_bundle, grid_text
from .html import history_html
from .lineage import lineage_html, lineage_text
from .previews import EMBED_MODES, THUMB_SIDE, history_thumbs
from .progress import Progress
from .words import credits_words, format_cost, plural, task_text

__all__ = [
    "annotation_of",
    "configure",
    "current_cell",
    "embedding",
    "grid_shown_in_cell",
    "live_outputs_of",
    "mimebundle",
    "register_live",
    "remember",
    "remember_grid",
    "show",
    "shown_in_cell",
    "text",
]

# The embed mode and size of each task's live card, when a view showed one.
_CHOSEN: weakref.WeakKeyDictionary[Task, tuple[str, int]] = weakref.WeakKeyDictionary()
# The cell (IPython's execution count) in which each task's card was last shown.
_CELL: weakref.WeakKeyDictionary[Task, int] = weakref.WeakKeyDictionary()
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
    """``task``'s live card embeds ``embed`` at ``side`` and is shown in the running cell: its
    cell result there shows nothing more, and elsewhere the same previews."""
    cell = current_cell()
    with _lock:
        _CHOSEN[task] = _checked(embed, side)
        if cell is not None:
            _CELL[task] = cell


def current_cell() -> int | None:
    """The running cell's number (IPython's execution count); ``None`` outside IPython."""
    module = sys.modules.get("IPython")
    shell = None if module is None else module.get_ipython()
    count = getattr(shell, "execution_count", None)
    return count if isinstance(count, int) else None


def shown_in_cell(task: Task) -> bool:
    """True when ``task``'s card was already shown in the running cell."""
    cell = current_cell()
    with _lock:
        return cell is not None and _CELL.get(task) == cell


# The cell in which each grid was last shown (its live table, the magic's one output).
_GRID_CELL: weakref.WeakKeyDictionary[Grid, int] = weakref.WeakKeyDictionary()


def remember_grid(grid: Grid) -> None:
    """``grid``'s table is shown in the running cell: its cell result there adds nothing."""
    cell = current_cell()
    if cell is not None:
        with _lock:
            _GRID_CELL[grid] = cell


def grid_shown_in_cell(grid: Grid) -> bool:
    """True when ``grid``'s table was already shown in the running cell."""
    cell = current_cell()
    with _lock:
        return cell is not None and _GRID_CELL.get(grid) == cell


def embedding(task: Task | None = None) -> tuple[str, int]:
    """The ``(embed, side)`` a cell result of ``task`` uses (the configured one by default)."""
    with _lock:
        chosen = None if task is None else _CHOSEN.get(task)
        return _default if chosen is None else chosen


# Each session's live outputs (the magic's), so a task shown as a later cell's result can get
# a card that stays current. Weak both ways: neither keeps the other alive.
_LIVE: weakref.WeakKeyDictionary[object, weakref.ref[Any]] = weakref.WeakKeyDictionary()


def register_live(session: object, live: object | None) -> None:
    """``live`` (a :class:`.live.LiveOutputs`) shows ``session``'s tasks; ``None``: no more."""
    with _lock:
        if live is None:
            _LIVE.pop(session, None)
        else:
            _LIVE[session] = weakref.ref(live)


def live_outputs_of(session: object) -> Any:
    """The open live outputs showing ``session``'s tasks, or ``None``."""
    with _lock:
        found = _LIVE.get(session)
    return None if found is None else found()


def show(obj: object, *, display: Callable[..., object]) -> None:
    """Show a task or a list of tasks as a cell's result: one output per cell.

    ``display`` is IPython's (the package's top passes it). A task whose card the running
    cell already shows (the line magic's live card) shows nothing more. Otherwise a task
    that is still running gets a live card that stays current, when its session has live
    outputs (the magic's), and a static card when not or once ended. A list shows a gallery
    of its tasks' cards under one progress line.
    """
    if isinstance(obj, Grid):
        _show_grid(obj, display)
        return
    tasks: Sequence[Task] = (
        obj if isinstance(obj, TaskList) else [obj] if isinstance(obj, Task) else []
    )
    if not tasks:
        found = mimebundle(obj)
        data, metadata = found if isinstance(found, tuple) else (found, {})
        display(data, metadata=metadata, raw=True)
        return
    fresh = [task for task in tasks if not shown_in_cell(task)]
    if not fresh:
        return
    live = live_outputs_of(fresh[0].session)
    if live is not None and len(fresh) > 1:
        live.open_batch(fresh)
    for task in fresh:
        embed, side = embedding(task)
        if live is not None and not task.done():
            live.open(task, embed=embed, side=side)
            continue
        data, metadata = _task_bundle(task)
        display(data, metadata=metadata, raw=True)
        remember(task, embed=embed, side=side)


def _show_grid(grid: Grid, display: Callable[..., object]) -> None:
    """One table for the grid: live while it runs when its session has live outputs (the
    magic's), else a snapshot; nothing when the running cell shows it already."""
    if grid_shown_in_cell(grid):
        return
    live = live_outputs_of(grid.tasks[0].session) if len(grid) else None
    if live is not None and not grid.done():
        live.open_grid(grid)
        return
    display(grid_bundle(grid), raw=True)
    remember_grid(grid)


def text(obj: object) -> str:
    if isinstance(obj, Grid):
        return grid_text(obj)
    if isinstance(obj, TaskList):
        return _list_text(obj)
    if isinstance(obj, Task):
        record = obj.record
        return task_text(record, elapsed=None if obj.done() else obj.elapsed, **shown_as(obj))
    if isinstance(obj, History):
        cost = format_cost(obj.total_cost, pretend=obj.is_sandbox)
        return f"<History: {plural(len(obj), 'task')}, {cost}>"
    if isinstance(obj, Lineage):
        return lineage_text(obj)
    if isinstance(obj, SessionCredits):
        words = credits_words(obj.spent, obj.submitted, obj.reused, obj.reuses, pretend=obj.pretend)
        return f"<SessionCredits: {words}>"
    return repr(obj)


def mimebundle(obj: object) -> Bundle:
    if isinstance(obj, Grid):
        return grid_bundle(obj)
    if isinstance(obj, TaskList):
        return _list_bundle(obj)
    if isinstance(obj, Task):
        return _task_bundle(obj)
    if isinstance(obj, History):
        return {"text/plain": text(obj), "text/html": _history_html(obj)}
    if isinstance(obj, Lineage):
        return {"text/plain": text(obj), "text/html": lineage_html(obj)}
    return {"text/plain": repr(obj)}


def _task_bundle(task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    embed, side = embedding(task)
    return record_bundle(
        task.record, embed=embed, side=side, annotation=annotation_of(task), **shown_as(task)
    )


def annotation_of(task: Task) -> Annotation | None:
    """The task's rating, tags and note as stored now; ``None`` once its store is closed."""
    try:
        return task.session.history.annotation(task)
    except (RuntimeError, KeyError, AttributeError):
        return None


def _list_text(tasks: TaskList) -> str:
    lines = [Progress.of(tasks).text(), *(text(task) for task in tasks)]
    return "\n".join(lines)


def _list_bundle(tasks: TaskList) -> dict[str, Any]:
    """Static: the progress line and every card, for a front end without IPython display."""
    cards = [str(_task_bundle(task)[0]["text/html"]) for task in tasks]
    gallery = (
        '<div class="nanobanana-list" style="display:flex;flex-wrap:wrap;gap:8px;'
        f'align-items:flex-start">{"".join(cards)}</div>'
    )
    return {
        "text/plain": _list_text(tasks),
        "text/html": f"{Progress.of(tasks).html()}{gallery}",
    }


def _history_html(history: History) -> str:
    records = history.latest(HTML_ROWS)
    return history_html(
        records,
        total=len(history),
        offset=0,
        total_cost=history.total_cost,
        thumbs=history_thumbs(records),
        pretend=history.is_sandbox,
        reused=(history.reuses, history.reused_cost),
        annotations=history.annotations(records),
    )
