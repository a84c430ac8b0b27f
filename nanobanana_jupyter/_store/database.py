"""Opening the history file: creating and migrating its schema, and recovering from damage.

* WAL mode lets readers and the one writer of every kernel work at once;
  ``synchronous=NORMAL`` keeps every committed transaction through an application crash.
  Where WAL is impossible (a read-only directory, a network filesystem) a rollback journal
  is used instead, with a :class:`StoreWarning`.
* Ratings, tags and notes live in tables of their own, and prompts in an FTS5 full-text
  index kept in step by triggers; all are added to an older file when it is opened.
* A damaged file, or one written by a newer version, is moved aside with its side files
  (never deleted) and a fresh store is created, with a :class:`StoreRecoveredWarning` saying
  where the old file went. Any other failure (locked, read-only, cannot open) raises
  :class:`ConfigurationError` and leaves the file where it is.
* The full integrity check (``PRAGMA quick_check``, and the prompt index counted against
  the tasks) reads the whole file, so it runs only when :mod:`.shutdown` says the file may
  be damaged: after a crash, a change from outside, damage met in use, or a week without
  one. Otherwise the file is opened as the last clean close left it; damage met while
  opening it still sends it through the check and the recovery.

Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from nanobanana_jupyter._wire.errors import ConfigurationError

from .shutdown import Opening
from .totals import add_view_totals

__all__ = [
    "BUSY_TIMEOUT",
    "PROMPT_INDEX",
    "SCHEMA_VERSION",
    "StoreRecoveredWarning",
    "StoreWarning",
    "fts5_available",
    "has_prompt_index",
    "is_damage",
    "open_database",
    "rollback_quietly",
]

SCHEMA_VERSION = 1
"""Stored in ``PRAGMA user_version``; a file with a higher number is from a newer release."""

BUSY_TIMEOUT = 10.0
"""Seconds a connection waits for another process's write lock before giving up."""

# SQLite primary result codes that mean "this file is damaged or is no database at all";
# every other error (locked, read-only, cannot open) must never get a file moved aside.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

# Each statement is a no-op on a current store, so running them at every open is cheap.
# The columns of ``tasks`` are those of rows.COLUMNS (plus ``writer``).
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
        writer        TEXT,
        reuses        INTEGER NOT NULL DEFAULT 0
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


# Columns added after a table was first made, with their definitions. Added where missing,
# without a new schema version: an older release reads and writes such a file as before (it
# names its columns; the default fills what it does not know).
_ADDED_COLUMNS: tuple[tuple[str, str], ...] = (("reuses", "INTEGER NOT NULL DEFAULT 0"),)


# Ratings, tags and notes (issue 17): tables of their own, added to an existing file at
# open without a new schema version. An older release keeps using such a file as it is: it
# never reads these tables, and the triggers below keep the prompt index in step with the
# rows it writes. A version bump would instead make every older release move the whole
# history aside (see _diagnose), which is far worse than not seeing ratings there.
_ANNOTATION_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS annotations (
        local_id    TEXT PRIMARY KEY NOT NULL,
        rating      INTEGER CHECK (rating IS NULL OR rating BETWEEN 0 AND 5),
        note        TEXT,
        updated_at  REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS annotations_rating ON annotations (rating) "
    "WHERE rating IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS tags (
        local_id  TEXT NOT NULL,
        tag       TEXT NOT NULL,
        PRIMARY KEY (local_id, tag)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS tags_tag ON tags (tag, local_id)",
)

PROMPT_INDEX = "prompt_index"
"""The FTS5 table of prompts (``local_id UNINDEXED, prompt``), when SQLite has FTS5."""

