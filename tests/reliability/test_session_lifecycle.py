"""Session lifecycle in one process, rows L1/L2 and D4: closing or failing mid-work.

A kernel restart is, for the store, a session that stops and another that opens on the
same data directory. What the first held (leases) must not keep the second from working.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import sqlite3
import threading
import time
import weakref
from pathlib import Path

import httpx
import pytest

from nanobanana_jupyter import Session, Task, TaskStatus
from nanobanana_jupyter._core.engine import Engine, get_engine
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan
from nanobanana_jupyter.sandbox._app import SUBMIT_PATH
from tests.reliability.conftest import ResourceBaseline, make_session, wait_until

pytestmark = pytest.mark.integration


def test_l2_close_while_images_download_leaves_no_lease_behind(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """L1/L2: a session closed mid-download leaves the task to the next one at once, not in 30 s."""
    sandbox.faults.add("cdn", Fault.HANG_AFTER_ACCEPT)
    with caplog.at_level(logging.ERROR, logger="nanobanana_jupyter"):
        with make_session(sandbox, tmp_path, settings={"read_timeout": 5.0}) as first:
            task = first.generate("closed mid-download")
            wait_until(lambda: sandbox.ledger.cdn_requests, 10, "the image download")
        started = time.monotonic()
        with make_session(sandbox, tmp_path) as second:
            resumed = second.resume()
            assert [t.local_id for t in resumed] == [task.local_id]
            try:
                resumed[0].wait(timeout=5)
            except TimeoutError:
                holder = second._store.lease_holder(task.local_id)
                pytest.fail(
                    f"still {resumed[0].status.value} 5 s after resume(); lease held by "
                    f"{'the closed session' if holder == first._res.owner else holder!r}"
                )
            assert resumed[0].status is TaskStatus.SUCCESS
        assert time.monotonic() - started < 5
    assert [r.getMessage() for r in caplog.records] == []
    assert len(sandbox.ledger.charges) == 1


def test_l2_closing_sessions_repeatedly_leaks_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    """L2: ten sessions opened, used and closed leave no fd or thread behind."""
    with make_session(sandbox, tmp_path / "warm", webhook=True) as warm:
        warm.generate("warm up").wait(timeout=15)
    baseline = ResourceBaseline()
    for i in range(10):
        with make_session(sandbox, tmp_path / f"s{i}", webhook=i % 2 == 0) as session:
            assert session.generate(f"round {i}").wait(timeout=15).status is TaskStatus.SUCCESS
    fds, threads = baseline.growth()
    assert fds <= 0 and threads <= 0, (fds, threads)


def test_d4_disk_full_when_saving_the_result_is_reported_and_resumable(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D4: a full disk when saving the result ends the wait with a clear error; resume() works."""
    original = Store.update
    refused: list[str] = []

    def update(self: Store, record: TaskRecord) -> TaskRecord:
        if record.status is TaskStatus.SUCCESS and not refused:
            refused.append(record.local_id)
            raise sqlite3.OperationalError("database or disk is full")
        return original(self, record)

    monkeypatch.setattr(Store, "update", update)
    with make_session(sandbox, tmp_path) as session:
        task = session.generate("disk full at the end")
        try:
            task.wait(timeout=5)
        except TimeoutError:
            pytest.fail(
                f"the task is still {task.status.value} 5 s after its result could not be "
                "saved: wait() without a timeout would block for ever, and nothing says why"
            )
        assert refused == [task.local_id]
        assert "full" in (task.error or "").lower(), task.error
        stored = session._store.get(task.local_id)
        assert stored is not None and stored.task_id == task.task_id
        assert stored.status.is_active
        (resumed,) = session.resume()
        assert resumed.wait(timeout=10).status is TaskStatus.SUCCESS
        assert all(Path(image.path).is_file() for image in resumed.images)
    assert len(sandbox.ledger.charges) == 1


# -- H4: reusing a request another writer has not sent yet ---------------------------------


class SlowSubmits(httpx.AsyncBaseTransport):
    """Loopback HTTP whose submits are held ``delay`` seconds first: rows sit in submitting."""

    def __init__(self, delay: float) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._delay = delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == SUBMIT_PATH:
            await asyncio.sleep(self._delay)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.parametrize("repeat", range(4))
