"""The display layer's shared pieces: one tone table, one previews function, one progress
model, one ticker, live slots with their throttle. Fake clocks only; no server, no kernel."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import logging
import re
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nanobanana_jupyter._core.events import TaskEvent
from nanobanana_jupyter._core.task import Task, TaskState
from nanobanana_jupyter._display import present
from nanobanana_jupyter._display.bundles import batch_bundle, record_bundle
from nanobanana_jupyter._display.html import error_html, task_html
from nanobanana_jupyter._display.live import MIN_UPDATE_INTERVAL, LiveOutputs, Ticker
from nanobanana_jupyter._display.previews import (
    THUMB_SIDE,
    contact_sheet,
    previews_for,
    read_bytes,
    reference_thumb,
    tile,
)
from nanobanana_jupyter._display.progress import Progress, TerminalProgress
from nanobanana_jupyter._display.words import (
    TONE_COLOURS,
    TONES,
    on_theme,
    tone_colour,
    tone_of,
    tone_text_colour,
)
from nanobanana_jupyter._store.images import ImageStore
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.models import TaskStatus
from tests.unit.test_render import make_record


def png_bytes(width: int = 1024, height: int = 768) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 160, 40)).save(out, format="PNG")
    return out.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


@pytest.fixture
def stored(tmp_path: Path) -> TaskRecord:
    """A successful task whose one image is in an image store (file and thumbnail)."""
    image = ImageStore(tmp_path / "images").put(png_bytes())
    return make_record(TaskStatus.SUCCESS, paths=()).replace(images=(image,))


@pytest.fixture
def default_embedding() -> Iterator[None]:
    before = present.embedding()
    yield
    present.configure(embed=before[0], side=before[1])


class FakeTask:
    def __init__(self, status: TaskStatus) -> None:
        self.status = status

    def done(self) -> bool:
        return self.status.is_terminal


# -- words: one table of tones ---------------------------------------------------------------


@pytest.mark.parametrize("status", list(TaskStatus))
def test_the_status_tone_table_is_the_one_the_card_uses(status: TaskStatus) -> None:
    """The card's badge has exactly the colours the tone table gives the status's tone."""
    colours = TONE_COLOURS[tone_of(status)]
    markup = task_html(make_record(status))
    (badge,) = re.findall(r'<strong class="nanobanana-status" style="([^"]*)"', markup)
    assert f"background:{colours.background}" in badge
    assert f"color:{colours.foreground}" in badge
    assert tone_colour(tone_of(status)) == colours.background


def test_every_tone_has_badge_and_text_colours() -> None:
    """One entry per tone; text is the badge's hue mixed with the theme's own text colour
    (legible on light and dark themes), but amber text starts from a darker amber than the
    amber badge (which carries dark text)."""
    assert set(TONE_COLOURS) == set(TONES)
    for tone, colours in TONE_COLOURS.items():
        assert tone_text_colour(tone) == colours.text == on_theme(colours.hue)
        assert colours.hue == colours.background or tone == "warning"
        assert colours.text == f"color-mix(in srgb, {colours.hue} 60%, currentColor)"
    assert TONE_COLOURS["warning"].hue != tone_colour("warning")


def test_the_error_box_uses_the_failed_tone() -> None:
    assert tone_colour("failed") in error_html("no credits left")
    assert tone_colour("no such tone") == TONE_COLOURS["neutral"].background


# -- previews: one function for every view -----------------------------------------------------


def test_previews_for_each_embed_mode_and_size(stored: TaskRecord) -> None:
    """none: nothing; full: the file itself; thumb at the store's size: the thumbnail; thumb at
    another size: a preview made at that long side. Each with its size."""
    (image,) = stored.images
    assert previews_for(stored, embed="none", side=512) == []
    (full,) = previews_for(stored, embed="full", side=256)
    assert full.data == Path(image.path).read_bytes() and full.media_type == "image/png"
    assert (full.width, full.height) == (1024, 768)
    (thumb,) = previews_for(stored, embed="thumb", side=THUMB_SIDE)
    assert image.thumb_path is not None
    assert thumb.data == Path(image.thumb_path).read_bytes()
    assert (thumb.width, thumb.height) == (512, 384)
    (small,) = previews_for(stored, embed="thumb", side=256)
    assert max(size_of(small.data)) == 256 and (small.width, small.height) == (256, 192)


def test_previews_leave_out_images_that_are_gone(tmp_path: Path) -> None:
    record = make_record(TaskStatus.SUCCESS, paths=(str(tmp_path / "gone.png"),))
    assert previews_for(record, embed="full", side=512) == []
    assert previews_for(record, embed="thumb", side=300) == []


def test_cell_result_shows_the_configured_preview(
    stored: TaskRecord, default_embedding: None
) -> None:
    """A task shown as a cell's result embeds what the magic's cards embed: the configured
    mode and size, or the choice of the task's own card."""
    task = Task(None, TaskState(stored))  # type: ignore[arg-type]
    present.configure(embed="full", side=256)
    data, _ = present.mimebundle(task)  # type: ignore[misc]
    card, _ = record_bundle(stored, embed="full", side=256)
    assert data["image/png"] == card["image/png"]
    assert data["text/html"] == card["text/html"]
    present.configure(embed="none", side=256)
    data, _ = present.mimebundle(task)  # type: ignore[misc]
    assert "image/png" not in data and "image/jpeg" not in data
    present.remember(task, embed="thumb", side=128)
    data, metadata = present.mimebundle(task)  # type: ignore[misc]
    assert max(size_of(base64.b64decode(data["image/jpeg"]))) == 128
    assert metadata["image/jpeg"] == {"width": 128, "height": 96}


