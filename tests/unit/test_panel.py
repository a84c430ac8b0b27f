"""The panel and its parts with no server: references, history, closing, debounce, throttles.

The panel runs over a session whose transport is an httpx MockTransport (submits get task
ids; nothing ever finishes), and the parts over a fake session and a fake clock. No server,
no subprocess, no wall-clock assertion. The tests that need the sandbox (real polling,
images) are in tests/integration/test_panel.py.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from nanobanana_jupyter import Session, TaskRecord, TaskStatus
from nanobanana_jupyter._core.events import TaskEvent
from nanobanana_jupyter._store.records import ImageRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._views.panel import Panel
from nanobanana_jupyter._views.panel.cards import Cards
from nanobanana_jupyter._views.panel.composer import DEBOUNCE_SECONDS, Composer
from nanobanana_jupyter._views.panel.context import PanelContext
from nanobanana_jupyter._views.panel.notebook_slot import NotebookSlot
from nanobanana_jupyter._views.panel.references import MAX_REFERENCE_IMAGES, ReferencePicker
from nanobanana_jupyter._views.panel.showing import (
    CARD_INTERVAL,
    ELAPSED_SECONDS,
    Ticker,
    format_duration,
)
from tests.helpers.mock_api import mock_session

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    with mock_session(tmp_path / "data") as s:
        yield s


def settle(session: Session, tasks: list[Any]) -> None:
    """Wait, on the tasks' own state (no clock), until no submit is in flight."""
    for task in tasks:
        has_id = threading.Event()

        def listener(event: TaskEvent, task: Any = task, has_id: threading.Event = has_id) -> None:
            if event.task is task and (event.record.task_id is not None or task.done()):
                has_id.set()

        unsubscribe = session.subscribe(listener)
        if task.task_id is None and not task.done():
            assert has_id.wait(10)
        unsubscribe()


@pytest.fixture
def make_panel() -> Iterator[Callable[..., Panel]]:
    made: list[Panel] = []

    def build(session: Session, **kwargs: Any) -> Panel:
        panel = Panel(session=session, **kwargs)
        made.append(panel)
        return panel

    yield build
    for panel in made:
        settle(panel.session, panel.tasks)
        panel.close()


@pytest.fixture
def panel(session: Session, make_panel: Callable[..., Panel]) -> Panel:
    return make_panel(session)


def png_bytes(colour: tuple[int, int, int] = (200, 40, 40), side: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, format="PNG")
    return out.getvalue()


def generate(panel: Panel, prompt: str, **traits: Any) -> list[Any]:
    panel.prompt_box.value = prompt
    for name, value in traits.items():
        getattr(panel, name).value = value
    panel.composer.last_submit = -1e9  # each test step is a deliberate click, not a double click
    return panel.generate()


def _seed(store_path: Path, n: int) -> None:
    now = time.time() - n
    records = [
        TaskRecord(
            local_id=uuid.uuid4().hex,
            status=TaskStatus.SUCCESS,
            prompt=f"seeded prompt {i}",
            model="google/gempix2",
            fingerprint=uuid.uuid4().hex,
            created_at=now + i,
            updated_at=now + i,
            task_id=f"ta{i:08d}",
            submitted_at=now + i,
            finished_at=now + i + 5,
            consumed=Decimal("0.5"),
        )
        for i in range(n)
    ]
    with Store(store_path) as store:
        store.insert_many(records)


# -- the panel, with no server ---------------------------------------------------------------


def test_a_missing_key_shows_in_the_panel(tmp_path: Path, make_panel: Callable[..., Panel]) -> None:
    """Without an API key, Generate explains where to put one, inside the panel."""
    with mock_session(tmp_path / "nokey", api_key=None) as keyless:
        panel = make_panel(keyless)
        assert generate(panel, "no key") == []
        assert "NANOBANANA_API_KEY" in panel.status_text


