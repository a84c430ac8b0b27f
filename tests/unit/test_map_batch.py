"""``session.map`` records a batch's intents in one durable transaction, before any request
leaves (issue 18).

Against an httpx MockTransport (no server, no clock): the write transactions the caller's
thread opens are counted on the store's connection; each submit checks, through a second
connection to the file, that its own intent was already committed; a process that dies
right after the transaction leaves every intent for the next session to find.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nanobanana_jupyter import Session, Settings, TaskStatus, ValidationError
from nanobanana_jupyter._store.store import Store
from tests.conftest import SENTINEL_KEY
from tests.helpers.mock_api import Accepting, mock_session

ROOT = Path(__file__).resolve().parents[2]


class DurableFirst(Accepting):
    """Accepts every submit, after checking through its own connection to the history file
    that the submit's intent (its idempotency key is the local id) is committed there."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db
        self.not_durable: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            local_id = request.headers.get("idempotency-key", "")
            conn = sqlite3.connect(self.db, timeout=10)
            try:
                row = conn.execute(
                    "SELECT status FROM tasks WHERE local_id = ?", (local_id,)
                ).fetchone()
            finally:
                conn.close()
            if row is None:
                self.not_durable.append(local_id)
        return super().__call__(request)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    with mock_session(tmp_path / "data") as s:
        yield s


def write_transactions(store: Store) -> tuple[list[str], object]:
    """Record the write transactions the calling thread opens on ``store``'s connection."""
    seen: list[str] = []
    caller = threading.get_ident()

    def trace(sql: str) -> None:
        if threading.get_ident() == caller and sql.strip().upper().startswith("BEGIN"):
            seen.append(sql)

    conn = store._db()
    conn.set_trace_callback(trace)
    return seen, conn


@pytest.mark.parametrize("count", [1, 7, 600])
def test_map_writes_every_intent_in_one_transaction(session: Session, count: int) -> None:
    """However many prompts, the caller's thread opens one write transaction: the intents,
    all durable on return (counted on the store's own connection, not timed)."""
    seen, conn = write_transactions(session._store)
    try:
        tasks = session.map([f"batch prompt {i}" for i in range(count)])
    finally:
        conn.set_trace_callback(None)  # type: ignore[attr-defined]
    assert len(seen) == 1, seen
    assert len({t.local_id for t in tasks}) == count
    stored = [session._store.get(t.local_id) for t in tasks]
    assert all(r is not None for r in stored)
    assert [r.prompt for r in stored if r is not None] == [
        f"batch prompt {i}" for i in range(count)
    ]


def test_no_request_of_a_batch_leaves_before_its_intent_is_committed(tmp_path: Path) -> None:
    """Each submit finds its own row already committed, read through another connection."""
    api = DurableFirst(tmp_path / "unknown yet")
    with Session(
        settings=_settings(tmp_path / "data"),
        transport=httpx.MockTransport(api),
        max_submits_per_second=1000.0,
    ) as session:
        api.db = session._store.path
        tasks = session.map([f"durable {i}" for i in range(40)], concurrency=8)
        for task in tasks:
            has_id = threading.Event()
            unsubscribe = session.subscribe(
                lambda e, t=task, h=has_id: h.set() if e.task is t and e.record.task_id else None
            )
            if task.task_id is None:
                assert has_id.wait(20), f"{task.local_id} was never sent"
            unsubscribe()
    assert len(api.submits) == 40
    assert api.not_durable == []


def test_repeats_within_a_batch_are_sent_once_and_handed_back(session: Session) -> None:
    """As before the batch write: a prompt twice in one map() is one task, sent once."""
    tasks = session.map(["a fox", "a hare", "a fox", "a fox"])
    assert tasks[0].local_id == tasks[2].local_id == tasks[3].local_id
    assert tasks[1].local_id != tasks[0].local_id
    assert tasks[2].reused
    assert len(session.history) == 2
    record = session._store.get(tasks[0].local_id)
    assert record is not None and record.reuses == 2


def test_a_batch_reuses_earlier_tasks_and_writes_only_the_new(session: Session) -> None:
    """A second map() with one new prompt writes one row; the rest are handed back."""
    first = session.map(["one", "two"])
    seen, conn = write_transactions(session._store)
    try:
        again = session.map(["one", "two", "three"])
    finally:
        conn.set_trace_callback(None)  # type: ignore[attr-defined]
    assert [t.local_id for t in again[:2]] == [t.local_id for t in first]
    assert all(t.reused for t in again[:2]) and not again[2].reused
    assert len(session.history) == 3
    # The intent of "three", and one count of reuse each for "one" and "two".
    assert len(seen) == 3


