"""The history store: every task's record in one SQLite file that outlives the kernel.

Why SQLite, and how it is used (research/reliability.md section 5):

* One file (``<data_dir>/history.sqlite3``) shared by every kernel on the machine. WAL mode
  lets readers and the one writer work at once; ``synchronous=NORMAL`` keeps every committed
  transaction through an application crash (only a power loss may roll the last ones back).
* Each read-modify-write is one short ``BEGIN IMMEDIATE`` transaction, and nothing slow
  (network, image files) ever happens inside one, so the 10 s busy timeout is never reached
  in practice and "database is locked" does not reach the user.
* Records are plain columns (JSON text for lists, ``Decimal`` as text); nothing is pickled,
  so a store file can never run code, and no API key is ever written (no record holds one).
* The store enforces the task state machine of design.md section 4: a late or stale write
  never downgrades a finished task (:meth:`Store.update`).
* A damaged file, or one written by a newer version, is moved aside (never deleted) and a
  fresh store is created, with a :class:`StoreRecoveredWarning` saying where the old file went.
* Leases (owner, expiry) make sure two kernels never poll the same task.

Standard library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from nanobanana_jupyter._wire.errors import ConfigurationError, redact
from nanobanana_jupyter._wire.models import TaskStatus, credits_sum, usable_credits

from .records import ImageRecord, TaskRecord

__all__ = ["Store", "StoreRecoveredWarning", "StoreWarning", "new_lease_owner"]

SCHEMA_VERSION = 1
"""Stored in ``PRAGMA user_version``; a file with a higher number is from a newer release."""

BUSY_TIMEOUT = 10.0
"""Seconds a connection waits for another process's write lock before giving up."""

MAX_ERROR_CHARS = 2000
"""Error texts are capped: a server can send a whole HTML page as a "reason"."""

SUBMIT_GRACE = 600.0
"""Seconds after which a ``submitting`` row is interrupted even if its writer looks alive.

A submit answers or times out within ``submit_timeout`` (30 s by default); ten minutes
leaves room for any setting while bounding the harm of a recycled process id.
"""

_INTERRUPTED_BEFORE_SEND = (
    "The process holding this request stopped before it was sent (it was waiting for its "
    "turn under the session's submit caps), so nothing was charged: generate it again."
)
_INTERRUPTED_SUBMIT = (
    "The submit was interrupted before the server answered (the process writing it stopped). "
    "It may have reached the server and may have been charged. It is never re-sent "
    "automatically: check the provider's dashboard, or submit again yourself if you accept "
    "a second charge."
)

# What an interrupted local row becomes (recover_interrupted): status and error.
_RECOVERED_AS = {
    TaskStatus.SUBMITTING.value: (TaskStatus.SUBMIT_UNKNOWN.value, _INTERRUPTED_SUBMIT),
    TaskStatus.WAITING_TO_SEND.value: (TaskStatus.NOT_SENT.value, _INTERRUPTED_BEFORE_SEND),
}

# Statuses a poller is (or may soon be) working on; the local ones have no task id yet.
_ACTIVE = tuple(s.value for s in TaskStatus if s.is_active)
_IN_FLIGHT = (*(s.value for s in TaskStatus if s.is_local), *_ACTIVE)
# Ended without a final answer, by this client's own doing (a deadline, 404s for a while, a
# success whose image is not here): the server may still have or finish the task, so
# resume() polls them again and a re-run reuses them rather than paying again. Abandoned
# tasks are neither: the user let go of them.
_RESUMABLE = (TaskStatus.TIMED_OUT.value, TaskStatus.UNAVAILABLE.value)
_UNFINISHED = (*_ACTIVE, *_RESUMABLE)
# Finished for good: nothing but a refresh with the same status is accepted.
_FINAL = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.NOT_SENT})
# A submit whose fate is unknown can be reconciled by a webhook or by the user.
_FROM_SUBMIT_UNKNOWN = frozenset(
    {*(s for s in TaskStatus if s.is_active), TaskStatus.SUCCESS, TaskStatus.FAILED}
)