@pytest.mark.parametrize("state", [TaskStatus.WAITING_TO_SEND, TaskStatus.SUBMITTING])
def test_h4_reusing_a_request_another_session_has_not_sent_follows_it_to_the_end(
    sandbox: Sandbox, tmp_path: Path, state: TaskStatus, repeat: int
) -> None:
    """H4: B reuses a row A has not sent yet; B's wait ends, soon after A's, with A's images."""
    rng = random.Random(f"{state.value}-{repeat}")
    prompts = [f"paced {i}" for i in range(8)]
    if state is TaskStatus.WAITING_TO_SEND:
        # A burst of 2-3, then one every 0.33-0.5 s: the last waits well over a second.
        a = make_session(sandbox, tmp_path, max_submits_per_second=rng.uniform(2.0, 3.0))
    else:
        a = make_session(sandbox, tmp_path, transport=SlowSubmits(rng.uniform(0.6, 1.0)))
        prompts = prompts[:1]
    with a, make_session(sandbox, tmp_path) as b:
        target = a.map(prompts)[-1]
        wait_until(
            lambda: (r := a._store.get(target.local_id)) is not None and r.status is state,
            10,
            f"A's row to be {state.value}",
        )
        time.sleep(rng.uniform(0.0, 0.1))
        reused = b.generate(target.prompt)
        assert reused.local_id == target.local_id
        assert reused.status.is_local, "A sent it already: the test lost its point"
        assert target.wait(timeout=20).status is TaskStatus.SUCCESS
        finished = time.monotonic()
        try:
            reused.wait(timeout=10)
        except TimeoutError:
            pytest.fail(
                f"B's handle is still {reused.status.value} 10 s after A's task succeeded: "
                "nothing follows a reused row that another writer had not sent"
            )
        # Followed promptly, not on the 10 s lease-maintenance tick.
        assert time.monotonic() - finished < 3.0
        assert reused.status is TaskStatus.SUCCESS
        assert reused.paths == target.paths and reused.task_id == target.task_id
    with Store(a._store.path) as store:
        sent = [r for r in store.search(limit=100) if r.task_id is not None]
    # Each of A's requests that left was charged once; close settles those still queued
    # behind A's submit cap as not_sent (the cap need not send them in map() order).
    assert sandbox.ledger.submits_received == len(sent) >= 1
    assert sandbox.ledger.duplicate_submits() == []


