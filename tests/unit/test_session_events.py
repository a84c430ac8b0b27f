"""Change events leave the submit path, and each request is validated once, on the caller's thread.

Against an httpx MockTransport (no server, no clock): what reaches the transport is the proof.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nanobanana_jupyter import Session, Settings, UnknownModelWarning
from nanobanana_jupyter._core.events import TaskEvent
from tests.conftest import SENTINEL_KEY
from tests.helpers.mock_api import Accepting, mock_session


@pytest.fixture
def accepting() -> Accepting:
    return Accepting()


@pytest.fixture
def session(accepting: Accepting, tmp_path: Path) -> Iterator[Session]:
    with mock_session(tmp_path / "data", accepting) as s:
        yield s


def test_the_post_leaves_while_a_slow_subscriber_is_still_rendering(
    session: Session, accepting: Accepting
) -> None:
    """A subscriber blocked inside its first event does not hold the submit back."""
    release = threading.Event()
    entered = threading.Event()

    caller = threading.current_thread()

    def slow(event: TaskEvent) -> None:
        if threading.current_thread() is caller:
            return  # only a background delivery may block (the caller would just hang here)
        entered.set()
        release.wait(30)  # a view rendering a whole card, forever as far as the submit knows

    session.subscribe(slow)
    try:
        session.generate("a cat")
        assert entered.wait(10), "the subscriber was never called"
        assert accepting.submitted.wait(10), "the submit waited for a subscriber"
        assert len(accepting.submits) == 1
    finally:
        release.set()


def test_a_failing_subscriber_does_not_stop_later_events(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener raising on every event is logged; it and the others get every later event."""
    seen: list[str] = []
    failing_calls: list[str] = []
    got_id = threading.Event()

    def failing(event: TaskEvent) -> None:
        failing_calls.append(event.record.status.value)
        raise RuntimeError("a view's bug")

    def recording(event: TaskEvent) -> None:
        seen.append(event.record.status.value)
        if event.record.task_id is not None:
            got_id.set()

    session.subscribe(failing)
    session.subscribe(recording)
    with caplog.at_level(logging.ERROR, logger="nanobanana_jupyter"):
        session.generate("a dog")
        assert got_id.wait(10)
    assert seen[0] == "waiting_to_send"
    assert "pending" in seen
    assert len(failing_calls) == len(seen) >= 3  # waiting_to_send, submitting, pending
    assert any("listener" in r.getMessage() for r in caplog.records)


def test_events_are_delivered_in_order_and_before_a_wait_returns(
    session: Session,
) -> None:
    """Each subscriber sees a task's states in the order they were written; a wait that
    returns has every event up to the state it saw delivered already."""
    seen: list[tuple[str, str]] = []

    def recording(event: TaskEvent) -> None:
        seen.append((event.record.local_id, event.record.status.value))

    session.subscribe(recording)
    task = session.generate("a bird")
    with pytest.raises(TimeoutError):
        task.wait(0.3)  # still in progress on the server; the wait's end drains the bus
    states = [status for local_id, status in seen if local_id == task.local_id]
    assert states[:3] == ["waiting_to_send", "submitting", "pending"]
    assert states[-1] == task.status.value


def test_an_unknown_model_warns_once_from_the_callers_thread(
    session: Session, accepting: Accepting, caplog: pytest.LogCaptureFixture
) -> None:
    """generate(model=...) with an unknown id: one warning line, from this thread, none from
    the engine thread when the request is sent (pytest's "error" filter there would make it
    an error, logged by the engine instead of raised here)."""
    with caplog.at_level(logging.DEBUG, logger="nanobanana_jupyter"):
        with warnings.catch_warnings():
            warnings.simplefilter("default", UnknownModelWarning)
            task = session.generate("a fish", model="not/a-model")
        assert accepting.submitted.wait(10)
        with pytest.raises(TimeoutError):
            task.wait(0.3)  # the engine has sent it (and would have warned by now)
    unknown = [r for r in caplog.records if "unknown model" in r.getMessage()]
    assert len(unknown) == 1, [r.getMessage() for r in unknown]
    assert unknown[0].threadName == threading.current_thread().name
    assert accepting.submits[0]["model"] == "not/a-model"


def test_a_dropped_session_with_subscribers_is_collected_and_its_delivery_thread_ends(
    accepting: Accepting, tmp_path: Path
) -> None:
    """The delivery thread holds the session's bus only weakly: dropping the session (never
    closed) frees it, and the thread ends."""
    import gc
    import weakref

    settings = Settings.resolve(
        api_key=SENTINEL_KEY,
        base_url="https://api.example.test",
        data_dir=tmp_path / "dropped",
        environ={},
        colab=lambda name: None,
    )
    session = Session(settings=settings, transport=httpx.MockTransport(accepting))
    got_id = threading.Event()
    session.subscribe(lambda event: event.record.task_id is not None and got_id.set())
    session.generate("a dropped cat")
    assert got_id.wait(10)
    thread = session._events._queue.thread
    assert thread is not None and thread.is_alive()
    ref = weakref.ref(session)
    del session
    for _ in range(50):
        gc.collect()
        if ref() is None:
            break
        threading.Event().wait(0.1)
    assert ref() is None
    thread.join(10)
    assert not thread.is_alive()


def test_await_lets_the_callers_loop_run_while_a_slow_subscriber_catches_up(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`await task` waits for the subscribers off the caller's loop: another coroutine on that
    loop (here, the one that lets the slow subscriber go on) runs meanwhile."""
    import asyncio

    from nanobanana_jupyter import TaskStatus

    has_id, release = threading.Event(), threading.Event()

    def slow_on_the_end(event: TaskEvent) -> None:
        if event.record.task_id is not None:
            has_id.set()
        if event.record.status is TaskStatus.ABANDONED:
            release.wait(30)  # a view still drawing the final card

    session.subscribe(slow_on_the_end)
    task = session.generate("a hare")
    assert has_id.wait(10)
    assert task.cancel()  # ended locally; its event now waits on the slow subscriber
    order: list[str] = []
    draining = threading.Event()
    catch_up = session.events_delivered

    def noting_the_wait() -> None:
        draining.set()
        catch_up()

    monkeypatch.setattr(session, "events_delivered", noting_the_wait)

    async def main() -> None:
        async def let_go() -> None:
            for _ in range(3000):  # until the await is waiting for the subscribers
                if draining.is_set():
                    break
                await asyncio.sleep(0.01)
            order.append("released")
            release.set()

        other = asyncio.ensure_future(let_go())
        await task
        order.append("awaited")
        await other

    asyncio.run(main())
    assert order == ["released", "awaited"]