def test_url_references_are_checked_limited_to_four_and_removable(panel: Panel) -> None:
    """URL references are validated, at most four are kept, and Remove drops one."""
    panel.url_box.value = "javascript:alert(1)"
    panel.add_url_button.click()
    assert panel.references == [] and "http" in panel.status_text
    for n in range(MAX_REFERENCE_IMAGES):
        panel.url_box.value = f"https://example.com/ref{n}.png"
        panel.add_url_button.click()
        assert panel.url_box.value == ""
    assert len(panel.references) == MAX_REFERENCE_IMAGES
    assert not panel.add_reference("https://example.com/five.png")
    assert "At most 4" in panel.status_text
    chip = panel.refs_box.children[1]
    chip.children[1].click()
    assert panel.references == [f"https://example.com/ref{n}.png" for n in (0, 2, 3)]
    assert chip.comm is None  # its widgets were closed


def test_a_typed_url_goes_with_generate(panel: Panel) -> None:
    """A URL left in the field when Generate is clicked is added as a reference first."""
    panel.url_box.value = "https://example.com/typed.png"
    (task,) = generate(panel, "with a typed url")
    assert task.record.references == ("https://example.com/typed.png",)
    assert panel.references == ["https://example.com/typed.png"]


def test_an_upload_becomes_a_reference_and_the_upload_clears(panel: Panel) -> None:
    """Uploaded image bytes become a reference chip with a thumbnail; the upload resets."""
    data = png_bytes()
    panel.upload.value = (
        {"name": "red.png", "type": "image/png", "size": len(data), "content": memoryview(data), "last_modified": NOW},
    )  # fmt: skip
    assert panel.references == ["red.png"]
    assert panel.upload.value == ()
    thumb = panel.refs_box.children[0].children[0]
    assert thumb.value[:2] == b"\xff\xd8"
    panel.upload.value = (
        {"name": "notes.txt", "type": "text/plain", "size": 5, "content": memoryview(b"hello"), "last_modified": NOW},
    )  # fmt: skip
    assert panel.references == ["red.png"] and "not a PNG" in panel.status_text


def test_history_pages_newest_first(tmp_path: Path, make_panel: Callable[..., Panel]) -> None:
    """The history shows the newest page first; Older and Newer flip pages within bounds."""
    _seed(tmp_path / "h" / "history.sqlite3", 45)
    with mock_session(tmp_path / "h") as session:
        panel = make_panel(session)
        html = panel.history_html.value
        assert "seeded prompt 44" in html and "seeded prompt 25" in html
        assert "seeded prompt 24" not in html and "45 tasks" in html
        assert html.index("seeded prompt 44") < html.index("seeded prompt 43")
        assert panel.newer_button.disabled and not panel.older_button.disabled
        assert panel.page_label.value == "page 1 of 3"
        panel.older_button.click()
        panel.older_button.click()
        assert "seeded prompt 4<" in panel.history_html.value
        assert "seeded prompt 5<" not in panel.history_html.value
        assert panel.older_button.disabled and panel.page_label.value == "page 3 of 3"
        panel.newer_button.click()
        assert "seeded prompt 24" in panel.history_html.value
        assert "22.5 credits" in panel.cost_label.value


def test_close_stops_following_the_session_and_closes_widgets(
    session: Session, make_panel: Callable[..., Panel]
) -> None:
    """After close, the panel is no session listener and its widgets are closed."""
    before = len(session._events.listeners)
    panel = make_panel(session)
    assert len(session._events.listeners) == before + 1
    button = panel.generate_button
    panel.close()
    assert len(session._events.listeners) == before
    assert button.comm is None and panel.comm is None
    assert panel.generate() == []


# -- the parts, over a fake session and a fake clock -----------------------------------------


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSession:
    """What the composer and the picker use of a session: its model and ``generate``."""

    def __init__(self) -> None:
        self.settings = SimpleNamespace(model="google/gempix2")
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.reuse = False
        self.is_sandbox = False

    def generate(self, prompt: str, **kwargs: Any) -> list[Any]:
        self.calls.append((prompt, kwargs))
        return [
            SimpleNamespace(
                local_id=f"{prompt}-{i}", reused=self.reuse, cost=Decimal("0.5"), prompt=prompt
            )
            for i in range(kwargs["n"])
        ]


def _context(clock: FakeClock | None = None) -> tuple[PanelContext, FakeSession]:
    fake = FakeSession()
    return PanelContext(fake, clock=clock or FakeClock()), fake  # type: ignore[arg-type]


