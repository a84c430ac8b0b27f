"""The history store at scale, timed on the wall clock (X2): so not in tests/unit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.models import TaskStatus
from tests.unit.test_store import T0, FakeClock, rec

S = TaskStatus


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "data" / "history.sqlite3", clock=FakeClock()) as s:
        yield s


def test_fifty_thousand_rows_page_and_count_quickly(store: Store) -> None:
    """With 50,000 rows, count + the last page + a filtered count take well under a second."""
    statuses = [S.SUCCESS, S.FAILED, S.PENDING]
    store.insert_many(
        rec(
            f"r{i:05d}",
            statuses[i % 3],
            model=f"m{i % 4}",
            created_at=T0 + i,
            task_id=f"t{i}",
            consumed=Decimal("0.05"),
        )
        for i in range(50_000)
    )
    start = time.perf_counter()
    total = store.count()
    last = store.page(49_980, 20)
    failed = store.count(status=S.FAILED, model="m1")
    newest = store.page(0, 20, newest_first=True, status="success")
    elapsed = time.perf_counter() - start
    assert total == 50_000
    assert [r.local_id for r in last] == [f"r{i:05d}" for i in range(49_980, 50_000)]
    assert failed == len([i for i in range(50_000) if i % 3 == 1 and i % 4 == 1])
    assert newest[0].local_id == "r49998"
    assert elapsed < 1.0, f"took {elapsed:.3f} s"
