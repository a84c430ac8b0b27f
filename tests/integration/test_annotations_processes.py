"""Ratings and tags written by one process are seen by another on the same file (issue 17)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nanobanana_jupyter._store.annotations import Annotation
from nanobanana_jupyter._store.store import Store
from tests.unit.test_store import FakeClock, rec

_CHILD = """
import sys
from nanobanana_jupyter._store.store import Store
with Store(sys.argv[1]) as store:
    store.annotate("a", rating=5, add_tags=["from-child"], note="kernel two")
    print(store.annotation("a").tags)
"""


def test_an_annotation_from_another_process_is_seen_here(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    with Store(db, clock=FakeClock()) as store:
        store.insert(rec("a", prompt="a harbour at noon"))
        store.annotate("a", add_tags=["mine"])
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(db)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "from-child" in done.stdout and "mine" in done.stdout
        assert store.annotation("a") == Annotation(5, ("from-child", "mine"), "kernel two")
        assert [r.local_id for r in store.search("harbour", tags="from-child")] == ["a"]
