"""Reuse is counted durably and the session splits paid from reused credits (issue 16, item 2)."""

from __future__ import annotations

import base64
import io
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from PIL import Image

from nanobanana_jupyter import Session
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.models import TaskStatus
from tests.helpers.mock_api import Accepting, mock_session


def test_reuses_are_added_in_sql_by_two_stores_on_one_file(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    record = TaskRecord(
        local_id="a", status=TaskStatus.NOT_SENT, prompt="p", model="m",
        fingerprint="f", created_at=1.0, updated_at=1.0,
    )  # fmt: skip
    with Store(db) as one, Store(db) as two:
        one.insert(record)
        stale = two.get("a")
        assert stale is not None
        for _ in range(3):
            one.count_reuse("a")
            two.count_reuse("a")
        stored = one.get("a")
        assert stored is not None and stored.reuses == 6
        # A write of an older copy never lowers the count.
        assert two.update(stale.replace(updated_at=2.0)).reuses == 6
        assert one.count_reuse("missing") is None


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    with mock_session(tmp_path / "data", Accepting()) as s:
        yield s


def test_a_handed_back_task_is_counted_and_its_cost_is_reused_not_spent(
    session: Session,
) -> None:
    first = session.generate("a dog")
    assert first.reused is False and first.record.reuses == 0
    again = session.generate("a dog")
    assert again is first and again.reused is True and again.record.reuses == 1
    stored = session._store.get(first.local_id)
    assert stored is not None and stored.reuses == 1
    credits = session.credits
    assert (credits.submitted, credits.reuses, credits.pretend) == (1, 1, False)
    stats = session.stats()
    assert stats["credits_spent"] == credits.spent and stats["credits_reused"] == credits.reused


class Finishing(Accepting):
    """Every query says success with one image and a cost of 0.5 credits."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return super().__call__(request)
        task_id = request.url.params.get("task_id", "")
        data = {
            "task_id": task_id,
            "status": "success",
            "consumed": "0.5",
            "result": [{"image": _PNG_URI}],
        }
        return httpx.Response(200, json={"code": 0, "data": data})


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


_PNG_URI = "data:image/png;base64," + base64.b64encode(_png()).decode()


def test_reuse_after_a_restart_is_counted_in_the_history_and_shown_apart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with mock_session(data, Finishing()) as first:
        task = first.generate("a cat")
        task.wait(30)
        assert task.status is TaskStatus.SUCCESS
        assert first.credits.spent == Decimal("0.5") and first.credits.reused == 0
    for run in range(2):  # two restarts, each re-running the cell
        with mock_session(data, Finishing()) as again:
            handed = again.generate("a cat")
            assert handed.reused and handed.local_id == task.local_id
            credits = again.credits
            assert (credits.spent, credits.reused) == (Decimal(0), Decimal("0.5"))
            assert (credits.submitted, credits.reuses) == (0, 1)
            assert repr(credits) == (
                "<SessionCredits: spent 0 credits on 0 tasks; "
                "reused once (0.5 credits not charged again)>"
            )
            history = again.history
            assert history.reuses == run + 1
            assert history.total_cost == Decimal("0.5")  # charged once, whatever the reuses
            assert history.reused_cost == Decimal("0.5") * (run + 1)
            html = history._repr_html_()
    assert html is not None
    assert "1 task · 0.5 credits · reused 2 times (1 credit not charged again)" in html
    assert ">2×<" in html  # the row's reused column


def test_a_count_that_cannot_be_written_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mock_session(tmp_path / "data", Accepting()) as session:
        first = session.generate("a dog")

        def full_disk(local_id: str) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(session._store, "count_reuse", full_disk)
        again = session.generate("a dog")
        assert again is first and again.reused
        assert session.credits.reuses == 1
        assert any("could not count its reuse" in r.getMessage() for r in caplog.records)


def test_reuses_from_two_sessions_and_many_threads_at_once_all_count(tmp_path: Path) -> None:
    import threading

    data = tmp_path / "data"
    with mock_session(data, Accepting()) as one, mock_session(data, Accepting()) as two:
        first = one.generate("a fox")
        start = threading.Barrier(8)

        def rerun(session: Session) -> None:
            start.wait()
            for _ in range(5):
                assert session.generate("a fox").local_id == first.local_id

        workers = [threading.Thread(target=rerun, args=(s,)) for s in (one, two) * 4]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert one.history.reuses == 40
        assert one.credits.reuses + two.credits.reuses == 40