def test_force_sends_every_prompt_of_a_batch_even_repeats(session: Session) -> None:
    tasks = session.map(["same", "same"], force=True)
    assert tasks[0].local_id != tasks[1].local_id
    assert len(session.history) == 2


def _settings(data_dir: Path) -> Settings:
    return Settings.resolve(
        api_key=SENTINEL_KEY,
        base_url="https://api.example.test",
        data_dir=data_dir,
        environ={},
        colab=lambda name: None,
    )


CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import httpx
    from nanobanana_jupyter import Session, Settings
    from nanobanana_jupyter._core import submitter
    from tests.conftest import SENTINEL_KEY

    def die(self, sends, slots):
        # The transaction is committed; no request has left: the process dies here.
        print("DYING", len(sends), flush=True)
        os._exit(17)

    submitter.Submitter._send_all = die

    def refuse(request):
        print("SENT", request.url, flush=True)
        os._exit(18)

    settings = Settings.resolve(
        api_key=SENTINEL_KEY,
        base_url="https://api.example.test",
        data_dir=Path(sys.argv[1]),
        environ={},
        colab=lambda name: None,
    )
    session = Session(settings=settings, transport=httpx.MockTransport(refuse))
    session.map([f"crash {i}" for i in range(int(sys.argv[2]))])
    print("NOT REACHED", flush=True)
    """
)


@pytest.mark.parametrize("count", [1, 300])
def test_a_process_that_dies_after_the_batch_write_leaves_every_intent_found(
    tmp_path: Path, count: int
) -> None:
    """The process dies after the batch's transaction, before any send: the next session
    finds every intent, settled not_sent (nothing left, nothing charged), and the same
    map() sends each once."""
    data_dir = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(data_dir), str(count)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 17, proc.stdout + proc.stderr
    assert f"DYING {count}" in proc.stdout and "SENT" not in proc.stdout
    api = Accepting()
    with Session(settings=_settings(data_dir), transport=httpx.MockTransport(api)) as session:
        conn = sqlite3.connect(session._store.path)
        try:
            rows = conn.execute("SELECT status, prompt, error FROM tasks").fetchall()
        finally:
            conn.close()
        assert len(rows) == count
        assert {status for status, _, _ in rows} == {TaskStatus.NOT_SENT.value}
        assert {prompt for _, prompt, _ in rows} == {f"crash {i}" for i in range(count)}
        assert all("nothing was charged" in (error or "") for _, _, error in rows)
        again = session.map([f"crash {i}" for i in range(count)])
        assert not any(t.reused for t in again)
        assert len(session.history) == 2 * count
        assert api.submitted.wait(20)


def _queued_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: Accepting, *, grace: float
) -> Session:
    """A session whose submits queue behind the cap (a burst of one, then one each 1,000 s),
    with close's grace for submits in flight cut to ``grace`` seconds."""
    import nanobanana_jupyter._core.resources as resources_module

    monkeypatch.setattr(resources_module, "SUBMIT_GRACE_ON_CLOSE", grace)
    return Session(
        settings=_settings(tmp_path / "data"),
        transport=httpx.MockTransport(api),
        max_submits_per_second=0.001,
    )


