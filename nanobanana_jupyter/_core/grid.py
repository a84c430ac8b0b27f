"""Compare grids: the cartesian product of prompts, models and options, as one set of tasks.

``Session.grid(prompt=[...], model=[...], aspect_ratio=[...], image_size=[...], images=[...])``
plans the cells here (:func:`plan_grid`: the axes, their product, every check that needs no
session), then builds and validates every cell's request and starts them through the same
path as ``Session.map`` (the submit caps and pacing, reuse of identical requests). What it
returns is a :class:`Grid`: the axes, the cells and their tasks, waiting, the total cost and
a DataFrame; shown (by the display layer) as a labelled table of previews.

Rules, in one place:

- a list (or tuple) given to an axis is an axis, one cell per value; anything else is a
  fixed value of every cell (``None``: the default);
- ``images`` is an axis of references: each value is one reference or a list of up to
  four; ``images=photo`` (not a list) is a fixed reference of every cell;
- ``fill`` fills ``{name}`` fields of the prompt (a template): a list value is an axis
  named by its field, anything else fixed; a field with no value is an error;
- an axis may not list the same value twice, nor be empty, and two cells may not make the
  same request (they would be one task);
- at most :data:`MAX_GRID_CELLS` cells.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import string
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanobanana_jupyter._store import presenter
from nanobanana_jupyter._store.records import RECORD_COLUMNS
from nanobanana_jupyter._wire.credits import credits_sum
from nanobanana_jupyter._wire.errors import ValidationError
from nanobanana_jupyter._wire.models import GenerationRequest, normalize_image_size

from .task import Task
from .task_list import TaskList

if TYPE_CHECKING:
    import pandas

__all__ = [
    "AXES",
    "GRID_NAMES",
    "MAX_GRID_CELLS",
    "PROMPT_SEPARATOR",
    "Axis",
    "Grid",
    "GridCell",
    "GridPlan",
    "fill_template",
    "layout",
    "parse_grid",
    "plan_grid",
    "split_prompts",
]

MAX_GRID_CELLS = 64
"""The most cells one grid may have: each is a paid generation (16 is ``-n``'s cap; a grid
of 8 prompts by 8 models is still one call)."""

AXES = ("prompt", "model", "aspect_ratio", "image_size", "images")
"""The request's axes, in the order a grid lays them out (``fill`` fields after ``prompt``)."""

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LABEL_CHARS = 60


@dataclass(frozen=True)
class Axis:
    """One dimension of a grid: its name and its values, each with a label to show."""

    name: str
    values: tuple[Any, ...]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class GridCell:
    """One cell: where it sits on every axis and the request it makes.

    ``labels`` maps each axis name to this cell's label on it; ``index`` to its position.
    ``task`` is set once the grid has started (``None`` in a plan).
    """

    position: int
    index: Mapping[str, int]
    labels: Mapping[str, str]
    prompt: str
    model: str | None
    aspect_ratio: str | None
    image_size: str | None
    images: tuple[Any, ...]
    task: Task | None = field(default=None, compare=False)


@dataclass(frozen=True)
class GridPlan:
    """The axes, the fixed values and the cells of a grid, before anything is sent."""

    axes: tuple[Axis, ...]
    fixed: Mapping[str, str]
    """Labels of the values every cell shares (``None`` ones left out)."""
    cells: tuple[GridCell, ...]

    def check_requests(self, requests: Sequence[GenerationRequest]) -> None:
        """Refuse two cells that make the same request (one task would stand for both).

        Raises:
            ValidationError: names the two cells.
        """
        seen: dict[str, GridCell] = {}
        for cell, request in zip(self.cells, requests, strict=True):
            key = request.fingerprint()
            if key in seen:
                raise ValidationError(
                    f"grid cells {_where(seen[key])} and {_where(cell)} make the same "
                    "request (one task would stand for both); drop one of the values"
                )
            seen[key] = cell


def _where(cell: GridCell) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in cell.labels.items()) + ")"


# -- labels -------------------------------------------------------------------------------