# SQLite primary result codes that mean "this file is damaged or is no database at all";
# every other error (locked, read-only, cannot open) must never get a file moved aside.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# Older SQLite builds allow at most 999 bound parameters per statement.
_CHUNK = 500

# Each statement is a no-op on a current store, so running them at every open is cheap.
_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS tasks (
        local_id      TEXT PRIMARY KEY NOT NULL,
        task_id       TEXT,
        status        TEXT NOT NULL,
        prompt        TEXT NOT NULL,
        model         TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        aspect_ratio  TEXT,
        image_size    TEXT,
        callback_url  TEXT,
        refs          TEXT NOT NULL DEFAULT '[]',
        submitted_at  REAL,
        finished_at   REAL,
        consumed      TEXT,
        error         TEXT,
        result_urls   TEXT NOT NULL DEFAULT '[]',
        images        TEXT NOT NULL DEFAULT '[]',
        texts         TEXT NOT NULL DEFAULT '[]',
        polls         INTEGER NOT NULL DEFAULT 0,
        writer        TEXT
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS tasks_task_id ON tasks (task_id) WHERE task_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at, local_id)",
    "CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, created_at)",
    "CREATE INDEX IF NOT EXISTS tasks_model ON tasks (model, created_at)",
    "CREATE INDEX IF NOT EXISTS tasks_fingerprint ON tasks (fingerprint, created_at)",
    """CREATE TABLE IF NOT EXISTS leases (
        local_id    TEXT PRIMARY KEY NOT NULL,
        owner       TEXT NOT NULL,
        expires_at  REAL NOT NULL
    ) WITHOUT ROWID""",
)

# Record field -> column, in column order. ``writer`` is the store's own bookkeeping.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("local_id", "local_id"),
    ("task_id", "task_id"),
    ("status", "status"),
    ("prompt", "prompt"),
    ("model", "model"),
    ("fingerprint", "fingerprint"),
    ("created_at", "created_at"),
    ("updated_at", "updated_at"),
    ("aspect_ratio", "aspect_ratio"),
    ("image_size", "image_size"),
    ("callback_url", "callback_url"),
    ("references", "refs"),
    ("submitted_at", "submitted_at"),
    ("finished_at", "finished_at"),
    ("consumed", "consumed"),
    ("error", "error"),
    ("result_urls", "result_urls"),
    ("images", "images"),
    ("texts", "texts"),
    ("polls", "polls"),
)
_COLUMN_LIST = ", ".join(column for _, column in _COLUMNS)
_INSERT = (
    f"INSERT INTO tasks ({_COLUMN_LIST}, writer) "  # noqa: S608 -- constant column names
    f"VALUES ({', '.join('?' for _ in _COLUMNS)}, ?)"
)
_UPDATE = (
    "UPDATE tasks SET "  # noqa: S608 -- constant column names
    + ", ".join(f"{column} = ?" for _, column in _COLUMNS[1:])
    + " WHERE local_id = ?"
)
_SELECT = f"SELECT {_COLUMN_LIST} FROM tasks"  # noqa: S608 -- constant column names
_ORDER = ("created_at", "local_id")

# Store objects open in this process, by token: their ``submitting`` rows are in flight.
_OPEN_TOKENS: set[str] = set()
_HOST = socket.gethostname()


class StoreWarning(UserWarning):
    """Something about the history store needs attention, but it still works."""


class StoreRecoveredWarning(StoreWarning):
    """The store file could not be used; it was moved aside (kept, not deleted).

    ``moved_to`` is where the old file is now; ``reason`` says why it was moved.
    """

    def __init__(self, message: str, *, moved_to: Path, reason: str) -> None:
        super().__init__(message)
        self.moved_to = moved_to
        self.reason = reason


