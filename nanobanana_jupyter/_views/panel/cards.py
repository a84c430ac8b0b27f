"""Live task cards: status, elapsed time, cost, image and reply; Cancel, Resume and Retry."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets

from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.errors import NanoBananaError
from nanobanana_jupyter._wire.models import TaskStatus

from .context import PanelContext
from .rating import Curation, RatingBar
from .showing import (
    CARD_INTERVAL,
    ELAPSED_SECONDS,
    PROMPT_SHOWN,
    REUSED,
    TONE_COLOURS,
    WRAP,
    escape,
    format_cost,
    format_duration,
    read,
    shorten,
    status_label,
    tone,
)
from .theme import tone_text

__all__ = ["MAX_CARDS", "Card", "Cards"]

MAX_CARDS = 12
_RETRYABLE = {TaskStatus.FAILED, TaskStatus.NOT_SENT, TaskStatus.UNAVAILABLE}


class Card:
    """The widgets of one task: status, elapsed time, cost, prompt, image, error, buttons."""

    def __init__(
        self,
        context: PanelContext,
        task: Task,
        *,
        on_cancel: Callable[[Card], None],
        on_resume: Callable[[Card], None],
        on_retry: Callable[[Card], None],
        curation: Curation | None = None,
    ) -> None:
        self.task = task
        self._context = context  # asked each time: a sandbox reached by URL says so late
        self._curation = curation
        self.bar: RatingBar | None = None  # stars and tags, once the task succeeded
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
            f'<div style="{WRAP};font-size:0.92em" title="{escape(shorten(task.prompt, 2000))}">'
            f"{escape(shorten(task.prompt, PROMPT_SHOWN))}</div>"
        )
        self.image = widgets.Image(
            format="jpeg", layout=widgets.Layout(display="none", width="100%", height="auto")
        )
        self.image.add_class("nanobanana-card-image")
        self.error = widgets.HTML(layout=widgets.Layout(display="none"))
        self.error.add_class("nanobanana-card-error")
        self.cancel = context.button("Cancel", "stop", "nanobanana-cancel", "Stop polling")
        self.resume = context.button("Resume", "refresh", "nanobanana-resume", "Poll it again")
        self.retry = context.button("Retry", "repeat", "nanobanana-retry", "Generate it again")
        self.cancel.on_click(lambda _b: on_cancel(self))
        self.resume.on_click(lambda _b: on_resume(self))
        self.retry.on_click(lambda _b: on_retry(self))
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

    def cost_words(self, record: TaskRecord) -> str:
        """``0.5 credits`` (``0.5 pretend credits`` in a sandbox); for a task handed back
        for an identical request, ``reused, no new charge``; nothing while unknown."""
        if self.task.reused:
            return REUSED
        return (
            ""
            if record.consumed is None
            else format_cost(record.consumed, pretend=self._context.pretend)
        )

    def apply(self, now: float) -> None:
        """Show the task's newest state (caller holds the panel lock)."""
        task = self.task
        record = task.record
        status = record.status
        self.applied_at = self.elapsed_at = now
        self.status.value = status_label(status)
        self.status.style.text_color = tone_text(tone(status))
        self.refresh_elapsed(now)
        self.cost.value = self.cost_words(record)
        first = next((i for i in record.images if i.thumb_path), None)
        if first is not None and first.sha256 != self.image_key:
            data = read(first.thumb_path)
            if data is not None:
                self.image.value = data
                self.image.layout.display = ""
                self.image_key = first.sha256
        notes = []
        if record.error:
            colour = TONE_COLOURS[tone(status)]
            notes.append(f'<div style="color:{colour}">{escape(shorten(record.error, 600))}</div>')
        notes += [
            f"<div><b>Model reply:</b> {escape(shorten(text, 600))}</div>"
            for text in record.texts[:2]
        ]
        if notes:
            self.error.value = f'<div style="{WRAP};font-size:0.88em">{"".join(notes)}</div>'
            self.error.layout.display = ""
        else:
            self.error.layout.display = "none"
        done = task.done()
        self.cancel.layout.display = "none" if done else ""
        self.cancel.disabled = status.is_local
        resumable = done and status.is_resumable and record.task_id is not None
        self.resume.layout.display = "" if resumable else "none"
        self.retry.layout.display = "" if done and status in _RETRYABLE else "none"
        if done and status is TaskStatus.SUCCESS and self.bar is None and self._curation:
            self.bar = self._curation.bar(task.local_id, width="110px")
            self.box.children = (*self.box.children[:-1], self.bar.view, self.box.children[-1])

    def refresh_elapsed(self, now: float) -> None:
        record = self.task.record
        if self.task.done():
            seconds = record.duration if record.duration is not None else self.task.elapsed
        else:
            seconds = self.task.elapsed
        self.elapsed.value = format_duration(seconds)
        self.elapsed_at = now


