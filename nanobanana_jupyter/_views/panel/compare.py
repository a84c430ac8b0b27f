"""Compare mode: the composer's options become axes, and Generate starts one compare grid.

With the Compare toggle on, the model, aspect ratio and size each take several values (chips
built from the known values, plus model ids typed in), the prompt box takes several prompts
separated by lines of ``---`` (as the magic reads a cell), and Generate calls
``session.grid(...)`` instead of starting ``n`` tasks. An axis with no value chosen takes the
composer's own choice for every cell; an identical earlier request is reused, so running the
same grid again sends nothing new. The grid shows in the panel as the display layer's table
of previews, redrawn by the panel's ticker (at most every :data:`GRID_INTERVAL` while it runs,
at once when it ends). A bad grid (too many cells, bad values, over the budget) is refused
whole, in one line of the status line, and nothing is sent.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import ipywidgets as widgets

from nanobanana_jupyter._core.grid import Grid, GridCell, split_prompts
from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._wire.errors import NanoBananaError
from nanobanana_jupyter._wire.models import (
    ASPECT_RATIOS,
    IMAGE_SIZES,
    KNOWN_MODELS,
    TaskStatus,
    UnknownModelWarning,
)

from .composer import Composer
from .context import PanelContext
from .showing import GRID_INTERVAL, MUTED, cell_thumb, count, grid_html, one_line
from .started import StartedTasks

__all__ = ["Compare"]

logger = logging.getLogger("nanobanana_jupyter")

HELP = (
    "Compare: pick several values of an axis (none: the option above for every cell); "
    "several prompts go in the box, separated by lines of ---. One task per cell; a cell "
    "already made is reused, not paid again."
)
_SEPARATORS = re.compile(r"[,\s]+")


def _nothing() -> tuple[str, ...]:
    return ()


class Compare:
    """The Compare toggle, the axes' chips, and the grid it started, shown live.

    Args:
        context: the panel's shared context.
        composer: the composer whose prompt and options the grid reads (its public widgets).
        references: the payloads of the chosen reference images (the same in every cell).
        open_image: opens a full-size file in the gallery's larger view; returns whether
            it could.
        changed: called after a grid started (the panel starts its ticker).
    """

    def __init__(
        self,
        context: PanelContext,
        composer: Composer,
        *,
        references: Callable[[], tuple[str, ...]] = _nothing,
        open_image: Callable[[str], bool] = lambda path: False,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._ctx = context
        self._composer = composer
        self._references = references
        self._open_image = open_image
        self._changed = changed
        self._grid: Grid | None = None
        self._ids: frozenset[str] = frozenset()
        self._started = StartedTasks()  # every task started here (cards may be dropped)
        self._thumbs: dict[str, Any] = {}  # local id -> the cell's preview, made once
        self._dirty = False
        self._at = -1e9
        own = context.own

        self.toggle = own(
            widgets.ToggleButton(
                value=False,
                description="Compare",
                icon="th",
                tooltip="Compare mode: several models, aspect ratios, sizes or prompts as one grid",
                layout=widgets.Layout(width="auto"),
            )
        )
        self.toggle.add_class("nanobanana-compare-toggle")
        self.toggle.observe(self._on_toggle, names="value")

        settings = context.session.settings
        models = list(dict.fromkeys((settings.model, *KNOWN_MODELS)))
        self.model_chips = self._chips(models)
        self.aspect_chips = self._chips(list(ASPECT_RATIOS))
        self.size_chips = self._chips(list(IMAGE_SIZES))
        self.models_text = own(
            widgets.Text(
                placeholder="more model ids, comma-separated",
                layout=widgets.Layout(width="280px"),
            )
        )
        self.models_text.add_class("nanobanana-compare-models")
        note = own(
            widgets.HTML(f'<div style="{MUTED};font-size:0.88em;line-height:1.4">{HELP}</div>')
        )
        self.options_box = own(
            widgets.VBox(
                [
                    self._line("Models", [*self.model_chips.values(), self.models_text]),
                    self._line("Aspect", list(self.aspect_chips.values())),
                    self._line("Size", list(self.size_chips.values())),
                    note,
                ],
                layout=widgets.Layout(display="none", margin="2px 0 4px 0"),
            )
        )
        self.options_box.add_class("nanobanana-compare-options")

        self.grid_html = own(widgets.HTML(""))
        self.grid_html.add_class("nanobanana-compare-grid")
        self.cell_box = own(
            widgets.Dropdown(
                options=[],
                description="Open a cell",
                style={"description_width": "initial"},
                layout=widgets.Layout(width="380px"),
            )
        )
        self.cell_box.add_class("nanobanana-compare-cell")
        self.view_button = context.button(
            "View", "search-plus", "nanobanana-compare-view", "Open this cell in the larger view"
        )
        self.view_button.on_click(lambda _b: self.view_cell())
        self.view_row = context.row([self.cell_box, self.view_button])
        self.view_row.layout.display = "none"
        self.view = own(
            widgets.VBox([self.grid_html, self.view_row], layout=widgets.Layout(display="none"))
        )
        self.view.add_class("nanobanana-compare")

    # -- widgets ---------------------------------------------------------------------------

    def _chips(self, values: Sequence[str]) -> dict[str, Any]:
        chips: dict[str, Any] = {}
        for value in values:
            chip = self._ctx.own(
                widgets.ToggleButton(
                    value=False, description=value, tooltip=value,
                    layout=widgets.Layout(width="auto"),
                )
            )  # fmt: skip
            chip.add_class("nanobanana-compare-chip")
            chips[value] = chip
        return chips

    def _line(self, label: str, children: list[Any]) -> Any:
        head = self._ctx.own(widgets.Label(label, layout=widgets.Layout(width="56px")))
        return self._ctx.row([head, *children])

    def _on_toggle(self, change: Any) -> None:
        on = bool(change["new"])
        with self._ctx.lock:
            if self._ctx.closed:
                return
            self.options_box.layout.display = "" if on else "none"
            # One task per cell: the composer's image count does not apply to a grid.
            self._composer.count_box.disabled = on

    # -- what the panel reads ---------------------------------------------------------------

    @property
    def on(self) -> bool:
        """Whether compare mode is on (Generate starts a grid)."""
        return bool(self.toggle.value)

    @property
    def grid(self) -> Grid | None:
        """The grid started last, if any."""
        with self._ctx.lock:
            return self._grid

    @property
    def tasks(self) -> list[Task]:
        """Every task of the grids started here, in the order they started."""
        with self._ctx.lock:
            return self._started.tasks()

    def started(self, local_id: str) -> bool:
        """Whether the task is a cell of a grid started here."""
        with self._ctx.lock:
            return local_id in self._started

    def paid_cost(self) -> Decimal:
        """What the cells sent from here cost (cells handed back left out)."""
        with self._ctx.lock:
            return self._started.paid_cost()

    def reused_count(self) -> int:
        """How many cells were handed back for a request made before this panel asked."""
        with self._ctx.lock:
            return self._started.reused_count()

    # -- the axes ----------------------------------------------------------------------------

    def axes(self) -> dict[str, Any]:
        """The keyword arguments of ``session.grid`` from the widgets (caller holds the lock).

        A chosen list of two or more values is an axis; one value, or none (the composer's
        option), is the same in every cell.

        Raises:
            ValidationError: a block of the prompt between lines of ``---`` is empty.
        """
        composer = self._composer
        prompts = split_prompts(composer.prompt_box.value.strip())
        typed = [m for m in _SEPARATORS.split(self.models_text.value) if m]
        models = _chosen(self.model_chips, typed)
        aspects = _chosen(self.aspect_chips)
        sizes = _chosen(self.size_chips)
        refs = self._references()
        return {
            "prompt": prompts if len(prompts) > 1 else prompts[0],
            "model": _axis(models, composer.model_box.value.strip() or None),
            "aspect_ratio": _axis(aspects, composer.aspect_box.value or None),
            "image_size": _axis(sizes, composer.size_box.value or None),
            # A list would be an axis of references: several chosen are one cell's list.
            "images": None if not refs else refs[0] if len(refs) == 1 else [list(refs)],
        }

    # -- generating ----------------------------------------------------------------------------

    def take_over(self) -> bool:
        """The composer's Generate, in compare mode: start the grid; True when it did so
        (the composer then starts nothing itself)."""
        if not self.on:
            return False
        self.run()
        return True

    def run(self, *, force: bool = False) -> Grid | None:
        """Start a grid from the widgets and show it; ``None`` when refused (the reason is
        in the status line, and nothing was sent). Never raises."""
        ctx = self._ctx
        try:
            with ctx.lock:
                if ctx.closed:
                    return None
                if not self._composer.prompt_box.value.strip():
                    ctx.say("Write a prompt first.", error=True)
                    return None
                axes = self.axes()
            cells = math.prod(len(v) for v in axes.values() if isinstance(v, list))
            if cells < 2:
                ctx.say(
                    "Compare needs two values or more on an axis: pick models, aspect ratios "
                    "or sizes, or separate prompts with a line of ---; nothing was sent.",
                    error=True,
                )
                return None
            with warnings.catch_warnings():
                # Said in the status line instead: a warning from a callback lands nowhere.
                warnings.simplefilter("ignore", UnknownModelWarning)
                grid = ctx.session.grid(**axes, force=force)
        except NanoBananaError as exc:
            ctx.say(one_line(exc.message), error=True)
            return None
        except Exception as exc:  # a callback must never raise into the kernel
            logger.exception("the panel could not start a grid")
            ctx.say(one_line(f"Could not start the grid: {type(exc).__name__}: {exc}"), error=True)
            return None
        reused = 0
        with ctx.lock:
            if ctx.closed:
                return grid
            for cell in grid.cells:
                task = cell.task
                if task is None:  # pragma: no cover - a started grid has a task in every cell
                    continue
                handed_back = grid.reused(cell)
                reused += handed_back
                self._started.add(task, reused=handed_back)
            self._grid = grid
            self._ids = frozenset(t.local_id for t in grid.tasks)
            self.view.layout.display = ""
            self.render()
        ctx.say(_started_words(grid, reused, axes.get("model")))
        self._changed()
        return grid

    # -- following it ----------------------------------------------------------------------------

    def follow(self, task: Task) -> bool:
        """A task changed: whether it is a cell of the grid shown (redrawn at the next
        flush; caller holds the lock)."""
        if task.local_id not in self._ids:
            return False
        self._dirty = True
        return True

    def flush(self, now: float) -> bool:
        """Redraw the grid if it changed and is due; return whether that is still to do."""
        grid = self._grid
        if grid is None or not self._dirty:
            return False
        if now - self._at >= GRID_INTERVAL or grid.done():
            try:
                self.render(now)
            except Exception:  # the next change tries again
                logger.exception("the panel could not draw the grid")
                self._dirty = False
        return self._dirty

    def render(self, now: float | None = None) -> None:
        """Draw the grid's table and the list of cells to open (caller holds the lock)."""
        grid = self._grid
        if grid is None or self._ctx.closed:
            return
        self._dirty = False
        self._at = self._ctx.clock() if now is None else now
        table = grid_html(grid, thumb=self._thumb)
        # The widgets' 28 px line height would triple every wrapped label.
        self.grid_html.value = f'<div style="line-height:1.4">{table}</div>'
        options = tuple(
            (_cell_label(cell), cell.task.record.images[0].path)
            for cell in grid.cells
            if cell.task is not None
            and cell.task.status is TaskStatus.SUCCESS
            and cell.task.record.images
        )
        if tuple(self.cell_box.options) != options:
            chosen = self.cell_box.value
            self.cell_box.options = options
            paths = [path for _, path in options]
            if paths:  # keep the cell chosen; else the first (a blank choice opens nothing)
                self.cell_box.value = chosen if chosen in paths else paths[0]
        self.view_row.layout.display = "" if options else "none"

    def _thumb(self, cell: GridCell) -> Any:
        """The cell's preview, made once per task (the table is redrawn many times)."""
        task = cell.task
        if task is None:
            return None
        kept = self._thumbs.get(task.local_id)
        if kept is None:
            kept = cell_thumb(cell)
            if kept is not None:
                self._thumbs[task.local_id] = kept
        return kept

    def view_cell(self) -> bool:
        """Open the cell chosen in :attr:`cell_box` in the gallery's larger view."""
        with self._ctx.lock:
            path = self.cell_box.value
        if not path:
            return False
        if self._open_image(path):
            return True
        self._ctx.say("That image is no longer in the gallery; it is in the history.", error=True)
        return False


def _chosen(chips: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
    """The values of the chips that are on, then ``extra``, each once."""
    picked = [value for value, chip in chips.items() if chip.value]
    return list(dict.fromkeys([*picked, *extra]))


def _axis(values: list[str], default: str | None) -> str | list[str] | None:
    """Two values or more: an axis; one: that value in every cell; none: ``default``."""
    if len(values) > 1:
        return values
    return values[0] if values else default


def _cell_label(cell: GridCell) -> str:
    where = " · ".join(f"{name}={label}" for name, label in cell.labels.items())
    return where or f"cell {cell.position + 1}"


def _started_words(grid: Grid, reused: int, model: object) -> str:
    sent = len(grid) - reused
    words = f"Started a grid of {count(len(grid), 'cell')}: {sent} sent"
    if reused:
        words += f", {reused} reused (no new charge)"
    words += "."
    models = model if isinstance(model, list) else [model] if isinstance(model, str) else []
    unknown = [m for m in models if m not in KNOWN_MODELS]
    if unknown:
        words += " Not a known model id, sent as given: " + ", ".join(unknown) + "."
    return words