StatusFilter = TaskStatus | str | Iterable[TaskStatus | str] | None
ModelFilter = str | Iterable[str] | None


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
        self._writer = f"{_HOST}|{self._pid}|{self._token}"
        self.journal_mode = "wal"
        self._conn: sqlite3.Connection | None = self._open()
        _OPEN_TOKENS.add(self._token)
        try:
            self.recovered = self.recover_interrupted()
        except BaseException:
            self.close()
            raise

    # -- opening ----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the directory for the history store {self.path}: {exc}. "
                "Set NANOBANANA_DATA_DIR to a writable directory."
            ) from exc
        problem = self._diagnose()
        if problem is not None:
            self._move_aside(*problem)
        conn = self._connect()
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(
                self.path,
                # sqlite3_busy_timeout: wait for another process's lock instead of failing.
                timeout=BUSY_TIMEOUT,
                # Transactions are explicit (BEGIN IMMEDIATE); everything else autocommits.
                isolation_level=None,
                # One connection serves the engine thread and the main thread, behind a lock.
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._unwritable(exc) from exc

    def _unwritable(self, exc: BaseException) -> ConfigurationError:
        return ConfigurationError(
            f"cannot open or write the history store {self.path}: {exc}. Check that the "
            "directory and file are writable, or set NANOBANANA_DATA_DIR to another directory."
        )

    def _diagnose(self) -> tuple[str, str] | None:
        """Return ``(kind, reason)`` when the file must be moved aside, else ``None``.

        The check runs on a read-only connection: a read-write one could checkpoint a WAL
        into a damaged file or delete side files on close, and the evidence moved aside
        should be exactly what was found.
        """
        try:
            if self.path.stat().st_size == 0:
                return None  # missing or empty: SQLite makes a new database of it
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unwritable(exc) from exc
        try:
            conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise self._unwritable(exc) from exc
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                return (
                    "newer-schema",
                    f"it was written by a newer release (schema version {version}; this "
                    f"release knows up to {SCHEMA_VERSION})",
                )
            check = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if check != ["ok"]:
                return "corrupt", "it failed SQLite's integrity check: " + "; ".join(check[:3])
            if version == 0:
                tables = [
                    row[0]
                    for row in conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%'"
                    )
                ]
                if tables:
                    return (
                        "corrupt",
                        "it is an SQLite database but not a nanobanana history "
                        f"(tables: {', '.join(sorted(tables)[:5])})",
                    )
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                return "corrupt", f"SQLite cannot read it ({exc})"
            raise self._unwritable(exc) from exc
        finally:
            conn.close()
        return None

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Journal mode, schema and text search for a healthy (or new) file."""
        self.journal_mode = self._set_journal_mode(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.create_function("nb_icontains", 2, _icontains, deterministic=True)
        # One transaction, so racing kernels create the schema once. It always rewrites
        # user_version, which makes it the probe that the file really can be written: a
        # read-only file or directory fails here, at open, not on the first task.
        try:
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                # Another process put a newer store here since the check above.
                raise ConfigurationError(
                    f"the history store {self.path} was just created by a newer release "
                    f"(schema version {version}); upgrade nanobanana-jupyter to use it"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback_quietly(conn)
            raise self._unwritable(exc) from exc
        except BaseException:
            _rollback_quietly(conn)
            raise

    def _set_journal_mode(self, conn: sqlite3.Connection) -> str:
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            mode, why = "", str(exc)
        else:
            why = f"SQLite kept journal mode {mode!r}"
        if mode == "wal":
            return mode
        # WAL needs shared memory and two side files next to the database; a read-only
        # directory or a network filesystem may refuse them. A rollback journal still gives
        # atomic, crash-safe transactions, only with less concurrency. TRUNCATE reuses the
        # journal file instead of deleting it each time.
        try:
            mode = str(conn.execute("PRAGMA journal_mode = TRUNCATE").fetchone()[0]).lower()
        except sqlite3.Error as exc:
            raise self._unwritable(exc) from exc
        warnings.warn(
            StoreWarning(
                f"WAL mode could not be enabled for the history store {self.path} ({why}); "
                f"using the {mode} rollback journal instead. Several kernels sharing this "
                "store will wait on each other more. Keep the store on a local, writable disk."
            ),
            stacklevel=5,
        )
        return mode

    def _move_aside(self, kind: str, reason: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self._clock()))
        target = self.path.with_name(f"{self.path.name}.{kind}-{stamp}")
        n = 1
        while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm", "-journal")):
            target = self.path.with_name(f"{self.path.name}.{kind}-{stamp}-{n}")
            n += 1
        try:
            # The side files belong to the database (sqlite.org/howtocorrupt.html):
            # they travel with it, and a new database must never pick them up.
            for suffix in ("-wal", "-shm", "-journal"):
                side = Path(f"{self.path}{suffix}")
                if side.exists():
                    os.replace(side, f"{target}{suffix}")
            os.replace(self.path, target)
        except OSError as exc:
            raise ConfigurationError(
                f"the history store {self.path} cannot be used ({reason}) and could not be "
                f"moved aside: {exc}. Move or remove it yourself, or set NANOBANANA_DATA_DIR."
            ) from exc
        warnings.warn(
            StoreRecoveredWarning(
                f"The history store {self.path} could not be used: {reason}. It was moved to "
                f"{target} (kept, not deleted) and a new, empty store was created.",
                moved_to=target,
                reason=reason,
            ),
            stacklevel=4,
        )

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
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (busy, disk full) may leave the transaction open.
                _rollback_quietly(conn)
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db().execute(sql, params).fetchall()

    # -- records ----------------------------------------------------------------------

    def insert(self, record: TaskRecord) -> None:
        """Write a new row (usually the intent, before the submit is sent); durable on return.

        Raises:
            ValueError: a row with this ``local_id`` (or this ``task_id``) already exists.
        """
        self.insert_many((record,))

    def insert_many(self, records: Iterable[TaskRecord]) -> None:
        """Insert many rows in one transaction (all or none): imports and benchmarks.

        Raises:
            ValueError: a ``local_id`` or ``task_id`` already exists; nothing was written.
        """
        rows = [(*_to_row(r), self._writer) for r in records]
        try:
            with self._write() as conn:
                conn.executemany(_INSERT, rows)
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"a task with this local_id or task_id is already stored: {exc}"
            ) from exc

    def get(self, local_id: str) -> TaskRecord | None:
        """The stored record with this local id, or ``None``."""
        rows = self._read(f"{_SELECT} WHERE local_id = ?", (local_id,))
        return _from_row(rows[0]) if rows else None

    def get_by_task_id(self, task_id: str) -> TaskRecord | None:
        """The stored record with this server task id, or ``None``."""
        rows = self._read(f"{_SELECT} WHERE task_id = ?", (task_id,))
        return _from_row(rows[0]) if rows else None

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
                rows = conn.execute(f"{_SELECT} WHERE local_id = ?", (record.local_id,)).fetchall()
                if not rows:
                    conn.execute(_INSERT, (*_to_row(record), self._writer))
                    return _from_row(_to_row(record))
                stored = _from_row(rows[0])
                merged = merge_update(stored, record)
                if merged is None:
                    return stored
                row = _to_row(merged)
                conn.execute(_UPDATE, (*row[1:], merged.local_id))
                return _from_row(row)
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"task id {record.task_id!r} is already stored for another task"
            ) from exc

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
            tuple(_RECOVERED_AS),
        )
        if local_ids is not None:
            wanted = set(local_ids)
            candidates = [row for row in candidates if row[0] in wanted]
        dead = [
            (local_id, status)
            for local_id, status, writer, created, updated in candidates
            if not _writer_alive(writer, now - max(created, updated))
        ]
        if not dead:
            return 0
        recovered = 0
        with self._write() as conn:
            for local_id, status in dead:
                new_status, error = _RECOVERED_AS[status]
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
            f"{_SELECT} WHERE fingerprint = ? AND status = ? "
            "ORDER BY created_at DESC, local_id DESC",
            (fingerprint, TaskStatus.SUCCESS.value),
        )
        # File checks happen outside any transaction: they touch the disk.
        for row in rows:
            record = _from_row(row)
            if (record.images or record.texts) and all(
                os.path.exists(image.path) for image in record.images
            ):
                return record
        for statuses, need_id in (
            (_IN_FLIGHT, False),
            (_RESUMABLE, True),
            ((TaskStatus.SUBMIT_UNKNOWN.value,), False),
        ):
            marks = ", ".join("?" for _ in statuses)
            with_id = " AND task_id IS NOT NULL" if need_id else ""
            rows = self._read(
                f"{_SELECT} WHERE fingerprint = ? AND status IN ({marks}){with_id} "
                "ORDER BY created_at DESC, local_id DESC LIMIT 1",
                (fingerprint, *statuses),
            )
            if rows:
                return _from_row(rows[0])
        return None

    def unfinished(self) -> list[TaskRecord]:
        """Tasks to poll again (active, timed out or unavailable), oldest first: what
        ``resume()`` takes.

        ``submit_unknown`` rows are not included: without a task id there is nothing to poll.
        """
        marks = ", ".join("?" for _ in _UNFINISHED)
        rows = self._read(
            f"{_SELECT} WHERE status IN ({marks}) ORDER BY created_at, local_id", _UNFINISHED
        )
        return [_from_row(row) for row in rows]

    # -- leases -----------------------------------------------------------------------

    def acquire_lease(self, local_id: str, owner: str, ttl: float) -> bool:
        """Take the right to poll a task for ``ttl`` seconds; ``True`` if it is now ours.

        Succeeds when nobody holds it, the holder's lease expired, or we hold it already
        (then it is extended). Atomic across processes: one statement decides.
        """
        _check_ttl(ttl)
        with self._write() as conn:
            now = self._clock()
            held = conn.execute(
                "SELECT owner FROM leases WHERE local_id = ? AND owner != ? AND expires_at > ?",
                (local_id, owner, now),
            ).fetchone()
            if held is not None and _owner_process_gone(held[0]):
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
        """How many tasks match the filters (see :meth:`page` for their meaning)."""
        where, params = _where(status, model, since, until, text)
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
        where, params = _where(status, model, since, until, text)
        direction = " DESC" if newest_first else ""
        order = ", ".join(f"{column}{direction}" for column in _ORDER)
        # The inner query pages over the index alone; only the rows shown are read in full.
        sql = (
            f"{_SELECT} WHERE rowid IN (SELECT rowid FROM tasks{where} "  # noqa: S608
            f"ORDER BY {order} LIMIT ? OFFSET ?) ORDER BY {order}"
        )
        rows = self._read(sql, (*params, limit, offset))
        return [_from_row(row) for row in rows]

    def total_cost(
        self,
        *,
        status: StatusFilter = None,
        model: ModelFilter = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
    ) -> Decimal:
        """The sum of ``consumed`` over the matching tasks, exactly (as ``Decimal``)."""
        where, params = _where(status, model, since, until, text)
        where = f"{where} AND consumed IS NOT NULL" if where else " WHERE consumed IS NOT NULL"
        total = Decimal(0)
        for (value,) in self._read(f"SELECT consumed FROM tasks{where}", params):  # noqa: S608
            amount = _decimal(value)
            if amount is not None:
                total = credits_sum(total, amount)
        return total

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. Safe to call twice."""
        with self._lock:
            conn, self._conn = self._conn, None
            _OPEN_TOKENS.discard(self._token)
            if conn is not None:
                conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else self.journal_mode
        return f"<Store {str(self.path)!r} ({state})>"


