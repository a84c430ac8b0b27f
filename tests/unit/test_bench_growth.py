"""The history growth benchmark (benchmarks/bench_growth.py) still measures what it says.

Small sizes, in this process: the shapes of its figures and the arithmetic of its rows,
never their speed (speed goals belong to `make bench`). The whole section, with its child
processes and sandboxes, runs in quick mode in tests/unit/test_bench_smoke.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_growth, polling_model

TASKS = 200


@pytest.fixture(scope="module")
def history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("growth") / "history"
    built = bench_growth.build_history(data_dir, TASKS)
    assert built["rows_s"] > 0 and built["images_s"] > 0
    return data_dir


def test_the_history_is_built_through_the_store_with_real_images(history_dir: Path) -> None:
    """Every successful task has an image file and a thumbnail; neighbours differ."""
    from nanobanana_jupyter._store.store import Store

    with Store(history_dir / "history.sqlite3") as store:
        assert store.count() == TASKS
        newest = store.page(0, 40, newest_first=True, status="success")
    assert newest and all(len(r.images) == 1 for r in newest)
    for record in newest:
        image = record.images[0]
        assert Path(image.path).is_file() and image.thumb_path is not None
        assert Path(image.thumb_path).is_file()
    shas = [r.images[0].sha256 for r in newest]
    assert len(set(shas)) == len(shas)  # the pool is larger than a page and a gallery


def test_open_and_views_report_every_figure(history_dir: Path) -> None:
    """The children's work, run here: each figure is there and is a time."""
    for what in ("session", "baseline"):
        assert bench_growth._open_child({"data_dir": str(history_dir), "what": what})["ms"] > 0
    views = bench_growth._views_child({"data_dir": str(history_dir), "runs": 1})
    assert views["tasks"] == TASKS
    assert views["pandas_rows"] == TASKS
    pages = TASKS // bench_growth.PAGE_ROWS
    assert views["page_count"] == pages
    assert set(views["pages"]) == {"1", str(pages // 2 + 1), str(pages)}
    for key in (
        "view_first_ms",
        "view_warm_ms",
        "view_sql_ms",
        "panel_first_ms",
        "panel_warm_ms",
        "panel_gallery_warm_ms",
        "panel_history_warm_ms",
        "pandas_ms",
        "pandas_sql_ms",
    ):
        assert views[key] > 0, key
    for page in views["pages"].values():
        assert page["panel_ms"] > 0 and page["sql_ms"] > 0


def _flight(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tasks": rows, "peak_in_flight": len(rows), "wall_s": 3.0}


def _row(i: int, status: str = "success", error: str | None = None, **kw: Any) -> dict[str, Any]:
    row = {
        "local_id": f"L{i}",
        "task_id": f"T{i}",
        "status": status,
        "error": error,
        "submitted_at": 1000.0 + i,
        "done_at": 100.0 + i + 0.5,  # monotonic: half a second after the sandbox's finish
        "terminal_at": 100.0 + i + 0.25,
    }
    row.update(kw)
    return row


def test_in_flight_delays_are_from_the_server_finish_on_the_api_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Delays are done callback minus the ledger's completed_at, over the clock scale; a
    PoolTimeout counts as queueing, a server failure does not; the oracle is n/a until
    polling_model has its hook, and then the ratio uses it."""
    rows = [_row(i) for i in range(8)]
    rows.append(_row(8, "unavailable", "httpx.PoolTimeout while querying", done_at=None))
    rows.append(_row(9, "unavailable", "the server said it is busy (503)", done_at=None))
    ledger = {"completed_at": {f"T{i}": 100.0 + i for i in range(10)}}
    durations = [10.0] * 10
    monkeypatch.delattr(polling_model, bench_growth.ORACLE_HOOK, raising=False)
    monkeypatch.delattr(polling_model, "capped_oracle", raising=False)
    out = bench_growth.summarize_in_flight(_flight(rows), ledger, durations, 0.5)
    assert out["handle_p50_api_s"] == pytest.approx(1.0)
    assert out["handle_p95_api_s"] == pytest.approx(1.0)
    assert out["answer_p50_api_s"] == pytest.approx(0.5)
    assert out["unavailable"] == 2 and out["unavailable_queueing"] == 1
    assert out["seen_done"] == 8
    assert out["oracle_p95_api_s"] is None and out["p95_over_oracle"] is None

    seen: list[tuple[list[float], list[float], float]] = []

    def oracle(d: list[float], arrivals: list[float], *, rate: float) -> float:
        seen.append((list(d), list(arrivals), rate))
        return 0.8

    monkeypatch.setattr(polling_model, bench_growth.ORACLE_HOOK, oracle, raising=False)
    out = bench_growth.summarize_in_flight(_flight(rows), ledger, durations, 0.5)
    assert out["p95_over_oracle"] == pytest.approx(1.25)
    (given,) = seen
    assert given[0] == durations and given[2] == bench_growth.DEFAULT_RATE
    assert given[1][:3] == pytest.approx([0.0, 2.0, 4.0])  # submit times in API seconds


def _history(**kw: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "tasks": TASKS,
        "open_ms": 10.0,
        "open_sql_ms": 1.0,
        "view_first_ms": 30.0,
        "view_warm_ms": 5.0,
        "view_sql_ms": 0.2,
        "panel_first_ms": 100.0,
        "panel_warm_ms": 50.0,
        "panel_gallery_warm_ms": 10.0,
        "panel_history_warm_ms": 12.0,
        "pandas_ms": 30.0,
        "pandas_sql_ms": 20.0,
        "pandas_ratio": 1.5,
        "page_count": 10,
        "pages": {"1": {"panel_ms": 5.0, "sql_ms": 0.2}, "10": {"panel_ms": 25.0, "sql_ms": 0.3}},
    }
    figures.update(kw)
    return figures


def test_the_oracle_falls_back_on_the_capped_oracle_of_the_model() -> None:
    """Without the named hook, polling_model's capped oracle gives the figure (when the
    model has one): a p95 in API seconds for the same durations and submit times."""
    if not hasattr(polling_model, "capped_oracle"):
        pytest.skip("this polling_model has no capped_oracle: the row says n/a")
    durations = [10.0 + (i % 7) for i in range(40)]
    arrivals = [i * 0.1 for i in range(40)]
    p95 = bench_growth.oracle_p95(durations, arrivals, bench_growth.DEFAULT_RATE)
    assert p95 is not None and 0 <= p95 < 10


def test_rows_judge_each_goal() -> None:
    """Open is judged at the largest size only; a far page over 20 ms misses; the oracle
    row has no verdict while the oracle is n/a; one unavailable task misses."""
    flight = bench_growth.summarize_in_flight(
        _flight([_row(0), _row(1, "unavailable", "PoolTimeout", done_at=None)]),
        {"completed_at": {"T0": 100.0}},
        [10.0, 10.0],
        0.5,
    )
    result = {
        "sizes": [200, 2000],
        "histories": {"200": _history(open_ms=90.0), "2000": _history()},
        "map": {"tasks": 50, "blocked_s": 0.4, "blocked_runs_s": [0.4]},
        "in_flight": {**flight, "oracle_p95_api_s": None, "p95_over_oracle": None},
        # The compressed-clock run is for information: never judged, even far off.
        "in_flight_compressed": {**flight, "oracle_p95_api_s": 2.0, "p95_over_oracle": 9.0},
    }
    rows = bench_growth.rows(result)
    flights = [r for r in rows if "tasks in one `session.map`" in r.measure]
    assert [r.passed for r in flights] == [None, None]
    assert "9x the oracle" in flights[1].project and "counted 2x in API s" in flights[1].measure
    verdicts = {r.measure: r.passed for r in rows}
    opens = [r for r in rows if r.measure.startswith("`Session(")]
    assert [r.passed for r in opens] == [None, True]  # 90 ms at the small size: not judged
    pages = [r for r in rows if r.measure.startswith("panel history page")]
    assert all(r.passed is False for r in pages) and "25 ms" in pages[0].project
    assert all(r.passed is True for r in rows if "to_pandas" in r.measure)  # 1.5x is at most
    assert any("n/a" in r.baseline and r.passed is None for r in rows)
    assert [v for m, v in verdicts.items() if "unavailable" in m] == [False]
    assert [v for m, v in verdicts.items() if "blocks the caller" in m] == [True]