def test_configure_refuses_what_no_view_shows(default_embedding: None) -> None:
    with pytest.raises(ValueError, match="embed"):
        present.configure(embed="preview-ish", side=256)
    with pytest.raises(ValueError, match="size"):
        present.configure(embed="thumb", side=0)


def test_panel_helpers_tile_contact_sheet_and_reference_thumb(stored: TaskRecord) -> None:
    (image,) = stored.images
    assert image.thumb_path is not None
    assert read_bytes(image.thumb_path) == Path(image.thumb_path).read_bytes()
    assert read_bytes(None) is None and read_bytes(image.thumb_path + ".gone") is None
    one = tile(image.thumb_path)
    assert one is not None and max(size_of(one)) == 192
    assert tile(image.thumb_path + ".gone") is None
    sheet = contact_sheet([one] * 5 + [b"not an image"], columns=4)
    assert sheet is not None and size_of(sheet) == (4 * 198 + 6, 2 * 198 + 6)
    assert contact_sheet([]) is None and contact_sheet([b"junk"]) is None
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(300, 200)).decode()
    small = reference_thumb(uri)
    assert small is not None and max(size_of(small)) == 128
    assert reference_thumb("https://example.test/a.png") is None
    assert reference_thumb("data:image/png;base64,!!!") is None


# -- progress: one model, two views ------------------------------------------------------------


def test_progress_counts_once_for_the_batch_line_and_the_terminal() -> None:
    tasks = [
        FakeTask(TaskStatus.SUCCESS),
        FakeTask(TaskStatus.FAILED),
        FakeTask(TaskStatus.IN_PROGRESS),
        FakeTask(TaskStatus.PENDING),
    ]
    progress = Progress.of(tasks, elapsed=3.25)
    assert (progress.done, progress.failed, progress.total, progress.percent) == (2, 1, 4, 50)
    assert progress.summary() == "2/4 done · 1 without images · 1 generating, 1 queued"
    assert progress.bar() == "[" + "#" * 10 + "." * 10 + "]"
    assert batch_bundle(tasks) == {
        "text/plain": Progress.of(tasks).text(),
        "text/html": Progress.of(tasks).html(),
    }
    assert progress.terminal_line() == (
        "[##########..........] 2/4 failed, in_progress, pending, success   3.2 s"
    )
    assert Progress.of([]).bar() == "[" + "#" * 20 + "]"


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_terminal_progress_rewrites_a_terminal_and_logs_changes_elsewhere() -> None:
    running = [FakeTask(TaskStatus.IN_PROGRESS)]
    ended = [FakeTask(TaskStatus.SUCCESS)]
    pipe = Stream(tty=False)
    shown = TerminalProgress(pipe)
    for tasks, elapsed in ((running, 0.1), (running, 0.5), (ended, 1.0)):
        shown.show(Progress.of(tasks, elapsed=elapsed))
    shown.end()
    assert pipe.getvalue().splitlines() == [
        "[....................] 0/1 in_progress   0.1 s",
        "[####################] 1/1 success   1.0 s",
    ]
    tty = Stream(tty=True)
    shown = TerminalProgress(tty)
    shown.show(Progress.of(running, elapsed=0.1))
    shown.show(Progress.of(ended, elapsed=1.0))
    shown.end()
    assert tty.getvalue().count("\r") == 2 and tty.getvalue().endswith(" s    \n")