def test_h4_a_reused_row_whose_writer_stopped_unsent_ends_not_sent(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """H4: B follows a waiting row whose writing session closed first: it ends not_sent, at once."""
    import nanobanana_jupyter._core.resources as resources_module

    old = resources_module.SUBMIT_GRACE_ON_CLOSE
    resources_module.SUBMIT_GRACE_ON_CLOSE = 0.2
    try:
        a = make_session(sandbox, tmp_path, max_submits_per_second=0.1)
        with make_session(sandbox, tmp_path) as b:
            first, queued = a.map(["sent at once", "queued for ten seconds"])
            # Close sends nothing more (what has not left by then ends not_sent): wait for it.
            wait_until(lambda: first.task_id is not None, 10, "the first request to be sent")
            reused = b.generate("queued for ten seconds")
            assert reused.local_id == queued.local_id and reused.status.is_local
            a.close()
            assert reused.wait(timeout=5).status is TaskStatus.NOT_SENT
            assert "nothing was charged" in (reused.error or "")
    finally:
        resources_module.SUBMIT_GRACE_ON_CLOSE = old
    assert sandbox.ledger.submits_received == 1


# -- H14: a session dropped without close() ----------------------------------------------


def _lease_loops(engine: Engine) -> int:
    """How many sessions' lease-maintenance loops run on the engine now."""

    async def count() -> int:
        names = [getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks()]
        return sum("maintain" in name for name in names)

    return engine.run(count(), timeout=5)


def test_h14_sessions_dropped_without_close_are_freed(sandbox: Sandbox, tmp_path: Path) -> None:
    """H14: thirty sessions re-created in one variable are collected; fds and lease loops stay flat."""
    with make_session(sandbox, tmp_path, webhook=True) as warm:
        warm.generate("warm up").wait(timeout=15)
    engine = get_engine()
    loops = _lease_loops(engine)
    baseline = ResourceBaseline()
    refs: list[weakref.ref[Session]] = []
    for i in range(30):
        # A cell `s = Session(...)` run again; some with a webhook receiver.
        s = make_session(sandbox, tmp_path, webhook=i % 3 == 0)
        assert s.generate(f"cell run {i}").wait(timeout=15).status is TaskStatus.SUCCESS
        refs.append(weakref.ref(s))
    del s
    wait_until(
        lambda: gc.collect() >= 0 and all(r() is None for r in refs),
        10,
        "the dropped sessions to be collected",
    )
    wait_until(lambda: _lease_loops(engine) <= loops, 10, "their lease loops to stop")
    fds, threads = baseline.growth()
    assert fds <= 0 and threads <= 0, (fds, threads)


def test_h14_a_dropped_session_records_its_submits_and_leaves_its_tasks_resumable(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """H14: a session dropped mid-map keeps going until every submit is recorded, then frees
    itself: its tasks stay in the store with their ids, leases released, and resume() ends them."""
    sandbox.plan(TaskPlan(duration=300), count=6)  # 3 s each: still running when dropped
    s = make_session(sandbox, tmp_path, max_submits_per_second=4.0)
    local_ids = [t.local_id for t in s.map([f"dropped {i}" for i in range(6)])]
    ref = weakref.ref(s)
    del s
    wait_until(lambda: gc.collect() >= 0 and ref() is None, 15, "the dropped session to go")
    with make_session(sandbox, tmp_path) as again:
        records = [again._store.get(i) for i in local_ids]
        assert all(r is not None and r.task_id is not None for r in records), records
        assert all(r.status.is_active or r.status is TaskStatus.SUCCESS for r in records)  # type: ignore[union-attr]
        # The finalizer hands the closing to the engine: the leases go just after.
        wait_until(
            lambda: all(again._store.lease_holder(i) is None for i in local_ids),
            5,
            "the dropped session's leases to be released",
        )
        for task in again.resume():
            assert task.wait(timeout=20).status is TaskStatus.SUCCESS
        assert {again._store.get(i).status for i in local_ids} == {TaskStatus.SUCCESS}  # type: ignore[union-attr]
    assert sandbox.ledger.submits_received == 6 and len(sandbox.ledger.charges) == 6


# -- H15: waiting on a task whose session is closed --------------------------------------


async def _awaited(task: Task) -> Task:
    return await asyncio.wait_for(task.__await__(), 5)  # type: ignore[arg-type]


def _running_task(sandbox: Sandbox, session: Session) -> Task:
    sandbox.plan(TaskPlan(duration=300))  # 3 s: still running when the session closes
    task = session.generate("outlives its session")
    wait_until(lambda: task.task_id is not None, 10, "the submit")
    return task


@pytest.mark.parametrize("how", ["wait", "result", "wait_all", "await"])
def test_h15_waiting_on_a_task_of_a_closed_session_ends_at_once(
    sandbox: Sandbox, tmp_path: Path, how: str
) -> None:
    """H15: wait(), result(), wait_all() and await on a closed session's task end at once, saying how
    to resume; the task stays resumable."""
    session = make_session(sandbox, tmp_path)
    task = _running_task(sandbox, session)
    session.close()
    calls = {
        "wait": lambda: task.wait(timeout=5),
        "result": lambda: task.result(timeout=5),
        "wait_all": lambda: session.wait_all(timeout=5),
        "await": lambda: asyncio.run(_awaited(task)),
    }
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="session is closed") as info:
        calls[how]()
    assert time.monotonic() - started < 1.0
    assert "resume()" in str(info.value) and task.id in str(info.value)
    assert not task.done() and task.status.is_active
    with make_session(sandbox, tmp_path) as again:
        (resumed,) = again.resume()
        assert resumed.local_id == task.local_id
        assert resumed.wait(timeout=20).status is TaskStatus.SUCCESS
    assert len(sandbox.ledger.charges) == 1


@pytest.mark.parametrize("repeat", range(3))
@pytest.mark.parametrize("how", ["wait", "await"])
def test_h15_a_wait_in_progress_ends_when_another_thread_closes_the_session(
    sandbox: Sandbox, tmp_path: Path, how: str, repeat: int
) -> None:
    """H15: a wait blocked in one thread ends, saying the session closed, when another closes it."""
    session = make_session(sandbox, tmp_path)
    task = _running_task(sandbox, session)
    outcome: list[BaseException | Task] = []

    def waiter() -> None:
        try:
            outcome.append(task.wait(timeout=10) if how == "wait" else asyncio.run(_awaited(task)))
        except BaseException as exc:  # the test inspects what ended the wait
            outcome.append(exc)

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    time.sleep(random.Random(repeat).uniform(0.05, 0.3))
    session.close()
    closed = time.monotonic()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - closed < 1.5
    (ended,) = outcome
    assert isinstance(ended, RuntimeError) and "session is closed" in str(ended), ended


def test_a_reused_task_whose_resume_fails_ends_resumable_instead_of_waiting_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every wait ends: re-running a timed-out request resumes it in the background; when that
    resume fails (the store refuses the lease), the handle ends timed_out (resumable) and says
    so, instead of staying pending with nothing polling it."""
    with Sandbox(time_scale=0.05, duration=600.0, max_side=32) as sb:
        with make_session(sb, tmp_path, settings={"deadline": 0.5}) as first:
            task = first.generate("a reuse whose resume fails").wait(timeout=30)
            assert task.status is TaskStatus.TIMED_OUT
        with make_session(sb, tmp_path) as second:

            def refuse(*args: object, **kwargs: object) -> bool:
                raise sqlite3.OperationalError("database is locked")

            monkeypatch.setattr(Store, "acquire_lease", refuse)
            again = second.generate("a reuse whose resume fails")
            assert again.local_id == task.local_id  # reused, not paid again
            again.wait(timeout=10)
            assert again.status is TaskStatus.TIMED_OUT
            assert "could not be resumed" in (again.error or "")
        assert sb.ledger.submits_received == 1