# Each prompt is indexed under the rowid of its task, so a search joins on integers. Tasks
# are never deleted, so their rowids have no gaps and stay as they are (a VACUUM renumbers
# only around gaps); the local id is kept too, and the index is rebuilt at open should the
# two ever disagree (_check_prompt_index). Tasks are never deleted and prompts never
# change, so the last two triggers do not fire in practice; they keep the index exact.
_FTS_TABLE = (
    "CREATE VIRTUAL TABLE prompt_index USING fts5("
    "local_id UNINDEXED, prompt, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')"
)
_FTS_BACKFILL = (
    "INSERT INTO prompt_index (rowid, local_id, prompt) SELECT rowid, local_id, prompt FROM tasks"
)
_FTS_TRIGGERS: tuple[str, ...] = (
    """CREATE TRIGGER IF NOT EXISTS prompt_index_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO prompt_index (rowid, local_id, prompt)
        VALUES (new.rowid, new.local_id, new.prompt);
    END""",
    """CREATE TRIGGER IF NOT EXISTS prompt_index_delete AFTER DELETE ON tasks BEGIN
        DELETE FROM prompt_index WHERE rowid = old.rowid;
    END""",
    # The store's UPDATE names every column, prompt included: only a real change counts.
    """CREATE TRIGGER IF NOT EXISTS prompt_index_update AFTER UPDATE OF prompt, local_id
        ON tasks WHEN old.prompt IS NOT new.prompt OR old.local_id IS NOT new.local_id BEGIN
        DELETE FROM prompt_index WHERE rowid = old.rowid;
        INSERT INTO prompt_index (rowid, local_id, prompt)
        VALUES (new.rowid, new.local_id, new.prompt);
    END""",
)


def fts5_available() -> bool:
    """True when this Python's SQLite has the FTS5 full-text extension."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE probe USING fts5(x)")
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
    return True


def _add_annotations(conn: sqlite3.Connection) -> None:
    for statement in _ANNOTATION_SCHEMA:
        conn.execute(statement)
    if has_prompt_index(conn):
        _check_prompt_index(conn)
    elif fts5_available():
        # Created and backfilled once, in this transaction; the triggers keep it in step.
        # Without FTS5, text search falls back to a scan of the prompts (search.py).
        conn.execute(_FTS_TABLE)
        conn.execute(_FTS_BACKFILL)
    if has_prompt_index(conn):
        for statement in _FTS_TRIGGERS:
            conn.execute(statement)


def _check_prompt_index(conn: sqlite3.Connection) -> None:
    """Rebuild the index if it lost step with ``tasks`` (well under a ms on 100,000 tasks).

    The indexed prompts are counted in FTS5's ``_docsize`` shadow table, one row per
    indexed prompt: ``count(*)`` on the index itself reads every prompt (65 ms there).
    """
    (tasks,) = conn.execute("SELECT count(*) FROM tasks").fetchone()
    (indexed,) = conn.execute(_COUNT_INDEXED if _has_docsize(conn) else _COUNT_SCAN).fetchone()
    last = conn.execute(
        "SELECT t.local_id IS f.local_id FROM tasks t LEFT JOIN prompt_index f "
        "ON f.rowid = t.rowid WHERE t.rowid = (SELECT max(rowid) FROM tasks)"
    ).fetchone()
    if tasks != indexed or (last is not None and not last[0]):
        conn.execute("DELETE FROM prompt_index")
        conn.execute(_FTS_BACKFILL)


_COUNT_INDEXED = f"SELECT count(*) FROM {PROMPT_INDEX}_docsize"  # noqa: S608 - a constant
_COUNT_SCAN = f"SELECT count(*) FROM {PROMPT_INDEX}"  # noqa: S608 - a constant


def _has_docsize(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
        (f"{PROMPT_INDEX}_docsize",),
    ).fetchone()
    return row is not None


def has_prompt_index(conn: sqlite3.Connection) -> bool:
    """True when the open file has the full-text index of prompts (FTS5 was available)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (PROMPT_INDEX,)
    ).fetchone()
    return row is not None


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    present = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    for name, definition in _ADDED_COLUMNS:
        if name not in present:
            conn.execute(f"ALTER TABLE tasks ADD COLUMN {name} {definition}")


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