def merge_update(stored: TaskRecord, new: TaskRecord) -> TaskRecord | None:
    """Decide what an update writes: the merged record, or ``None`` to ignore the write.

    Transitions (design.md section 4):

    * ``success``, ``failed`` and ``not_sent`` are final: only a write with the same
      status is accepted (a refresh, e.g. images added after the download).
    * ``timed_out``, ``abandoned`` and ``unavailable`` may move to any status (resume).
    * ``submit_unknown`` may move to an active status, ``success`` or ``failed`` (a webhook
      or the user found the task), or be refreshed with the same status.
    * any non-terminal status may move anywhere, except backwards along the local states:
      a ``waiting_to_send`` write onto a row that has moved on, or a ``submitting`` write
      onto a row past ``submitting``, is a late echo of the intent and is ignored.

    What an accepted write can never do: lower ``polls``, change ``created_at``, or forget a
    known ``task_id``. A refresh of a terminal row adds information but never blanks it
    (images, URLs, texts, cost, error, times keep their stored value when the new is empty),
    so a stale copy of the record cannot wipe a finished result.
    """
    old, status = stored.status, new.status
    if status is TaskStatus.WAITING_TO_SEND and old is not TaskStatus.WAITING_TO_SEND:
        return None
    if status is TaskStatus.SUBMITTING and not old.is_local:
        return None
    if old.is_terminal and status is not old:
        if old in _FINAL:
            return None
        if old is TaskStatus.SUBMIT_UNKNOWN and status not in _FROM_SUBMIT_UNKNOWN:
            return None
    merged = new.replace(
        created_at=stored.created_at,
        polls=max(stored.polls, new.polls),
        task_id=new.task_id if new.task_id is not None else stored.task_id,
    )
    if old.is_terminal and status is old:
        keep: dict[str, Any] = {}
        for name in (
            "images",
            "result_urls",
            "texts",
            "consumed",
            "error",
            "submitted_at",
            "finished_at",
        ):
            if getattr(new, name) in (None, ()):
                keep[name] = getattr(stored, name)
        merged = merged.replace(**keep)
    return merged