def _short(text: str, limit: int = _LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reference_label(ref: object) -> str:
    """A short name for a reference: a task's id, a file's name, a URL's last part."""
    task_id = getattr(ref, "task_id", None) or getattr(ref, "local_id", None)
    if isinstance(task_id, str):
        return "@" + task_id[:12]
    if isinstance(ref, os.PathLike):
        return Path(ref).name or str(ref)
    if isinstance(ref, str):
        if ref.startswith("data:"):
            return "data URI"
        tail = ref.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return _short(tail or ref, 40)
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return f"{len(ref)} bytes"
    size = getattr(ref, "size", None)
    if isinstance(size, tuple) and len(size) == 2:
        return f"image {size[0]}×{size[1]}"
    return type(ref).__name__


def _refs_of(value: object) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def _label(name: str, value: object) -> str:
    if name == "images":
        refs = _refs_of(value)
        return " + ".join(reference_label(r) for r in refs) if refs else "no references"
    return _short(str(value))


# -- the prompt as a template -------------------------------------------------------------


class _Filler(string.Formatter):
    """``str.format`` over the grid's ``fill`` values: names, attributes (not private) and
    indexing; an unknown name is an error, ``{{``/``}}`` stay literal braces."""

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = values

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):
            raise ValidationError("the prompt template has a positional field ({} or {0})")
        if key not in self._values:
            given = ", ".join(sorted(self._values)) or "none"
            raise ValidationError(
                f"the prompt template has {{{key}}} but fill gives no {key!r} (given: {given}); "
                "write {{ and }} for literal braces"
            )
        return self._values[key]

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if re.search(r"\.\s*_", field_name):
            raise ValidationError(f"private attributes are not allowed in {{{field_name}}}")
        try:
            return super().get_field(field_name, args, kwargs)
        except ValidationError:
            raise
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise ValidationError(f"cannot fill {{{field_name}}}: {exc}") from None


def fill_template(template: str, values: Mapping[str, object]) -> str:
    """``template`` with its ``{name}`` fields filled from ``values``.

    Raises:
        ValidationError: a field has no value, or the template is malformed.
    """
    try:
        return _Filler(values).vformat(template, (), {})
    except ValueError as exc:
        raise ValidationError(
            f"the prompt template is malformed: {exc} (write {{{{ and }}}} for literal braces)"
        ) from None


