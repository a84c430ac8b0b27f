"""The stores across processes: writers killed mid-write, kernels sharing one file, crashed
owners, read-only places (D1, D2, D6, D7, L1).

Each test starts Python subprocesses (tests/helpers/store_worker.py, or a short script), so
they live here rather than in tests/unit.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nanobanana_jupyter._store.database import StoreRecoveredWarning, StoreWarning
from nanobanana_jupyter._store.images import ORPHAN_AGE, TEMP_PREFIX, ImageStore
from nanobanana_jupyter._store.owners import new_lease_owner
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.models import TaskStatus
from tests.unit.test_images import files_under, png
from tests.unit.test_store import FakeClock, aside_files, rec
from tests.unit.test_store_opening import Traced, damage_pages, trace_store_sql

S = TaskStatus
WORKER = Path(__file__).resolve().parents[1] / "helpers" / "store_worker.py"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    with Store(db, clock=FakeClock()) as s:
        yield s


def run_worker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_submit_left_by_a_dead_process_is_recovered(db: Path) -> None:
    """A kernel that died between intent and answer leaves a row the next open recovers."""
    proc = run_worker("submit-and-exit", str(db), "dead-1")
    assert proc.returncode == 0, proc.stderr
    with Store(db) as store:
        assert store.recovered == 1
        got = store.get("dead-1")
    assert got is not None
    assert got.status is S.SUBMIT_UNKNOWN


def test_a_lease_whose_owner_process_died_is_taken_over_at_once(store: Store) -> None:
    """L1: after a kernel crash its leases do not make the next kernel wait out the ttl."""
    host = new_lease_owner().split("|")[0]
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_owner = f"{host}|{gone.stdout.strip()}|token"
    live_other = f"{host}|{os.getppid()}|token"
    this_process = new_lease_owner()
    assert store.acquire_lease("crashed", dead_owner, ttl=30)
    assert store.acquire_lease("alive", live_other, ttl=30)
    assert store.acquire_lease("mine", this_process, ttl=30)
    other_session_here = new_lease_owner()  # a second session in this same process
    assert store.acquire_lease("crashed", other_session_here, ttl=30)
    assert store.lease_holder("crashed") == other_session_here
    assert not store.acquire_lease("alive", other_session_here, ttl=30)
    assert not store.acquire_lease("mine", other_session_here, ttl=30)
    for odd in ("A", f"elsewhere|{gone.stdout.strip()}|t", f"{host}|notapid|t"):
        assert store.acquire_lease(f"odd-{odd}", odd, ttl=30)
        assert not store.acquire_lease(f"odd-{odd}", other_session_here, ttl=30)


# -- D2: several processes -------------------------------------------------------------


def test_three_processes_share_one_store(db: Path, tmp_path: Path) -> None:
    """D2: three kernels writing at once: nothing locked escapes, counts add up, ids unique."""
    Store(db).close()  # created up front, so the workers race on writes, not on creation
    go = tmp_path / "go"
    n = 40
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "concurrent", str(db), f"w{k}", str(n), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(3)
    ]
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    for i in range(n):
        assert sum(i in r["task_ids"] for r in results) == 1, i
        assert sum(i in r["leases"] for r in results) == 1, i
    with Store(db) as store:
        assert store.count() == 3 * n
        assert store.count(status=S.SUCCESS) == 3 * n
        assert store.total_cost() == Decimal("0.10") * 3 * n
        rows = store.page(0, 3 * n)
        assert len({r.task_id for r in rows}) == 3 * n
        assert all(r.polls == 2 for r in rows)
        for i in range(n):
            holder = store.lease_holder(f"shared-lease-{i}")
            winner = next(r["worker"] for r in results if i in r["leases"])
            assert holder == winner


# -- D1: killed mid-write --------------------------------------------------------------


def test_store_survives_processes_killed_mid_write(db: Path, tmp_path: Path) -> None:
    """D1: 20 writers killed by SIGKILL at random moments leave a sound store and images."""
    images = tmp_path / "images"
    rng = random.Random(20240601)
    Store(db).close()
    for round_ in range(5):
        procs = [
            subprocess.Popen(
                [sys.executable, str(WORKER), "crash", str(db), str(images), f"k{round_}{k}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(4)
        ]
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        for proc in procs:
            time.sleep(rng.uniform(0.0, 0.12))
            proc.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    with Store(db) as store:
        rows = store.page(0, store.count())
    assert sum(r.status is S.SUCCESS for r in rows) > 0
    for row in rows:
        assert row.status in {S.SUBMIT_UNKNOWN, S.PENDING, S.SUCCESS}, row
        if row.status is S.SUBMIT_UNKNOWN:
            assert row.task_id is None
        else:
            assert row.task_id == f"task-{row.local_id}"
        if row.status is S.SUCCESS:
            (image,) = row.images
            data = Path(image.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == image.sha256
    # No final image file is partial: each holds exactly the bytes its name promises.
    for path in images.rglob("*.png"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem
    for path in images.rglob("*.jpg"):
        with Image.open(path) as img:
            img.load()
    ImageStore(images).cleanup_temp(min_age=0)
    assert not [p for p in images.rglob("*") if p.name.startswith(".tmp-")]


# -- D6: an image writer killed between write and rename --------------------------------


CRASH_BETWEEN_WRITE_AND_RENAME = """
import os, signal, sys
from pathlib import Path
from nanobanana_jupyter._store import images as _images