def test_the_composer_ignores_a_second_generate_within_the_debounce() -> None:
    """A Generate within a second of the last one does not ask the session; one after does."""
    clock = FakeClock()
    ctx, fake = _context(clock)
    shown: list[Any] = []
    composer = Composer(ctx, references=lambda: ("https://example.com/r.png",), show=shown.append)
    composer.prompt_box.value = "first"
    composer.count_box.value = 2
    assert [t.local_id for t in composer.generate()] == ["first-0", "first-1"]
    assert fake.calls[0][1]["n"] == 2 and fake.calls[0][1]["force"] is False
    assert fake.calls[0][1]["images"] == ["https://example.com/r.png"]
    clock.now += DEBOUNCE_SECONDS / 2
    composer.prompt_box.value = "second"
    assert composer.generate() == []
    assert len(fake.calls) == 1
    clock.now += DEBOUNCE_SECONDS / 2
    assert len(composer.generate()) == 2
    assert [prompt for prompt, _ in fake.calls] == ["first", "second"]
    assert [t.local_id for t in composer.tasks] == ["second-1", "second-0", "first-1", "first-0"]
    assert [t.local_id for t in shown] == ["first-0", "first-1", "second-0", "second-1"]
    assert composer.paid_cost() == Decimal(2)
    assert composer.generate_button.disabled is False
    assert ctx.status_text == "Started 2 tasks."


def test_the_composer_refuses_an_empty_prompt_and_stops_when_prepare_fails() -> None:
    """No prompt, or a refused typed URL, sends nothing; the button is usable again at once."""
    ctx, fake = _context()
    answers = [False, True]
    composer = Composer(ctx, prepare=lambda: answers.pop(0))
    composer.prompt_box.value = "a prompt"
    assert composer.generate() == []
    composer.last_submit = -1e9
    composer.prompt_box.value = "   "
    assert composer.generate() == []
    assert fake.calls == [] and "prompt" in ctx.status_text.lower()
    assert composer.generate_button.description == "Generate"


def test_the_composer_counts_a_reused_request_as_not_paid() -> None:
    """A task the session hands back as reused is shown, said so, and not counted as paid."""
    ctx, fake = _context()
    fake.reuse = True
    composer = Composer(ctx)
    composer.prompt_box.value = "again"
    (task,) = composer.generate()
    assert composer.tasks == [task] and composer.paid_cost() == Decimal(0)
    assert "already running or done" in ctx.status_text and "Started" not in ctx.status_text


def test_retry_sends_the_same_request_again_forced() -> None:
    """Retry of a card started here sends its options again with force=True."""
    ctx, fake = _context()
    composer = Composer(ctx, references=lambda: ("https://example.com/r.png",))
    composer.prompt_box.value = "retry me"
    composer.aspect_box.value = "16:9"
    (task,) = composer.generate()
    record = SimpleNamespace(local_id=task.local_id)
    composer.retry(record)  # type: ignore[arg-type]
    prompt, kwargs = fake.calls[-1]
    assert prompt == "retry me" and kwargs["force"] is True and kwargs["n"] == 1
    assert kwargs["aspect_ratio"] == "16:9" and kwargs["images"] == ["https://example.com/r.png"]


def test_the_picker_keeps_at_most_four_references() -> None:
    """Four references are kept; a fifth URL, upload or earlier result is refused with a reason."""
    ctx, _ = _context()
    picker = ReferencePicker(ctx)
    for n in range(MAX_REFERENCE_IMAGES):
        assert picker.add_reference(f"https://example.com/{n}.png")
    assert picker.refs_label.value.startswith(f"References: {MAX_REFERENCE_IMAGES} of")
    assert not picker.add_reference("https://example.com/five.png")
    assert "At most 4" in ctx.status_text
    ctx.say("")
    assert not picker.add_reference(png_bytes(), label="five.png")
    assert "At most 4" in ctx.status_text
    ctx.say("")
    image = ImageRecord("ab" * 32, "/nowhere/x.png", "image/png", 8, 8, 10)
    assert not picker.add_image("ab" * 32, image, b"")
    assert "At most 4" in ctx.status_text
    picker.remove_reference(0)
    assert picker.labels == [f"https://example.com/{n}.png" for n in (1, 2, 3)]
    assert picker.add_reference(png_bytes(), label="red.png")
    assert picker.labels[-1] == "red.png" and len(picker.payloads()) == MAX_REFERENCE_IMAGES
    assert picker.payloads()[-1].startswith("data:image/")