# -- the ticker, on a fake clock ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class Runner:
    """Stands in for ``session.run_in_background``: keeps the coroutines to run by hand."""

    def __init__(self) -> None:
        self.started: list[Coroutine[Any, Any, None]] = []

    def __call__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.started.append(coro)

    def run_all(self) -> None:
        while self.started:
            asyncio.run(self.started.pop(0))


def test_ticker_calls_once_per_interval_until_the_callback_is_done() -> None:
    clock, runner, calls = Clock(), Runner(), []

    def callback(now: float) -> bool:
        calls.append(now)
        return len(calls) < 3

    ticker = Ticker(callback, interval=0.5, run=runner, clock=clock, sleep=clock.sleep)
    assert ticker.start() is True
    assert ticker.start() is False  # already on: no second loop
    assert len(runner.started) == 1 and ticker.running
    runner.run_all()
    assert calls == [100.5, 101.0, 101.5]
    assert not ticker.running
    assert ticker.start() is True  # ended: a later start begins again
    ticker.stop()
    runner.run_all()
    assert len(calls) == 3  # a stopped loop never calls again


def test_a_start_while_ticking_keeps_the_loop_for_another_round() -> None:
    clock, runner, calls = Clock(), Runner(), []
    ticker: Ticker

    def callback(now: float) -> bool:
        calls.append(now)
        if len(calls) == 1:
            ticker.start()  # a new slot opened while the round ran
        return False

    ticker = Ticker(callback, interval=1.0, run=runner, clock=clock, sleep=clock.sleep)
    ticker.start()
    runner.run_all()
    assert calls == [101.0, 102.0]


def test_a_dropped_ticker_ends_its_loop_and_keeps_nothing_alive() -> None:
    clock, runner, calls = Clock(), Runner(), []
    ticker = Ticker(calls.append, interval=1.0, run=runner, clock=clock, sleep=clock.sleep)
    ticker.start()
    del ticker
    gc.collect()
    runner.run_all()
    assert calls == []


def test_a_failing_callback_is_logged_and_ends_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    clock, runner = Clock(), Runner()

    def callback(now: float) -> bool:
        raise ValueError("broken view")

    ticker = Ticker(callback, interval=1.0, run=runner, clock=clock, sleep=clock.sleep)
    ticker.start()
    with caplog.at_level(logging.ERROR, logger="nanobanana_jupyter"):
        runner.run_all()
    assert "could not refresh" in caplog.text and not ticker.running


def test_a_ticker_on_a_stopping_engine_stays_off() -> None:
    def refuse(coro: Coroutine[Any, Any, None]) -> None:
        coro.close()
        raise RuntimeError("the engine is stopping")

    ticker = Ticker(lambda now: True, interval=1.0, run=refuse)
    assert ticker.start() is False and not ticker.running


# -- live slots: throttle and refresh on a fake clock -------------------------------------------


class Shown:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, data: Any, *, display_id: str, metadata: Any = None, **_: Any) -> None:
        self.calls.append((display_id, (metadata or {}).get("nanobanana", {}).get("status")))