# -- helpers ----------------------------------------------------------------------------


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back whatever is open; the error that got us here is the one to report."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"a lease needs a positive ttl, not {ttl!r}")


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """True for "damaged / not a database"; False for locked, read-only, cannot open..."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    # Python 3.10: damage is reported as a bare DatabaseError; the rest use subclasses.
    return type(exc) is sqlite3.DatabaseError


def new_lease_owner() -> str:
    """A lease owner id naming this host and process, so a crashed owner can be recognised."""
    return f"{_HOST}|{os.getpid()}|{uuid.uuid4().hex}"


def _owner_process_gone(owner: str) -> bool:
    """Whether a lease owner's process provably no longer exists (same host, POSIX only).

    Anything uncertain (another host, this process, an old-style id, no permission to
    probe) counts as alive: the lease then simply runs out.
    """
    host, _, rest = owner.partition("|")
    pid_text, _, _ = rest.partition("|")
    if host != _HOST or os.name != "posix" or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _writer_alive(writer: str | None, age: float) -> bool:
    """Whether the process that wrote a local (unsent or sending) row may still send it."""
    if not writer or age > SUBMIT_GRACE:
        return False
    host, _, rest = writer.partition("|")
    pid_text, _, token = rest.partition("|")
    if token in _OPEN_TOKENS:
        return True
    if host != _HOST:
        # Another machine's process cannot be checked; sharing a store across machines is
        # unsupported anyway (WAL needs one host), so its row is treated as interrupted.
        return False
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid() or os.name != "posix":
        # This process, whose Store that wrote the row is closed; or a platform where
        # os.kill(pid, 0) is no probe (on Windows it would terminate the process).
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return False
    return True


def _icontains(haystack: object, needle: object) -> int:
    if not isinstance(haystack, str) or not isinstance(needle, str):
        return 0
    return int(needle.casefold() in haystack.casefold())


def _values(value: object, kind: str) -> list[str]:
    if isinstance(value, (str, TaskStatus)):
        items: list[object] = [value]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise TypeError(f"{kind} filter must be a string or an iterable of strings")
    out = []
    for item in items:
        if kind == "status":
            out.append(item.value if isinstance(item, TaskStatus) else TaskStatus(str(item)).value)
        else:
            out.append(str(item))
    return out


def _where(
    status: StatusFilter,
    model: ModelFilter,
    since: float | None,
    until: float | None,
    text: str | None,
) -> tuple[str, list[Any]]:
    """A WHERE clause (with leading space, or empty) and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("status", status), ("model", model)):
        if value is None:
            continue
        values = _values(value, column)
        if not values:
            clauses.append("0")  # an empty selection matches nothing
            continue
        clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
        params.extend(values)
    if since is not None:
        clauses.append("created_at >= ?")
        params.append(float(since))
    if until is not None:
        clauses.append("created_at < ?")
        params.append(float(until))
    if text:
        if text.isascii():
            # LIKE runs in C and folds ASCII case, which is all an ASCII needle needs.
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("prompt LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        else:
            clauses.append("nb_icontains(prompt, ?)")
            params.append(text)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _json(items: Iterable[Any]) -> str:
    return json.dumps(list(items), ensure_ascii=False, separators=(",", ":"))


def _to_row(record: TaskRecord) -> tuple[Any, ...]:
    """The column values of a record, in :data:`_COLUMNS` order."""
    error = record.error
    if error is not None:
        # Defence in depth: the session already redacts, but a key must never hit the disk.
        error = redact(error, limit=MAX_ERROR_CHARS)
    return (
        record.local_id,
        record.task_id,
        TaskStatus(record.status).value,
        record.prompt,
        record.model,
        record.fingerprint,
        float(record.created_at),
        float(record.updated_at),
        record.aspect_ratio,
        record.image_size,
        record.callback_url,
        _json(record.references),
        record.submitted_at,
        record.finished_at,
        None if record.consumed is None else str(record.consumed),
        error,
        _json(record.result_urls),
        _json(dataclasses.asdict(image) for image in record.images),
        _json(record.texts),
        max(0, int(record.polls)),
    )


def _from_row(row: Sequence[Any]) -> TaskRecord:
    values = dict(zip((column for _, column in _COLUMNS), row, strict=True))
    try:
        status = TaskStatus(values["status"])
    except ValueError:
        # Written by a newer release with a status this one does not know.
        status = TaskStatus.UNRECOGNIZED
    return TaskRecord(
        local_id=values["local_id"],
        task_id=values["task_id"],
        status=status,
        prompt=values["prompt"],
        model=values["model"],
        fingerprint=values["fingerprint"],
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        aspect_ratio=values["aspect_ratio"],
        image_size=values["image_size"],
        callback_url=values["callback_url"],
        references=tuple(json.loads(values["refs"])),
        submitted_at=values["submitted_at"],
        finished_at=values["finished_at"],
        consumed=_decimal(values["consumed"]),
        error=values["error"],
        result_urls=tuple(json.loads(values["result_urls"])),
        images=tuple(ImageRecord.from_dict(item) for item in json.loads(values["images"])),
        texts=tuple(json.loads(values["texts"])),
        polls=values["polls"],
    )


def _decimal(value: object) -> Decimal | None:
    """A stored cost, exactly as written; ``None`` when it cannot be a cost.

    An older version stored any number the server sent (``1E+27``, ``-0``): such a value reads
    as an unknown cost, so no sum or view built on it can fail.
    """
    if value is None:
        return None
    try:
        return usable_credits(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None
