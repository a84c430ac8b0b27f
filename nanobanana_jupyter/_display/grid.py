"""A compare grid (``session.grid(...)``) as a labelled table of previews, and as text.

Static, escaped HTML, readable in a saved notebook without widget JavaScript: the first axis
with more than one value gives the rows, the second the columns; every further axis splits
the grid into separate tables, one per combination of its values, each headed by them.
Each cell shows a small thumbnail (made from the stored 512 px thumbnail at
:data:`GRID_THUMB_SIDE`, embedded once as a data URI in the HTML, never again as an image
output), its status and its cost; the line above the tables says what is fixed and how far
the grid is, the line under them the total.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nanobanana_jupyter._core.grid import Axis, Grid, GridCell
from nanobanana_jupyter._wire.models import TaskStatus

from .html import badge, escape, html_text, img_tag
from .previews import Preview, preview_for
from .progress import Progress
from .words import (
    PROMPT_META_CHARS,
    PROMPT_TABLE_CHARS,
    REASON_CHARS,
    REUSED,
    format_cost,
    plain,
    plural,
    short_id,
    status_label,
)

__all__ = [
    "GRID_THUMB_SIDE",
    "cell_thumb",
    "grid_bundle",
    "grid_ended",
    "grid_html",
    "grid_shown",
    "grid_text",
]

GRID_THUMB_SIDE = 192
"""The long side, in pixels, of a grid cell's preview."""

_TH = "text-align:left;padding:4px 6px;vertical-align:top;font-weight:600"
_TD = "text-align:left;padding:4px;vertical-align:top;border:1px solid rgba(128,128,128,0.3)"
_SMALL = "opacity:0.7;font-size:0.85em"
_BOX = (
    "display:flex;align-items:center;justify-content:center;border-radius:4px;"
    "background:rgba(128,128,128,0.12);width:{w}px;height:{h}px"
)

Thumb = Callable[[GridCell], Preview | None]


def cell_thumb(cell: GridCell, side: int = GRID_THUMB_SIDE) -> Preview | None:
    """The cell's first image at ``side``, from its stored thumbnail when there is one
    (``None`` until it has an image); a view that redraws often keeps what it returns."""
    task = cell.task
    if task is None or not task.record.images:
        return None
    image = task.record.images[0]
    source = (
        image.thumb_path if image.thumb_path and Path(image.thumb_path).is_file() else image.path
    )
    return preview_for(source, None, embed="thumb", side=side)


def _cost(grid: Grid, cell: GridCell) -> str:
    task = cell.task
    if task is None:
        return "—"
    if grid.reused(cell):
        return REUSED
    return format_cost(task.cost, pretend=grid.pretend)


def _cell_html(grid: Grid, cell: GridCell, side: int, thumb: Thumb) -> str:
    task = cell.task
    if task is None:  # pragma: no cover - a started grid has a task in every cell
        return ""
    record = task.record
    alt = html_text(record.prompt, PROMPT_TABLE_CHARS)
    preview = thumb(cell)
    if preview is not None:
        picture = img_tag(
            preview,
            alt,
            f"display:block;max-width:{side}px;max-height:{side}px;width:auto;height:auto;"
            "border-radius:4px",
        )
    else:
        words = escape(status_label(record.status)) if not task.done() else "no image"
        picture = f'<div style="{_BOX.format(w=side, h=side * 2 // 3)}{";" + _SMALL}">{words}</div>'
    _, ident = short_id(record)
    full = html_text(record.task_id or record.local_id, 128)
    lines = [
        f'{badge(record.status)} <span style="{_SMALL}">{escape(_cost(grid, cell))}</span>',
        f'<code class="nanobanana-id" title="{full}" style="user-select:all;{_SMALL}">'
        f"{escape(ident)}</code>",
    ]
    if record.error and record.status is not TaskStatus.SUCCESS:
        reason = html_text(record.error, REASON_CHARS)
        lines.append(f'<div style="{_SMALL};max-width:{side}px" title="{reason}">'
                     f"{html_text(record.error, 80)}</div>")  # fmt: skip
    title = html_text(record.prompt, PROMPT_META_CHARS)
    return (
        f'<td style="{_TD}" title="{title}">{picture}'
        f'<div style="margin-top:4px;line-height:1.5">{"<br>".join(lines)}</div></td>'
    )


def _axis_head(axis: Axis | None) -> str:
    return "" if axis is None else escape(axis.name)


def _table(
    grid: Grid, cells: Sequence[GridCell], rows: Axis | None, columns: Axis | None, side: int,
    thumb: Thumb,
) -> str:  # fmt: skip
    by_place = {
        (
            cell.index.get(rows.name, 0) if rows else 0,
            cell.index.get(columns.name, 0) if columns else 0,
        ): cell
        for cell in cells
    }
    corner = " \\ ".join(n for n in (_axis_head(rows), _axis_head(columns)) if n)
    head = ""
    if columns is not None:
        heads = "".join(
            f'<th style="{_TH}" title="{html_text(label, PROMPT_META_CHARS)}">'
            f"<bdi>{html_text(label, PROMPT_TABLE_CHARS)}</bdi></th>"
            for label in columns.labels
        )
        head = f'<thead><tr><th style="{_TH};{_SMALL}">{corner}</th>{heads}</tr></thead>'
    body: list[str] = []
    for r in range(len(rows) if rows else 1):
        label = ""
        if rows is not None:
            text = rows.labels[r]
            label = (
                f'<th style="{_TH};max-width:16em" title="{html_text(text, PROMPT_META_CHARS)}">'
                f"<bdi>{html_text(text, PROMPT_TABLE_CHARS)}</bdi></th>"
            )
        elif columns is not None:
            label = f'<th style="{_TH}"></th>'
        tds = "".join(
            _cell_html(grid, by_place[(r, c)], side, thumb)
            for c in range(len(columns) if columns else 1)
            if (r, c) in by_place
        )
        body.append(f"<tr>{label}{tds}</tr>")
    return (
        '<table style="border-collapse:collapse;margin:4px 0 8px;font-size:0.9em">'
        f"{head}<tbody>{''.join(body)}</tbody></table>"
    )