def write_then_die(file, data, sync=True):
    file.write(data[: len(data) // 2])
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

store = _images.ImageStore(Path(sys.argv[1]))
_images._write_and_sync = write_then_die
store.put(Path(sys.argv[2]).read_bytes())
"""


def test_crash_between_write_and_rename_leaves_a_temp_file_that_is_cleaned(
    tmp_path: Path,
) -> None:
    """D6: a killed writer leaves only a .tmp- file (never a partial final); it is cleaned up."""
    root = tmp_path / "images"
    source = tmp_path / "source.png"
    data = png((200, 200))
    source.write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_BETWEEN_WRITE_AND_RENAME, str(root), str(source)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    (orphan,) = files_under(root)
    assert orphan.name.startswith(TEMP_PREFIX)
    sha = hashlib.sha256(data).hexdigest()
    assert not (root / sha[:2] / f"{sha}.png").exists()
    # A fresh temp file may be another kernel's write in progress: kept.
    ImageStore(root)
    assert orphan.exists()
    old = time.time() - ORPHAN_AGE - 60
    os.utime(orphan, (old, old))
    ImageStore(root)
    assert not orphan.exists()
    record = ImageStore(root).put(data)
    assert Path(record.path).read_bytes() == data


# -- D7: read-only places --------------------------------------------------------------


def run_without_write_permission(*args: str) -> dict[str, Any]:
    """Run the worker so that file permissions apply even when the tests run as root.

    Root ignores permission bits through CAP_DAC_OVERRIDE; dropping that capability (and its
    relatives) from the child's bounding set makes a 0555 directory really read-only for it.
    """
    preexec = None
    if os.geteuid() == 0:
        if not sys.platform.startswith("linux"):
            pytest.skip("running as root, and capabilities can only be dropped on Linux")
        libc = ctypes.CDLL(None, use_errno=True)

        def preexec() -> None:
            for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
                if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                    os._exit(97)

    proc = subprocess.run(
        [sys.executable, str(WORKER), *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=preexec,
        check=False,
    )
    if proc.returncode == 97:
        pytest.skip("running as root without CAP_SETPCAP: cannot drop CAP_DAC_OVERRIDE")
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "ro"
    directory.mkdir()
    yield directory
    directory.chmod(0o755)  # so pytest can clean up


def test_read_only_directory_with_no_store_gives_a_clear_error(read_only_dir: Path) -> None:
    """D7: a store cannot be created in a read-only directory: ConfigurationError, not a crash."""
    read_only_dir.chmod(0o555)
    result = run_without_write_permission("open", str(read_only_dir / "history.sqlite3"))
    assert result["outcome"] == "ConfigurationError"
    assert "history.sqlite3" in result["message"]
    assert "NANOBANANA_DATA_DIR" in result["message"]
    nested = run_without_write_permission("open", str(read_only_dir / "sub" / "h.sqlite3"))
    assert nested["outcome"] == "ConfigurationError"


def test_wal_store_in_a_directory_made_read_only_is_refused_not_moved(
    read_only_dir: Path,
) -> None:
    """D7: an existing store in a now read-only directory errors clearly and is left intact."""
    db = read_only_dir / "history.sqlite3"
    with Store(db) as store:
        store.insert(rec("a"))
    before = db.read_bytes()
    names = sorted(p.name for p in read_only_dir.iterdir())
    assert "history.sqlite3" in names and not [n for n in names if n.endswith("-wal")]
    read_only_dir.chmod(0o555)
    result = run_without_write_permission("open", str(db))
    assert result["outcome"] == "ConfigurationError"
    assert sorted(p.name for p in read_only_dir.iterdir()) == names  # nothing moved or made
    assert db.read_bytes() == before


def test_falls_back_to_a_rollback_journal_when_wal_is_impossible(read_only_dir: Path) -> None:
    """D7: where WAL's side files cannot be created but a journal can, the store still works."""
    db = read_only_dir / "history.sqlite3"
    with Store(db) as store:
        store.insert(rec("a"))
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    # A journal file that already exists is all a rollback journal needs in this directory;
    # WAL would still have to create -wal and -shm, which the read-only directory refuses.
    Path(f"{db}-journal").touch()
    read_only_dir.chmod(0o555)
    result = run_without_write_permission("open", str(db))
    assert result["outcome"] == "ok", result
    assert result["journal_mode"] == "truncate"
    assert result["read_back"] is True
    (warning,) = result["warnings"]
    assert warning[0] == StoreWarning.__name__
    assert "WAL mode could not be enabled" in warning[1]
    read_only_dir.chmod(0o755)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 2
    finally:
        conn.close()


def test_read_only_file_gives_a_clear_error(db: Path) -> None:
    """D7: a store file without write permission raises ConfigurationError at open."""
    with Store(db) as store:
        store.insert(rec("a"))
    db.chmod(0o444)
    try:
        result = run_without_write_permission("open", str(db))
    finally:
        db.chmod(0o644)
    assert result["outcome"] == "ConfigurationError"
    assert "history.sqlite3" in result["message"]


# -- issue 18: the full check after a crash, not at every open -------------------------


HOLD_THEN_DIE = """
import os, signal, sys
from pathlib import Path
from nanobanana_jupyter._store.store import Store
from tests.unit.test_store import rec

store = Store(Path(sys.argv[1]))
store.insert_many(rec(f"k{i}", prompt="p" * 200) for i in range(300))
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
# "exit": the interpreter ends without store.close()
"""


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Traced:
    return trace_store_sql(monkeypatch)


def run_holder(db: Path, how: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", HOLD_THEN_DIE, str(db), how],
        capture_output=True,
        cwd=str(Path(__file__).resolve().parents[2]),
        timeout=60,
        check=False,
    )
    return proc.returncode


def test_a_store_left_open_by_a_killed_process_is_checked_at_the_next_open_only(
    db: Path, traced: Traced
) -> None:
    """An unclean shutdown (SIGKILL with the store open) gets one full check, then none."""
    with Store(db):
        pass
    assert run_holder(db, "kill") == -signal.SIGKILL
    traced.clear()
    with Store(db) as store:
        assert store.count() == 300
    assert traced.full_checks() == 1
    with Store(db):
        pass
    assert traced.full_checks() == 1


def test_a_file_damaged_after_a_crash_is_still_moved_aside(db: Path, traced: Traced) -> None:
    """D5 after a crash: the check that the crash triggers finds the damage and recovers."""
    with Store(db):
        pass
    assert run_holder(db, "kill") == -signal.SIGKILL
    conn = sqlite3.connect(db)  # fold the killed writer's WAL in, as a later reader would
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    damaged = damage_pages(db)
    with pytest.warns(StoreRecoveredWarning), Store(db) as fresh:
        assert fresh.count() == 0
    assert traced.full_checks() == 1
    (moved,) = aside_files(db, "corrupt")
    assert moved.read_bytes() == damaged


def test_a_process_that_exits_without_closing_leaves_a_clean_store(
    db: Path, traced: Traced
) -> None:
    """Interpreter exit closes the stores still open: the next open needs no full check."""
    with Store(db):
        pass
    assert run_holder(db, "exit") == 0
    assert not Path(f"{db}-wal").exists()
    traced.clear()
    with Store(db) as store:
        assert store.count() == 300
    assert traced.full_checks() == 0
