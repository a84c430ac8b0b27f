"""The ipywidgets panel: compose, generate, compare, iterate. The only module importing ipywidgets.

``Panel(session=None)`` (or ``%nanobanana panel``) shows a prompt box, model, reference
images, options and a Generate button; live task cards; a gallery of results; and a history
view that pages through the store. It is a thin view over one :class:`Session`.

Threading (design.md section 3, research/jupyter-async.md sections 1 and 3):

- Widget callbacks may run on any thread (ipykernel 7 runs comm messages on subshell threads
  when JupyterLab sends them there). A callback hands the work to the session, whose calls
  return at once, and returns. Small local work stays in the callback: converting one
  reference image to a data URI, reading one page of the history. The one bigger piece of
  Pillow work, the 1024 px preview of the larger view, runs in the engine's executor.
  Callbacks never hold the panel's lock while they call into the session (a cancel waits for
  the engine, whose listener needs that lock).
- Background updates come from ``session.subscribe`` (the engine thread, or the thread that
  called ``generate``) and from one ticker coroutine on the engine loop. They only set widget
  traits and update one display slot, always under the panel's single lock. Progress is
  throttled to at most four updates a second per card, and coalesced: a card applies the
  newest state of its task, never a queue of old ones. A task that ends is shown at once.
  Nothing here prints or calls ``display()`` from a callback or from background code; errors
  go into the panel's status line, HTML-escaped.

Saved notebooks (research/jupyter-async.md section 4): widget views are saved as a stale
``text/plain`` and, by default, no widget state. So:

- the panel's ``text/plain`` says what it is and where its images are;
- displaying the panel (``_ipython_display_``, on the main thread while the cell runs)
  creates a second output right below it, a plain mimebundle with a display id. Background
  code updates that slot (``update_display``, the same mechanism the magic's live cards use,
  which lands in the right cell even after other cells ran) with a contact sheet of the
  images generated from this panel: ``text/html`` (escaped captions, ``data:`` images) plus an
  ``image/jpeg`` of the sheet and a ``text/plain`` list of paths. A saved notebook, nbconvert
  HTML and GitHub show the images without any widget JavaScript.

Ctrl/Cmd+Enter: ipywidgets 8's ``Textarea`` has no key events (its view stops every keydown
from propagating, and ``Text.on_submit`` is deprecated and single-line). When ``anywidget`` is
installed, the prompt box is a tiny anywidget (an inline ES module, no network) that renders a
textarea, syncs ``value`` as you type, and on Ctrl+Enter or Cmd+Enter sends one custom
message ``{"event": "submit"}``; it carries ``data-lm-suppress-shortcuts`` so JupyterLab and
Notebook 7 leave those keys to it. Without anywidget the prompt is a plain ``Textarea`` and
the Generate button is the way to start.

The API key never reaches any widget trait: the panel only holds the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib
import io
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

try:
    import ipywidgets as widgets
    import traitlets
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the panel needs ipywidgets 8: pip install 'nanobanana-jupyter[panel]'"
    ) from exc
from IPython.display import display, update_display

from nanobanana_jupyter._core.defaults import get_default_session
from nanobanana_jupyter._core.events import TaskEvent
from nanobanana_jupyter._core.session import Session
from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._display.render import (
    data_uri,
    escape,
    format_cost,
    format_duration,
    history_html,
    safe_src,
    status_label,
)
from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._wire.errors import NanoBananaError
from nanobanana_jupyter._wire.models import (
    ASPECT_RATIOS,
    IMAGE_SIZES,
    KNOWN_MODELS,
    MAX_REFERENCE_IMAGES,
    TaskStatus,
    UnknownModelWarning,
)

__all__ = ["Panel"]

logger = logging.getLogger("nanobanana_jupyter")

DEBOUNCE_SECONDS = 1.0
"""A second Generate (click or Ctrl+Enter) within this time of the last one is ignored."""
CARD_INTERVAL = 0.25
"""At most four progress updates a second per task card."""
TICK_SECONDS = 0.25
ELAPSED_SECONDS = 1.0
"""Running cards refresh their elapsed time this often."""
SLOT_INTERVAL = 0.5
HISTORY_INTERVAL = 1.0
HISTORY_PAGE = 20
GALLERY_FROM_HISTORY = 12
MAX_GALLERY = 24
MAX_CARDS = 12
SLOT_IMAGES = 12
SLOT_TILE = 192
PROMPT_SHOWN = 160

_TONE_COLOURS = {
    "running": "#1a64c8",
    "success": "#1b7f3b",
    "failed": "#c5221f",
    "warning": "#b06f00",
    "neutral": "#5f6368",
}
_FAILED = {TaskStatus.FAILED, TaskStatus.NOT_SENT}
_WARNING = {TaskStatus.SUBMIT_UNKNOWN, TaskStatus.TIMED_OUT, TaskStatus.UNAVAILABLE}
_RETRYABLE = {TaskStatus.FAILED, TaskStatus.NOT_SENT, TaskStatus.UNAVAILABLE}
_WRAP = "white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.4"
_MUTED = "opacity:0.72"


def _tone(status: TaskStatus) -> str:
    if status is TaskStatus.SUCCESS:
        return "success"
    if status in _FAILED:
        return "failed"
    if status in _WARNING:
        return "warning"
    if status is TaskStatus.ABANDONED:
        return "neutral"
    return "running"


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


# -- the prompt box -------------------------------------------------------------------------

_PROMPT_ESM = """
function render({ model, el }) {
  const box = document.createElement("textarea");
  box.className = "nanobanana-prompt-input";
  box.rows = 3;
  box.spellcheck = true;
  // Lumino (JupyterLab, Notebook 7) skips its keyboard shortcuts for events from inside an
  // element carrying this attribute: Ctrl/Cmd+Enter here generates instead of running the cell.
  box.setAttribute("data-lm-suppress-shortcuts", "true");
  Object.assign(box.style, {
    width: "100%", boxSizing: "border-box", resize: "vertical", minHeight: "64px",
    padding: "6px 8px", fontFamily: "var(--jp-ui-font-family, inherit)",
    fontSize: "var(--jp-widgets-font-size, 13px)",
    color: "var(--jp-widgets-input-color, inherit)",
    background: "var(--jp-widgets-input-background-color, transparent)",
    border: "1px solid var(--jp-widgets-input-border-color, #9e9e9e)", borderRadius: "3px",
  });
  const sync = () => {
    box.placeholder = model.get("placeholder") || "";
    box.disabled = !!model.get("disabled");
    const value = model.get("value") || "";
    if (box.value !== value) box.value = value;
  };
  const push = () => {
    if (model.get("value") !== box.value) {
      model.set("value", box.value);
      model.save_changes();
    }
  };
  box.addEventListener("input", push);
  box.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      push();
      model.send({ event: "submit" });
    }
  });
  box.addEventListener("keypress", (event) => event.stopPropagation());
  model.on("change:value", sync);
  model.on("change:placeholder", sync);
  model.on("change:disabled", sync);
  sync();
  el.appendChild(box);
  return () => {
    model.off("change:value", sync);
    model.off("change:placeholder", sync);
    model.off("change:disabled", sync);
  };
}
export default { render };
"""


@functools.lru_cache(maxsize=1)
def _prompt_class() -> Any:
    """The anywidget prompt box class, or ``None`` when anywidget is not installed."""
    try:
        base: Any = importlib.import_module("anywidget").AnyWidget
    except ImportError:
        return None

    class PromptBox(base):
        """A textarea whose Ctrl/Cmd+Enter sends ``{"event": "submit"}`` to Python."""

        _esm = _PROMPT_ESM
        value = traitlets.Unicode("").tag(sync=True)
        placeholder = traitlets.Unicode("").tag(sync=True)
        disabled = traitlets.Bool(False).tag(sync=True)

    return PromptBox


def _make_prompt_box(placeholder: str) -> tuple[Any, bool]:
    """The prompt widget and whether it has the Ctrl/Cmd+Enter shortcut."""
    cls = _prompt_class()
    if cls is not None:
        return cls(placeholder=placeholder), True
    return (
        widgets.Textarea(placeholder=placeholder, rows=3, layout=widgets.Layout(width="100%")),
        False,
    )


# -- small records --------------------------------------------------------------------------


@dataclass
class _Reference:
    """One chosen reference image: what is sent (a URL or data URI) and how it is shown."""

    key: str
    payload: str
    label: str
    thumb: bytes | None
    widget: Any = None


@dataclass
class _Options:
    """What a panel task was started with, so Retry can send the same request again."""

    prompt: str
    model: str | None
    references: tuple[str, ...]
    aspect_ratio: str | None
    image_size: str | None


@dataclass
class _SlotImage:
    prompt: str
    path: str
    tile: bytes


@dataclass
class _GalleryItem:
    key: str
    image: ImageRecord
    prompt: str
    thumb: bytes
    box: Any
    widgets: list[Any] = field(default_factory=list)


# -- a task card ----------------------------------------------------------------------------


class _Card:
    """The widgets of one task: status, elapsed time, cost, prompt, image, error, buttons."""

    def __init__(self, panel: Panel, task: Task) -> None:
        self.task = task
        self.applied_at = 0.0
        self.elapsed_at = 0.0
        self.image_key: str | None = None
        self.status = widgets.Label(style={"font_weight": "bold"})
        self.status.add_class("nanobanana-card-status")
        self.elapsed = widgets.Label()
        self.elapsed.add_class("nanobanana-card-elapsed")
        self.cost = widgets.Label()
        self.cost.add_class("nanobanana-card-cost")
        self.prompt = widgets.HTML(
            f'<div style="{_WRAP};font-size:0.92em" title="{escape(_shorten(task.prompt, 2000))}">'
            f"{escape(_shorten(task.prompt, PROMPT_SHOWN))}</div>"
        )
        self.image = widgets.Image(
            format="jpeg", layout=widgets.Layout(display="none", width="100%", height="auto")
        )
        self.image.add_class("nanobanana-card-image")
        self.error = widgets.HTML(layout=widgets.Layout(display="none"))
        self.error.add_class("nanobanana-card-error")
        self.cancel = panel._button("Cancel", "stop", "nanobanana-cancel", "Stop polling")
        self.resume = panel._button("Resume", "refresh", "nanobanana-resume", "Poll it again")
        self.retry = panel._button("Retry", "repeat", "nanobanana-retry", "Generate it again")
        self.cancel.on_click(lambda _b: panel._cancel(self))
        self.resume.on_click(lambda _b: panel._resume(self))
        self.retry.on_click(lambda _b: panel._retry(self))
        self.buttons = widgets.HBox([self.cancel, self.resume, self.retry])
        head = widgets.HBox(
            [self.status, self.elapsed, self.cost],
            layout=widgets.Layout(justify_content="space-between", width="100%"),
        )
        self.box = widgets.VBox(
            [head, self.prompt, self.image, self.error, self.buttons],
            layout=widgets.Layout(
                width="250px",
                padding="6px 8px",
                margin="0 8px 8px 0",
                border="1px solid var(--jp-border-color2, #ccc)",
            ),
        )
        self.box.add_class("nanobanana-card")
        self.widgets = [
            self.status,
            self.elapsed,
            self.cost,
            self.prompt,
            self.image,
            self.error,
            self.cancel,
            self.resume,
            self.retry,
            self.buttons,
            head,
            self.box,
        ]

    def apply(self, now: float) -> None:
        """Show the task's newest state (caller holds the panel lock)."""
        task = self.task
        record = task.record
        status = record.status
        self.applied_at = self.elapsed_at = now
        self.status.value = status_label(status)
        self.status.style.text_color = _TONE_COLOURS[_tone(status)]
        self.refresh_elapsed(now)
        self.cost.value = "" if record.consumed is None else format_cost(record.consumed)
        first = next((i for i in record.images if i.thumb_path), None)
        if first is not None and first.sha256 != self.image_key:
            data = _read(first.thumb_path)
            if data is not None:
                self.image.value = data
                self.image.layout.display = ""
                self.image_key = first.sha256
        notes = []
        if record.error:
            colour = _TONE_COLOURS[_tone(status)]
            notes.append(f'<div style="color:{colour}">{escape(_shorten(record.error, 600))}</div>')
        notes += [
            f"<div><b>Model reply:</b> {escape(_shorten(text, 600))}</div>"
            for text in record.texts[:2]
        ]
        if notes:
            self.error.value = f'<div style="{_WRAP};font-size:0.88em">{"".join(notes)}</div>'
            self.error.layout.display = ""
        else:
            self.error.layout.display = "none"
        done = task.done()
        self.cancel.layout.display = "none" if done else ""
        self.cancel.disabled = status.is_local
        resumable = done and status.is_resumable and record.task_id is not None
        self.resume.layout.display = "" if resumable else "none"
        self.retry.layout.display = "" if done and status in _RETRYABLE else "none"

    def refresh_elapsed(self, now: float) -> None:
        record = self.task.record
        if self.task.done():
            seconds = record.duration if record.duration is not None else self.task.elapsed
        else:
            seconds = self.task.elapsed
        self.elapsed.value = format_duration(seconds)
        self.elapsed_at = now