class Cards:
    """The row of live cards, newest first, at most :data:`MAX_CARDS` of them.

    Progress is throttled to one update per :data:`CARD_INTERVAL` per card, and coalesced:
    a card applies the newest state of its task, never a queue of old ones. A task that
    ends is shown at once.

    Args:
        context: the panel's shared context.
        retry: sends a card's request again (the composer's :meth:`Composer.retry`).
        changed: called when a task polls again (the panel starts its ticker).
        curation: rates and tags a card's task once it succeeded (:mod:`.rating`).
    """

    def __init__(
        self,
        context: PanelContext,
        *,
        retry: Callable[[TaskRecord], object] = lambda record: None,
        changed: Callable[[], None] = lambda: None,
        curation: Curation | None = None,
    ) -> None:
        self._ctx = context
        self._curation = curation
        self._retry = retry
        self._changed = changed
        self._cards: dict[str, Card] = {}
        self._order: list[str] = []
        self._pending: dict[str, Task] = {}
        self.cards_box = context.row([], align_items="flex-start")
        self.cards_box.add_class("nanobanana-cards")

    def card_of(self, local_id: str) -> Card | None:
        """The card of a task, if it has one."""
        with self._ctx.lock:
            return self._cards.get(local_id)

    @property
    def pending(self) -> int:
        """How many cards have a change waiting for their throttle."""
        with self._ctx.lock:
            return len(self._pending)

    # -- the panel's calls (all with the lock held) ---------------------------------------

    def add(self, task: Task) -> bool:
        """A card for a task, newest first; False if it has one already."""
        if task.local_id in self._cards:
            return False
        ctx = self._ctx
        card = Card(
            ctx, task, on_cancel=self._cancel, on_resume=self._resume, on_retry=self._on_retry,
            curation=self._curation,
        )  # fmt: skip
        for widget in card.widgets:
            ctx.own(widget)
        self._cards[task.local_id] = card
        self._order.append(task.local_id)
        card.apply(ctx.clock())
        while len(self._order) > MAX_CARDS:
            old_key = next((k for k in self._order if self._cards[k].task.done()), self._order[0])
            self._order.remove(old_key)
            old = self._cards.pop(old_key)
            self._pending.pop(old_key, None)
            ctx.drop(old.box)
        self.cards_box.children = [self._cards[k].box for k in reversed(self._order)]
        return True

    def follow(self, task: Task, now: float) -> bool:
        """Show a change of a task: at once when it ended or is due, else coalesced.

        Returns whether the task has a card.
        """
        card = self._cards.get(task.local_id)
        if task.done():
            self._pending.pop(task.local_id, None)
            if card is not None:
                card.apply(now)
        elif card is not None:
            if now - card.applied_at >= CARD_INTERVAL:
                self._pending.pop(task.local_id, None)
                card.apply(now)
            else:
                self._pending[task.local_id] = task
        return card is not None

    def flush(self, now: float) -> bool:
        """Apply coalesced changes and tick elapsed times; return whether there is more to do."""
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
        return bool(self._pending) or running

    def clear_pending(self) -> None:
        self._pending.clear()

    # -- the buttons ----------------------------------------------------------------------

    def _cancel(self, card: Card) -> None:
        task = card.task
        if task.status.is_local:
            self._ctx.say("It is still being submitted; cancel once it has a task id.", error=True)
            return
        # Task.cancel waits for the engine; from the engine thread it only schedules.
        self._ctx.session.call_in_background(task.cancel)
        self._ctx.say("Cancelled locally; the server may still finish (and charge) it.")

    def _resume(self, card: Card) -> None:
        task = card.task
        if not (task.done() and task.status.is_resumable and task.task_id):
            return
        try:
            task.resume()
        except NanoBananaError as exc:
            self._ctx.say(exc.message, error=True)
            return
        self._ctx.say("Polling it again.")
        self._changed()

    def _on_retry(self, card: Card) -> None:
        self._retry(card.task.record)
