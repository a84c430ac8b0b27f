"""The SQLite history store: records, state machine, leases, listing, damaged files (D5).

The tests that need other processes (D1, D2, D6, D7) are in
tests/integration/test_store_processes.py; the timed one at 50,000 rows in
tests/reliability/test_store_scale.py.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter._store.database import SCHEMA_VERSION, StoreRecoveredWarning
from nanobanana_jupyter._store.owners import SUBMIT_GRACE
from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._store.rows import MAX_ERROR_CHARS
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.models import TaskStatus

S = TaskStatus
T0 = 1_700_000_000.0


class FakeClock:
    """Wall-clock stand-in that only moves when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rec(local_id: str = "a", status: TaskStatus = S.SUBMITTING, **changes: Any) -> TaskRecord:
    created = changes.pop("created_at", T0)
    return TaskRecord(
        local_id=local_id,
        status=status,
        prompt=changes.pop("prompt", f"prompt {local_id}"),
        model=changes.pop("model", "google/gempix2"),
        fingerprint=changes.pop("fingerprint", f"fp-{local_id}"),
        created_at=created,
        updated_at=changes.pop("updated_at", created),
        **changes,
    )


def image_at(path: Path, sha: str = "ab" * 32) -> ImageRecord:
    return ImageRecord(
        sha256=sha, path=str(path), media_type="image/png", width=4, height=3, size=10
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


@pytest.fixture
def store(db: Path, clock: FakeClock) -> Iterator[Store]:
    with Store(db, clock=clock) as s:
        yield s


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One store for the many small parametrized cases (each uses its own local_id)."""
    with Store(tmp_path_factory.mktemp("shared") / "history.sqlite3") as s:
        yield s


# -- records ---------------------------------------------------------------------------


def full_record(tmp_path: Path) -> TaskRecord:
    return TaskRecord(
        local_id="loc-1",
        status=S.SUCCESS,
        prompt="A cat in a banana costume, «studio» light\n<script>",
        model="google/gempix2",
        fingerprint="f" * 64,
        created_at=T0 + 0.125,
        updated_at=T0 + 9.5,
        task_id="task-1",
        aspect_ratio="16:9",
        image_size="2K",
        callback_url="http://127.0.0.1:9999/hook/token",
        references=("https://example.com/a.png", "sha256:" + "c" * 64),
        submitted_at=T0 + 1.0,
        finished_at=T0 + 8.25,
        consumed=Decimal("0.1250"),
        error="partial warning",
        result_urls=("https://cdn.example.com/1.png", "https://cdn.example.com/2.png"),
        images=(
            image_at(tmp_path / "1.png", "1" * 64),
            ImageRecord(
                sha256="2" * 64,
                path=str(tmp_path / "2.jpg"),
                media_type="image/jpeg",
                width=1024,
                height=768,
                size=54321,
                thumb_path=str(tmp_path / "2-512.jpg"),
                url="https://cdn.example.com/2.png",
            ),
        ),
        texts=("Here is your cat.",),
        polls=7,
        reuses=2,
    )


@pytest.mark.parametrize("stored", ["1E+27", "1e309", "NaN", "-Infinity", "-1", "junk"])
def test_unusable_stored_costs_read_as_unknown_and_sums_never_raise(
    store: Store, stored: str
) -> None:
    """H1: costs a store holds that cannot be used (an older version kept 1E+27) read as None.

    The total, the history's repr and its HTML keep working, and add up the usable costs.
    """
    from nanobanana_jupyter._store.history import History

    for i in range(10):
        store.insert(rec(f"big{i}", S.SUCCESS, task_id=f"tb{i}", consumed=Decimal("0.5")))
        with store._conn:  # type: ignore[union-attr]  # written as an older version did
            store._conn.execute(  # type: ignore[union-attr]
                "UPDATE tasks SET consumed = ? WHERE local_id = ?", (stored, f"big{i}")
            )
    store.insert(rec("ok", S.SUCCESS, task_id="tok", consumed=Decimal("0.5")))
    store.insert(rec("zero", S.SUCCESS, task_id="tz", consumed=Decimal("-0")))
    history = History(store)
    assert store.get("big0") is not None and store.get("big0").consumed is None  # type: ignore[union-attr]
    assert str(store.get("zero").consumed) == "0"  # type: ignore[union-attr]
    assert history.total_cost == Decimal("0.5")
    assert repr(history) == "<History: 12 tasks, 0.5 credits>"
    assert "12 tasks · 0.5 credits" in history._repr_html_()
    assert "-0 credit" not in history._repr_html_()


def test_round_trip_keeps_every_field(store: Store, tmp_path: Path) -> None:
    """Every TaskRecord field (Decimal, tuples, ImageRecords) reads back equal and typed."""
    record = full_record(tmp_path)
    defaults = {f.name: f.default for f in dataclasses.fields(TaskRecord)}
    # The sample sets every field away from its default, so no field can be dropped unseen.
    assert all(getattr(record, name) != default for name, default in defaults.items())
    store.insert(record)
    got = store.get("loc-1")
    assert got == record
    assert got is not None
    assert isinstance(got.consumed, Decimal)
    assert str(got.consumed) == "0.1250"
    assert isinstance(got.references, tuple)
    assert isinstance(got.images[1], ImageRecord)
    assert got.status is S.SUCCESS
    assert store.get_by_task_id("task-1") == record
    assert store.get("missing") is None
    assert store.get_by_task_id("missing") is None


def test_insert_is_durable_for_another_store_on_the_same_file(db: Path) -> None:
    """An inserted intent is committed before insert returns: a second Store reads it."""
    with Store(db) as first:
        first.insert(rec("a", prompt="durable"))
        with Store(db) as second:
            got = second.get("a")
    assert got is not None
    assert got.prompt == "durable"


def test_insert_duplicate_local_id_raises_value_error(store: Store) -> None:
    """A second row with the same local_id is refused with ValueError."""
    store.insert(rec("a"))
    with pytest.raises(ValueError, match="already stored"):
        store.insert(rec("a", prompt="other"))
    got = store.get("a")
    assert got is not None
    assert got.prompt == "prompt a"


def test_insert_many_is_all_or_nothing(store: Store) -> None:
    """A duplicate in a batch refuses the whole batch."""
    store.insert(rec("b"))
    with pytest.raises(ValueError):
        store.insert_many([rec("a"), rec("b")])
    assert store.get("a") is None
    assert store.count() == 1


def test_error_is_capped_and_redacted(store: Store, sentinel_key: str, db: Path) -> None:
    """A huge error text is capped and a key-shaped string in it never reaches the file."""
    store.insert(rec("a", S.FAILED, error=f"key {sentinel_key} " + "x" * 10_000))
    got = store.get("a")
    assert got is not None
    assert got.error is not None
    assert len(got.error) <= MAX_ERROR_CHARS
    assert sentinel_key not in got.error
    store.close()
    for path in db.parent.rglob("*"):
        if path.is_file():
            assert sentinel_key.encode() not in path.read_bytes()


def test_schema_version_and_wal_mode(store: Store, db: Path) -> None:
    """The file is in WAL mode and carries the schema version in user_version."""
    assert store.journal_mode == "wal"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"tasks_created", "tasks_status", "tasks_model", "tasks_fingerprint"} <= indexes
    assert "tasks_task_id" in indexes


# -- interrupted submits ---------------------------------------------------------------


def test_interrupted_submit_becomes_submit_unknown_at_open(db: Path, clock: FakeClock) -> None:
    """A `submitting` row left by a closed store becomes `submit_unknown` at the next open."""
    with Store(db, clock=clock) as first:
        first.insert(rec("a"))
        first.insert(rec("b", S.PENDING, task_id="t-b"))
    clock.advance(5)
    with Store(db, clock=clock) as second:
        assert second.recovered == 1
        got = second.get("a")
        untouched = second.get("b")
    assert got is not None
    assert got.status is S.SUBMIT_UNKNOWN
    assert got.error is not None
    assert "may have been charged" in got.error
    assert "never re-sent" in got.error
    assert got.updated_at == clock.now
    assert untouched is not None
    assert untouched.status is S.PENDING


def test_request_left_waiting_to_send_becomes_not_sent_at_open(db: Path, clock: FakeClock) -> None:
    """A row that never left (waiting for the submit caps) is `not_sent`, not unknown."""
    with Store(db, clock=clock) as first:
        first.insert(rec("queued", S.WAITING_TO_SEND))
        first.insert(rec("sending", S.SUBMITTING))
    clock.advance(5)
    with Store(db, clock=clock) as second:
        assert second.recovered == 2
        queued = second.get("queued")
        sending = second.get("sending")
    assert queued is not None and sending is not None
    assert queued.status is S.NOT_SENT
    assert "nothing was charged" in (queued.error or "")
    assert sending.status is S.SUBMIT_UNKNOWN


def test_a_settled_unsent_row_cannot_be_moved_to_submitting(db: Path, clock: FakeClock) -> None:
    """Once another opener settled a queued row as not_sent, its writer's late
    `submitting` is refused: the session reads that back and does not send."""
    with Store(db, clock=clock) as store:
        store.insert(rec("q", S.WAITING_TO_SEND))
        settled = store.update(rec("q", S.NOT_SENT, error="settled"))
        assert settled.status is S.NOT_SENT
        assert store.update(rec("q", S.SUBMITTING)).status is S.NOT_SENT


def test_submit_in_flight_in_an_open_store_is_left_alone(db: Path) -> None:
    """Opening a second store does not touch a submit another open store is sending."""
    with Store(db) as first:
        first.insert(rec("a", created_at=time.time()))
        with Store(db) as second:
            assert second.recovered == 0
            got = second.get("a")
        assert got is not None
        assert got.status is S.SUBMITTING
        stored = first.update(got.replace(status=S.PENDING, task_id="t-a"))
        assert stored.status is S.PENDING


def test_submit_of_a_live_process_is_recovered_only_after_the_grace(
    db: Path, clock: FakeClock
) -> None:
    """A live writer's submit is left alone, but not forever: after SUBMIT_GRACE it is unknown."""
    with Store(db, clock=clock) as first:
        first.insert(rec("a"))
    conn = sqlite3.connect(db)
    try:
        # Pretend the writer is our parent process: alive, on this host, not this process.
        (writer,) = conn.execute("SELECT writer FROM tasks").fetchone()
        host = writer.split("|")[0]
        conn.execute("UPDATE tasks SET writer = ?", (f"{host}|{os.getppid()}|elsewhere",))
        conn.commit()
    finally:
        conn.close()
    with Store(db, clock=clock) as second:
        assert second.recovered == 0
    clock.advance(SUBMIT_GRACE + 1)
    with Store(db, clock=clock) as third:
        assert third.recovered == 1


def test_recovering_named_rows_settles_only_those_whose_writer_stopped(db: Path) -> None:
    """recover_interrupted(ids) settles just those rows, and only when their writer is gone."""
    with Store(db) as follower, Store(db) as live:
        live.insert(rec("live", S.WAITING_TO_SEND, created_at=time.time()))
        with Store(db) as writer:
            writer.insert(rec("queued", S.WAITING_TO_SEND, created_at=time.time()))
            writer.insert(rec("sending", S.SUBMITTING, created_at=time.time()))
            assert follower.recover_interrupted(["queued", "sending", "live"]) == 0
        # The writer's store closed (its kernel stopped): its rows are settled when named.
        assert follower.recover_interrupted(["queued", "live"]) == 1
        assert follower.get("queued").status is S.NOT_SENT  # type: ignore[union-attr]
        assert follower.get("sending").status is S.SUBMITTING  # type: ignore[union-attr]
        assert follower.get("live").status is S.WAITING_TO_SEND  # type: ignore[union-attr]
        assert follower.recover_interrupted(["sending"]) == 1
        assert follower.get("sending").status is S.SUBMIT_UNKNOWN  # type: ignore[union-attr]


# -- the state machine -----------------------------------------------------------------

ALL = set(S)
ACTIVE = {S.PENDING, S.SUBMITTED, S.IN_PROGRESS, S.UNRECOGNIZED}
# For each stored status, the statuses an update may move it to (the spec, written out).
LOCAL = {S.WAITING_TO_SEND, S.SUBMITTING}
ALLOWED: dict[TaskStatus, set[TaskStatus]] = {
    S.WAITING_TO_SEND: ALL,
    S.SUBMITTING: ALL - {S.WAITING_TO_SEND},
    **dict.fromkeys(ACTIVE, ALL - LOCAL),
    S.SUCCESS: {S.SUCCESS},
    S.FAILED: {S.FAILED},
    S.NOT_SENT: {S.NOT_SENT},
    S.SUBMIT_UNKNOWN: {S.SUBMIT_UNKNOWN, S.SUCCESS, S.FAILED} | ACTIVE,
    S.TIMED_OUT: ALL - LOCAL,
    S.ABANDONED: ALL - LOCAL,
    S.UNAVAILABLE: ALL - LOCAL,
}


def test_transition_table_covers_every_status() -> None:
    """The spec table below names every status (a new status must be decided on)."""
    assert set(ALLOWED) == ALL


@pytest.mark.parametrize("old", list(S), ids=str)
@pytest.mark.parametrize("new", list(S), ids=str)
def test_update_never_downgrades(shared_store: Store, old: TaskStatus, new: TaskStatus) -> None:
    """An update lands exactly when the transition is allowed; otherwise the row is unchanged."""
    local_id = f"{old}->{new}"
    shared_store.insert(rec(local_id, old, task_id=f"t-{local_id}", error="before"))
    result = shared_store.update(
        rec(local_id, new, task_id=f"t-{local_id}", error="after", updated_at=T0 + 10)
    )
    stored = shared_store.get(local_id)
    assert stored == result
    if new in ALLOWED[old]:
        assert (stored.status, stored.error, stored.updated_at) == (new, "after", T0 + 10)
    else:
        assert (stored.status, stored.error, stored.updated_at) == (old, "before", T0)


def test_resume_from_timed_out_goes_back_to_polling(store: Store) -> None:
    """A timed-out task can be resumed: pending again, error cleared, then success."""
    store.insert(rec("a", S.TIMED_OUT, task_id="t", error="deadline", finished_at=T0 + 600))
    resumed = store.update(rec("a", S.PENDING, task_id="t", error=None, finished_at=None))
    assert (resumed.status, resumed.error, resumed.finished_at) == (S.PENDING, None, None)
    done = store.update(resumed.replace(status=S.SUCCESS, texts=("ok",)))
    assert done.status is S.SUCCESS


def test_submit_unknown_is_reconciled_by_a_webhook(store: Store) -> None:
    """A submit_unknown row takes the task id a webhook recovered and moves to pending."""
    store.insert(rec("a", S.SUBMIT_UNKNOWN, error="maybe charged"))
    got = store.update(rec("a", S.PENDING, task_id="t-found"))
    assert (got.status, got.task_id) == (S.PENDING, "t-found")
    assert store.get_by_task_id("t-found") == got


def test_polls_never_decrease_and_task_id_is_never_forgotten(store: Store) -> None:
    """A stale copy with fewer polls and no task id keeps the stored polls and task id."""
    store.insert(rec("a", S.PENDING, task_id="t", polls=5))
    got = store.update(rec("a", S.IN_PROGRESS, task_id=None, polls=2, created_at=T0 + 99))
    assert (got.status, got.polls, got.task_id, got.created_at) == (S.IN_PROGRESS, 5, "t", T0)


def test_refresh_of_success_adds_images_but_a_stale_copy_cannot_wipe_them(
    store: Store, tmp_path: Path
) -> None:
    """Same-status writes to a success row add information and never blank it."""
    store.insert(rec("a", S.SUCCESS, task_id="t", result_urls=("https://x/1.png",)))
    image = image_at(tmp_path / "1.png")
    with_image = store.update(rec("a", S.SUCCESS, task_id="t", images=(image,)))
    assert with_image.images == (image,)
    assert with_image.result_urls == ("https://x/1.png",)
    stale = store.update(rec("a", S.SUCCESS, task_id="t", consumed=Decimal("0.2")))
    assert stale.images == (image,)
    assert stale.consumed == Decimal("0.2")


def test_update_of_an_unknown_row_inserts_it(store: Store) -> None:
    """update() is an upsert: a record never inserted is stored as given."""
    got = store.update(rec("new", S.PENDING, task_id="t-new"))
    assert store.get("new") == got
    assert got.status is S.PENDING


def test_update_to_a_task_id_of_another_row_is_refused(store: Store) -> None:
    """The server task id is unique: claiming another row's id raises and changes nothing."""
    store.insert(rec("a", S.PENDING, task_id="t-1"))
    store.insert(rec("b", S.SUBMITTING))
    with pytest.raises(ValueError, match="t-1"):
        store.update(rec("b", S.PENDING, task_id="t-1"))
    got = store.get("b")
    assert got is not None
    assert (got.status, got.task_id) == (S.SUBMITTING, None)


# -- reuse and resume ------------------------------------------------------------------


def test_find_reusable_returns_the_newest_success_with_its_files(
    store: Store, tmp_path: Path
) -> None:
    """A success whose files exist is reused; the newest one wins."""
    (tmp_path / "old.png").write_bytes(b"x")
    (tmp_path / "new.png").write_bytes(b"x")
    store.insert(rec("old", S.SUCCESS, fingerprint="F", images=(image_at(tmp_path / "old.png"),)))
    store.insert(
        rec(
            "new",
            S.SUCCESS,
            fingerprint="F",
            created_at=T0 + 1,
            images=(image_at(tmp_path / "new.png"),),
        )
    )
    got = store.find_reusable("F")
    assert got is not None
    assert got.local_id == "new"


def test_find_reusable_skips_a_success_whose_file_was_deleted(store: Store, tmp_path: Path) -> None:
    """A newer success whose image file is gone is skipped for an older intact one."""
    (tmp_path / "kept.png").write_bytes(b"x")
    store.insert(rec("kept", S.SUCCESS, fingerprint="F", images=(image_at(tmp_path / "kept.png"),)))
    store.insert(
        rec(
            "gone",
            S.SUCCESS,
            fingerprint="F",
            created_at=T0 + 1,
            images=(image_at(tmp_path / "gone.png"),),
        )
    )
    got = store.find_reusable("F")
    assert got is not None
    assert got.local_id == "kept"


def test_find_reusable_falls_back_to_an_active_task(store: Store, tmp_path: Path) -> None:
    """Without a usable success, the newest task still in flight is returned."""
    store.insert(rec("gone", S.SUCCESS, fingerprint="F", images=(image_at(tmp_path / "no.png"),)))
    store.insert(rec("empty", S.SUCCESS, fingerprint="F"))  # no images, no text
    store.insert(rec("failed", S.FAILED, fingerprint="F", created_at=T0 + 5))
    store.insert(rec("running", S.IN_PROGRESS, fingerprint="F", task_id="t", created_at=T0 + 1))
    store.insert(rec("sending", S.SUBMITTING, fingerprint="F", created_at=T0 + 2))
    got = store.find_reusable("F")
    assert got is not None
    assert got.local_id == "sending"
    assert store.find_reusable("other") is None


def test_find_reusable_ignores_ended_tasks(store: Store) -> None:
    """Failed, not-sent and abandoned tasks are never reused (nor resumable ones with no id)."""
    for i, status in enumerate([S.FAILED, S.NOT_SENT, S.ABANDONED, S.TIMED_OUT, S.UNAVAILABLE]):
        store.insert(rec(f"r{i}", status, fingerprint="F"))
    store.insert(rec("given-up", S.ABANDONED, fingerprint="F", task_id="t-abandoned"))
    assert store.find_reusable("F") is None


@pytest.mark.parametrize("status", [S.TIMED_OUT, S.UNAVAILABLE])
def test_h2_h3_find_reusable_returns_a_resumable_task_before_paying_again(
    store: Store, status: TaskStatus
) -> None:
    """H2/H3: a timed-out or unavailable task the server knows is reused, not paid again."""
    store.insert(rec("failed", S.FAILED, fingerprint="F", task_id="t0", created_at=T0 + 9))
    store.insert(rec("unknown", S.SUBMIT_UNKNOWN, fingerprint="F", created_at=T0 + 8))
    store.insert(rec("old", status, fingerprint="F", task_id="t1", created_at=T0 + 1))
    store.insert(rec("resumable", status, fingerprint="F", task_id="t2", created_at=T0 + 2))
    got = store.find_reusable("F")
    assert got is not None and got.local_id == "resumable"  # the newest, before an unknown
    store.insert(rec("running", S.PENDING, fingerprint="F", task_id="t3"))
    got = store.find_reusable("F")
    assert got is not None and got.local_id == "running"  # a task in flight comes first


def test_find_reusable_returns_an_unknown_submit_last(store: Store) -> None:
    """A submit that may have been charged is returned, so a re-run never silently resends it."""
    store.insert(rec("unknown", S.SUBMIT_UNKNOWN, fingerprint="F", created_at=T0 + 9))
    got = store.find_reusable("F")
    assert got is not None
    assert got.local_id == "unknown"
    store.insert(rec("running", S.PENDING, fingerprint="F", task_id="t"))
    got = store.find_reusable("F")
    assert got is not None
    assert got.local_id == "running"  # an active task beats an unknown submit


def test_unfinished_lists_active_and_timed_out_oldest_first(store: Store) -> None:
    """unfinished() is what resume() polls: active, timed out or unavailable, oldest first."""
    for i, status in enumerate(S):
        store.insert(rec(f"r-{status}", status, created_at=T0 - i))
    got = [r.status for r in store.unfinished()]
    # Unavailable since issue 14 item 2: the server succeeded but no image is here yet.
    expected = {S.PENDING, S.SUBMITTED, S.IN_PROGRESS, S.UNRECOGNIZED, S.TIMED_OUT, S.UNAVAILABLE}
    assert set(got) == expected
    assert len(got) == len(expected)
    created = [r.created_at for r in store.unfinished()]
    assert created == sorted(created)


# -- leases ----------------------------------------------------------------------------


def test_only_one_kernel_acquires_a_lease_until_it_expires(db: Path, clock: FakeClock) -> None:
    """Two stores on one file: one lease holder at a time; expiry lets the other take over."""
    with Store(db, clock=clock) as kernel_a, Store(db, clock=clock) as kernel_b:
        assert kernel_a.acquire_lease("task", "A", ttl=30)
        assert not kernel_b.acquire_lease("task", "B", ttl=30)
        assert kernel_b.lease_holder("task") == "A"
        assert kernel_a.acquire_lease("task", "A", ttl=30)  # ours already: extended
        clock.advance(29)
        assert not kernel_b.acquire_lease("task", "B", ttl=30)
        clock.advance(2)
        assert kernel_a.lease_holder("task") is None
        assert kernel_b.acquire_lease("task", "B", ttl=30)
        assert kernel_a.lease_holder("task") == "B"
        assert kernel_a.renew_leases("A", ["task"], ttl=30) == set()


def test_no_lease_on_a_task_another_kernel_finished_after_this_one_read_it(
    db: Path, clock: FakeClock
) -> None:
    """The right to poll is given only while the row is still in flight: kernel B read the
    task as pending, then A polled it to its end and let go of its lease; B's late acquire
    must fail (it would poll a finished task again), and B then reads the ended row."""
    with Store(db, clock=clock) as kernel_a, Store(db, clock=clock) as kernel_b:
        kernel_a.insert(rec("t", S.PENDING, task_id="ta-1"))
        stale = kernel_b.get("t")
        assert stale is not None and stale.status is S.PENDING
        assert kernel_a.acquire_lease("t", "A", ttl=30)
        kernel_a.update(stale.replace(status=S.SUCCESS, finished_at=T0 + 1))
        kernel_a.release_lease("t", "A")
        assert not kernel_b.acquire_lease("t", "B", ttl=30)
        assert kernel_b.lease_holder("t") is None
        for ended in (
            S.TIMED_OUT,
            S.UNAVAILABLE,
            S.FAILED,
            S.ABANDONED,
            S.SUBMIT_UNKNOWN,
            S.NOT_SENT,
        ):
            kernel_a.insert(rec(ended.value, ended, task_id=f"ta-{ended.value}"))
            assert not kernel_b.acquire_lease(ended.value, "B", ttl=30), ended
        for active in (S.SUBMITTED, S.PENDING, S.IN_PROGRESS):
            kernel_a.insert(rec(active.value, active, task_id=f"ta-{active.value}"))
            assert kernel_b.acquire_lease(active.value, "B", ttl=30), active


def test_renew_leases_returns_the_held_set_and_extends_them(db: Path, clock: FakeClock) -> None:
    """renew_leases keeps the owner's leases alive and reports exactly the ones it holds."""
    with Store(db, clock=clock) as kernel_a, Store(db, clock=clock) as kernel_b:
        assert kernel_a.acquire_lease("x", "A", ttl=10)
        assert kernel_a.acquire_lease("y", "A", ttl=10)
        assert kernel_b.acquire_lease("z", "B", ttl=10)
        clock.advance(8)
        assert kernel_a.renew_leases("A", ["x", "y", "z", "unknown"], ttl=10) == {"x", "y"}
        clock.advance(8)
        assert kernel_b.lease_holder("x") == "A"
        assert kernel_b.lease_holder("z") is None
        assert kernel_a.renew_leases("A", [], ttl=10) == set()
        many = [f"t{i}" for i in range(1200)]  # more ids than one statement may bind
        for local_id in many:
            kernel_a.acquire_lease(local_id, "A", ttl=10)
        assert kernel_a.renew_leases("A", many, ttl=10) == set(many)


def test_release_lease_frees_only_the_owners_lease(store: Store) -> None:
    """release_lease by another owner does nothing; by the holder it frees the task."""
    assert store.acquire_lease("t", "A", ttl=10)
    store.release_lease("t", "B")
    assert store.lease_holder("t") == "A"
    store.release_lease("t", "A")
    assert store.lease_holder("t") is None
    assert store.acquire_lease("t", "B", ttl=10)


def test_release_all_leases_frees_only_that_owner(store: Store) -> None:
    """A closing session gives up every lease it holds, and nobody else's."""
    for name in ("a", "b"):
        assert store.acquire_lease(name, "A", ttl=10)
    assert store.acquire_lease("c", "B", ttl=10)
    store.release_all_leases("A")
    assert [store.lease_holder(n) for n in ("a", "b", "c")] == [None, None, "B"]


def test_lease_needs_a_positive_ttl(store: Store) -> None:
    """A zero or negative ttl is a programming error."""
    with pytest.raises(ValueError, match="ttl"):
        store.acquire_lease("t", "A", ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        store.renew_leases("A", ["t"], ttl=-1)


# -- listing ---------------------------------------------------------------------------


def seed_listing(store: Store) -> list[TaskRecord]:
    records = []
    statuses = [S.SUCCESS, S.FAILED, S.PENDING, S.TIMED_OUT]
    for i in range(40):
        records.append(
            rec(
                f"r{i:02d}",
                statuses[i % 4],
                model=("model-a", "model-b", "model-c")[i % 3],
                prompt=f"Prompt {i} {'Ünïcode CAT' if i % 5 == 0 else 'dog_%'}",
                created_at=T0 + i // 2,  # pairs share a time: local_id breaks the tie
                consumed=Decimal("0.1") if i % 4 == 0 else None,
                task_id=f"t{i}",
            )
        )
    store.insert_many(reversed(records))
    return records


@pytest.mark.parametrize(
    ("filters", "predicate"),
    [
        ({}, lambda r: True),
        ({"status": S.SUCCESS}, lambda r: r.status is S.SUCCESS),
        ({"status": "failed"}, lambda r: r.status is S.FAILED),
        ({"status": [S.PENDING, "timed_out"]}, lambda r: r.status in {S.PENDING, S.TIMED_OUT}),
        ({"status": []}, lambda r: False),
        ({"model": "model-b"}, lambda r: r.model == "model-b"),
        ({"model": ("model-a", "model-c")}, lambda r: r.model != "model-b"),
        ({"since": T0 + 5}, lambda r: r.created_at >= T0 + 5),
        ({"until": T0 + 5}, lambda r: r.created_at < T0 + 5),
        (
            {"since": T0 + 2, "until": T0 + 8, "model": "model-a"},
            lambda r: T0 + 2 <= r.created_at < T0 + 8 and r.model == "model-a",
        ),
        ({"text": "cat"}, lambda r: "CAT" in r.prompt),
        ({"text": "ÜNÏCODE"}, lambda r: "Ünïcode" in r.prompt),
        ({"text": "_%"}, lambda r: "dog_%" in r.prompt),
        ({"text": "g_"}, lambda r: "g_" in r.prompt),
        ({"text": "prompt 1"}, lambda r: r.prompt.startswith("Prompt 1")),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_count_page_and_total_cost_match_a_model(
    store: Store, filters: dict[str, Any], predicate: Any
) -> None:
    """count, page (both orders, any window) and total_cost agree with filtering in Python."""
    records = seed_listing(store)
    expected = [r for r in records if predicate(r)]
    assert store.count(**filters) == len(expected)
    assert store.page(0, 1000, **filters) == expected
    assert store.page(0, 1000, newest_first=True, **filters) == expected[::-1]
    assert store.page(3, 4, **filters) == expected[3:7]
    n = store.count(**filters)
    assert store.page(max(0, n - 2), 2, **filters) == expected[-2:]  # index -2 via count
    assert store.total_cost(**filters) == sum(
        (r.consumed for r in expected if r.consumed is not None), Decimal(0)
    )


def test_page_refuses_negative_positions(store: Store) -> None:
    """Negative offsets are the caller's job (count() + index): page() refuses them."""
    with pytest.raises(ValueError, match="offset"):
        store.page(-1, 5)
    assert store.page(0, 0) == []


def test_unknown_status_filter_is_refused(store: Store) -> None:
    """A status filter that names no status raises instead of matching nothing silently."""
    with pytest.raises(ValueError):
        store.count(status="finished")


# -- lifetime and threads --------------------------------------------------------------


def test_close_is_idempotent_and_use_after_close_raises(db: Path) -> None:
    """close() twice is fine; any use afterwards raises RuntimeError."""
    store = Store(db)
    with store:
        store.insert(rec("a"))
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.get("a")
    assert "closed" in repr(store)


def test_one_store_serves_several_threads(store: Store) -> None:
    """Threads inserting and updating through one Store lose nothing and raise nothing."""
    errors: list[BaseException] = []

    def work(prefix: str) -> None:
        try:
            for i in range(50):
                record = rec(f"{prefix}-{i}")
                store.insert(record)
                store.update(record.replace(status=S.PENDING, task_id=f"t-{prefix}-{i}"))
                store.count(status="pending")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count(status=S.PENDING) == 200


# -- D5: damaged or foreign files ------------------------------------------------------


def aside_files(db: Path, kind: str) -> list[Path]:
    found = db.parent.glob(f"{db.name}.{kind}-*")
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm", "-journal")))


def test_garbage_file_is_moved_aside_and_a_new_store_created(db: Path) -> None:
    """D5: a garbage file is kept under a .corrupt- name, with a warning, and a new store works."""
    db.parent.mkdir(parents=True)
    garbage = os.urandom(5000)
    db.write_bytes(garbage)
    Path(f"{db}-wal").write_bytes(b"stale wal")
    with pytest.warns(StoreRecoveredWarning, match="moved to") as caught:
        store = Store(db)
    with store:
        store.insert(rec("a"))
        assert store.get("a") is not None
    (moved,) = aside_files(db, "corrupt")
    assert moved.read_bytes() == garbage
    assert Path(f"{moved}-wal").read_bytes() == b"stale wal"  # side files travel with it
    warning = caught[0].message
    assert isinstance(warning, StoreRecoveredWarning)
    assert warning.moved_to == moved
    assert str(moved) in str(warning)


def test_damaged_pages_fail_the_check_and_are_moved_aside(db: Path) -> None:
    """D5: a store whose pages were overwritten fails quick_check and is moved aside."""
    with Store(db) as store:
        store.insert_many(rec(f"r{i}", prompt="p" * 200) for i in range(300))
    data = bytearray(db.read_bytes())
    page = 4096
    data[page : 3 * page] = b"\xff" * (2 * page)
    db.write_bytes(bytes(data))
    with pytest.warns(StoreRecoveredWarning), Store(db) as fresh:
        assert fresh.count() == 0
    (moved,) = aside_files(db, "corrupt")
    assert moved.read_bytes() == bytes(data)


def test_newer_schema_is_moved_aside_untouched(db: Path) -> None:
    """D5: a store from a newer release is moved aside (not read, not deleted) with a warning."""
    with Store(db) as store:
        store.insert(rec("a"))
    conn = sqlite3.connect(db)
    try:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
    finally:
        conn.close()
    with pytest.warns(StoreRecoveredWarning, match="newer release"), Store(db) as fresh:
        assert fresh.count() == 0
    (moved,) = aside_files(db, "newer-schema")
    conn = sqlite3.connect(moved)
    try:
        assert conn.execute("SELECT local_id FROM tasks").fetchall() == [("a",)]
    finally:
        conn.close()


def test_a_foreign_sqlite_database_is_moved_aside(db: Path) -> None:
    """D5: an unversioned database with other tables is not adopted as the history."""
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    try:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    finally:
        conn.close()
    with pytest.warns(StoreRecoveredWarning, match="not a nanobanana history"), Store(db):
        pass
    assert len(aside_files(db, "corrupt")) == 1


def test_an_empty_file_is_a_valid_new_store(db: Path) -> None:
    """A zero-byte file is an empty SQLite database: used as is, no warning."""
    db.parent.mkdir(parents=True)
    db.touch()
    with Store(db) as store:
        store.insert(rec("a"))
    assert aside_files(db, "corrupt") == []


def test_two_recoveries_never_overwrite_an_earlier_aside_file(db: Path, clock: FakeClock) -> None:
    """Two damaged files moved aside in the same second get distinct names."""
    db.parent.mkdir(parents=True)
    for content in (b"first garbage" * 100, b"second garbage" * 100):
        db.write_bytes(content)
        with pytest.warns(StoreRecoveredWarning), Store(db, clock=clock):
            pass
    moved = aside_files(db, "corrupt")
    assert sorted(p.read_bytes()[:5] for p in moved) == [b"first", b"secon"]


def test_a_store_made_before_reuses_were_counted_gains_the_column_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    """A history file written without the ``reuses`` column opens, reads as 0, and counts."""
    db = tmp_path / "history.sqlite3"
    with Store(db) as store:
        store.insert(rec("old", prompt="kept"))
    conn = sqlite3.connect(db)
    # A file from before reuses were counted had no kept totals either (issue 18).
    for name in ("view_totals_insert", "view_totals_delete", "view_totals_update"):
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE view_totals")
    conn.execute("DROP TABLE cost_changes")
    conn.execute("ALTER TABLE tasks DROP COLUMN reuses")
    conn.commit()
    conn.close()
    with Store(db) as store:
        got = store.get("old")
        assert got is not None
        assert got.prompt == "kept"
        assert got.reuses == 0
        store.update(got.replace(reuses=3))
        again = store.get("old")
        assert again is not None
        assert again.reuses == 3
        # A stale copy never lowers the count.
        store.update(got.replace(reuses=1))
        assert store.get("old").reuses == 3  # type: ignore[union-attr]