def open_database(
    path: Path, clock: Callable[[], float]
) -> tuple[sqlite3.Connection, str, Opening]:
    """Open (creating, migrating or replacing) the store at ``path``.

    Returns ``(connection, mode, opening)``: ``mode`` is the journal mode, ``"wal"`` or the
    rollback journal used when WAL is impossible; ``opening`` is this store's part in the
    clean-shutdown bookkeeping (:mod:`.shutdown`), which the store ends when it closes.
    ``clock`` (epoch seconds) stamps the name of a file moved aside and the time of a full
    check. Warnings point at the caller of ``Store(...)``, which calls this directly.

    Raises:
        ConfigurationError: the store cannot be created or written (read-only directory or
            file, a path that is a directory, a damaged file that cannot be moved aside).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the directory for the history store {path}: {exc}. "
            "Set NANOBANANA_DATA_DIR to a writable directory."
        ) from exc
    opening = Opening.begin(path, clock)
    try:
        if opening.reason is None:
            opened = _open_unchecked(path)
            if opened is not None:
                return (*opened, opening)
        problem = _diagnose(path)
        if problem is not None:
            _move_aside(path, clock, *problem)
        conn = _connect(path)
        try:
            mode = _prepare(conn, path, verify=True)
        except BaseException:
            conn.close()
            raise
    except BaseException:
        opening.end(clean=False)
        raise
    opening.checked()
    return conn, mode, opening


class _NeedsCheck(Exception):
    """The file, opened without the full check, turned out to need it."""


def _open_unchecked(path: Path) -> tuple[sqlite3.Connection, str] | None:
    """Open a file believed to be as its last clean close left it; ``None`` if it is not.

    Damage met on the way (or a schema version other than this release's) closes the
    connection and returns ``None``: the caller then runs the full check and recovery.
    """
    conn = _connect(path)
    try:
        mode = _prepare(conn, path, verify=False)
    except _NeedsCheck:
        conn.close()
        return None
    except sqlite3.DatabaseError as exc:
        conn.close()
        if is_damage(exc):
            return None
        raise _unwritable(path, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn, mode


def rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back whatever is open; the error that got us here is the one to report."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _connect(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(
            path,
            # sqlite3_busy_timeout: wait for another process's lock instead of failing.
            timeout=BUSY_TIMEOUT,
            # Transactions are explicit (BEGIN IMMEDIATE); everything else autocommits.
            isolation_level=None,
            # One connection serves the engine thread and the main thread, behind a lock.
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise _unwritable(path, exc) from exc


def _unwritable(path: Path, exc: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"cannot open or write the history store {path}: {exc}. Check that the "
        "directory and file are writable, or set NANOBANANA_DATA_DIR to another directory."
    )


def _diagnose(path: Path) -> tuple[str, str] | None:
    """Return ``(kind, reason)`` when the file must be moved aside, else ``None``.

    The check runs on a read-only connection: a read-write one could checkpoint a WAL
    into a damaged file or delete side files on close, and the evidence moved aside
    should be exactly what was found.
    """
    try:
        if path.stat().st_size == 0:
            return None  # missing or empty: SQLite makes a new database of it
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    except sqlite3.Error as exc:
        raise _unwritable(path, exc) from exc
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            return (
                "newer-schema",
                f"it was written by a newer release (schema version {version}; this "
                f"release knows up to {SCHEMA_VERSION})",
            )
        check = integrity_problems(conn)
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
        if is_damage(exc):
            return "corrupt", f"SQLite cannot read it ({exc})"
        raise _unwritable(path, exc) from exc
    finally:
        conn.close()
    return None


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """``PRAGMA quick_check``: ``["ok"]``, or what is wrong. Reads every page of the file."""
    return [row[0] for row in conn.execute("PRAGMA quick_check")]


def _prepare(conn: sqlite3.Connection, path: Path, *, verify: bool) -> str:
    """Journal mode, schema and text search for a healthy (or new) file; the journal mode.

    ``verify=False`` (a file not checked at this open) raises :class:`_NeedsCheck` for a
    file whose schema version is not this release's, and lets SQLite's damage errors out.
    """
    if not verify:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise _NeedsCheck
    # The warning points at the caller of Store(): one frame deeper without the check.
    mode = _set_journal_mode(conn, path, stacklevel=5 if verify else 6)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.create_function("nb_icontains", 2, _icontains, deterministic=True)
    # One transaction, so racing kernels create the schema once. With the full check it
    # rewrites user_version, which makes it the probe that the file really can be written:
    # a read-only file or directory fails here, at open, not on the first task. Without the
    # check that write is left out (it is most of the cost of such an open): the file is
    # as a clean close left it (a chmod would have changed it) or another store has it
    # open, and the markers beside it were just written, so its directory is writable.
    try:
        conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            # Another process put a newer store here since the check above.
            raise ConfigurationError(
                f"the history store {path} was just created by a newer release "
                f"(schema version {version}); upgrade nanobanana-jupyter to use it"
            )
        for statement in _SCHEMA:
            conn.execute(statement)
        _add_missing_columns(conn)
        _add_annotations(conn)
        add_view_totals(conn)  # the views' totals (issue 18), built once for an old file
        if verify:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        rollback_quietly(conn)
        if not verify and isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
            raise
        raise _unwritable(path, exc) from exc
    except BaseException:
        rollback_quietly(conn)
        raise
    return mode


def _set_journal_mode(conn: sqlite3.Connection, path: Path, *, stacklevel: int) -> str:
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
        raise _unwritable(path, exc) from exc
    warnings.warn(
        StoreWarning(
            f"WAL mode could not be enabled for the history store {path} ({why}); "
            f"using the {mode} rollback journal instead. Several kernels sharing this "
            "store will wait on each other more. Keep the store on a local, writable disk."
        ),
        # _set_journal_mode, _prepare, [_open_unchecked,] open_database, Store(), its caller
        stacklevel=stacklevel,
    )
    return mode


def _move_aside(path: Path, clock: Callable[[], float], kind: str, reason: str) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock()))
    target = path.with_name(f"{path.name}.{kind}-{stamp}")
    n = 1
    while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm", "-journal")):
        target = path.with_name(f"{path.name}.{kind}-{stamp}-{n}")
        n += 1
    try:
        # The side files belong to the database (sqlite.org/howtocorrupt.html):
        # they travel with it, and a new database must never pick them up.
        for suffix in ("-wal", "-shm", "-journal"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.replace(side, f"{target}{suffix}")
        os.replace(path, target)
    except OSError as exc:
        raise ConfigurationError(
            f"the history store {path} cannot be used ({reason}) and could not be "
            f"moved aside: {exc}. Move or remove it yourself, or set NANOBANANA_DATA_DIR."
        ) from exc
    warnings.warn(
        StoreRecoveredWarning(
            f"The history store {path} could not be used: {reason}. It was moved to "
            f"{target} (kept, not deleted) and a new, empty store was created.",
            moved_to=target,
            reason=reason,
        ),
        stacklevel=4,  # _move_aside, open_database, Store(), its caller
    )


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """True for "damaged / not a database"; False for locked, read-only, cannot open..."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    # Python 3.10: damage is reported as a bare DatabaseError; the rest use subclasses.
    return type(exc) is sqlite3.DatabaseError


def _icontains(haystack: object, needle: object) -> int:
    """``nb_icontains(prompt, text)``: the SQL function for non-ASCII text search."""
    if not isinstance(haystack, str) or not isinstance(needle, str):
        return 0
    return int(needle.casefold() in haystack.casefold())
