"""Opening a store costs the same at any size (issue 18): the full integrity check of the
history file and the whole walk of the image store happen only when something says they
must, and still happen, and still recover, when it does.

Which statements SQLite runs is observed with a trace callback on every connection the
store opens, so the tests read what happens, not how the code decides it. The tests that
need a process killed for real are in tests/integration/test_store_processes.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter._store import database as _database
from nanobanana_jupyter._store import images as _images
from nanobanana_jupyter._store.database import StoreRecoveredWarning
from nanobanana_jupyter._store.images import ORPHAN_AGE, TEMP_PREFIX, ImageStore
from nanobanana_jupyter._store.shutdown import RECHECK_AFTER
from nanobanana_jupyter._store.store import Store
from tests.unit.test_images import files_under, png
from tests.unit.test_store import FakeClock, aside_files, rec


class Traced:
    """Every SQL statement run by connections the history store opens."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def full_checks(self) -> int:
        return sum("quick_check" in s or "integrity_check" in s for s in self.sql)

    def clear(self) -> None:
        self.sql.clear()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Traced:
    return trace_store_sql(monkeypatch)


def trace_store_sql(monkeypatch: pytest.MonkeyPatch) -> Traced:
    """Record the statements of every connection the store opens from now on."""
    seen = Traced()
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(*args, **kwargs)
        conn.set_trace_callback(seen.sql.append)
        return conn

    monkeypatch.setattr(_database.sqlite3, "connect", connect)
    return seen


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


def fill(db: Path, n: int = 300, **kwargs: Any) -> None:
    with Store(db, **kwargs) as store:
        store.insert_many(rec(f"r{i}", prompt="p" * 200) for i in range(n))


def damage_pages(db: Path) -> bytes:
    data = bytearray(db.read_bytes())
    data[4096 : 3 * 4096] = b"\xff" * (2 * 4096)
    db.write_bytes(bytes(data))
    return bytes(data)


# -- the history file --------------------------------------------------------------------


def test_reopening_a_cleanly_closed_store_runs_no_full_check(db: Path, traced: Traced) -> None:
    """A store closed cleanly opens again without reading the whole file (no quick_check)."""
    fill(db)
    traced.clear()
    for _ in range(3):
        with Store(db) as store:
            assert store.count() == 300
    assert traced.full_checks() == 0, traced.sql


def test_a_file_without_a_record_of_a_clean_close_is_checked_once(db: Path, traced: Traced) -> None:
    """A file last closed by an older release (no record) is checked at its first open only."""
    fill(db)
    db.with_name(db.name + ".clean").unlink()
    traced.clear()
    with Store(db):
        pass
    assert traced.full_checks() == 1
    with Store(db):
        pass
    assert traced.full_checks() == 1


def test_a_file_changed_after_its_clean_close_is_checked_and_when_damaged_moved_aside(
    db: Path, traced: Traced
) -> None:
    """D5 without a crash: pages overwritten after a clean close are found and moved aside."""
    fill(db)
    damaged = damage_pages(db)
    traced.clear()
    with pytest.warns(StoreRecoveredWarning), Store(db) as fresh:
        assert fresh.count() == 0
    assert traced.full_checks() == 1
    (moved,) = aside_files(db, "corrupt")
    assert moved.read_bytes() == damaged


def test_a_valid_change_from_outside_is_checked_and_kept(db: Path, traced: Traced) -> None:
    """Another program writing the file after a clean close gets it checked; it is kept."""
    fill(db, n=3)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE tasks SET prompt = 'edited' WHERE local_id = 'r1'")
    conn.commit()
    conn.close()
    traced.clear()
    with Store(db) as store:
        got = store.get("r1")
        assert got is not None and got.prompt == "edited"
    assert traced.full_checks() == 1
    assert aside_files(db, "corrupt") == []


def test_a_second_store_on_an_open_file_runs_no_full_check(db: Path, traced: Traced) -> None:
    """Kernels sharing a store: one opening while another has it open reads no whole file."""
    fill(db)
    with Store(db) as first:
        first.insert(rec("more"))
        traced.clear()
        with Store(db) as second:
            assert second.get("more") is not None
        first.insert(rec("after"))
    assert traced.full_checks() == 0
    with Store(db) as again:  # the last to close recorded the file as it left it
        assert again.count() == 302
    assert traced.full_checks() == 0