def template_fields(template: str) -> list[str]:
    """The names a template's fields start with, in order, once each."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return names
    for _, field_name, _, _ in parsed:
        if field_name:
            root = re.split(r"[.\[]", field_name, maxsplit=1)[0]
            if root not in names:
                names.append(root)
    return names


# -- planning -----------------------------------------------------------------------------


def _axis(name: str, given: object) -> Axis | None:
    """The axis for a list given to ``name``, or ``None`` for a fixed value."""
    if not isinstance(given, (list, tuple)):
        return None
    values = list(given)
    if not values:
        raise ValidationError(f"the grid's {name} axis is empty: give at least one value")
    if name == "image_size":
        values = [normalize_image_size(v) if isinstance(v, str) else v for v in values]
    labels = [_label(name, v) for v in values]
    if name != "images":  # references are told apart by the requests (check_requests)
        seen: set[str] = set()
        for value, label in zip(values, labels, strict=True):
            if repr(value) in seen:
                raise ValidationError(
                    f"the grid's {name} axis lists {label!r} twice; each value once"
                )
            seen.add(repr(value))
    return Axis(name, tuple(values), tuple(labels))


def plan_grid(
    *,
    prompt: object,
    model: object = None,
    aspect_ratio: object = None,
    image_size: object = None,
    images: object = None,
    fill: Mapping[str, object] | None = None,
    max_cells: int = MAX_GRID_CELLS,
) -> GridPlan:
    """The axes and cells of a grid (see the module's rules); nothing is sent or built.

    Raises:
        ValidationError: an axis is empty or repeats a value, a fill name is not a field of
            the prompt (or clashes with an axis), a field has no value, or there are more
            than ``max_cells`` cells.
    """
    fill = dict(fill or {})
    given = {
        "prompt": prompt,
        "model": model,
        "aspect_ratio": aspect_ratio,
        "image_size": image_size,
        "images": images,
    }
    templates = list(prompt) if isinstance(prompt, (list, tuple)) else [prompt]
    for template in templates:
        if not isinstance(template, str):
            raise ValidationError(
                f"a grid's prompt is text or a list of texts, not a {type(template).__name__}"
            )
    used = {name for t in templates for name in template_fields(str(t))} if fill else set()
    for name in fill:
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise ValidationError(f"fill name {name!r} is not a name a {{field}} can have")
        if name in AXES or name in RECORD_COLUMNS or name == "reused":
            raise ValidationError(
                f"fill name {name!r} is taken by the request or the task table; rename the field"
            )
        if name not in used:
            raise ValidationError(f"fill gives {name!r} but the prompt has no {{{name}}} field")
    order = ["prompt", *fill, *AXES[1:]]
    values: dict[str, object] = {**given, **fill}
    axes: list[Axis] = []
    fixed: dict[str, str] = {}
    for name in order:
        axis = _axis(name, values[name])
        if axis is not None:
            axes.append(axis)
        elif values[name] is not None:
            fixed[name] = _label(name, values[name])
    count = 1
    for axis in axes:
        count *= len(axis)
    if count > max_cells:
        sizes = " × ".join(f"{len(a)} {a.name}" for a in axes)
        raise ValidationError(
            f"a grid of {count} cells ({sizes}) is more than {max_cells}, each a paid "
            "generation; narrow an axis or split the grid; nothing was sent"
        )
    cells: list[GridCell] = []
    for position, picks in enumerate(itertools.product(*(range(len(a)) for a in axes))):
        chosen = dict(values)
        for axis, i in zip(axes, picks, strict=True):
            chosen[axis.name] = axis.values[i]
        text = str(chosen["prompt"])
        if fill:
            text = fill_template(text, {name: chosen[name] for name in fill})
        size = _optional_text("image_size", chosen["image_size"])
        cells.append(
            GridCell(
                position=position,
                index={a.name: i for a, i in zip(axes, picks, strict=True)},
                labels={a.name: a.labels[i] for a, i in zip(axes, picks, strict=True)},
                prompt=text,
                model=_optional_text("model", chosen["model"]),
                aspect_ratio=_optional_text("aspect_ratio", chosen["aspect_ratio"]),
                image_size=None if size is None else normalize_image_size(size),
                images=_refs_of(chosen["images"]),
            )
        )
    return GridPlan(tuple(axes), fixed, tuple(cells))


def _optional_text(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(f"{name} is text, not a {type(value).__name__} ({value!r})")


# -- layout -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How a grid is drawn: the axis of the rows, of the columns, and the rest (one table
    per combination of their values, in order)."""

    rows: Axis | None
    columns: Axis | None
    rest: tuple[Axis, ...]


def layout(axes: Sequence[Axis]) -> Layout:
    """Rows: the first axis with more than one value; columns: the second; the rest (and
    one-value axes, which change nothing) split the grid into tables."""
    varying = [a for a in axes if len(a) > 1]
    rows = varying[0] if varying else None
    columns = varying[1] if len(varying) > 1 else None
    rest = tuple(varying[2:])
    return Layout(rows, columns, rest)


# -- the grid -----------------------------------------------------------------------------


class Grid:
    """A compare grid: the axes, the cells and their tasks (``Session.grid``).

    Iterating gives the cells (:class:`GridCell`, each with its ``task``) in the order of
    the product, the first axis slowest. Shown as a cell's result, it is a table of
    previews labelled by the axes, each cell with its status and cost, the total under it.
    """

    def __init__(self, plan: GridPlan, tasks: Sequence[Task], *, pretend: bool = False) -> None:
        if len(tasks) != len(plan.cells):
            raise ValueError("a grid needs one task per cell")
        self._plan = plan
        self._cells = tuple(
            dataclasses.replace(cell, task=task)
            for cell, task in zip(plan.cells, tasks, strict=True)
        )
        self._tasks = TaskList(tasks)
        # Whether each cell was handed back (not sent) when this grid started: a handle's
        # own flag follows its latest hand-back, which a later grid may be.
        self._reused = tuple(task.reused for task in tasks)
        self.pretend = pretend
        self.created_at = time.time()

    @property
    def axes(self) -> tuple[Axis, ...]:
        """Every axis given as a list, in layout order."""
        return self._plan.axes

    @property
    def fixed(self) -> Mapping[str, str]:
        """Labels of the values every cell shares."""
        return self._plan.fixed

    @property
    def cells(self) -> tuple[GridCell, ...]:
        return self._cells

    @property
    def tasks(self) -> TaskList:
        """The cells' tasks, in cell order."""
        return self._tasks

    def layout(self) -> Layout:
        """Which axis is rows, which columns, and which split the grid into tables."""
        return layout(self.axes)

    def reused(self, cell: GridCell) -> bool:
        """True when ``cell``'s task was handed back for an identical earlier request."""
        return self._reused[cell.position]

    def __len__(self) -> int:
        return len(self._cells)

    def __iter__(self) -> Iterator[GridCell]:
        return iter(self._cells)

    def done(self) -> bool:
        """True when every cell's task has ended."""
        return self._tasks.done()

    def wait(self, timeout: float | None = None) -> Grid:
        """Wait until every cell's task has ended (any outcome); the grid itself.

        Raises:
            TimeoutError: a task is still running when the time is up (it goes on).
        """
        self._tasks.wait(timeout)
        return self

    @property
    def total_cost(self) -> Decimal:
        """Credits of every cell's task as far as known, reused ones included (what the
        images on show cost, once)."""
        total = Decimal(0)
        for task in self._tasks:
            if task.cost is not None:
                total = credits_sum(total, task.cost)
        return total

    @property
    def new_cost(self) -> Decimal:
        """Credits of the cells this grid sent (not handed back): what it charged."""
        total = Decimal(0)
        for cell in self._cells:
            task = cell.task
            if task is not None and not self.reused(cell) and task.cost is not None:
                total = credits_sum(total, task.cost)
        return total

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per cell: each axis's label, ``reused``, then the task's columns."""
        rows: list[dict[str, Any]] = []
        for cell in self._cells:
            row: dict[str, Any] = dict(cell.labels)
            row["reused"] = self.reused(cell)
            record = cell.task.record.to_dict() if cell.task is not None else {}
            for name in RECORD_COLUMNS:
                row.setdefault(name, record.get(name))
            rows.append(row)
        return rows

    def to_pandas(self) -> pandas.DataFrame:
        """A DataFrame, one row per cell: the axes (labels; ``prompt``, ``model`` and the
        options are the task's own columns), ``reused``, then the task's columns as in
        ``History.to_pandas()``.

        Needs pandas: ``pip install 'nanobanana-jupyter[pandas]'``.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Grid.to_pandas() needs pandas: pip install 'nanobanana-jupyter[pandas]'"
            ) from None
        axes = [a.name for a in self.axes]
        columns = [*axes, "reused", *(c for c in RECORD_COLUMNS if c not in axes)]
        frame = pd.DataFrame.from_records(self.to_records(), columns=columns)
        for column in ("created_at", "updated_at", "submitted_at", "finished_at"):
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame

    def __repr__(self) -> str:
        names = " × ".join(a.name for a in self.axes) or "one cell"
        return presenter.text(self, f"<Grid: {len(self)} cells, {names}>")

    def _ipython_display_(self) -> None:
        presenter.show(self)

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]] | dict[str, Any]:
        return presenter.mimebundle(self, repr(self))


