"""Session lifecycle in one process, rows L1/L2 and D4: closing or failing mid-work.

A kernel restart is, for the store, a session that stops and another that opens on the
same data directory. What the first held (leases) must not keep the second from working.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from nanobanana_jupyter import TaskStatus
from nanobanana_jupyter._record import TaskRecord
from nanobanana_jupyter._store import Store
from nanobanana_jupyter.sandbox import Fault, Sandbox
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
                    f"{'the closed session' if holder == first._owner else holder!r}"
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
