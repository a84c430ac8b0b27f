"""The benchmarks (make bench) still run: every one, in a tiny configuration.

These tests check the shape of the results, never their values: speed goals belong to
`make bench`, not to the test suite (design.md section 8).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import run as bench_run
from benchmarks._common import (
    interpolate,
    lognormal_durations,
    poisson_arrivals,
    quantile,
    sandbox_makespan,
)

ROW_KEYS = {"comparison", "measure", "project", "baseline", "goal", "passed"}


def test_durations_follow_the_workload_rule() -> None:
    """Durations are deterministic per seed and none is under the 5 s floor."""
    first = lognormal_durations(400, seed=1)
    assert first == lognormal_durations(400, seed=1)
    assert min(first) >= 5.0
    assert 10 < quantile(first, 0.5) < 22


def test_arrivals_are_sorted_within_the_window() -> None:
    """Poisson arrivals are sorted and lie in the window; a zero window submits all at once."""
    arrivals = poisson_arrivals(50, 20.0, seed=2)
    assert arrivals == sorted(arrivals)
    assert all(0 <= a <= 20 for a in arrivals)
    assert poisson_arrivals(3, 0.0, seed=2) == [0.0, 0.0, 0.0]


def test_helpers_compute_what_the_tables_claim() -> None:
    """Quantiles interpolate, interpolation extends past its ends, the ideal follows capacity."""
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert math.isnan(quantile([], 0.5))
    assert interpolate(1.5, [(1.0, 10.0), (2.0, 6.0)]) == (8.0, True)
    assert interpolate(3.0, [(1.0, 10.0), (2.0, 6.0)]) == (2.0, False)
    # Two 10 s tasks on one slot: the first ends at 10, the second then runs its 8.5 s.
    assert sandbox_makespan([10.0, 10.0], 1) == pytest.approx(18.5)
    assert sandbox_makespan([10.0, 10.0], None) == 10.0


@pytest.mark.integration
@pytest.mark.kernel
def test_every_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    """`python -m benchmarks.run --quick` runs every benchmark and writes both result files."""
    status = bench_run.main(["--quick", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "results.json").read_text())
    errors = {k: v.get("error") for k, v in data["sections"].items() if "error" in v}
    assert status == 0, errors
    assert set(data["sections"]) == set(bench_run.BENCHMARKS)
    assert data["machine"]["cores"] >= 1 and data["machine"]["python"]
    for row in data["rows"]:
        assert set(row) == ROW_KEYS
        assert row["passed"] in (True, False, None)
    assert {r["comparison"] for r in data["rows"]} >= {
        "Polling",
        "Polling (webhook)",
        "Scale",
        "Kernel",
        "Notebook",
        "Import",
        "History growth",
    }

    polling = data["sections"]["polling"]
    assert {p["kind"] for p in polling["pollers"]} >= {"fixed", "session", "webhook"}
    for poller in polling["pollers"]:
        assert poller["finished"] + poller["lost"] == poller["tasks"]
        assert poller["queries_per_task"] is not None
    scale = data["sections"]["scale"]
    assert isinstance(scale["lost"], int) and isinstance(scale["duplicates"], int)
    assert scale["cpu_ms_per_task"] > 0 and scale["peak_rss_mb"] > 0
    kernel = data["sections"]["kernel"]
    assert kernel["idle_p95_ms"] > 0 and kernel["loaded_p95_ms"] > 0
    notebook = data["sections"]["notebook"]
    assert notebook["sandbox_image"]["default_bytes"] > 0
    assert notebook["photo_like_image"]["full_bytes"] > 0
    assert data["sections"]["import"]["interpreter"]["import_ms"] > 0
    growth = data["sections"]["growth"]
    for size in growth["sizes"]:
        history = growth["histories"][str(size)]
        assert history["tasks"] == size and history["open_ms"] > 0 and history["pandas_ms"] > 0
    assert growth["map"]["blocked_s"] > 0
    assert growth["in_flight"]["tasks"] > 0 and growth["in_flight"]["seen_done"] > 0

    markdown = (tmp_path / "results.md").read_text()
    assert "| Comparison | Measure |" in markdown
    assert data["machine"]["cpu"] in markdown


def test_an_update_replaces_only_the_sections_it_ran_and_dates_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--only search --update`: the other sections and the full run's date stay as they were."""

    def fake(figure: str) -> object:
        return lambda quick: {
            "rows": [
                {
                    **dict.fromkeys(ROW_KEYS, ""),
                    "passed": True,
                    "comparison": figure,
                    "measure": "m",
                }
            ]
        }

    monkeypatch.setattr(
        bench_run, "BENCHMARKS", {"import": fake("new import"), "search": fake("new search")}
    )
    earlier = {
        "date": "2026-01-01 00:00 UTC",
        "quick": False,
        "machine": bench_run.machine_info(),
        "load_start": "1",
        "load_end": "2",
        "wall_s": 900.0,
        "sections": {name: fake(f"old {name}")(quick=False) for name in ("import", "search")},
    }
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    assert bench_run.main(["--only", "search", "--update", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["date"] == "2026-01-01 00:00 UTC" and data["wall_s"] == 900.0
    assert [r["comparison"] for r in data["rows"]] == ["old import", "new search"]
    assert "remeasured" not in data["sections"]["import"]
    assert data["sections"]["search"]["remeasured"]["date"] != earlier["date"]
    markdown = (tmp_path / "results.md").read_text()
    assert "| old import |" in markdown
    assert "| new search (re-measured " in markdown
    assert "Re-measured later (`--only search --update`): Search on " in markdown


def test_an_update_without_an_earlier_full_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        bench_run.main(["--only", "search", "--update", "--out", str(tmp_path)])
    assert not (tmp_path / "results.md").exists()