class DamagedConnection:
    """A connection whose every statement fails as SQLite fails on a damaged page."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real
        self.in_transaction = False

    def execute(self, *args: Any) -> Any:
        exc = sqlite3.DatabaseError("database disk image is malformed")
        exc.sqlite_errorcode = 11  # type: ignore[attr-defined]  # SQLITE_CORRUPT
        raise exc

    def close(self) -> None:
        self.real.close()


def test_damage_met_in_use_gets_the_file_checked_at_the_next_open(db: Path, traced: Traced) -> None:
    """A 'malformed' error while in use makes the next open check, even beside a live store."""
    fill(db)
    with Store(db) as keeper:  # another kernel keeps it open throughout
        victim = Store(db)
        victim._conn = DamagedConnection(victim._conn)  # type: ignore[assignment,arg-type]
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            victim.get("r1")
        victim.close()
        traced.clear()
        with Store(db) as after:
            assert after.count() == 300
        assert traced.full_checks() == 1
        assert keeper.count() == 300
    with Store(db):  # checked and healthy: the flag is gone
        pass
    assert traced.full_checks() == 1


def test_damage_met_while_opening_unchecked_is_recovered_at_once(db: Path) -> None:
    """A file judged clean but unreadable at open is checked and moved aside in that open."""
    fill(db)
    garbage = os.urandom(8192)
    db.write_bytes(garbage)
    # Make the record match the damaged file: only SQLite's own reading can find it now.
    record = db.with_name(db.name + ".clean")
    data = json.loads(record.read_text())
    st = db.stat()
    data["state"][0] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    record.write_text(json.dumps(data))
    with pytest.warns(StoreRecoveredWarning), Store(db) as fresh:
        fresh.insert(rec("new"))
    (moved,) = aside_files(db, "corrupt")
    assert moved.read_bytes() == garbage


def test_a_file_not_checked_for_a_week_is_checked_again(db: Path, traced: Traced) -> None:
    """The full check still runs now and then, bounding how long silent damage can hide."""
    clock = FakeClock()
    fill(db, clock=clock)
    with Store(db, clock=clock):
        pass
    clock.advance(RECHECK_AFTER - 60)
    traced.clear()
    with Store(db, clock=clock):
        pass
    assert traced.full_checks() == 0
    clock.advance(120)
    with Store(db, clock=clock):
        pass
    assert traced.full_checks() == 1
    with Store(db, clock=clock):
        pass
    assert traced.full_checks() == 1


def test_an_unwritable_marker_folder_means_a_full_check_not_an_error(
    db: Path, traced: Traced
) -> None:
    """Where the markers cannot be kept, every open checks the file, as before."""
    fill(db)
    folder = db.with_name(db.name + ".open")
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.write_text("not a folder")
    traced.clear()
    with Store(db) as store:
        assert store.count() == 300
    with Store(db):
        pass
    assert traced.full_checks() == 2


# -- the image store -----------------------------------------------------------------------


def test_opening_an_image_store_never_walks_its_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its first start, a start looks in the temporary folder only (no walk)."""
    root = tmp_path / "images"
    ImageStore(root).put(png())

    def no_walk(*args: Any, **kwargs: Any) -> Iterator[Any]:
        raise AssertionError("the start walked the whole image store")

    monkeypatch.setattr(_images.os, "walk", no_walk)
    store = ImageStore(root)
    assert store.get(store.put(png((8, 8))).sha256) is not None


def test_temporary_files_are_written_in_one_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every temporary file (image, thumbnail, stream) lives in root/.incoming while written."""
    store = ImageStore(tmp_path / "images")
    made: list[str] = []
    real = tempfile.mkstemp

    def spy(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = real(*args, **kwargs)
        made.append(os.path.dirname(name))
        return fd, name

    monkeypatch.setattr(_images.tempfile, "mkstemp", spy)
    store.put(png())
    with store.incoming() as incoming:
        incoming.write(png((9, 9)))
        store.put_incoming(incoming)
    assert len(made) == 4  # two images, two thumbnails
    assert set(made) == {str(store.root / _images.TEMP_DIR)}


def test_orphans_in_the_temporary_folder_are_cleared_at_every_start(tmp_path: Path) -> None:
    """A crashed write's temporary file goes at the next start once old; a young one stays."""
    root = tmp_path / "images"
    ImageStore(root)
    folder = root / _images.TEMP_DIR
    old, young = folder / f"{TEMP_PREFIX}old", folder / f"{TEMP_PREFIX}young"
    for path in (old, young):
        path.write_bytes(b"partial")
    past = time.time() - ORPHAN_AGE - 1
    os.utime(old, (past, past))
    ImageStore(root)
    assert not old.exists()
    assert young.exists()


def test_an_older_release_orphans_are_swept_by_the_first_start(tmp_path: Path) -> None:
    """Temporary files beside the images (older releases) go at the first start of this one."""
    root = tmp_path / "images"
    nested = root / "thumbs" / "ab"
    nested.mkdir(parents=True)
    past = time.time() - ORPHAN_AGE - 1
    orphans = [root / f"{TEMP_PREFIX}a", nested / f"{TEMP_PREFIX}b", root / "cd" / ".tmp-c"]
    orphans[2].parent.mkdir()
    for path in orphans:
        path.write_bytes(b"partial")
        os.utime(path, (past, past))
    ImageStore(root)
    assert [p for p in files_under(root) if p.name.startswith(TEMP_PREFIX)] == []
    assert (root / _images.TEMP_DIR).is_dir()