# -- the panel ------------------------------------------------------------------------------


class Panel(widgets.VBox):
    """An interactive panel over one session: compose, generate, compare, iterate.

    Display it (it is a widget), or use ``%nanobanana panel``. Its parts are attributes, so
    a notebook or a test can read and drive them: ``prompt_box.value``, ``model_box``,
    ``aspect_box``, ``size_box``, ``count_box``, ``generate_button``, ``url_box``,
    ``upload``, ``status_html``; :meth:`generate`, :meth:`add_reference`,
    :meth:`use_as_reference`, :meth:`show_history_page`.

    Args:
        session: the session to use; default: the default session (the magic's).
        history_page_size: rows per history page.
    """

    def __init__(self, session: Session | None = None, *, history_page_size: int = HISTORY_PAGE):
        self._lock = threading.RLock()
        self._closed = False
        self._session = session if session is not None else get_default_session()
        self._owned: set[Any] = set()
        self._cards: dict[str, _Card] = {}
        self._started: dict[str, Task] = {}  # every task started here (cards may be dropped)
        self._reused: set[str] = set()  # identical earlier requests handed back, not paid again
        self._card_order: list[str] = []
        self._options: dict[str, _Options] = {}
        self._pending: dict[str, Task] = {}
        self._refs: list[_Reference] = []
        self._gallery: dict[str, _GalleryItem] = {}
        self._gallery_order: list[str] = []
        self._slot_images: dict[str, _SlotImage] = {}
        self._slot_id: str | None = None
        self._slot_dirty = False
        self._slot_at = 0.0
        self._history_dirty = False
        self._history_at = 0.0
        self._history_offset = 0
        self._history_total = 0
        self._page_size = max(1, int(history_page_size))
        self._ticking = False
        self._submitting = False
        self._last_submit = -1e9
        self._detail_key: str | None = None
        self._status_plain = ""

        placeholder = "Describe the image to generate"
        self.prompt_box, self.has_shortcut = _make_prompt_box(
            placeholder + (" (Ctrl/Cmd+Enter generates)" if _prompt_class() else "")
        )
        self._own(self.prompt_box)
        self.prompt_box.add_class("nanobanana-prompt")
        self.prompt_box.layout.width = "100%"
        if self.has_shortcut:
            self.prompt_box.on_msg(self._on_prompt_message)

        super().__init__(
            children=[
                self._header(),
                self.prompt_box,
                *self._compose(),
                self.status_html,
                self.cards_box,
                self._tabs(),
            ],
            layout=widgets.Layout(
                padding="8px 10px", border="1px solid var(--jp-border-color2, #ccc)"
            ),
        )
        self.add_class("nanobanana-panel")

        with self._lock:
            self._load_gallery_from_history()
            self._render_history()
        self._unsubscribe = self._session.subscribe(self._on_change)

    # -- public ---------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        return self._session

    @property
    def tasks(self) -> list[Task]:
        """The tasks started from this panel, newest first."""
        with self._lock:
            return list(reversed(self._started.values()))

    @property
    def references(self) -> list[str]:
        """What the chosen reference images are called in the panel (URL or file name)."""
        with self._lock:
            return [r.label for r in self._refs]

    @property
    def gallery_paths(self) -> list[str]:
        """Full-size files shown in the gallery, newest first."""
        with self._lock:
            return [self._gallery[k].image.path for k in self._gallery_order]

    @property
    def status_text(self) -> str:
        """The status line's message as plain text (what the user reads in the panel)."""
        with self._lock:
            return self._status_plain

    def generate(self) -> list[Task]:
        """What Generate (or Ctrl/Cmd+Enter) does; returns the tasks started.

        Ignored (returns ``[]``) while a submit is under way or within a second of the last
        one, so a double click starts one batch. Never raises: problems show in the panel.
        """
        now = time.monotonic()
        with self._lock:
            if self._closed or self._submitting or now - self._last_submit < DEBOUNCE_SECONDS:
                return []
            self._submitting = True
            self._last_submit = now
            self.generate_button.disabled = True
            self.generate_button.description = "Submitting…"
        tasks: list[Task] = []
        try:
            if self.url_box.value.strip() and not self._add_typed_url():
                return []
            with self._lock:
                prompt = self.prompt_box.value.strip()
                model = self.model_box.value.strip() or None
                options = _Options(
                    prompt=prompt,
                    model=model,
                    references=tuple(r.payload for r in self._refs),
                    aspect_ratio=self.aspect_box.value or None,
                    image_size=self.size_box.value or None,
                )
                count = int(self.count_box.value)
            if not prompt:
                self._say("Write a prompt first.", error=True)
                return []
            tasks = self._start(options, count=count, force=False)
        finally:
            with self._lock:
                self._submitting = False
                if not self._closed:
                    self.generate_button.disabled = False
                    self.generate_button.description = "Generate"
        return tasks

    def add_reference(self, obj: object, *, label: str | None = None) -> bool:
        """Add a reference image: an http(s) URL, a file path, bytes, a PIL image or a task.

        Returns whether it was added; the reason for a refusal shows in the panel.
        """
        from nanobanana_jupyter._core.references import to_reference

        if isinstance(obj, str) and obj.strip().lower().startswith(("http://", "https://")):
            url = obj.strip()
            if safe_src(url) is None:
                self._say("That URL cannot be used (only plain http(s) URLs).", error=True)
                return False
            return self._push_reference(_Reference(url, url, label or url, None))
        with self._lock:
            if len(self._refs) >= MAX_REFERENCE_IMAGES:
                self._say(self._refs_full(), error=True)
                return False
        try:
            payload = to_reference(obj)
        except NanoBananaError as exc:
            self._say(exc.message, error=True)
            return False
        thumb = self._thumb_of(payload)
        if label is not None:
            name = label
        elif isinstance(obj, Path) or (isinstance(obj, str) and not obj.startswith("data:")):
            name = Path(obj).name
        else:
            name = "image"
        key = hashlib.sha256(payload.encode()).hexdigest()
        return self._push_reference(_Reference(key, payload, name, thumb))

    def use_as_reference(self, path: str) -> bool:
        """Use a gallery image (by its full-size path) as a reference image."""
        with self._lock:
            item = next((g for g in self._gallery.values() if g.image.path == path), None)
        if item is None:
            return self.add_reference(path)
        return self._use_item(item)

    def remove_reference(self, index: int) -> None:
        """Drop the ``index``-th chosen reference image."""
        with self._lock:
            if 0 <= index < len(self._refs):
                self._remove_reference_key(self._refs[index].key)

    def _remove_reference_key(self, key: str) -> None:
        with self._lock:
            ref = next((r for r in self._refs if r.key == key), None)
            if ref is None or self._closed:
                return
            self._refs.remove(ref)
            self._render_refs()
            self._drop(ref.widget)

    def show_history_page(self, page: int) -> None:
        """Show page ``page`` (0 = newest tasks) of the history."""
        with self._lock:
            pages = max(1, -(-self._history_total // self._page_size))
            self._history_offset = min(max(0, int(page)), pages - 1)
            self._render_history()

    def close(self) -> None:
        """Stop following the session and close every widget of the panel."""
        with self._lock:
            if self._closed:
                return
            if self._slot_dirty:
                # The plain output under the panel is what a saved notebook keeps: bring it
                # up to date before the ticker that would have done so stops.
                self._update_slot(time.monotonic())
            self._closed = True
            owned = list(self._owned)
            self._owned.clear()
            self._pending.clear()
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
        for widget in owned:
            _close(widget)
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
        bundle = self._repr_mimebundle_()
        if isinstance(bundle, tuple):
            display(bundle[0], raw=True, metadata=bundle[1])
        else:
            display(bundle, raw=True)
        with self._lock:
            if self._slot_id is None:
                self._slot_id = f"nanobanana-panel-{uuid.uuid4().hex}"
            data, metadata = self.results_bundle()
            slot = self._slot_id
        display(data, raw=True, metadata=metadata, display_id=slot)

    def _totals(self, images: int | None = None) -> str:
        """``2 tasks, 1 credit`` (or ``2 tasks, 2 images, 1 credit``): this panel so far."""
        with self._lock:
            tasks = list(self._started.values())
            paid = [t for t in tasks if t.local_id not in self._reused]
        cost = sum((t.cost for t in paid if t.cost is not None), Decimal(0))
        parts = [_count(len(tasks), "task")]
        if images is not None:
            parts.append(_count(images, "image"))
        return ", ".join([*parts, format_cost(cost)])

    def results_bundle(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The plain mimebundle of the panel's results: what a saved notebook shows."""
        with self._lock:
            images = list(self._slot_images.values())
        if not images:
            text = "NanoBanana panel: no images yet (images generated in the panel appear here)"
            html = (
                '<div class="nanobanana-panel-results" style="opacity:0.6;font-size:0.85em">'
                "Images generated in the panel above also appear here, so a saved notebook "
                "shows them.</div>"
            )
            return {"text/plain": text, "text/html": html}, {}
        shown = images[-SLOT_IMAGES:][::-1]
        summary = f"NanoBanana panel: {self._totals(len(images))}"
        lines = [summary + " — files:"] + [f"  {i.path}" for i in images[::-1][:50]]
        figures = []
        for item in shown:
            src = safe_src(data_uri(item.tile, "image/jpeg")) or ""
            figures.append(
                '<figure style="margin:0;max-width:200px">'
                f'<img src="{src}" alt="{escape(_shorten(item.prompt, 300))}" '
                'style="display:block;max-width:100%;height:auto;border-radius:4px">'
                f'<figcaption style="font-size:0.78em;{_MUTED};{_WRAP}">'
                f"<code>{escape(item.path)}</code></figcaption></figure>"
            )
        html = (
            '<div class="nanobanana-panel-results tex2jax_ignore mathjax_ignore" '
            'style="text-align:left">'
            f'<div style="{_MUTED};margin-bottom:4px">{escape(summary)}</div>'
            f'<div style="display:flex;flex-wrap:wrap;gap:8px">{"".join(figures)}</div></div>'
        )
        data: dict[str, Any] = {"text/plain": "\n".join(lines), "text/html": html}
        metadata: dict[str, Any] = {
            "nanobanana": {"panel": True, "paths": [i.path for i in images]}
        }
        sheet = _contact_sheet([i.tile for i in shown])
        if sheet is not None:
            import base64

            data["image/jpeg"] = base64.b64encode(sheet).decode("ascii")
        return data, metadata

    # -- layout ----------------------------------------------------------------------------

    def _row(self, children: list[Any], **layout: str) -> Any:
        """A wrapping row of widgets, vertically centred unless ``layout`` says otherwise."""
        options = {"flex_flow": "row wrap", "align_items": "center", **layout}
        return self._own(widgets.HBox(children, layout=widgets.Layout(**options)))

    def _header(self) -> Any:
        """Title, a sandbox badge when the session talks to the sandbox, and the costs."""
        title = self._own(
            widgets.HTML(
                '<b style="font-size:1.15em">NanoBanana</b>', layout={"margin": "0 8px 0 0"}
            )
        )
        header = [title]
        if self._session.is_sandbox:
            style = {"text_color": _TONE_COLOURS["warning"], "font_weight": "bold"}
            header.append(self._own(widgets.Label("sandbox: offline, no credits", style=style)))
        self.cost_label = self._own(widgets.Label(""))
        self.cost_label.add_class("nanobanana-cost")
        spacer = self._own(widgets.Box(layout=widgets.Layout(flex="1 1 auto")))
        return self._row([*header, spacer, self.cost_label], width="100%")

    def _compose(self) -> list[Any]:
        """Options and Generate; reference URL, upload and the chosen references."""
        wide = {"description_width": "initial"}

        def dropdown(label: str, options: list[Any], value: Any, width: str) -> Any:
            return self._own(
                widgets.Dropdown(
                    options=options,
                    value=value,
                    description=label,
                    style=wide,
                    layout=widgets.Layout(width=width),
                )
            )

        models = list(dict.fromkeys((self._session.settings.model, *KNOWN_MODELS)))
        self.model_box = self._own(
            widgets.Combobox(
                value=self._session.settings.model,
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
        self.generate_button = self._button(
            "Generate", "magic", "nanobanana-generate", "Start generating (Ctrl/Cmd+Enter)"
        )
        self.generate_button.button_style = "primary"
        self.generate_button.on_click(lambda _b: self.generate())

        self.url_box = self._own(
            widgets.Text(
                placeholder="https://… reference image URL", layout=widgets.Layout(width="260px")
            )
        )
        self.url_box.add_class("nanobanana-url")
        self.add_url_button = self._button(
            "Add URL", "link", "nanobanana-add-url", "Add as reference"
        )
        self.add_url_button.on_click(lambda _b: self._add_typed_url())
        self.upload = self._own(
            widgets.FileUpload(
                accept="image/png,image/jpeg,image/webp,image/gif",
                multiple=True,
                description="Upload",
                layout=widgets.Layout(width="110px"),
            )
        )
        self.upload.observe(self._on_upload, names="value")
        self.refs_label = self._own(widgets.Label("References: none"))
        self.refs_box = self._row([])
        self.refs_box.add_class("nanobanana-refs")
        self.status_html = self._own(widgets.HTML(""))
        self.status_html.add_class("nanobanana-panel-status")
        self.cards_box = self._row([], align_items="flex-start")
        self.cards_box.add_class("nanobanana-cards")
        options = [
            self.model_box,
            self.aspect_box,
            self.size_box,
            self.count_box,
            self.generate_button,
        ]
        references = [self.url_box, self.add_url_button, self.upload, self.refs_label]
        return [self._row(options), self._row(references), self.refs_box]

    def _tabs(self) -> Any:
        """The gallery (with its larger view) and the history, as two tabs."""
        self.detail_image = self._own(
            widgets.Image(format="jpeg", layout=widgets.Layout(max_width="100%", height="auto"))
        )
        self.detail_image.add_class("nanobanana-detail-image")
        self.detail_path = self._own(widgets.HTML(""))
        self.detail_path.add_class("nanobanana-detail-path")
        use = self._button(
            "Use as reference", "plus", "nanobanana-detail-use", "Use this image as a reference"
        )
        use.on_click(lambda _b: self._use_detail())
        close = self._button("Close", "times", "nanobanana-detail-close", "Close")
        close.on_click(lambda _b: self._close_detail())
        self.detail_box = self._own(
            widgets.VBox(
                [self.detail_image, self.detail_path, self._row([use, close])],
                layout=widgets.Layout(display="none", margin="0 0 8px 0"),
            )
        )
        self.detail_box.add_class("nanobanana-detail")
        self.gallery_box = self._row([], align_items="flex-start")
        self.gallery_box.add_class("nanobanana-gallery")
        self.gallery_empty = self._own(widgets.Label("No images yet."))

        self.history_html = self._own(widgets.HTML(""))
        self.history_html.add_class("nanobanana-history")
        self.newer_button = self._button("Newer", "chevron-left", "nanobanana-newer", "Newer tasks")
        self.older_button = self._button(
            "Older", "chevron-right", "nanobanana-older", "Older tasks"
        )
        refresh = self._button("Refresh", "refresh", "nanobanana-refresh", "Read the store again")
        self.newer_button.on_click(lambda _b: self.show_history_page(self._history_offset - 1))
        self.older_button.on_click(lambda _b: self.show_history_page(self._history_offset + 1))
        refresh.on_click(lambda _b: self.show_history_page(self._history_offset))
        self.page_label = self._own(widgets.Label(""))

        gallery = widgets.VBox([self.detail_box, self.gallery_empty, self.gallery_box])
        history = widgets.VBox(
            [
                self._row([self.newer_button, self.older_button, refresh, self.page_label]),
                self.history_html,
            ]
        )
        self.tabs = self._own(
            widgets.Tab(
                children=[self._own(gallery), self._own(history)], titles=("Gallery", "History")
            )
        )
        self.tabs.add_class("nanobanana-tabs")
        return self.tabs

    # -- building blocks -----------------------------------------------------------------

    def _own(self, widget: Any) -> Any:
        self._owned.add(widget)
        return widget

    def _drop(self, widget: Any) -> None:
        """Close a widget tree that left the panel (caller holds the lock)."""
        if widget is None:
            return
        stack = [widget]
        while stack:
            w = stack.pop()
            stack.extend(getattr(w, "children", ()) or ())
            self._owned.discard(w)
            _close(w)

    def _button(self, text: str, icon: str, css: str, tooltip: str) -> Any:
        button = self._own(
            widgets.Button(
                description=text, icon=icon, tooltip=tooltip, layout=widgets.Layout(width="auto")
            )
        )
        button.add_class(css)
        return button

    def _say(self, message: str, *, error: bool = False) -> None:
        colour = _TONE_COLOURS["failed"] if error else "inherit"
        with self._lock:
            if self._closed:
                return
            self._status_plain = message
            self.status_html.value = (
                f'<div style="{_WRAP};color:{colour};font-size:0.92em">{escape(message)}</div>'
                if message
                else ""
            )

    def _engine_submit(self, coro: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the engine is stopping (interpreter exit)
            self._session.run_in_background(coro)

    # -- starting tasks -------------------------------------------------------------------

    def _on_prompt_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "submit":
            self.generate()

    def _start(self, options: _Options, *, count: int, force: bool) -> list[Task]:
        """Ask the session for ``count`` tasks; show each in a card. Never raises."""
        tasks: list[Task] = []
        try:
            with warnings.catch_warnings():
                # The panel says it itself: a warning would be printed from a callback,
                # where it lands in no cell or the wrong one.
                warnings.simplefilter("ignore", UnknownModelWarning)
                tasks = self._session.generate(
                    options.prompt,
                    model=options.model,
                    images=list(options.references),
                    aspect_ratio=options.aspect_ratio,
                    image_size=options.image_size,
                    force=force,
                    n=count,
                )
        except NanoBananaError as exc:
            self._say(exc.message, error=True)
        except Exception as exc:  # a callback must never raise into the kernel
            logger.exception("the panel could not start a task")
            self._say(f"Could not start: {type(exc).__name__}: {exc}", error=True)
        if not tasks:
            return tasks
        reused = 0
        with self._lock:
            if self._closed:
                return tasks
            for task in tasks:
                if task.reused:
                    # The session handed back an identical earlier request: not paid again.
                    reused += 1
                    if task.local_id not in self._started:
                        self._reused.add(task.local_id)
                if task.local_id in self._cards:
                    continue
                self._started[task.local_id] = task
                self._options[task.local_id] = options
                self._add_card(task)
        notes = [f"Started {_count(len(tasks) - reused, 'task')}."] if len(tasks) > reused else []
        if reused:
            notes.append(
                f"{reused} identical request{'s were' if reused != 1 else ' was'} already "
                "running or done and is shown as is (change the prompt or options for new images)."
            )
        if options.model and options.model not in KNOWN_MODELS:
            notes.append(f"Model {options.model!r} is not a known id; it is sent as given.")
        self._say(" ".join(notes))
        self._ensure_ticker()
        return tasks

    def _add_card(self, task: Task) -> None:
        """A card for a task, newest first (caller holds the lock)."""
        card = _Card(self, task)
        for widget in card.widgets:
            self._own(widget)
        self._cards[task.local_id] = card
        self._card_order.append(task.local_id)
        card.apply(time.monotonic())
        if task.done():
            self._finished(task)
        while len(self._card_order) > MAX_CARDS:
            old_key = next(
                (k for k in self._card_order if self._cards[k].task.done()), self._card_order[0]
            )
            self._card_order.remove(old_key)
            old = self._cards.pop(old_key)
            self._pending.pop(old_key, None)
            self._drop(old.box)
        self.cards_box.children = [self._cards[k].box for k in reversed(self._card_order)]

    def _cancel(self, card: _Card) -> None:
        task = card.task
        if task.status.is_local:
            self._say("It is still being submitted; cancel once it has a task id.", error=True)
            return
        # Task.cancel waits for the engine; from the engine thread it only schedules.
        self._session.call_in_background(task.cancel)
        self._say("Cancelled locally; the server may still finish (and charge) it.")

    def _resume(self, card: _Card) -> None:
        task = card.task
        if not (task.done() and task.status.is_resumable and task.task_id):
            return
        try:
            task.resume()
        except NanoBananaError as exc:
            self._say(exc.message, error=True)
            return
        self._say("Polling it again.")
        self._ensure_ticker()

    def _retry(self, card: _Card) -> None:
        record = card.task.record
        options = self._options.get(record.local_id)
        if options is None:
            urls = tuple(r for r in record.references if not r.startswith("sha256:"))
            if len(urls) != len(record.references):
                self._say(
                    "Its reference images are not kept; add them again and generate.", error=True
                )
                return
            options = _Options(
                record.prompt, record.model, urls, record.aspect_ratio, record.image_size
            )
        self._start(options, count=1, force=True)

    # -- references ------------------------------------------------------------------------

    def _refs_full(self) -> str:
        return f"At most {MAX_REFERENCE_IMAGES} reference images; remove one first."

    def _add_typed_url(self) -> bool:
        url = self.url_box.value.strip()
        if not url:
            return True
        if not url.lower().startswith(("http://", "https://")):
            self._say("A reference URL starts with http:// or https://.", error=True)
            return False
        added = self.add_reference(url)
        if added:
            with self._lock:
                self.url_box.value = ""
        return added

    def _on_upload(self, change: Any) -> None:
        files = change.get("new") or ()
        if not files:
            return
        for item in files:
            try:
                content = item["content"]
                name = str(item.get("name") or "upload")
            except (KeyError, TypeError, AttributeError):
                continue
            if not self.add_reference(bytes(content), label=name):
                break
        with self._lock:
            if not self._closed:
                self.upload.value = ()

    def _use_item(self, item: _GalleryItem) -> bool:
        with self._lock:
            if any(r.key == item.key for r in self._refs):
                self._say("That image is already a reference.")
                return False
            if len(self._refs) >= MAX_REFERENCE_IMAGES:
                self._say(self._refs_full(), error=True)
                return False
        from nanobanana_jupyter._core.references import to_reference

        try:
            payload = to_reference(item.image)
        except NanoBananaError as exc:
            self._say(exc.message, error=True)
            return False
        return self._push_reference(
            _Reference(item.key, payload, Path(item.image.path).name, item.thumb)
        )

    def _push_reference(self, ref: _Reference) -> bool:
        with self._lock:
            if self._closed:
                return False
            if any(r.key == ref.key for r in self._refs):
                self._say("That image is already a reference.")
                return False
            if len(self._refs) >= MAX_REFERENCE_IMAGES:
                self._say(self._refs_full(), error=True)
                return False
            self._refs.append(ref)
            self._render_refs()
        self._say(f"Reference added ({len(self._refs)} of {MAX_REFERENCE_IMAGES}).")
        return True

    def _render_refs(self) -> None:
        """Rebuild the chips of the chosen references (caller holds the lock)."""
        chips = []
        for ref in self._refs:
            if ref.widget is None:
                if ref.thumb is not None:
                    shown: Any = widgets.Image(
                        value=ref.thumb, format="jpeg", layout=widgets.Layout(height="56px")
                    )
                else:
                    shown = widgets.Label(
                        _shorten(ref.label, 28), tooltip=ref.label, layout={"width": "auto"}
                    )
                remove = widgets.Button(
                    description="Remove",
                    icon="times",
                    tooltip=f"Remove {ref.label}",
                    layout=widgets.Layout(width="auto"),
                )
                remove.add_class("nanobanana-remove-ref")
                remove.on_click(lambda _b, key=ref.key: self._remove_reference_key(key))
                ref.widget = widgets.VBox(
                    [shown, remove],
                    layout=widgets.Layout(
                        margin="0 6px 6px 0",
                        padding="4px",
                        border="1px dashed var(--jp-border-color2, #ccc)",
                        align_items="center",
                    ),
                )
                ref.widget.add_class("nanobanana-ref")
                for w in (shown, remove, ref.widget):
                    self._own(w)
            chips.append(ref.widget)
        self.refs_box.children = chips
        count = len(self._refs)
        self.refs_label.value = (
            "References: none"
            if not count
            else f"References: {count} of {MAX_REFERENCE_IMAGES} (sent with the next Generate)"
        )

    def _thumb_of(self, payload: str) -> bytes | None:
        if not payload.startswith("data:image/"):
            return None
        import base64

        from nanobanana_jupyter._store.images import make_preview

        try:
            raw = base64.b64decode(payload.split(",", 1)[1])
            data, _ = make_preview(raw, side=128, quality=80)
        except (ValueError, OSError):
            return None
        return data

    # -- gallery ---------------------------------------------------------------------------

    def _load_gallery_from_history(self) -> None:
        """The newest results of the store, so an opened panel shows earlier work."""
        try:
            records = self._session.history.filter(status=TaskStatus.SUCCESS).latest(
                GALLERY_FROM_HISTORY
            )
        except Exception:  # a damaged store must not stop the panel from opening
            logger.exception("could not read the history for the gallery")
            return
        for record in reversed(records):
            self._add_to_gallery(record)

    def _add_to_gallery(self, record: TaskRecord) -> bool:
        """Put a task's images first in the gallery (caller holds the lock)."""
        added = False
        for image in record.images:
            key = image.sha256
            if key in self._gallery:
                continue
            thumb = _read(image.thumb_path)
            if thumb is None:
                continue
            self._gallery[key] = self._gallery_item(key, image, record.prompt, thumb)
            self._gallery_order.insert(0, key)
            added = True
        while len(self._gallery_order) > MAX_GALLERY:
            old = self._gallery.pop(self._gallery_order.pop())
            self._drop(old.box)
        if added:
            self.gallery_box.children = [self._gallery[k].box for k in self._gallery_order]
            self.gallery_empty.layout.display = "none"
        return added

    def _gallery_item(
        self, key: str, image: ImageRecord, prompt: str, thumb: bytes
    ) -> _GalleryItem:
        picture = widgets.Image(
            value=thumb, format="jpeg", layout=widgets.Layout(width="216px", height="auto")
        )
        picture.add_class("nanobanana-thumb")
        caption = widgets.Label(
            _shorten(prompt, 31), tooltip=_shorten(prompt, 2000), layout={"width": "216px"}
        )
        view = widgets.Button(
            description="View", icon="search-plus", tooltip="Larger view and file path",
            layout=widgets.Layout(width="auto"),
        )  # fmt: skip
        view.add_class("nanobanana-view")
        use = widgets.Button(
            description="Use as reference", tooltip="Add to the reference images",
            layout=widgets.Layout(width="auto"),
        )  # fmt: skip
        use.add_class("nanobanana-use-ref")
        buttons = widgets.HBox([view, use])
        box = widgets.VBox(
            [picture, caption, buttons],
            layout=widgets.Layout(width="224px", margin="0 8px 8px 0", align_items="flex-start"),
        )
        box.add_class("nanobanana-gallery-item")
        item = _GalleryItem(
            key, image, prompt, thumb, box, [picture, caption, view, use, buttons, box]
        )
        for w in item.widgets:
            self._own(w)
        view.on_click(lambda _b: self._show_detail(item))
        use.on_click(lambda _b: self._use_item(item))
        return item

    def _show_detail(self, item: _GalleryItem) -> None:
        with self._lock:
            if self._closed:
                return
            self._detail_key = item.key
            self.detail_image.value = item.thumb
            self.detail_path.value = (
                f'<div style="{_WRAP};font-size:0.88em"><b>{escape(_shorten(item.prompt, 300))}</b>'
                f"<br><code>{escape(item.image.path)}</code>"
                f'<span style="{_MUTED}"> · {item.image.width}×{item.image.height}</span></div>'
            )
            self.detail_box.layout.display = ""
        self._engine_submit(self._load_large(item))

    async def _load_large(self, item: _GalleryItem) -> None:
        from nanobanana_jupyter._store.images import make_preview

        loop = asyncio.get_running_loop()
        try:
            data, _ = await loop.run_in_executor(
                None, functools.partial(make_preview, item.image.path, side=1024, quality=85)
            )
        except (OSError, ValueError) as exc:
            self._say(f"Could not open {item.image.path}: {exc}", error=True)
            return
        with self._lock:
            if not self._closed and self._detail_key == item.key:
                self.detail_image.value = data

    def _use_detail(self) -> None:
        with self._lock:
            item = self._gallery.get(self._detail_key or "")
        if item is not None:
            self._use_item(item)

    def _close_detail(self) -> None:
        with self._lock:
            self._detail_key = None
            self.detail_box.layout.display = "none"

    # -- history ---------------------------------------------------------------------------

    def _render_history(self) -> None:
        """Read one page of the store, newest first (caller holds the lock)."""
        if self._closed:
            return
        history = self._session.history
        total = len(history)
        self._history_total = total
        pages = max(1, -(-total // self._page_size))
        self._history_offset = min(self._history_offset, pages - 1)
        newest = self._history_offset * self._page_size
        stop = max(0, total - newest)
        start = max(0, stop - self._page_size)
        records = history[start:stop][::-1] if stop else []
        all_cost = history.total_cost
        self.history_html.value = history_html(
            records, total=total, offset=newest, total_cost=all_cost
        )
        self.page_label.value = f"page {self._history_offset + 1} of {pages:,}"
        self.newer_button.disabled = self._history_offset == 0
        self.older_button.disabled = self._history_offset >= pages - 1
        self.cost_label.value = (
            f"this panel: {self._totals()} · all: {total:,} tasks, {format_cost(all_cost)}"
        )
        self._history_at = time.monotonic()
        self._history_dirty = False

    # -- background -------------------------------------------------------------------------

    def _on_change(self, event: TaskEvent) -> None:
        task = event.task
        """Session listener (engine thread, or the caller of generate): set traits only."""
        with self._lock:
            if self._closed:
                return
            card = self._cards.get(task.local_id)
            if task.done():
                self._pending.pop(task.local_id, None)
                if card is not None:
                    card.apply(time.monotonic())
                self._finished(task)
            elif card is not None:
                now = time.monotonic()
                if now - card.applied_at >= CARD_INTERVAL:
                    self._pending.pop(task.local_id, None)
                    card.apply(now)
                else:
                    self._pending[task.local_id] = task
            else:
                return
        self._ensure_ticker()

    def _finished(self, task: Task) -> None:
        """A task ended: gallery, output slot and costs follow (caller holds the lock)."""
        record = task.record
        if record.status is TaskStatus.SUCCESS:
            self._add_to_gallery(record)
        if task.local_id in self._started:
            for image in record.images:
                if image.sha256 in self._slot_images or not image.thumb_path:
                    continue
                tile = _tile(image.thumb_path)
                if tile is not None:
                    self._slot_images[image.sha256] = _SlotImage(record.prompt, image.path, tile)
                    self._slot_dirty = True
            self._history_dirty = True

    def _ensure_ticker(self) -> None:
        with self._lock:
            if self._ticking or self._closed:
                return
            self._ticking = True
        try:
            self._session.run_in_background(self._tick())
        except RuntimeError:
            with self._lock:
                self._ticking = False

    async def _tick(self) -> None:
        try:
            while True:
                await asyncio.sleep(TICK_SECONDS)
                with self._lock:
                    if self._closed or not self._flush(time.monotonic()):
                        self._ticking = False
                        return
        except BaseException:
            with self._lock:
                self._ticking = False
            raise

    def _flush(self, now: float) -> bool:
        """Apply coalesced changes; return whether there is more to do (lock held)."""
        for key, task in list(self._pending.items()):
            card = self._cards.get(key)
            if card is None:
                del self._pending[key]
            elif task.done() or now - card.applied_at >= CARD_INTERVAL:
                del self._pending[key]
                card.apply(now)
        running = False
        for card in self._cards.values():
            if not card.task.done():
                running = True
                if now - card.elapsed_at >= ELAPSED_SECONDS:
                    card.refresh_elapsed(now)
        if self._slot_dirty and now - self._slot_at >= SLOT_INTERVAL:
            self._update_slot(now)
        if self._history_dirty and now - self._history_at >= HISTORY_INTERVAL:
            try:
                self._render_history()
            except Exception:  # the next change tries again
                logger.exception("the panel could not read the history")
                self._history_dirty = False
        return bool(self._pending) or running or self._slot_dirty or self._history_dirty

    def _update_slot(self, now: float) -> None:
        self._slot_dirty = False
        self._slot_at = now
        if self._slot_id is None:
            return
        data, metadata = self.results_bundle()
        try:
            update_display(data, raw=True, metadata=metadata, display_id=self._slot_id)
        except Exception:  # a closed kernel channel must not break the engine
            logger.debug("could not update the panel's output slot", exc_info=True)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _close(widget: Any) -> None:
    """Close a widget and the layout and style widgets made for it."""
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, widgets.Widget):
            part.close()
    widget.close()


def _tile(thumb_path: str) -> bytes | None:
    from nanobanana_jupyter._store.images import make_preview

    try:
        data, _ = make_preview(thumb_path, side=SLOT_TILE, quality=80)
    except (OSError, ValueError):
        return None
    return data


def _contact_sheet(tiles: Sequence[bytes], columns: int = 4) -> bytes | None:
    """One JPEG of the tiles in a grid, for front ends that show images but not HTML."""
    if not tiles:
        return None
    from PIL import Image

    opened = []
    for tile in tiles:
        try:
            with Image.open(io.BytesIO(tile)) as img:
                opened.append(img.convert("RGB"))
        except (OSError, ValueError):
            continue
    if not opened:
        return None
    gap = 6
    cols = min(columns, len(opened))
    rows = -(-len(opened) // cols)
    sheet = Image.new(
        "RGB", (cols * (SLOT_TILE + gap) + gap, rows * (SLOT_TILE + gap) + gap), (255, 255, 255)
    )
    for index, img in enumerate(opened):
        x = gap + (index % cols) * (SLOT_TILE + gap) + (SLOT_TILE - img.width) // 2
        y = gap + (index // cols) * (SLOT_TILE + gap) + (SLOT_TILE - img.height) // 2
        sheet.paste(img, (x, y))
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=80, optimize=True)
    return out.getvalue()
