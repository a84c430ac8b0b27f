"""The composer: prompt box, model and options, Generate with its debounce, starting tasks."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ipywidgets as widgets

from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.errors import NanoBananaError
from nanobanana_jupyter._wire.models import (
    ASPECT_RATIOS,
    IMAGE_SIZES,
    KNOWN_MODELS,
    UnknownModelWarning,
)

from .context import PanelContext
from .prompt_box import make_prompt_box
from .showing import count as count_of
from .started import StartedTasks

__all__ = ["DEBOUNCE_SECONDS", "Composer", "Options"]

logger = logging.getLogger("nanobanana_jupyter")

DEBOUNCE_SECONDS = 1.0
"""A second Generate (click or Ctrl+Enter) within this time of the last one is ignored."""


@dataclass
class Options:
    """What a panel task was started with, so Retry can send the same request again."""

    prompt: str
    model: str | None
    references: tuple[str, ...]
    aspect_ratio: str | None
    image_size: str | None


def _nothing() -> tuple[str, ...]:
    return ()


class Composer:
    """The prompt and options, the Generate button, and the tasks started from them.

    Args:
        context: the panel's shared context.
        prepare: called first by :meth:`generate`; returning False stops it (the reference
            picker adds a URL left in its field here, and refuses a bad one).
        references: the payloads of the chosen reference images, read when starting.
        show: called (under the lock) with each task handed back, after it is recorded as
            started here; it shows a card unless the task has one.
        changed: called after tasks were started (the panel starts its ticker).
    """

    def __init__(
        self,
        context: PanelContext,
        *,
        prepare: Callable[[], bool] = lambda: True,
        references: Callable[[], tuple[str, ...]] = _nothing,
        show: Callable[[Task], None] = lambda task: None,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._ctx = context
        self._prepare = prepare
        self._references = references
        self._show = show
        self._changed = changed
        self._submitting = False
        self.last_submit = -1e9
        """When (on the context's clock) the last Generate was accepted."""
        self._started = StartedTasks()  # every task started here (cards may be dropped)
        self._options: dict[str, Options] = {}

        own = context.own
        self.prompt_box, self.has_shortcut = make_prompt_box(
            "Describe the image to generate (Ctrl/Cmd+Enter generates)"
        )
        own(self.prompt_box)
        self.prompt_box.add_class("nanobanana-prompt")
        self.prompt_box.layout.width = "100%"
        self.prompt_box.on_msg(self._on_prompt_message)

        wide = {"description_width": "initial"}

        def dropdown(label: str, options: list[Any], value: Any, width: str) -> Any:
            return own(
                widgets.Dropdown(
                    options=options,
                    value=value,
                    description=label,
                    style=wide,
                    layout=widgets.Layout(width=width),
                )
            )

        settings = context.session.settings
        models = list(dict.fromkeys((settings.model, *KNOWN_MODELS)))
        self.model_box = own(
            widgets.Combobox(
                value=settings.model,
                options=models,
                ensure_option=False,
                placeholder="model id",
                description="Model",
                style=wide,
                layout=widgets.Layout(width="300px"),
            )
        )
        self.aspect_box = dropdown(
            "Aspect", [("default", ""), *[(a, a) for a in ASPECT_RATIOS]], "", "150px"
        )
        self.size_box = dropdown(
            "Size", [("default", ""), *[(s, s) for s in IMAGE_SIZES]], "", "140px"
        )
        self.count_box = dropdown("Images", [1, 2, 3, 4], 1, "120px")
        self.generate_button = context.button(
            "Generate", "magic", "nanobanana-generate", "Start generating (Ctrl/Cmd+Enter)"
        )
        self.generate_button.button_style = "primary"
        self.generate_button.on_click(lambda _b: self.generate())
        self.row = context.row(
            [self.model_box, self.aspect_box, self.size_box, self.count_box, self.generate_button]
        )

    # -- what the panel reads -------------------------------------------------------------

    @property
    def tasks(self) -> list[Task]:
        """The tasks started here, newest first."""
        with self._ctx.lock:
            return list(reversed(self._started.tasks()))

    def started(self, local_id: str) -> bool:
        """Whether the task was started here."""
        with self._ctx.lock:
            return local_id in self._started

    def paid_cost(self) -> Decimal:
        """What the tasks started here cost, leaving out earlier requests handed back."""
        with self._ctx.lock:
            return self._started.paid_cost()

    def reused_count(self) -> int:
        """How many of the tasks shown here were handed back for an identical earlier request
        (sent before this panel asked, so not paid again)."""
        with self._ctx.lock:
            return self._started.reused_count()

    # -- generating -----------------------------------------------------------------------

    def generate(self) -> list[Task]:
        """What Generate (or Ctrl/Cmd+Enter) does; returns the tasks started.

        Ignored (returns ``[]``) while a submit is under way or within a second of the last
        one, so a double click starts one batch. Never raises: problems show in the panel.
        """
        ctx = self._ctx
        now = ctx.clock()
        with ctx.lock:
            if ctx.closed or self._submitting or now - self.last_submit < DEBOUNCE_SECONDS:
                return []
            self._submitting = True
            self.last_submit = now
            self.generate_button.disabled = True
            self.generate_button.description = "Submitting…"
        tasks: list[Task] = []
        try:
            if not self._prepare():
                return []
            with ctx.lock:
                prompt = self.prompt_box.value.strip()
                model = self.model_box.value.strip() or None
                options = Options(
                    prompt=prompt,
                    model=model,
                    references=self._references(),
                    aspect_ratio=self.aspect_box.value or None,
                    image_size=self.size_box.value or None,
                )
                count = int(self.count_box.value)
            if not prompt:
                ctx.say("Write a prompt first.", error=True)
                return []
            tasks = self.start(options, count=count, force=False)
        finally:
            with ctx.lock:
                self._submitting = False
                if not ctx.closed:
                    self.generate_button.disabled = False
                    self.generate_button.description = "Generate"
        return tasks

    def retry(self, record: TaskRecord) -> list[Task]:
        """Send a task's request again (forced), with the options it was started with."""
        with self._ctx.lock:
            options = self._options.get(record.local_id)
        if options is None:
            urls = tuple(r for r in record.references if not r.startswith("sha256:"))
            if len(urls) != len(record.references):
                self._ctx.say(
                    "Its reference images are not kept; add them again and generate.", error=True
                )
                return []
            options = Options(
                record.prompt, record.model, urls, record.aspect_ratio, record.image_size
            )
        return self.start(options, count=1, force=True)

    def start(self, options: Options, *, count: int, force: bool) -> list[Task]:
        """Ask the session for ``count`` tasks; show each new one. Never raises."""
        ctx = self._ctx
        tasks: list[Task] = []
        try:
            with warnings.catch_warnings():
                # The panel says it itself: a warning would be printed from a callback,
                # where it lands in no cell or the wrong one.
                warnings.simplefilter("ignore", UnknownModelWarning)
                tasks = ctx.session.generate(
                    options.prompt,
                    model=options.model,
                    images=list(options.references),
                    aspect_ratio=options.aspect_ratio,
                    image_size=options.image_size,
                    force=force,
                    n=count,
                )
        except NanoBananaError as exc:
            ctx.say(exc.message, error=True)
        except Exception as exc:  # a callback must never raise into the kernel
            logger.exception("the panel could not start a task")
            ctx.say(f"Could not start: {type(exc).__name__}: {exc}", error=True)
        if not tasks:
            return tasks
        reused = 0
        with ctx.lock:
            if ctx.closed:
                return tasks
            for task in tasks:
                if task.reused:
                    # The session handed back an identical earlier request: not paid again.
                    reused += 1
                self._started.add(task, reused=task.reused)
                self._options[task.local_id] = options
                self._show(task)
        notes = [f"Started {count_of(len(tasks) - reused, 'task')}."] if len(tasks) > reused else []
        if reused:
            notes.append(
                f"{reused} identical request{'s were' if reused != 1 else ' was'} already "
                "running or done and is shown as is (change the prompt or options for new images)."
            )
        if options.model and options.model not in KNOWN_MODELS:
            notes.append(f"Model {options.model!r} is not a known id; it is sent as given.")
        ctx.say(" ".join(notes))
        self._changed()
        return tasks

    def _on_prompt_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "submit":
            self.generate()