def test_the_picker_refuses_the_same_image_twice_and_bad_urls() -> None:
    """The same URL twice is one reference; a script URL and a typed non-URL are refused."""
    ctx, _ = _context()
    picker = ReferencePicker(ctx)
    assert picker.add_reference("https://example.com/a.png")
    assert not picker.add_reference("https://example.com/a.png")
    assert "already" in ctx.status_text
    picker.url_box.value = "ftp://example.com/a.png"
    assert not picker.add_typed_url()
    assert "http://" in ctx.status_text and picker.url_box.value == "ftp://example.com/a.png"
    picker.url_box.value = ""
    assert picker.add_typed_url()  # nothing typed: nothing to refuse
    assert picker.labels == ["https://example.com/a.png"]


class FakeTask:
    """What a card reads of a task: its record, whether it is done, its elapsed time."""

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        self.local_id = record.local_id
        self.prompt = record.prompt
        self.elapsed = 1.0
        self.finished = False
        self.status = record.status
        self.reused = False

    def done(self) -> bool:
        return self.finished


def _record(status: TaskStatus = TaskStatus.IN_PROGRESS, **fields: Any) -> TaskRecord:
    fields.setdefault("local_id", "t1")
    return TaskRecord(
        status=status,
        prompt="a <b>card</b>",
        model="google/gempix2",
        fingerprint="f" * 16,
        created_at=1.0,
        updated_at=1.0,
        task_id="ta1",
        **fields,
    )


def test_cards_throttle_and_coalesce_progress_on_the_clock() -> None:
    """A change within CARD_INTERVAL waits for the flush; an ended task shows at once."""
    clock = FakeClock()
    ctx, _ = _context(clock)
    cards = Cards(ctx)
    task = FakeTask(_record())
    assert cards.add(task)  # type: ignore[arg-type]
    assert not cards.add(task)  # type: ignore[arg-type]
    card = cards.card_of("t1")
    assert card is not None and card.status.value == "generating"
    assert "&lt;b&gt;card&lt;/b&gt;" in card.prompt.value
    start = clock.now
    card.status.value = "marker"
    assert cards.follow(task, start + CARD_INTERVAL / 2)  # type: ignore[arg-type]
    assert cards.pending == 1 and card.status.value == "marker"
    assert cards.flush(start + CARD_INTERVAL / 2) is True
    assert cards.pending == 1 and card.status.value == "marker"
    assert cards.flush(start + CARD_INTERVAL) is True  # still running
    assert cards.pending == 0 and card.status.value == "generating"
    before = card.elapsed.value
    task.elapsed = 7.0
    cards.flush(start + CARD_INTERVAL + ELAPSED_SECONDS / 2)
    assert card.elapsed.value == before  # not due yet
    cards.flush(start + CARD_INTERVAL + ELAPSED_SECONDS)
    assert card.elapsed.value == format_duration(7.0) != before
    task.record = _record(TaskStatus.FAILED, error="no <script>")
    task.finished = True
    assert cards.follow(task, start + CARD_INTERVAL + 0.01)  # type: ignore[arg-type]
    assert card.status.value == "failed" and "&lt;script&gt;" in card.error.value
    assert card.retry.layout.display == "" and card.cancel.layout.display == "none"
    assert cards.flush(start + 10) is False  # nothing running, nothing pending
    assert not cards.follow(FakeTask(_record(local_id="other")), start)  # type: ignore[arg-type]


def test_the_ticker_runs_once_and_stops_when_there_is_nothing_to_do() -> None:
    """ensure() starts one coroutine; it stops when a step says done; a stopping engine is fine."""
    import asyncio

    lock = threading.RLock()
    started: list[Coroutine[Any, Any, None]] = []
    steps: list[float] = []
    clock = FakeClock()

    def step(now: float) -> bool:
        steps.append(now)
        return False

    ticker = Ticker(lock, started.append, step, active=lambda: True, clock=clock)
    ticker.ensure()
    ticker.ensure()
    assert len(started) == 1 and ticker.ticking
    asyncio.run(started[0])
    assert steps == [clock.now] and not ticker.ticking

    def stopping(coro: Coroutine[Any, Any, None]) -> None:
        coro.close()
        raise RuntimeError("the engine is stopping")

    refused = Ticker(lock, stopping, step, active=lambda: True)
    refused.ensure()
    assert not refused.ticking
    closed = Ticker(lock, started.append, step, active=lambda: False)
    closed.ensure()
    assert len(started) == 1


