"""Whether the history file needs its full integrity check when a store opens.

``PRAGMA quick_check`` reads every page of the file: about 120 ms at 100,000 tasks. It is
what finds a damaged file so that it can be moved aside (:mod:`.database`), and damage has
three sources: a process or machine that stopped in the middle of its work (a kernel killed,
a power cut on storage that lies about fsync), a change made to the file from outside (a
copy, a tool, the disk), and damage met while reading. So the check runs when one of these
may have happened, and not when the file is exactly as a clean close left it:

* Every open :class:`~.store.Store` holds a marker file in ``<db>.open/``, locked with
  ``flock`` for as long as it is open. The operating system drops the lock when the process
  ends however it ends, so a marker whose lock can be taken belongs to a store that was
  never closed: an unclean shutdown. (No process ids are compared: a recycled pid fools
  nothing.)
* The last store to close writes ``<db>.clean``: the identity, size and times of the file
  and its side files just after its connection closed. A store that opens when no other
  is open compares them with the file as it finds it; any difference means the file was
  changed since, and it is checked.
* Damage met while the store is in use (SQLite's "malformed" or "not a database") writes
  ``<db>.suspect``; the next open checks the file whatever the rest says.
* A file not checked for :data:`RECHECK_AFTER` seconds is checked again, which bounds how
  long damage that changes nothing visible (bad sectors) can go unnoticed at open.

Whatever cannot be told (no ``flock`` on this platform, a directory where the markers
cannot be written, an unreadable record) counts as "check it": the old behaviour, never a
skipped check.

Standard library only; POSIX ``flock`` where available.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: every open runs the full check
    fcntl = None  # type: ignore[assignment]

__all__ = ["RECHECK_AFTER", "Opening", "mark_suspect"]

RECHECK_AFTER = 7 * 24 * 3600.0
"""Seconds after which an open checks the file again even though nothing says it must."""

_SIDE_SUFFIXES = ("", "-wal", "-journal")
_NEW_PREFIX = ".new-"  # a marker being made: not locked yet, so never judged
_STALE_NEW = 60.0  # seconds after which such a half-made marker is litter
_TICK_WAIT = 0.05  # seconds a close waits for the file system's clock to pass the file's


def _markers(db: Path) -> Path:
    return db.with_name(db.name + ".open")


def _record(db: Path) -> Path:
    return db.with_name(db.name + ".clean")


def _suspect(db: Path) -> Path:
    return db.with_name(db.name + ".suspect")


def mark_suspect(db: Path, why: str) -> None:
    """Damage was met while using ``db``: the next open runs the full check.

    Best effort: a store that cannot write the flag still works; the damage shows again.
    """
    with contextlib.suppress(OSError):
        _suspect(db).write_text(why[:500] + "\n", encoding="utf-8")


def _state(db: Path) -> list[Any]:
    """Identity, size and times of the file and its side files (``None`` where absent)."""
    out: list[Any] = []
    for suffix in _SIDE_SUFFIXES:
        try:
            st = os.stat(f"{db}{suffix}")
        except FileNotFoundError:
            out.append(None)
        else:
            out.append([st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return out


def _read_record(db: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_record(db).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Opening:
    """One store's part in the bookkeeping above, from its open to its close.

    :meth:`begin` holds this store's marker and says whether the file must be checked
    (:attr:`reason`, ``None`` when not); :meth:`checked` records a check that passed (or a
    file replaced); :meth:`end`, after the connection closed, writes the clean-close record
    if this was the last store open and gives the marker up.
    """

    def __init__(self, db: Path, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock
        self._pid = os.getpid()
        self._fd: int | None = None
        self._marker: Path | None = None
        self._dead: list[tuple[int, Path]] = []  # markers of stores never closed, locked
        self.reason: str | None = "the store has not been opened yet"

    @classmethod
    def begin(cls, db: Path, clock: Callable[[], float]) -> Opening:
        """Hold a marker for a store opening ``db``, and judge whether to check the file."""
        opening = cls(db, clock)
        opening.reason = opening._begin()
        return opening

    def _begin(self) -> str | None:
        if fcntl is None:
            return "this platform has no flock to tell a clean shutdown from a crash"
        try:
            others_open = self._scan()
            self._hold_marker()
        except OSError as exc:
            self._release_dead()
            return f"the markers of open stores cannot be kept ({exc})"
        if self._dead:
            return f"{len(self._dead)} store(s) using it stopped without closing it"
        if _suspect(self._db).exists():
            return "damage was met while it was in use"
        if others_open:
            # Another store has it open now: the file was judged when that one opened, and
            # its changes since are its own; a crash of it leaves a marker to find.
            return None
        record = _read_record(self._db)
        if record is None:
            return "there is no record that it was closed cleanly"
        if record.get("state") != _state(self._db):
            return "it changed since it was last closed cleanly"
        checked = record.get("checked_at")
        if not isinstance(checked, (int, float)) or self._clock() - checked > RECHECK_AFTER:
            return "its last full check is too old"
        return None

    def _scan(self) -> bool:
        """Lock the markers whose store is gone (kept in ``_dead``); True if any is alive."""
        assert fcntl is not None
        folder = _markers(self._db)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return False
        alive = False
        for name in names:
            path = folder / name
            if name.startswith(_NEW_PREFIX):
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime > _STALE_NEW:
                        path.unlink()
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # closed meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                alive = True
                continue
            self._dead.append((fd, path))
        return alive

    def _hold_marker(self) -> None:
        assert fcntl is not None
        folder = _markers(self._db)
        folder.mkdir(exist_ok=True)
        # Made under a name no scan judges, locked, then renamed: a marker is never seen
        # unlocked while its store lives.
        temp = folder / f"{_NEW_PREFIX}{uuid.uuid4().hex}"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            marker = folder / f"{self._pid}-{uuid.uuid4().hex}"
            os.rename(temp, marker)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._fd, self._marker = fd, marker

    def checked(self) -> None:
        """The full check passed, or the file was moved aside and a new one made."""
        for _fd, path in self._dead:
            with contextlib.suppress(OSError):
                path.unlink()
        self._release_dead()
        with contextlib.suppress(FileNotFoundError):
            _suspect(self._db).unlink()
        record = _read_record(self._db) or {}
        record.update(state=None, checked_at=self._clock())
        self._write_record(record)
        self.reason = None

    def _release_dead(self) -> None:
        for fd, _path in self._dead:
            os.close(fd)
        self._dead = []

    def end(self, *, clean: bool = True) -> None:
        """After the store's connection closed: record a clean close if it was the last.

        ``clean=False`` (an open that failed) only gives the marker up.
        """
        self._release_dead()
        if self._fd is None or os.getpid() != self._pid:
            return  # no marker, or a forked child: the marker is the parent's
        try:
            if clean and not self._others_open() and not _suspect(self._db).exists():
                record = _read_record(self._db) or {}
                record["state"] = _state(self._db)
                if self._past_the_file(record["state"]):
                    self._write_record(record)
        except OSError:
            pass  # no record written: the next open checks, as it would have anyway
        finally:
            marker, self._marker = self._marker, None
            if marker is not None:
                with contextlib.suppress(OSError):
                    marker.unlink()
            os.close(self._fd)
            self._fd = None

    def _others_open(self) -> bool:
        """Whether another store holds a marker (one never closed counts too: it is judged
        by the next open)."""
        folder = _markers(self._db)
        for name in os.listdir(folder):
            path = folder / name
            if path == self._marker or name.startswith(_NEW_PREFIX):
                continue
            return True
        return False

    def _past_the_file(self, state: list[Any]) -> bool:
        """Wait (briefly) until a new file gets a later time than the files just recorded.

        Times have the file system's clock granularity: a change within the same tick as
        the record would keep the recorded time. Once a file written now is stamped later
        than every recorded time, any later change shows as a new time.
        """
        newest = max((s[3] for s in state if s is not None), default=0)
        probe = self._db.with_name(f"{self._db.name}.clean-{uuid.uuid4().hex}")
        deadline = time.monotonic() + _TICK_WAIT
        try:
            while True:
                probe.write_bytes(b"")
                if probe.stat().st_mtime_ns > newest:
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.001)
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def _write_record(self, record: dict[str, Any]) -> None:
        target = _record(self._db)
        temp = target.with_name(f"{target.name}-{uuid.uuid4().hex}")
        try:
            temp.write_text(json.dumps(record), encoding="utf-8")
            os.replace(temp, target)
        except OSError:
            with contextlib.suppress(OSError):
                temp.unlink()