def _sections(grid: Grid) -> list[tuple[str, list[GridCell]]]:
    """``(heading, cells)`` per table: one per combination of the axes beyond two."""
    rest = grid.layout().rest
    if not rest:
        return [("", list(grid.cells))]
    out = []
    for picks in itertools.product(*(range(len(a)) for a in rest)):
        heading = " · ".join(f"{a.name} = {a.labels[i]}" for a, i in zip(rest, picks, strict=True))
        cells = [
            c
            for c in grid.cells
            if all(c.index.get(a.name) == i for a, i in zip(rest, picks, strict=True))
        ]
        out.append((heading, cells))
    return out


def _summary(grid: Grid, value: Callable[[str], str]) -> str:
    """``grid · 4 cells · prompt × model (2 × 2) · aspect_ratio: 1:1``; ``value`` writes a
    user's value (quoted for text, escaped for HTML)."""
    varying = [a for a in grid.axes if len(a) > 1]
    parts = ["grid", plural(len(grid), "cell")]
    if varying:
        names = " × ".join(a.name for a in varying)
        parts.append(f"{names} ({' × '.join(str(len(a)) for a in varying)})")
    parts.extend(f"{name}: {value(text)}" for name, text in grid.fixed.items())
    return " · ".join(parts)


def _total(grid: Grid) -> str:
    """``total 2 credits · 2 cells reused, no new charge`` (costs known so far)."""
    reused = sum(grid.reused(c) for c in grid.cells)
    parts = [f"total {format_cost(grid.total_cost, pretend=grid.pretend)}"]
    if reused:
        charged = format_cost(grid.new_cost, pretend=grid.pretend)
        parts.append(f"{plural(reused, 'cell')} reused, no new charge; charged now {charged}")
    if not grid.done():
        parts.append("so far")
    return " · ".join(parts)


def grid_html(grid: Grid, *, side: int = GRID_THUMB_SIDE, thumb: Thumb | None = None) -> str:
    """The grid as escaped static HTML (see the module docstring)."""
    pick: Thumb = thumb if thumb is not None else (lambda cell: cell_thumb(cell, side))
    shape = grid.layout()
    tables: list[str] = []
    for heading, cells in _sections(grid):
        if heading:
            tables.append(
                f'<div style="margin-top:6px;font-weight:600"><bdi>{escape(heading)}</bdi></div>'
            )
        tables.append(_table(grid, cells, shape.rows, shape.columns, side, pick))
    progress = "" if grid.done() else Progress.of(grid.tasks).html()
    summary = _summary(grid, lambda text: f"<bdi>{html_text(text, PROMPT_TABLE_CHARS)}</bdi>")
    return (
        '<div class="nanobanana-grid tex2jax_ignore mathjax_ignore" '
        'style="max-width:100%;overflow-x:auto;text-align:left">'
        f'<div style="opacity:0.72;margin:2px 0 4px">{summary}</div>'
        f"{progress}{''.join(tables)}"
        f'<div class="nanobanana-grid-total" style="margin-top:2px">{escape(_total(grid))}</div>'
        "</div>"
    )


def grid_text(grid: Grid) -> str:
    """``<Grid: ...>`` and one line per cell: its place, status, cost and id."""
    lines = [f"<Grid: {_summary(grid, lambda text: plain(text, PROMPT_TABLE_CHARS))}>"]
    if not grid.done():
        lines.append(Progress.of(grid.tasks).text())
    for cell in grid.cells:
        task = cell.task
        if task is None:  # pragma: no cover - a started grid has a task in every cell
            continue
        where = ", ".join(f"{k}={plain(v, 40)}" for k, v in cell.labels.items()) or "the cell"
        _, ident = short_id(task.record)
        lines.append(f"  {where}: {status_label(task.status)} · {_cost(grid, cell)} · {ident}")
    lines.append(_total(grid))
    return "\n".join(lines)


def grid_bundle(grid: Grid, *, side: int = GRID_THUMB_SIDE) -> dict[str, Any]:
    """The grid's mimebundle: its text and its HTML (the previews are in the HTML only)."""
    return {"text/plain": grid_text(grid), "text/html": grid_html(grid, side=side)}


def grid_ended(cells: tuple[tuple[str, int], ...]) -> bool:
    """Whether :func:`grid_shown` says every cell's task has ended."""
    return all(status and TaskStatus(status).is_terminal for status, _ in cells)


def grid_shown(grid: Grid) -> tuple[tuple[str, int], ...]:
    """What the grid's display shows, apart from the time: each cell's status and images."""
    return tuple(
        (c.task.status.value, len(c.task.record.images)) if c.task is not None else ("", 0)
        for c in grid.cells
    )