class Session:
    """The public methods live outputs use."""

    def __init__(self, runner: Runner) -> None:
        self.handles: dict[str, Task] = {}
        self.listeners: list[Any] = []
        self.hooks: list[Any] = []
        self.run_in_background = runner

    def subscribe(self, listener: Any) -> Any:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def add_wait_hook(self, hook: Any) -> Any:
        self.hooks.append(hook)
        return lambda: self.hooks.remove(hook)

    def task_for(self, local_id: str) -> Task | None:
        return self.handles.get(local_id)


def five_seconds_in(clock: Clock) -> Any:
    """A wall clock five seconds after ``make_record``'s tasks were created when ``clock``
    starts, moving with it (a running card's elapsed time)."""
    return lambda: make_record().created_at + 5.0 + (clock.now - 100.0)


def test_live_slot_throttle_and_ticker_refresh_on_a_fake_clock() -> None:
    """Within the minimum interval a change of the same status is not sent; a new status is;
    the ticker refreshes the running card once the interval has passed."""
    clock, runner, shown = Clock(), Runner(), Shown()
    session = Session(runner)
    record = make_record(TaskStatus.IN_PROGRESS, paths=(), updated_at=10.0)
    task = Task(session, TaskState(record))  # type: ignore[arg-type]
    session.handles[record.local_id] = task
    live = LiveOutputs(
        session,
        show=shown,
        update=shown,
        clock=clock,
        wall=five_seconds_in(clock),
        tick_seconds=0.001,
    )  # type: ignore[arg-type]
    slot = live.open(task, embed="none", side=64)
    assert shown.calls == [(slot, "in_progress")] and live.ticker.running
    same = record.replace(updated_at=11.0, polls=4)
    for listener in session.listeners:
        listener(TaskEvent(task, same))
    assert len(shown.calls) == 1  # throttled
    clock.now += MIN_UPDATE_INTERVAL
    for listener in session.listeners:
        listener(TaskEvent(task, same))
    assert len(shown.calls) == 2
    assert live.ticker.tick() is True  # running: refreshed, the loop goes on
    assert len(shown.calls) == 2  # but not yet: within the interval
    clock.now += 1.0
    assert live.ticker.tick() is True and len(shown.calls) == 3
    live.close()
    assert session.listeners == [] and session.hooks == [] and not live.ticker.running
    runner.run_all()  # the stopped loop ends at its next wake
    assert len(shown.calls) == 3


def test_the_ticker_skips_a_round_while_an_event_is_being_shown() -> None:
    """The ticker runs on the engine loop: while the delivery thread holds the live outputs'
    lock (a slow view showing an event), its round returns at once and sends nothing."""
    clock, runner, shown = Clock(), Runner(), Shown()
    session = Session(runner)
    record = make_record(TaskStatus.IN_PROGRESS, paths=(), updated_at=10.0)
    task = Task(session, TaskState(record))  # type: ignore[arg-type]
    session.handles[record.local_id] = task
    live = LiveOutputs(
        session,
        show=shown,
        update=shown,
        clock=clock,
        wall=five_seconds_in(clock),
        tick_seconds=0.001,
    )  # type: ignore[arg-type]
    live.open(task, embed="none", side=64)
    clock.now += 1.0
    showing = threading.Event()
    let_go = threading.Event()

    def slow_show() -> None:
        with live._lock:  # what on_change holds while it renders and sends
            showing.set()
            let_go.wait(30)

    view = threading.Thread(target=slow_show)
    view.start()
    assert showing.wait(10)
    rounds: list[bool] = []
    ticker = threading.Thread(target=lambda: rounds.append(live.ticker.tick()))
    ticker.start()
    ticker.join(10)
    alive = ticker.is_alive()
    let_go.set()
    view.join(10)
    ticker.join(10)
    assert not alive and rounds == [True] and len(shown.calls) == 1  # skipped, goes on
    assert live.ticker.tick() is True and len(shown.calls) == 2  # the next round refreshes
    live.close()
    runner.run_all()  # the stopped loop ends at its next wake


# -- the command waits on its tasks -------------------------------------------------------------


