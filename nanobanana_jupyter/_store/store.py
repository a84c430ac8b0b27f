"""The history store: every task's record in one SQLite file that outlives the kernel.

Why SQLite, and how it is used (research/reliability.md section 5):

* One file (``<data_dir>/history.sqlite3``) shared by every kernel on the machine, opened
  (created, migrated, or moved aside when damaged) by :mod:`.database`.
* Each read-modify-write is one short ``BEGIN IMMEDIATE`` transaction, and nothing slow
  (network, image files) ever happens inside one, so the 10 s busy timeout is never reached
  in practice and "database is locked" does not reach the user.
* Records are plain columns (:mod:`.rows`); nothing is pickled, and no API key is written.
* The store enforces the task state machine of design.md section 4 (:mod:`.transitions`): a
  late or stale write never downgrades a finished task (:meth:`Store.update`).
* Leases (owner, expiry) make sure two kernels never poll the same task; a crashed owner's
  leases and rows are recognised (:mod:`.owners`).
* A store that closes (explicitly, or at interpreter exit) lets the next open skip the full
  integrity check (:mod:`.shutdown`); damage met in use gets the file checked at the next.

Standard library only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from types import EllipsisType
from typing import Any

from nanobanana_jupyter._wire.credits import credits_sum
from nanobanana_jupyter._wire.models import TaskStatus

from . import annotations as _notes
from . import totals as _totals
from .annotations import Annotation
from .database import has_prompt_index, is_damage, open_database, rollback_quietly
from .owners import owner_process_gone, writer_alive, writer_closed, writer_id, writer_opened
from .records import TaskRecord
from .rows import (
    INSERT,
    ORDER,
    SELECT,
    UPDATE,
    ModelFilter,
    StatusFilter,
    from_row,
    stored_cost,
    to_row,
    where_clause,
)
from .search import (
    ROWIDS_CLAUSE,
    RatingFilter,
    count_matches,
    has_annotation_filter,
    newest_matches,
    search_clauses,
)
from .shutdown import mark_suspect
from .transitions import ACTIVE, IN_FLIGHT, RECOVERED_AS, RESUMABLE, UNFINISHED, merge_update

__all__ = ["Store"]

logger = logging.getLogger("nanobanana_jupyter")

# Older SQLite builds allow at most 999 bound parameters per statement.
_CHUNK = 500
# Fingerprints asked about in one read (under SQLite's oldest limit of 999 parameters).
_FINGERPRINTS_PER_READ = 500
# Rows written by one INSERT statement of a batch (fewer where SQLite allows fewer values).
_ROWS_PER_INSERT = 500
_LIMIT_VARIABLE_NUMBER = 9  # sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER (Python 3.11+)
_ACTIVE_MARKS = ", ".join("?" for _ in ACTIVE)


class Store:
    """The SQLite history of every task, shared by all kernels using one data directory.

    Safe to use from several threads (one connection behind a lock) and from several
    processes at once (SQLite's file locks; short ``BEGIN IMMEDIATE`` transactions). Every
    method returns fresh :class:`TaskRecord` objects.

    Args:
        path: the database file; parent directories are created.
        clock: wall-clock time in epoch seconds. Used for lease expiry, which other
            processes compare against, so it must be a wall clock, not a monotonic one.

    Attributes:
        path: the database file.
        recovered: how many interrupted submits (``submitting`` rows left by a process that
            stopped) were turned into ``submit_unknown`` when the store was opened.
        journal_mode: ``"wal"``, or the rollback journal mode used when WAL is impossible.
        full_text: ``True`` when prompts have a full-text index (SQLite with FTS5); without
            it, :meth:`search` matches its text as a substring, scanning every prompt.

    Raises:
        ConfigurationError: the store cannot be created or written (read-only directory or
            file, a path that is a directory, a damaged file that cannot be moved aside).
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path).expanduser().absolute()
        self._clock = clock
        self._lock = threading.RLock()
        self._pid = os.getpid()
        # Who wrote a ``submitting`` row: lets another kernel tell "in flight" from "died".
        self._token = uuid.uuid4().hex
        self._writer = writer_id(self._token)
        # Told after each rating, tag or note change made through this store (views).
        self._annotation_listeners: list[Callable[[str, Annotation], object]] = []
        # Warnings of the opening point at the caller of Store(): called from here directly.
        opened = open_database(self.path, clock)
        self._conn: sqlite3.Connection | None = opened[0]
        self.journal_mode = opened[1]
        self._opening = opened[2]
        _OPEN.add(self)
        self.full_text = has_prompt_index(opened[0])
        writer_opened(self._token)
        try:
            self.recovered = self.recover_interrupted()
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the history store is closed")
        if os.getpid() != self._pid:
            # A connection carried across fork() corrupts databases (howtocorrupt.html).
            raise RuntimeError("a Store cannot be used after fork(); open a new one")
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taken at once so it never deadlocks on upgrade."""
        with self._lock, self._noting_damage():
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (busy, disk full) may leave the transaction open.
                rollback_quietly(conn)
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, self._noting_damage():
            return self._db().execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _noting_damage(self) -> Iterator[None]:
        """Damage met in use is told to the next open, which checks the whole file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                mark_suspect(self.path, str(exc))
            raise

    # -- records ----------------------------------------------------------------------

    def insert(self, record: TaskRecord) -> None:
        """Write a new row (usually the intent, before the submit is sent); durable on return.

        Raises:
            ValueError: a row with this ``local_id`` (or this ``task_id``) already exists.
        """
        self.insert_many((record,))

    def insert_many(self, records: Iterable[TaskRecord]) -> None:
        """Insert many rows in one transaction (all or none), durable on return: a batch's
        intents (``Session.map``, grids, samples), imports and benchmarks.

        Raises:
            ValueError: a ``local_id`` or ``task_id`` already exists; nothing was written.
        """
        rows = [(*to_row(r), self._writer) for r in records]
        if not rows:
            return
        try:
            with self._write() as conn:
                _insert_rows(conn, rows)
                _totals.fold(conn)
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"a task with this local_id or task_id is already stored: {exc}"
            ) from exc

    def get(self, local_id: str) -> TaskRecord | None:
        """The stored record with this local id, or ``None``."""
        rows = self._read(f"{SELECT} WHERE local_id = ?", (local_id,))
        return from_row(rows[0]) if rows else None

    def with_image(self, sha256: str) -> list[TaskRecord]:
        """The tasks holding an image with this content hash (64 hex digits)."""
        return self._by_hash("images", f'%"sha256":"{_hex(sha256)}"%')

    def referencing(self, sha256: str) -> list[TaskRecord]:
        """The tasks that used an image with this content hash as a reference."""
        return self._by_hash("refs", f'%"sha256:{_hex(sha256)}"%')

    def with_result_url(self, url: str) -> list[TaskRecord]:
        """The tasks whose answer carried this result URL (exactly)."""
        return [r for r in self._by_json_string("result_urls", url) if url in r.result_urls]

    def referencing_url(self, url: str) -> list[TaskRecord]:
        """The tasks that were given this URL as a reference (exactly)."""
        return [r for r in self._by_json_string("refs", url) if url in r.references]

    def _by_json_string(self, column: str, text: str) -> list[TaskRecord]:
        # The column holds a JSON list: look for the string as json.dumps writes it, with
        # LIKE's wildcards escaped; the callers keep only exact members.
        needle = (
            json.dumps(text, ensure_ascii=False)
            .replace("\\", "\\\\")
            .replace("%", "\\%")
            .replace("_", "\\_")
        )
        sql = f"{SELECT} WHERE {column} LIKE ? ESCAPE '\\' ORDER BY created_at, local_id"
        return [from_row(row) for row in self._read(sql, (f"%{needle}%",))]

    def _by_hash(self, column: str, pattern: str) -> list[TaskRecord]:
        # A scan of one JSON column (LIKE on hex digits needs no escaping); an index table
        # of hashes is the next step when lineages are asked of very large histories.
        sql = f"{SELECT} WHERE {column} LIKE ? ORDER BY created_at, local_id"
        return [from_row(row) for row in self._read(sql, (pattern,))]

    def get_by_task_id(self, task_id: str) -> TaskRecord | None:
        """The stored record with this server task id, or ``None``."""
        rows = self._read(f"{SELECT} WHERE task_id = ?", (task_id,))
        return from_row(rows[0]) if rows else None

    def find_by_id_prefix(self, prefix: str, *, limit: int = 3) -> tuple[list[TaskRecord], int]:
        """Tasks whose server id or local id starts with ``prefix``: ``(newest few, count)``.

        The first list holds up to ``limit`` records, newest first; ``count`` is how many
        tasks match in all (a task matched by both of its ids counts once). Served by the
        indexes on both columns with a range query (``prefix <= id < next``), so it stays
        fast on a large history, and ``%`` or ``_`` in a prefix are plain characters.
        """
        if not prefix:
            return [], 0
        upper = _next_string(prefix)
        matched: dict[str, tuple[float, str]] = {}
        for column in ("task_id", "local_id"):
            bounds = f"{column} >= ?" if upper is None else f"{column} >= ? AND {column} < ?"
            params = (prefix,) if upper is None else (prefix, upper)
            sql = f"SELECT local_id, {column}, created_at FROM tasks WHERE {bounds}"  # noqa: S608
            for local_id, value, created in self._read(sql, params):
                if value.startswith(prefix):
                    matched[local_id] = (created, local_id)
        newest = sorted(matched.values(), reverse=True)[: max(0, limit)]
        records = [self.get(local_id) for _, local_id in newest]
        return [r for r in records if r is not None], len(matched)

    def update(self, record: TaskRecord) -> TaskRecord:
        """Store a newer version of a record and return what is stored afterwards.

        Late, stale or duplicate writes never move a task backwards (design.md section 4);
        such a write is ignored and the stored record returned. The rules are in
        :func:`merge_update`. A record not stored yet is inserted.

        Raises:
            ValueError: another row already has this record's ``task_id``.
        """
        try:
            with self._write() as conn:
                stored = self._update_in(conn, record)
                _totals.fold(conn)
                return stored
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"task id {record.task_id!r} is already stored for another task"
            ) from exc

    def _update_in(self, conn: sqlite3.Connection, record: TaskRecord) -> TaskRecord:
        """:meth:`update`'s write, in the caller's transaction (totals not folded)."""
        rows = conn.execute(f"{SELECT} WHERE local_id = ?", (record.local_id,)).fetchall()
        if not rows:
            conn.execute(INSERT, (*to_row(record), self._writer))
            return from_row(to_row(record))
        stored = from_row(rows[0])
        merged = merge_update(stored, record)
        if merged is None:
            return stored
        row = to_row(merged)
        conn.execute(UPDATE, (*row[1:], merged.local_id))
        return from_row(row)

    def update_many(self, records: Sequence[TaskRecord]) -> list[TaskRecord]:
        """:meth:`update` of each record in one transaction (all or none): the stored
        record of each afterwards, in order. For many tasks ending at once (a session
        closing before its queued requests were sent)."""
        try:
            with self._write() as conn:
                stored = [self._update_in(conn, record) for record in records]
                _totals.fold(conn)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"a task id is already stored for another task: {exc}") from exc
        return stored

    def count_reuse(self, local_id: str) -> TaskRecord | None:
        """Count one more identical request handed this task: ``reuses + 1``, in SQL, so two
        processes reusing it at once both count. Returns the stored record (``None``: no
        such task)."""
        with self._write() as conn:
            conn.execute("UPDATE tasks SET reuses = reuses + 1 WHERE local_id = ?", (local_id,))
            _totals.fold(conn)
            rows = conn.execute(f"{SELECT} WHERE local_id = ?", (local_id,)).fetchall()
        return from_row(rows[0]) if rows else None

    def recover_interrupted(self, local_ids: Iterable[str] | None = None) -> int:
        """Settle local rows whose writer stopped; count them.

        Run when the store opens (for every row), and by a session following rows another
        writer had not sent (for those, ``local_ids``). A ``submitting`` row becomes
        ``submit_unknown`` (its request may have reached the server); a ``waiting_to_send``
        row becomes ``not_sent`` (its request never left). A row whose writer is still
        running (another kernel, or an open Store of this process) is left alone, unless it
        is older than :data:`SUBMIT_GRACE`; a writer that then finds its row settled does not
        send it.
        """
        now = self._clock()
        candidates = self._read(
            "SELECT local_id, status, writer, created_at, updated_at FROM tasks "
            "WHERE status IN (?, ?)",
            tuple(RECOVERED_AS),
        )
        if local_ids is not None:
            wanted = set(local_ids)
            candidates = [row for row in candidates if row[0] in wanted]
        dead = [
            (local_id, status)
            for local_id, status, writer, created, updated in candidates
            if not writer_alive(writer, now - max(created, updated))
        ]
        if not dead:
            return 0
        recovered = 0
        with self._write() as conn:
            for local_id, status in dead:
                new_status, error = RECOVERED_AS[status]
                # Re-checked under the write lock: the row may have moved on meanwhile.
                cursor = conn.execute(
                    "UPDATE tasks SET status = ?, error = ?, updated_at = ?, finished_at = ? "
                    "WHERE local_id = ? AND status = ?",
                    (new_status, error, now, now, local_id, status),
                )
                recovered += cursor.rowcount
        return recovered

    def find_reusable(self, fingerprint: str) -> TaskRecord | None:
        """A stored task to reuse for an identical request, so a re-run does not pay twice.

        In this order: the newest ``success`` with this fingerprint whose image files all
        still exist (and that produced at least one image or text); else the newest task
        with this fingerprint still in flight (local or active); else the newest
        ``timed_out`` or ``unavailable`` one the server knows (it has a task id), which the
        caller resumes, since the server may still finish or hold it; else the newest
        ``submit_unknown`` one, since that submit may have been charged and re-sending it
        needs the user's explicit ``force``; else ``None``.
        """
        rows = self._read(
            f"{SELECT} WHERE fingerprint = ? AND status = ? "
            "ORDER BY created_at DESC, local_id DESC",
            (fingerprint, TaskStatus.SUCCESS.value),
        )
        # File checks happen outside any transaction: they touch the disk.
        for row in rows:
            record = from_row(row)
            if (record.images or record.texts) and all(
                os.path.exists(image.path) for image in record.images
            ):
                return record
        for statuses, need_id in (
            (IN_FLIGHT, False),
            (RESUMABLE, True),
            ((TaskStatus.SUBMIT_UNKNOWN.value,), False),
        ):
            marks = ", ".join("?" for _ in statuses)
            with_id = " AND task_id IS NOT NULL" if need_id else ""
            rows = self._read(
                f"{SELECT} WHERE fingerprint = ? AND status IN ({marks}){with_id} "
                "ORDER BY created_at DESC, local_id DESC LIMIT 1",
                (fingerprint, *statuses),
            )
            if rows:
                return from_row(rows[0])
        return None

    def known_fingerprints(self, fingerprints: Iterable[str]) -> set[str]:
        """Which of ``fingerprints`` any stored task has: a batch asks :meth:`find_reusable`
        only about those (one indexed read per few hundred, not four per request)."""
        wanted = list(dict.fromkeys(fingerprints))
        found: set[str] = set()
        for start in range(0, len(wanted), _FINGERPRINTS_PER_READ):
            chunk = wanted[start : start + _FINGERPRINTS_PER_READ]
            marks = ", ".join("?" for _ in chunk)
            rows = self._read(
                f"SELECT DISTINCT fingerprint FROM tasks WHERE fingerprint IN ({marks})",  # noqa: S608 -- placeholders only
                chunk,
            )
            found.update(row[0] for row in rows)
        return found

    def unfinished(self) -> list[TaskRecord]:
        """Tasks to poll again (active, timed out or unavailable), oldest first: what
        ``resume()`` takes.

        ``submit_unknown`` rows are not included: without a task id there is nothing to poll.
        """
        marks = ", ".join("?" for _ in UNFINISHED)
        rows = self._read(
            f"{SELECT} WHERE status IN ({marks}) ORDER BY created_at, local_id", UNFINISHED
        )
        return [from_row(row) for row in rows]

    # -- leases -----------------------------------------------------------------------

    def acquire_lease(self, local_id: str, owner: str, ttl: float) -> bool:
        """Take the right to poll a task for ``ttl`` seconds; ``True`` if it is now ours.

        Succeeds when nobody holds it, the holder's lease expired, or we hold it already
        (then it is extended), and only while the task's row is still in flight: a kernel
        whose read of the row is stale (another one polled it to its end and let go
        meanwhile) is refused, and reads the ended row instead of polling it again.
        Atomic across processes: one write transaction decides.
        """
        _check_ttl(ttl)
        with self._write() as conn:
            now = self._clock()
            ended = conn.execute(
                f"SELECT 1 FROM tasks WHERE local_id = ? AND status NOT IN ({_ACTIVE_MARKS})",  # noqa: S608
                (local_id, *ACTIVE),
            ).fetchone()
            if ended is not None:
                return False
            held = conn.execute(
                "SELECT owner FROM leases WHERE local_id = ? AND owner != ? AND expires_at > ?",
                (local_id, owner, now),
            ).fetchone()
            if held is not None and owner_process_gone(held[0]):
                # Its kernel crashed: no need to wait out the lease (reliability.md L1).
                conn.execute(
                    "DELETE FROM leases WHERE local_id = ? AND owner = ?", (local_id, held[0])
                )
            cursor = conn.execute(
                "INSERT INTO leases (local_id, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (local_id) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE leases.owner = excluded.owner OR leases.expires_at <= ?",
                (local_id, owner, now + ttl, now),
            )
            return cursor.rowcount > 0

    def renew_leases(self, owner: str, local_ids: Iterable[str], ttl: float) -> set[str]:
        """Extend ``owner``'s leases on these tasks in one transaction; return those held.

        A lease that expired but was not taken over by anyone is still ours and is renewed;
        one that another owner took is not, and its id is missing from the result.
        """
        _check_ttl(ttl)
        ids = list(dict.fromkeys(local_ids))
        held: set[str] = set()
        if not ids:
            return held
        with self._write() as conn:
            expires = self._clock() + ttl
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                conn.execute(
                    f"UPDATE leases SET expires_at = ? WHERE owner = ? AND local_id IN ({marks})",  # noqa: S608
                    (expires, owner, *chunk),
                )
                held.update(
                    row[0]
                    for row in conn.execute(
                        f"SELECT local_id FROM leases WHERE owner = ? AND local_id IN ({marks})",  # noqa: S608
                        (owner, *chunk),
                    )
                )
        return held

    def release_lease(self, local_id: str, owner: str) -> None:
        """Give up ``owner``'s lease on a task (nothing happens if someone else holds it)."""
        with self._write() as conn:
            conn.execute("DELETE FROM leases WHERE local_id = ? AND owner = ?", (local_id, owner))

    def release_all_leases(self, owner: str) -> None:
        """Give up every lease ``owner`` holds (a closing session hands its tasks on at once)."""
        with self._write() as conn:
            conn.execute("DELETE FROM leases WHERE owner = ?", (owner,))

    def lease_holder(self, local_id: str) -> str | None:
        """Who holds the lease on a task now, or ``None`` when it is free or expired."""
        rows = self._read(
            "SELECT owner FROM leases WHERE local_id = ? AND expires_at > ?",
            (local_id, self._clock()),
        )
        return str(rows[0][0]) if rows else None

    # -- listing ----------------------------------------------------------------------

    def count(
        self,
        *,
        status: StatusFilter = None,
        model: ModelFilter = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
    ) -> int:
        """How many tasks match the filters (see :meth:`page` for their meaning).

        Unfiltered, the kept total is read (:mod:`.totals`), not the rows."""
        if _unfiltered(status, model, since, until, text):
            totals = self.totals()
            if totals is not None:
                return totals.tasks
        where, params = where_clause(status, model, since, until, text)
        rows = self._read(f"SELECT count(*) FROM tasks{where}", params)  # noqa: S608
        return int(rows[0][0])

    def page(
        self,
        offset: int,
        limit: int,
        *,
        newest_first: bool = False,
        status: StatusFilter = None,
        model: ModelFilter = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
    ) -> list[TaskRecord]:
        """``limit`` tasks from position ``offset``, oldest first (or newest first).

        Filters: ``status`` (one or several), ``model`` (one or several), ``since`` (created
        at or after, epoch seconds), ``until`` (created before), ``text`` (case-insensitive
        substring of the prompt). Positions agree with :meth:`count` under the same filters,
        so a caller turns a negative index into ``count() + index``.

        Raises:
            ValueError: a negative ``offset`` or ``limit``.
        """
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must be >= 0 (turn negative indices via count())")
        if limit == 0:
            return []
        where, params = where_clause(status, model, since, until, text)
        direction = " DESC" if newest_first else ""
        order = ", ".join(f"{column}{direction}" for column in ORDER)
        # The inner query pages over the index alone; only the rows shown are read in full.
        sql = (
            f"{SELECT} WHERE rowid IN (SELECT rowid FROM tasks{where} "  # noqa: S608
            f"ORDER BY {order} LIMIT ? OFFSET ?) ORDER BY {order}"
        )
        rows = self._read(sql, (*params, limit, offset))
        return [from_row(row) for row in rows]

    def page_after(
        self,
        key: tuple[float, str] | None,
        limit: int,
        *,
        newest_first: bool = False,
        status: StatusFilter = None,
        model: ModelFilter = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
    ) -> list[TaskRecord]:
        """The ``limit`` tasks that follow ``key`` (a task's ``(created_at, local_id)``) in
        the listing order, oldest first (or newest first: those older than ``key``);
        ``key=None`` starts at the beginning. Filters as in :meth:`page`.

        Keyset paging: the creation-time index is entered at ``key``, so every page costs
        what it shows, however deep into the history it is (``OFFSET`` walks every row
        before the page). Pages stay put while other tasks are added.

        Raises:
            ValueError: a negative ``limit``.
        """
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            return []
        where, params = where_clause(status, model, since, until, text)
        if key is not None:
            where, params = _after(where, params, key, newest_first=newest_first)
        direction = " DESC" if newest_first else ""
        order = ", ".join(f"{column}{direction}" for column in ORDER)
        sql = (
            f"{SELECT} WHERE rowid IN (SELECT rowid FROM tasks{where} "  # noqa: S608
            f"ORDER BY {order} LIMIT ?) ORDER BY {order}"
        )
        return [from_row(row) for row in self._read(sql, (*params, limit))]

    def count_after(
        self,
        key: tuple[float, str],
        *,
        newest_first: bool = False,
        status: StatusFilter = None,
        model: ModelFilter = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
    ) -> int:
        """How many tasks come after ``key`` in the listing order (newest first: how many
        are newer than it), which is the position of the task after ``key``."""
        where, params = where_clause(status, model, since, until, text)
        where, params = _after(where, params, key, newest_first=not newest_first)
        rows = self._read(f"SELECT count(*) FROM tasks{where}", params)  # noqa: S608
        return int(rows[0][0])

    def totals(self) -> _totals.Totals | None:
        """The whole history's kept totals (count, cost, reuses; see :mod:`.totals`), read
        without touching the rows; ``None`` if this file has none."""
        with self._lock:
            return _totals.read(self._db())

    def total_cost(
        self,
        *,
        status: StatusFilter = None,
        model: ModelFilter = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
    ) -> Decimal:
        """The sum of ``consumed`` over the matching tasks, exactly (as ``Decimal``).

        Unfiltered, the kept total is read (:mod:`.totals`); it equals the row-by-row sum,
        which runs instead only where that cannot be sure (more than 28 digits)."""
        if _unfiltered(status, model, since, until, text):
            totals = self.totals()
            if totals is not None and totals.matches_scan():
                return totals.cost
        return self._cost_sum(where_clause(status, model, since, until, text), reused=False)

    def reused_cost(
        self,
        *,
        status: StatusFilter = None,
        model: ModelFilter = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
    ) -> tuple[int, Decimal]:
        """How many times the matching tasks were handed back for an identical request
        (their ``reuses``), and the credits those hand-backs were not charged: each task's
        ``consumed`` once per reuse. Unfiltered, read from the kept totals."""
        if _unfiltered(status, model, since, until, text):
            totals = self.totals()
            if totals is not None and totals.matches_scan():
                return totals.reuses, totals.reused
        clause = where_clause(status, model, since, until, text)
        where, params = clause
        where = f"{where} AND reuses > 0" if where else " WHERE reuses > 0"
        (count,) = self._read(f"SELECT COALESCE(SUM(reuses), 0) FROM tasks{where}", params)[0]  # noqa: S608
        return int(count), self._cost_sum(clause, reused=True)

    def largest_cost(self, model: str) -> Decimal | None:
        """The largest ``consumed`` any task of ``model`` was charged, or ``None`` when none
        was (a budget's estimate of what the next one costs)."""
        sql = "SELECT consumed FROM tasks WHERE model = ? AND consumed IS NOT NULL"
        costs = [stored_cost(value) for (value,) in self._read(sql, (model,))]
        known = [cost for cost in costs if cost is not None]
        return max(known) if known else None

    def _cost_sum(self, clause: tuple[str, list[Any]], *, reused: bool) -> Decimal:
        where, params = clause
        where = f"{where} AND consumed IS NOT NULL" if where else " WHERE consumed IS NOT NULL"
        if reused:
            where += " AND reuses > 0"
        total = Decimal(0)
        sql = f"SELECT consumed, reuses FROM tasks{where}"  # noqa: S608
        for value, reuses in self._read(sql, params):
            amount = stored_cost(value)
            if amount is not None:
                total = credits_sum(total, amount * reuses if reused else amount)
        return total

    # -- ratings, tags, notes, search -------------------------------------------------

    def annotate(
        self,
        local_id: str,
        *,
        rating: int | EllipsisType | None = ...,
        note: str | EllipsisType | None = ...,
        add_tags: Sequence[str] = (),
        remove_tags: Sequence[str] = (),
    ) -> Annotation:
        """Set a task's rating and/or note (``None`` clears; left out: unchanged), add and
        remove tags, in one transaction; return the task's annotation afterwards.

        Values are checked first (:mod:`.annotations`), so a bad one writes nothing.

        Raises:
            ValidationError: a bad rating, tag or note.
            KeyError: no task with this local id is stored.
        """
        checked_rating = None if rating is ... else _notes.check_rating(rating)
        checked_note = None if note is ... else _notes.clean_note(note)
        added = _notes.clean_tags(add_tags) if add_tags else []
        removed = _notes.clean_tags(remove_tags) if remove_tags else []
        with self._write() as conn:
            if (
                conn.execute("SELECT 1 FROM tasks WHERE local_id = ?", (local_id,)).fetchone()
                is None
            ):
                raise KeyError(f"no task {local_id!r} in this history")
            now = self._clock()
            if rating is not ...:
                _notes.write_rating(conn, local_id, checked_rating, now)
            if note is not ...:
                _notes.write_note(conn, local_id, checked_note, now)
            if added:
                _notes.write_tags(conn, local_id, added, add=True)
            if removed:
                _notes.write_tags(conn, local_id, removed, add=False)
            found = _notes.read_annotations(conn, [local_id])
        annotation = found.get(local_id, _notes.EMPTY)
        self._tell_annotated(local_id, annotation)
        return annotation

    def add_annotation_listener(
        self, listener: Callable[[str, Annotation], object]
    ) -> Callable[[], None]:
        """Call ``listener(local_id, annotation)`` after each :meth:`annotate` of this store,
        on the annotating thread, once the write is committed; returns the remover.

        Only changes made through this store object are told (another kernel's are seen
        on the next read). A listener that raises is logged and never undoes the change.
        """
        self._annotation_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._annotation_listeners.remove(listener)

        return remove

    def _tell_annotated(self, local_id: str, annotation: Annotation) -> None:
        for listener in list(self._annotation_listeners):
            try:
                listener(local_id, annotation)
            except Exception:
                logger.exception("an annotation listener failed")

    def annotation(self, local_id: str) -> Annotation:
        """A task's rating, tags and note as stored now (empty when it has none)."""
        with self._lock:
            found = _notes.read_annotations(self._db(), [local_id])
        return found.get(local_id, _notes.EMPTY)

    def annotations(self, local_ids: Sequence[str] | None = None) -> dict[str, Annotation]:
        """The annotations of these tasks (``None``: all), by local id; tasks without any
        are left out."""
        with self._lock:
            return _notes.read_annotations(self._db(), local_ids)

    def search(
        self,
        text: str | None = None,
        *,
        tags: str | Iterable[str] | None = None,
        rating: RatingFilter = None,
        limit: int = 100,
        status: StatusFilter = None,
        model: ModelFilter = None,
        since: float | None = None,
        until: float | None = None,
        substring: str | None = None,
    ) -> list[TaskRecord]:
        """The newest ``limit`` tasks matching everything given, newest first.

        ``text`` is searched in the full-text index of prompts (words as prefixes, all of
        them; ``"quoted phrases"``; see :mod:`.search`), ``tags`` must all be on the task,
        ``rating`` is an int or an inclusive ``(lowest, highest)`` pair; ``status``,
        ``model``, ``since``, ``until`` and ``substring`` (the ``text`` of :meth:`page`) as in
        :meth:`page`. Each condition is answered by an index; the newest matches are found
        by walking the creation-time index backwards.

        Raises:
            ValidationError: a bad tag or rating; ValueError: a negative ``limit``.
        """
        _check_limit(limit)
        clauses, params = self._search_where(
            text, tags, rating, status, model, since, until, substring
        )
        if limit == 0:
            return []
        order = ", ".join(f"{column} DESC" for column in ORDER)
        with self._lock:
            conn = self._db()
            clauses, params = _planned(conn, clauses, params, limit)
            where = " WHERE " + " AND ".join(clauses) if clauses else ""
            sql = (
                f"{SELECT} WHERE rowid IN (SELECT rowid FROM tasks{where} "  # noqa: S608
                f"ORDER BY {order} LIMIT ?) ORDER BY {order}"
            )
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [from_row(row) for row in rows]

    def select_rows(
        self,
        columns: str | Callable[[sqlite3.Connection], str],
        text: str | None = None,
        *,
        tags: str | Iterable[str] | None = None,
        rating: RatingFilter = None,
        limit: int | None = None,
        status: StatusFilter = None,
        model: ModelFilter = None,
        since: float | None = None,
        until: float | None = None,
        substring: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Plain rows of ``columns`` (an SQL select list over ``tasks``, from the caller's
        own constants, or a function of the connection giving one) for the tasks matching
        everything given, oldest first; ``limit``: only the newest that many. Filters as in
        :meth:`search` (none: every task). For bulk readers (``History.to_pandas()``),
        which need no records.

        Raises:
            ValidationError: a bad tag or rating; ValueError: a negative ``limit``.
        """
        if limit is not None:
            _check_limit(limit)
        clauses, params = self._search_where(
            text, tags, rating, status, model, since, until, substring
        )
        if limit == 0:
            return []
        order = ", ".join(ORDER)
        with self._lock:
            conn = self._db()
            clauses, params = _planned(conn, clauses, params, limit)
            where = " WHERE " + " AND ".join(clauses) if clauses else ""
            if callable(columns):
                columns = columns(conn)
            if limit is None:
                sql = f"SELECT {columns} FROM tasks{where} ORDER BY {order}"  # noqa: S608
            else:
                newest = ", ".join(f"{column} DESC" for column in ORDER)
                sql = (
                    f"SELECT {columns} FROM tasks WHERE rowid IN (SELECT rowid FROM "  # noqa: S608
                    f"tasks{where} ORDER BY {newest} LIMIT ?) ORDER BY {order}"
                )
                params = [*params, limit]
            return conn.execute(sql, params).fetchall()

    def _search_where(
        self,
        text: str | None,
        tags: str | Iterable[str] | None,
        rating: RatingFilter,
        status: StatusFilter,
        model: ModelFilter,
        since: float | None,
        until: float | None,
        substring: str | None,
    ) -> tuple[list[str], list[Any]]:
        """The conditions (and parameters) of a search, each answered by an index."""
        extra, extra_params, fallback = search_clauses(text, tags, rating, indexed=self.full_text)
        clauses: list[str] = []
        params: list[Any] = []
        # Tags and ratings are on a few tasks: their lookups should lead. Given a status
        # or a model as well, SQLite's planner walks that column's index instead (a third
        # of the history for a common model, each row checked against the lists), so its
        # index is taken out of the choice (a unary +) when an annotation narrows first.
        annotated = has_annotation_filter(extra)
        for where, found in (
            where_clause(status, model, since, until, substring),
            where_clause(None, None, None, None, fallback),
        ):
            if where:
                where = where.removeprefix(" WHERE ")
                if annotated:
                    where = _NOT_BY_INDEX.sub(r"+\1 IN (", where)
                clauses.append(where)
                params.extend(found)
        clauses.extend(extra)
        params.extend(extra_params)
        return clauses, params

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. Safe to call twice."""
        with self._lock:
            conn, self._conn = self._conn, None
            writer_closed(self._token)
            _OPEN.discard(self)
            if conn is not None:
                conn.close()
                # After the connection: SQLite has checkpointed and removed the WAL.
                self._opening.end()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else self.journal_mode
        return f"<Store {str(self.path)!r} ({state})>"


# Stores open in this process, closed at interpreter exit so that the next open finds a
# clean close (and the WAL checkpointed). Registered when this module is imported, before
# the engine's exit hook (the core imports the store first), so it runs after the engine
# has stopped the sessions, which still release their leases through their store.
_OPEN: weakref.WeakSet[Store] = weakref.WeakSet()


def _close_at_exit() -> None:
    for store in list(_OPEN):
        # A forked child leaves its parent's stores alone (this module's own class).
        if store._pid == os.getpid():  # noqa: SLF001
            with contextlib.suppress(Exception):
                store.close()


atexit.register(_close_at_exit)


_NOT_BY_INDEX = re.compile(r"\b(status|model) IN \(")


def _planned(
    conn: sqlite3.Connection, clauses: list[str], params: list[Any], limit: int | None
) -> tuple[list[str], list[Any]]:
    """A search's conditions in the plan that suits its text: the text condition as the
    number of matches wants it, or, for a common word with a ``limit``, the rowids of the
    newest matches read from the index (:func:`.search.newest_matches`)."""
    count_matches(conn, clauses, params)
    newest = None if limit is None else newest_matches(conn, clauses, params, limit)
    if newest is None:
        return clauses, params
    return [ROWIDS_CLAUSE], [json.dumps(newest)]


def _check_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an int >= 0, not {limit!r}")


def _unfiltered(*filters: object) -> bool:
    return all(value is None or value == "" for value in filters)


def _after(
    where: str, params: list[Any], key: tuple[float, str], *, newest_first: bool
) -> tuple[str, list[Any]]:
    """``where`` narrowed to the rows past ``key`` in the order (a range of the index)."""
    created, local_id = float(key[0]), str(key[1])
    op = "<" if newest_first else ">"
    # A row value: SQLite enters the (created_at, local_id) index at the key.
    clause = f"(created_at, local_id) {op} (?, ?)"
    where = f"{where} AND {clause}" if where else f" WHERE {clause}"
    return where, [*params, created, local_id]


def _insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (values of :data:`INSERT`) a few hundred per statement.

    One statement per row would open a statement savepoint per row, and the prompt index
    (FTS5, filled by a trigger) writes its pending terms out at each savepoint: a batch of
    10,000 took about 2.5 times as long that way.
    """
    if len(rows) == 1:
        conn.execute(INSERT, rows[0])
        return
    head, _, values = INSERT.partition(" VALUES ")
    width = len(rows[0])
    # Connection.getlimit is Python 3.11+; SQLite's oldest limit (999 values) otherwise.
    getlimit = getattr(conn, "getlimit", None)
    limit: int = getlimit(_LIMIT_VARIABLE_NUMBER) if getlimit else 999
    per = max(1, min(_ROWS_PER_INSERT, limit // width))
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        sql = f"{head} VALUES {', '.join([values] * len(chunk))}"
        conn.execute(sql, [value for row in chunk for value in row])


def _next_string(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (SQLite compares
    text as UTF-8 bytes, in code point order), or ``None`` when there is no such string."""
    last = ord(prefix[-1]) + 1
    if last > 0x10FFFF or 0xD800 <= last <= 0xDFFF:
        return None
    return prefix[:-1] + chr(last)


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"a lease needs a positive ttl, not {ttl!r}")


def _hex(sha256: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
    return sha256