# -- the words of a view: --grid NAME=v1,v2, and prompts separated by lines of --- ----------

GRID_NAMES = {
    "prompt": "prompt",
    "model": "model",
    "aspect_ratio": "aspect_ratio",
    "aspect": "aspect_ratio",
    "image_size": "image_size",
    "size": "image_size",
    "images": "images",
    "ref": "images",
}
"""What ``--grid NAME=`` may name (dashes read as underscores), besides a ``{field}`` of the
prompt; aliases as the magic's own options say them (``size``, ``ref``)."""

PROMPT_SEPARATOR = re.compile(r"^[ \t]*---[ \t]*$", re.MULTILINE)


def parse_grid(words: list[str]) -> dict[str, list[str]]:
    """``["model=a,b", "aspect_ratio=1:1,16:9"]`` as ``{"model": ["a", "b"], ...}``.

    Names are those of :data:`GRID_NAMES` (normalised) or a prompt field's name (kept as
    given); values are split on commas and stripped.

    Raises:
        ValidationError: a word without ``=``, a bad or repeated name, or no values.
    """
    axes: dict[str, list[str]] = {}
    for word in words:
        name, sep, rest = word.partition("=")
        if not sep:
            raise ValidationError(
                f"--grid {word!r}: write --grid NAME=v1,v2 (e.g. --grid model=a,b or "
                "--grid aspect_ratio=1:1,16:9)"
            )
        key = name.strip().replace("-", "_")
        key = GRID_NAMES.get(key, key)
        if not _FIELD_NAME.match(key):
            raise ValidationError(
                f"--grid {name.strip()!r} is not an axis: use one of prompt, model, "
                "aspect_ratio, image_size, images, or the name of a {field} of the prompt"
            )
        if key in axes:
            raise ValidationError(f"--grid {key} is given twice: list every value once")
        values = [v.strip() for v in rest.split(",") if v.strip()]
        if not values:
            raise ValidationError(f"--grid {key}= has no values: e.g. --grid {key}=a,b")
        axes[key] = values
    return axes


def split_prompts(body: str) -> list[str]:
    """The prompts of a cell body: blocks between lines of ``---`` (one block: one prompt).

    Raises:
        ValidationError: a block is empty (says which).
    """
    parts = [part.strip() for part in PROMPT_SEPARATOR.split(body)]
    if len(parts) > 1:
        for number, part in enumerate(parts, 1):
            if not part:
                raise ValidationError(
                    f"prompt {number} of {len(parts)} (between lines of ---) is empty"
                )
    return parts
