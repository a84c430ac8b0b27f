"""Comparison 6: history search over 100,000 tasks (issue 17, item 2; goal: under 50 ms).

A store of 100,000 tasks is built through the store's own API in bulk (``insert_many``, one
transaction), with prompts of eight words drawn from a 2,000-word vocabulary (a Zipf-like
spread, so some words are common and most are rare), three models, and ratings and tags on
one task in ten. Then each query of :data:`QUERIES` runs through ``History.search`` (the
default ``limit`` of 100, newest first): the median of several runs after one warm-up. The
row reports the slowest query's median against the goal.

    python -m benchmarks.bench_search          # the full size
    python -m benchmarks.bench_search --quick  # 2,000 tasks
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import Row, median, rounded

if TYPE_CHECKING:
    from nanobanana_jupyter._store.records import ImageRecord, TaskRecord

GOAL_MS = 50.0
TASKS = 100_000
TAGS = ("fav", "cover", "print", "redo", "portrait", "winter", "draft", "client")
MODELS = ("google/gempix2", "google/gemini-3-pro-image", "google/gempix-lite")

QUERIES: dict[str, dict[str, Any]] = {
    "text, a common word": {"text": "w1"},
    "text, two words": {"text": "w3 w40"},
    "text, a rare word": {"text": "w1999"},
    "text, a phrase": {"text": '"w2 w5"'},
    "tags (one)": {"tags": "fav"},
    "tags (two, AND)": {"tags": ["fav", "cover"]},
    "rating >= 4": {"rating": (4, None)},
    "combined: text, tag, rating, model": {
        "text": "w7",
        "tags": "fav",
        "rating": (3, None),
        "model": MODELS[0],
    },
    "text matching nothing": {"text": "nosuchword"},
}


def _words(rng: random.Random, n: int) -> list[str]:
    # Zipf-like: word k is drawn with weight 1 / (k + 1).
    return rng.choices(_VOCABULARY, weights=_WEIGHTS, k=n)


_VOCABULARY = [f"w{k}" for k in range(2000)]
_WEIGHTS = [1 / (k + 1) for k in range(2000)]


def build(
    path: Path,
    tasks: int,
    *,
    seed: int = 6,
    images: Sequence[ImageRecord] = (),
    annotated: int = 10**9,
) -> float:
    """Fill a new store at ``path``; return the seconds it took.

    With ``images`` (records of files already in an image store), every successful task is
    given one of them in turn, with a task id, submit and finish times and a cost, as a
    task that ran (:mod:`benchmarks.bench_growth`); without, the rows carry text only.
    One task in ten is rated and tagged, at most ``annotated`` of them (one transaction each).
    """
    from nanobanana_jupyter._store.records import TaskRecord
    from nanobanana_jupyter._store.store import Store
    from nanobanana_jupyter._wire.models import TaskStatus

    rng = random.Random(seed)
    statuses = (TaskStatus.SUCCESS,) * 8 + (TaskStatus.FAILED, TaskStatus.TIMED_OUT)
    t0 = 1_700_000_000.0
    started = time.perf_counter()
    records = [
        TaskRecord(
            local_id=f"L{i:07d}",
            status=rng.choice(statuses),
            prompt=" ".join(_words(rng, 8)),
            model=rng.choice(MODELS),
            fingerprint=f"fp{i}",
            created_at=t0 + i * 7.0,
            updated_at=t0 + i * 7.0,
        )
        for i in range(tasks)
    ]
    if images:
        records = [_ran(r, i, t0 + i * 7.0, images) for i, r in enumerate(records)]
    with Store(path) as store:
        store.insert_many(records)
        for record in rng.sample(records, min(tasks // 10, annotated)):
            store.annotate(
                record.local_id,
                rating=rng.randint(0, 5),
                add_tags=rng.sample(TAGS, rng.randint(1, 3)),
            )
    return time.perf_counter() - started


def _ran(record: TaskRecord, i: int, created: float, images: Sequence[ImageRecord]) -> TaskRecord:
    """``record`` as a task that was sent and ended: an id, times, a cost and, when it
    succeeded, the image ``images[i % len(images)]``."""
    from nanobanana_jupyter._wire.models import TaskStatus

    success = record.status is TaskStatus.SUCCESS
    return record.replace(
        task_id=f"T{i:07d}",
        submitted_at=created + 0.5,
        finished_at=created + 15.0,
        updated_at=created + 15.0,
        consumed=Decimal("0.05") if success else None,
        images=(images[i % len(images)],) if success else (),
        polls=3,
        error=None if success else "the server said the task failed",
    )


def measure(path: Path, runs: int) -> dict[str, dict[str, Any]]:
    """The median milliseconds (and the matches returned) of each query."""
    from nanobanana_jupyter._store.history import History
    from nanobanana_jupyter._store.store import Store

    out: dict[str, dict[str, Any]] = {}
    with Store(path) as store:
        history = History(store)
        for name, query in QUERIES.items():
            found = history.search(**query)  # warm-up: pages into the cache
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                history.search(**query)
                times.append(time.perf_counter() - started)
            out[name] = {"median_ms": rounded(median(times) * 1000, 2), "found": len(found)}
    return out


def run(*, quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    tasks, runs = (2_000, 3) if quick else (TASKS, 15)
    root = Path(workdir or tempfile.mkdtemp(prefix="nb-bench-search-"))
    try:
        path = root / "history.sqlite3"
        build_s = build(path, tasks)
        queries = measure(path, runs)
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    slowest_name = max(queries, key=lambda name: queries[name]["median_ms"] or 0.0)
    slowest = queries[slowest_name]["median_ms"]
    spread = "; ".join(f"{name} {q['median_ms']} ms" for name, q in queries.items())
    rows = [
        Row(
            "Search",
            f"`history.search` over {tasks:,} tasks, slowest query's median",
            f"{slowest} ms ({slowest_name})",
            spread,
            f"< {GOAL_MS:g} ms",
            slowest is not None and slowest < GOAL_MS,
        ),
        Row(
            "Search",
            f"building the {tasks:,}-task store (one insert_many, {tasks // 10:,} annotate calls)",
            f"{build_s:.1f} s",
        ),
    ]
    return {
        "tasks": tasks,
        "runs": runs,
        "build_s": rounded(build_s, 2),
        "queries": queries,
        "rows": [dataclasses.asdict(r) for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