def test_the_notebook_slot_shows_the_images_and_updates_by_display_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Collected images make a contact sheet; display adds one slot; updates go to its id."""
    from nanobanana_jupyter._views.panel import notebook_slot

    shown: list[tuple[Any, Any]] = []
    updated: list[tuple[dict[str, Any], str]] = []
    monkeypatch.setattr(notebook_slot, "display", lambda d, **k: shown.append((d, k)))
    monkeypatch.setattr(
        notebook_slot, "update_display", lambda d, **k: updated.append((d, k["display_id"]))
    )
    clock = FakeClock()
    ctx, _ = _context(clock)
    slot = NotebookSlot(ctx, totals=lambda images: f"1 task, {images} images, 0.5 credits")
    slot.display_below({"text/plain": "the widget"})
    assert shown[0][0] == {"text/plain": "the widget"}
    slot_id = shown[1][1]["display_id"]
    assert slot_id and "no images yet" in shown[1][0]["text/plain"]
    thumb = tmp_path / "thumb.jpg"
    Image.new("RGB", (64, 48), (10, 200, 10)).save(thumb, format="JPEG")
    image = ImageRecord("cd" * 32, str(tmp_path / "full.png"), "image/png", 64, 48, 99, str(thumb))
    slot.collect(_record(TaskStatus.SUCCESS, images=(image,)))
    assert slot.dirty
    data, metadata = slot.bundle()
    assert data["image/jpeg"] and "&lt;b&gt;card&lt;/b&gt;" in data["text/html"]
    assert str(tmp_path / "full.png") in data["text/plain"]
    assert metadata["nanobanana"]["paths"] == [str(tmp_path / "full.png")]
    assert slot.flush(clock.now) is False
    assert [u[1] for u in updated] == [slot_id] and "image/jpeg" in updated[0][0]
    slot.collect(_record(TaskStatus.SUCCESS, images=(image,)))  # the same image: nothing new
    assert not slot.dirty and len(shown) == 2


def test_the_panels_widget_colours_name_properties_its_stylesheet_defines(panel: Panel) -> None:
    """ipywidgets' Color trait refuses ``color-mix``: a card's status label and a star take
    ``var(--name, hex)``, and the panel's one stylesheet defines each name as the display
    layer's theme-aware mix (which the browser test measures in JupyterLab Dark)."""
    import re

    import ipywidgets as widgets

    from nanobanana_jupyter._display import words
    from nanobanana_jupyter._views.panel import theme

    label = widgets.Label("x")
    for tone in words.TONES:
        value = theme.tone_text(tone)
        label.style.text_color = value  # accepted by the trait, unlike a color-mix
        (name,) = re.fullmatch(r"var\((--[a-z-]+), #[0-9a-f]{6}\)", value).groups()  # type: ignore[union-attr]
        assert f"{name}:{words.TONE_COLOURS[tone].text}" in theme.STYLESHEET
    star = re.fullmatch(r"var\((--[a-z-]+), (#[0-9a-f]{6})\)", theme.STAR_TEXT)
    assert star is not None and star.group(2) == words.STAR_COLOUR
    assert f"{star.group(1)}:{words.STAR_TEXT}" in theme.STYLESHEET
    with pytest.raises(Exception, match="color"):
        label.style.text_color = words.TONE_COLOURS["success"].text

    def walk(widget: Any) -> Iterator[Any]:
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)

    sheets = [w for w in walk(panel) if "nanobanana-stylesheet" in w._dom_classes]
    assert [w.value for w in sheets] == [theme.STYLESHEET]
    assert sheets[0].layout.display == "none"


def test_the_panel_colours_statuses_with_the_display_layers_one_table() -> None:
    """Every status gets the same tone in the panel as on the card, from one table."""
    from nanobanana_jupyter._display import words
    from nanobanana_jupyter._views.panel import showing

    for status in TaskStatus:
        assert showing.tone(status) == words.tone_of(status)
        assert showing.TONE_COLOURS[showing.tone(status)] == words.tone_text_colour(
            words.tone_of(status)
        )