class SlowTask(FakeTask):
    """Ends after a few waits; a wait never blocks (it counts the slice it was given)."""

    def __init__(self, waits: int) -> None:
        super().__init__(TaskStatus.IN_PROGRESS)
        self.left = waits
        self.slices: list[float] = []

    def wait(self, timeout: float | None = None) -> SlowTask:
        assert timeout is not None and 0 < timeout <= 0.2
        self.slices.append(timeout)
        self.left -= 1
        if self.left <= 0:
            self.status = TaskStatus.SUCCESS
            return self
        raise TimeoutError("still running")


def test_the_command_waits_on_its_tasks_and_never_sleeps(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The progress line is redrawn between slices of a wait on the first running task."""
    import time

    from nanobanana_jupyter._views import cli

    def no_sleep(seconds: float) -> None:
        raise AssertionError("the command sleeps instead of waiting on its tasks")

    monkeypatch.setattr(time, "sleep", no_sleep)
    first, second = SlowTask(3), SlowTask(1)
    cli._wait_showing([first, second], None)  # type: ignore[list-item]
    assert first.done() and second.done()
    assert len(first.slices) == 3 and len(second.slices) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[....................] 0/2 in_progress")
    assert lines[-1].startswith("[####################] 2/2 success")
    late = SlowTask(3)
    cli._wait_showing([late], 0.0)  # type: ignore[list-item]
    assert late.slices == [] and not late.done()  # no time left: shown once, not waited on


def test_a_running_ticker_does_not_keep_a_dropped_session_alive() -> None:
    """Live outputs with a running card, their ticker's loop started: once the view and the
    session are dropped, both are collected and the loop ends without a call."""
    import weakref

    runner, shown = Runner(), Shown()
    session = Session(runner)
    record = make_record(TaskStatus.IN_PROGRESS, paths=(), updated_at=10.0)
    task = Task(session, TaskState(record))  # type: ignore[arg-type]
    session.handles[record.local_id] = task
    live = LiveOutputs(session, show=shown, update=shown, tick_seconds=0.001)  # type: ignore[arg-type]
    live.open(task, embed="none", side=64)
    assert len(runner.started) == 1
    gone = weakref.ref(session)
    del session, task, live
    gc.collect()
    assert gone() is None
    runner.run_all()
    assert len(shown.calls) == 1  # only the card's first state


def test_a_batch_line_is_not_retired_on_a_state_it_did_not_send() -> None:
    """The flush draws a batch line; its last task ends while it draws (the engine thread):
    the line is kept until a flush has sent it with every task ended."""
    import nanobanana_jupyter._display.live as live_module

    clock, runner, shown = Clock(), Runner(), Shown()
    session = Session(runner)
    tasks = []
    for i in range(2):
        record = make_record(TaskStatus.IN_PROGRESS, paths=(), local_id=f"loc-{i}")
        tasks.append(Task(session, TaskState(record)))  # type: ignore[arg-type]
        session.handles[record.local_id] = tasks[-1]
    live = LiveOutputs(session, show=shown, update=shown, clock=clock, wall=five_seconds_in(clock))  # type: ignore[arg-type]
    texts: list[str] = []
    real_bundle = live_module.batch_bundle

    def drawn_while_the_last_ends(batch: Any) -> Any:
        bundle = real_bundle(batch)
        texts.append(str(bundle["text/plain"]))
        last = tasks[1]
        if not last.done():
            last._state.update(last.record.replace(status=TaskStatus.SUCCESS, updated_at=2e9))
        return bundle

    live.open_batch(tasks)
    tasks[0]._state.update(tasks[0].record.replace(status=TaskStatus.SUCCESS, updated_at=2e9))
    live_module.batch_bundle = drawn_while_the_last_ends  # type: ignore[assignment]
    try:
        live.flush()
        assert live.batches == 1  # what it sent said 1 of 2: kept
        live.flush()
    finally:
        live_module.batch_bundle = real_bundle  # type: ignore[assignment]
    assert live.batches == 0 and len(texts) == 2 and texts[0] != texts[1]
    live.close()
    runner.run_all()