def test_closing_with_a_batch_still_queued_settles_it_in_one_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() with 600 submits still waiting behind the submit cap: their ``not_sent`` is
    written in one transaction (one per task before: 10,000 of them outlasted close's own
    time limit, and the store closed under the writes, logging a traceback each), nothing
    is logged as a warning or an error, and every handle and row says not_sent."""
    api = Accepting()
    session = _queued_session(tmp_path, monkeypatch, api, grace=0.5)
    tasks = session.map([f"queued {i}" for i in range(600)])
    seen: list[str] = []
    conn = session._store._db()
    conn.set_trace_callback(
        lambda sql: seen.append(sql) if sql.upper().startswith("BEGIN") else None
    )
    with caplog.at_level("INFO", logger="nanobanana_jupyter"):
        session.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []
    # One for the 599 (the one sent may write its own few meanwhile), never one per task.
    assert len(seen) <= 8, f"{len(seen)} write transactions to close"
    unsent = [t for t in tasks if t.task_id is None]  # the first may leave during close
    assert len(unsent) >= 599
    assert {t.status for t in unsent} == {TaskStatus.NOT_SENT}
    with Store(session._store.path) as store:
        rows = [store.get(t.local_id) for t in unsent]
    assert {r.status for r in rows if r is not None} == {TaskStatus.NOT_SENT}
    assert all("nothing was charged" in (r.error or "") for r in rows if r is not None)
    assert len(api.submits) <= 1


def test_closing_when_the_store_refuses_the_batch_write_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one not_sent write of close fails (a full disk): one warning line, never a
    traceback per task; every handle still ends not_sent, and the next session finds the
    rows and settles them not_sent (nothing was sent, nothing charged)."""
    api = Accepting()
    session = _queued_session(tmp_path, monkeypatch, api, grace=0.2)
    tasks = session.map([f"full disk {i}" for i in range(200)])

    def refuse(records: object) -> object:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(session._store, "update_many", refuse)
    with caplog.at_level("INFO", logger="nanobanana_jupyter"):
        session.close()
    loud = [r for r in caplog.records if r.levelno >= 30]
    assert len(loud) == 1 and "requests ended not_sent" in loud[0].getMessage()
    assert loud[0].exc_info is None
    unsent = [t for t in tasks if t.task_id is None]
    assert len(unsent) >= 199 and {t.status for t in unsent} == {TaskStatus.NOT_SENT}
    with Session(
        settings=_settings(tmp_path / "data"), transport=httpx.MockTransport(api)
    ) as again:
        rows = [again._store.get(t.local_id) for t in unsent]
    assert {r.status for r in rows if r is not None} == {TaskStatus.NOT_SENT}
    assert len(api.submits) <= 1


def test_close_goes_on_when_settling_the_unsent_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (or a dropped part) where close settles the unsent: close still cancels their
    jobs and returns, says so once, sends nothing more; the next session settles the rows."""
    api = Accepting()
    session = _queued_session(tmp_path, monkeypatch, api, grace=0.2)
    tasks = session.map([f"a bug at close {i}" for i in range(50)])

    def broken(local_ids: list[str]) -> None:
        raise TypeError("a bug")

    session._res.on_close_unsent = broken
    with caplog.at_level("INFO", logger="nanobanana_jupyter"):
        session.close()
    loud = [r for r in caplog.records if r.levelno >= 30]
    assert [r.getMessage() for r in loud] == [
        "could not settle the requests this session never sent"
    ]
    assert not session._res.submitting  # every job ended
    unsent = [t for t in tasks if t.task_id is None]
    with Session(
        settings=_settings(tmp_path / "data"), transport=httpx.MockTransport(api)
    ) as again:
        rows = [again._store.get(t.local_id) for t in unsent]
    assert len(rows) >= 49 and {r.status for r in rows if r is not None} == {TaskStatus.NOT_SENT}
    assert len(api.submits) <= 1


def test_a_bad_prompt_in_a_batch_says_which_and_nothing_is_written(session: Session) -> None:
    """The error names the prompt by its place; no intent is written, nothing is sent."""
    prompts = ["fine one", "fine two", "  ", "fine four", "fine five"]
    with pytest.raises(ValidationError, match=r"^prompt 3 of 5: the prompt is empty"):
        session.map(prompts)
    with pytest.raises(ValidationError, match=r"^prompt 1 of 2: the prompt is empty"):
        session.map(["", "fine"])
    with pytest.raises(ValidationError, match=r"^aspect ratio '5:9'"):
        session.map(["fine", "also fine"], aspect_ratio="5:9")  # an option: no prompt named
    assert len(session.history) == 0


def test_a_batch_converts_its_shared_references_once(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file given as the batch's reference is read and encoded once, not per prompt;
    every task of the batch records the same reference."""
    from PIL import Image

    from nanobanana_jupyter._core import references

    path = tmp_path / "ref.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    calls: list[object] = []
    convert = references.to_reference

    def counting(item: object) -> str:
        calls.append(item)
        return convert(item)

    monkeypatch.setattr(references, "to_reference", counting)
    tasks = session.map([f"edit {i}" for i in range(50)], images=[path])
    assert len(calls) == 1
    stored = [session._store.get(t.local_id) for t in tasks]
    assert len({r.references for r in stored if r is not None}) == 1
    assert all(r is not None and len(r.references) == 1 for r in stored)
