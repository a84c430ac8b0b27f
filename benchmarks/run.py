"""Run every benchmark, print one markdown table, and write results.md and results.json.

    python -m benchmarks.run            # everything (make bench); about 18 minutes on 2 cores
    python -m benchmarks.run --quick    # tiny configurations, a few seconds per benchmark
    python -m benchmarks.run --only polling,kernel --out /tmp/bench
    python -m benchmarks.run --only search --update   # re-measure sections of results.md

A full run writes ``benchmarks/results.md`` and ``benchmarks/results.json`` unless ``--out``
names another directory. ``--update`` re-measures only the sections named by ``--only`` and
replaces them in the committed results, keeping the others; each re-measured section says
when it was measured and under what load, so no figure loses its date. ``--quick`` writes
nothing unless ``--out`` is given (its figures are not meant to be kept). A benchmark that
fails is reported in the table as an error and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import (
    bench_growth,
    bench_import,
    bench_kernel,
    bench_notebook,
    bench_polling,
    bench_scale,
    bench_search,
    polling_model,
)
from ._common import Row, machine_info

HERE = Path(__file__).resolve().parent

BENCHMARKS: dict[str, Callable[..., dict[str, Any]]] = {
    "polling": bench_polling.run,
    "scale": bench_scale.run,
    "kernel": bench_kernel.run,
    "notebook": bench_notebook.run,
    "import": bench_import.run,
    "search": bench_search.run,
    "growth": bench_growth.run,
}
TITLES = {
    "polling": "Polling",
    "scale": "Scale",
    "kernel": "Kernel",
    "notebook": "Notebook",
    "import": "Import",
    "search": "Search",
    "growth": "History growth",
}


def run_all(names: Sequence[str], *, quick: bool) -> dict[str, Any]:
    """Run the named benchmarks in order; a failure becomes an error entry, not a crash."""
    sections: dict[str, Any] = {}
    for name in names:
        started = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            result = BENCHMARKS[name](quick=quick)
        except Exception as exc:  # reported in the table; the other benchmarks still run
            result = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
                "rows": [
                    Row(
                        TITLES[name], "benchmark failed", f"{type(exc).__name__}: {exc}"[:300]
                    ).__dict__
                ],
            }
            print(result["traceback"], file=sys.stderr)
        result["wall_s"] = round(time.monotonic() - started, 1)
        print(f"[bench] {name} done in {result['wall_s']} s", file=sys.stderr, flush=True)
        sections[name] = result
    return sections


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_table(sections: dict[str, Any]) -> str:
    """The one table: every measure, its figure, what it is compared with, goal and verdict."""
    lines = [
        "| Comparison | Measure | Project | Compared with | Goal | Result |",
        "|---|---|---|---|---|---|",
    ]
    for result in sections.values():
        again = result.get("remeasured")
        for raw in result.get("rows", []):
            row = Row(**raw)
            if again:
                row.comparison += f" (re-measured {again['date']})"
            verdict = row.verdict
            if "error" in result:
                verdict = "ERROR"
            lines.append(
                "| "
                + " | ".join(
                    _cell(v)
                    for v in (
                        row.comparison,
                        row.measure,
                        row.project,
                        row.baseline,
                        row.goal,
                        verdict,
                    )
                )
                + " |"
            )
    return "\n".join(lines)


def _details(sections: dict[str, Any]) -> str:
    parts: list[str] = []
    polling = sections.get("polling")
    if polling and "pollers" in polling:
        w = polling["workload"]
        b = polling["burst_workload"]
        cal = polling.get("calibration", {})
        parts += [
            "### Polling, every poller",
            "",
            f"Workload: {w['tasks']} tasks, arrivals {w['arrivals']}, durations (API s) "
            f"p50 {w['duration_p50_s']}, p95 {w['duration_p95_s']}, min {w['duration_min_s']}, "
            f"max {w['duration_max_s']}; at most {w['peak_in_flight']} in flight. The burst "
            f"row uses the same durations with arrivals {b['arrivals']} "
            f"(at most {b['peak_in_flight']} in flight). Delays are in API seconds (each run's "
            "real delay divided by its clock scale); relative delays are per task, divided by "
            "its own duration. Session runs use the default policy and the default caps (queries "
            "and submits per second), all on the API clock. Each run has its own clock scale, "
            "chosen so that its peak real request rate stays near a target calibrated on this "
            f"machine: {cal.get('target_rate')} requests/s, from "
            f"{cal.get('client_ms_per_request')} ms of client CPU per query request"
            + (
                f"; raised to {cal['run_target_rate']} requests/s so that the runs fit the "
                f"polling time budget of {cal['budget_s']:g} s"
                if cal.get("run_target_rate", 0) > cal.get("target_rate", 0)
                else ""
            )
            + ".",
            "",
            bench_polling.detail_table(polling),
            "",
            "Webhook detection delay in real time: p50 "
            + ", ".join(
                f"{f['detect_p50_real_ms']} ms / p95 {f['detect_p95_real_ms']} ms"
                for f in polling["pollers"]
                if f["kind"] == "webhook"
            )
            + ". Time from a terminal answer to the image on disk (download, checks, "
            "thumbnail, history), real ms p50 / p95: "
            + ", ".join(
                f"{f['poller']} {f['store_p50_real_ms']} / {f['store_p95_real_ms']}"
                for f in polling["pollers"]
            )
            + ".",
            "",
        ]
    if polling and "model" in polling:
        parts += [
            "### Polling, fake-clock model",
            "",
            "`benchmarks/polling_model.py` on the same workload: the session's real scheduler "
            "and rate limiter against a server that answers at once, and an oracle's "
            "schedules (the best found by dynamic programming when every duration is known "
            "in advance) followed with and without the session's cap.",
            "",
            polling_model.table(polling["model"]),
            "",
        ]
    for name in ("scale", "kernel", "notebook", "import", "growth"):
        result = sections.get(name)
        if not result or "error" in result:
            continue
        shown = {k: v for k, v in result.items() if k not in ("rows", "traceback")}
        parts += [
            f"### {TITLES[name]}",
            "",
            "```json",
            json.dumps(shown, indent=1, sort_keys=True),
            "```",
            "",
        ]
    return "\n".join(parts)


def merge_update(
    earlier: dict[str, Any], sections: dict[str, Any], run: dict[str, Any]
) -> dict[str, Any]:
    """The earlier report with ``sections`` replaced, each marked with this run's date and load."""
    merged = {k: v for k, v in earlier.items() if k not in ("rows", "sections")}
    kept = dict(earlier.get("sections", {}))
    for name, result in sections.items():
        kept[name] = {
            **result,
            "remeasured": {
                "date": run["date"],
                "load_start": run["load_start"],
                "load_end": run["load_end"],
            },
        }
    # The order of a full run, whatever order the update named them in.
    merged["sections"] = {n: kept[n] for n in BENCHMARKS if n in kept}
    return merged


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def remeasured_lines(sections: dict[str, Any]) -> list[str]:
    """One line per section re-measured after the full run (``--update``), with its load."""
    return [
        f"- Re-measured later (`--only {name} --update`): {TITLES[name]} on "
        f"{r['remeasured']['date']}, load at start {r['remeasured']['load_start']}, "
        f"at end {r['remeasured']['load_end']}; the other sections are from the date above"
        for name, r in sections.items()
        if r.get("remeasured")
    ]


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    passed = sum(1 for r in report["rows"] if r["passed"] is True)
    missed = sum(1 for r in report["rows"] if r["passed"] is False)
    return "\n".join(
        [
            "# Benchmark results",
            "",
            f"- Date: {report['date']}",
            f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM; {m['os']}",
            f"- Python {m['python']}; {packages}",
            f"- Load average (1/5/15 min) at start: {report['load_start']}, "
            f"at end: {report['load_end']}",
            f"- Wall time: {report['wall_s']} s" + (" (quick mode)" if report["quick"] else ""),
            f"- Goals: {passed} pass, {missed} missed",
            *remeasured_lines(report["sections"]),
            "",
            "Generated by `make bench` (`python -m benchmarks.run`). The sandbox runs on a "
            "compressed clock; times marked *API s* are in the API's own seconds (real "
            "seconds divided by the clock scale), so that runs at different scales compare. "
            "Compare figures as ratios within one run: absolute times vary between machines "
            "and with whatever else the machine is doing.",
            "",
            "## Summary",
            "",
            report["table"],
            "",
            "## Details",
            "",
            report["details"],
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny configurations (smoke test)")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help="comma-separated: " + ", ".join(BENCHMARKS)
    )
    parser.add_argument("--out", type=Path, help="directory for results.md and results.json")
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace only the --only sections in the existing results (each keeps its date)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    out: Path | None = args.out if args.out is not None else (None if args.quick else HERE)
    if args.update and (args.quick or out is None or not (out / "results.json").is_file()):
        parser.error("--update needs an earlier full run's results.json (and no --quick)")

    load_start = _load()
    started = time.monotonic()
    sections = run_all(names, quick=args.quick)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report: dict[str, Any] = {
        "date": now,
        "quick": args.quick,
        "machine": machine_info(),
        "load_start": load_start,
        "load_end": _load(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    if args.update:
        assert out is not None
        report = merge_update(
            json.loads((out / "results.json").read_text(encoding="utf-8")), sections, report
        )
        sections = report["sections"]
    else:
        report["sections"] = sections
    report["rows"] = [row for result in sections.values() for row in result.get("rows", [])]
    report["table"] = summary_table(sections)
    report["details"] = _details(sections)
    print(report["table"])
    print(f"\nwall time: {round(time.monotonic() - started, 1)} s", file=sys.stderr)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(render_markdown(report) + "\n", encoding="utf-8")
        data = {k: v for k, v in report.items() if k not in ("table", "details")}
        for section in data["sections"].values():
            section.pop("traceback", None)
        (out / "results.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        print(f"written: {out / 'results.md'}, {out / 'results.json'}", file=sys.stderr)
    return 1 if any("error" in s for s in sections.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
