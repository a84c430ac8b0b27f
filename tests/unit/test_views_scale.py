"""Views read what they show (issue 18): kept totals, keyset pages, frames built in bulk.

The kept totals (``_store/totals.py``) are compared with the old full-scan computation
(every row's ``consumed`` through ``credits_sum``, written out again here) over randomised
histories written by this release, by a plain SQLite writer standing in for an older
release, by two stores on one file, and by several processes at once. The frame of
``History.to_pandas()`` is compared, dtypes and all, with the frame the old record-by-record
code built (also written out again here).
"""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
import sys
import time
import types
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter._store.history import History
from nanobanana_jupyter._store.records import RECORD_COLUMNS, ImageRecord, TaskRecord
from nanobanana_jupyter._store.rows import stored_cost
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.credits import credits_sum, normalize_credits
from nanobanana_jupyter._wire.models import TaskStatus

T0 = 1_700_000_000.0
# Costs as a server or an older store may have written them: plain, with trailing zeros,
# zero forms, long, unusable (negative, NaN, huge, text) and ones needing many digits.
COSTS = [
    None, "0.04", "0.5", "0.500", "2", "0E-8", "-0", "1.000000", "0.134", "7.25",
    "1E+27", "-1", "NaN", "Infinity", "abc", "", "1e-3", "999999999.99999999",
]  # fmt: skip
WIDE = ["123456789.123456789012345678901234", "1E-40"]
"""Costs whose sums need more than 28 digits: the old sum rounds, and so must the new."""


def old_totals(path: Path) -> tuple[int, Decimal, int, Decimal]:
    """Count, cost, reuses and reused cost as the old code computed them: every row."""
    conn = sqlite3.connect(path)
    try:
        (count,) = conn.execute("SELECT count(*) FROM tasks").fetchone()
        cost = Decimal(0)
        for (value,) in conn.execute("SELECT consumed FROM tasks WHERE consumed IS NOT NULL"):
            amount = stored_cost(value)
            if amount is not None:
                cost = credits_sum(cost, amount)
        (reuses,) = conn.execute(
            "SELECT COALESCE(SUM(reuses), 0) FROM tasks WHERE reuses > 0"
        ).fetchone()
        reused = Decimal(0)
        for value, times in conn.execute(
            "SELECT consumed, reuses FROM tasks WHERE consumed IS NOT NULL AND reuses > 0"
        ):
            amount = stored_cost(value)
            if amount is not None:
                reused = credits_sum(reused, amount * times)
    finally:
        conn.close()
    return int(count), cost, int(reuses), reused


def assert_totals_match(store: Store) -> None:
    count, cost, reuses, reused = old_totals(store.path)
    assert store.count() == count
    assert store.total_cost() == cost
    assert store.reused_cost() == (reuses, reused)
    history = History(store)
    assert len(history) == count
    # What every view shows: the normalised total, the same text as before.
    assert str(history.total_cost) == str(normalize_credits(cost))
    assert str(history.reused_cost) == str(normalize_credits(reused))


def rec(i: int, rng: random.Random, **changes: Any) -> TaskRecord:
    status = rng.choice([TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.SUBMITTED])
    created = T0 + i * 3 + rng.choice([0.0, 0.5])
    fields: dict[str, Any] = {
        "local_id": f"L{i:05d}",
        "status": status,
        "prompt": f"prompt {i} " + rng.choice(["red fox", "blue sea", "green hill"]),
        "model": rng.choice(["m1", "m2"]),
        "fingerprint": f"fp{i}",
        "created_at": created,
        "updated_at": created + 1,
    }
    fields.update(changes)
    return TaskRecord(**fields)


def _cost(rng: random.Random, wide: bool = False) -> str | None:
    return rng.choice(COSTS + (WIDE if wide else []))


def _raw_cost(conn: sqlite3.Connection, local_id: str, value: str | None) -> None:
    """Write a cost as an older release (or a hand edit) would: no Decimal checks."""
    conn.execute("UPDATE tasks SET consumed = ? WHERE local_id = ?", (value, local_id))


@pytest.mark.parametrize("seed", range(6))
def test_kept_totals_equal_the_full_scan_over_random_histories(tmp_path: Path, seed: int) -> None:
    """Inserts, finishes, reuses, refunds (a cost taken back to none or to less), raw
    writes by another writer, deletes: after every step the kept totals are the scan's."""
    rng = random.Random(seed)
    path = tmp_path / "history.sqlite3"
    wide = seed % 3 == 2
    with Store(path) as store, Store(path) as other:
        raw = sqlite3.connect(path, isolation_level=None, timeout=10)
        n = 0
        for _step in range(120):
            action = rng.random()
            ids = [f"L{i:05d}" for i in range(n)]
            if action < 0.25 or not ids:
                batch = [rec(n + k, rng) for k in range(rng.randint(1, 4))]
                (store if rng.random() < 0.5 else other).insert_many(batch)
                n += len(batch)
            elif action < 0.5:
                target = store.get(rng.choice(ids))  # None once deleted
                value = _cost(rng, wide)
                amount = None if value is None else stored_cost(value)
                writer = store if rng.random() < 0.5 else other
                if target is not None:
                    changed = target.replace(consumed=amount, updated_at=target.updated_at + 1)
                    writer.update(changed)
            elif action < 0.65:
                (store if rng.random() < 0.5 else other).count_reuse(rng.choice(ids))
            elif action < 0.85:
                _raw_cost(raw, rng.choice(ids), _cost(rng, wide))
            elif action < 0.92:
                raw.execute(
                    "UPDATE tasks SET reuses = ? WHERE local_id = ?",
                    (rng.choice([0, 1, 3, -2]), rng.choice(ids)),
                )
            else:
                raw.execute("DELETE FROM tasks WHERE local_id = ?", (rng.choice(ids),))
            assert_totals_match(store)
            assert_totals_match(other)
        raw.close()
    with Store(path) as reopened:
        assert_totals_match(reopened)


def test_a_sum_needing_more_than_28_digits_is_the_old_rounded_one(tmp_path: Path) -> None:
    """The old sum rounds to 28 digits; the kept one is exact, so it is not used then."""
    path = tmp_path / "history.sqlite3"
    rng = random.Random(1)
    with Store(path) as store:
        store.insert_many(
            [
                rec(i, rng, consumed=Decimal(v))
                for i, v in enumerate(["0.1", WIDE[0], "0.3", "1E-40", "5"])
            ]
        )
        totals = store.totals()
        assert totals is not None and not totals.matches_scan()
        assert_totals_match(store)


def test_an_old_file_gains_totals_built_from_its_rows(tmp_path: Path) -> None:
    """A file from before the totals (no tables, no triggers) opens, and its totals are
    built from its rows once; an older release writing it afterwards keeps them right."""
    path = tmp_path / "history.sqlite3"
    rng = random.Random(3)
    with Store(path) as store:
        store.insert_many(
            [rec(i, rng, consumed=stored_cost(rng.choice(COSTS[1:6]))) for i in range(50)]
        )
    conn = sqlite3.connect(path)
    for name in ("view_totals_insert", "view_totals_delete", "view_totals_update"):
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE view_totals")
    conn.execute("DROP TABLE cost_changes")
    conn.execute("UPDATE tasks SET consumed = '3.5', reuses = 2 WHERE local_id = 'L00007'")
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.totals() is not None
        assert_totals_match(store)
        older = sqlite3.connect(path, isolation_level=None)
        older.execute("UPDATE tasks SET consumed = '0.25' WHERE local_id = 'L00001'")
        older.execute(
            "INSERT INTO tasks (local_id, status, prompt, model, fingerprint, created_at, "
            "updated_at, consumed, reuses) VALUES ('X', 'success', 'p', 'm', 'f', 1, 1, '9', 1)"
        )
        older.close()
        assert_totals_match(store)
        # This release's next write folds the older release's logged changes in.
        store.count_reuse("L00002")
        (logged,) = store._read("SELECT count(*) FROM cost_changes")[0]
        assert logged == 0
        assert_totals_match(store)


def _hammer(path: str, seed: int, steps: int) -> None:
    rng = random.Random(seed)
    with Store(Path(path)) as store:
        ids = [row[0] for row in store._read("SELECT local_id FROM tasks")]
        for i in range(steps):
            time.sleep(rng.random() * 0.003)
            if rng.random() < 0.4:
                store.count_reuse(rng.choice(ids))
            elif rng.random() < 0.5:
                store.insert(rec(100_000 * (seed + 1) + i, rng, consumed=stored_cost("0.5")))
            else:
                target = store.get(rng.choice(ids))
                assert target is not None
                value = rng.choice(["0.04", "0.134", None, "2"])
                store.update(
                    target.replace(
                        consumed=None if value is None else Decimal(value),
                        updated_at=target.updated_at + 1,
                    )
                )


@pytest.mark.parametrize("round_", range(2))
def test_several_processes_writing_at_once_keep_the_totals_exact(
    tmp_path: Path, round_: int
) -> None:
    """Three processes write the same store at once (jittered); the totals are the scan's."""
    path = tmp_path / "history.sqlite3"
    rng = random.Random(round_)
    with Store(path) as store:
        store.insert_many([rec(i, rng) for i in range(30)])
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_hammer, args=(str(path), round_ * 10 + k, 40)) for k in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    with Store(path) as store:
        assert_totals_match(store)


# -- keyset pages -------------------------------------------------------------------------


def test_keyset_pages_walk_the_history_both_ways(tmp_path: Path) -> None:
    """latest(before=...) and earliest(after=...) page through every task exactly once,
    in order, ties on created_at included; count_newer is the position."""
    rng = random.Random(5)
    with Store(tmp_path / "h.sqlite3") as store:
        # Many tasks share a creation time: the local id breaks the tie, as ORDER does.
        store.insert_many([rec(i, rng, created_at=T0 + i // 4) for i in range(103)])
        history = History(store)
        oldest_first = list(history)
        assert [r.local_id for r in oldest_first] == [r.local_id for r in history[0:103]]
        walked: list[TaskRecord] = []
        page = history.latest(10)
        while page:
            walked.extend(page)
            page = history.latest(10, before=page[-1])
        assert walked == oldest_first[::-1]
        for position, record in enumerate(walked):
            assert history.count_newer(record) == position
        forward: list[TaskRecord] = []
        page = history.earliest(7)
        while page:
            forward.extend(page)
            page = history.earliest(7, after=page[-1])
        assert forward == oldest_first
        narrowed = history.filter(model="m1")
        assert (
            narrowed.latest(5, before=walked[10]) == [r for r in walked[11:] if r.model == "m1"][:5]
        )


def _statements(store: Store) -> list[str]:
    seen: list[str] = []
    conn = store._conn
    assert conn is not None
    conn.set_trace_callback(seen.append)
    return seen


def test_the_history_view_reads_no_row_it_does_not_show(tmp_path: Path) -> None:
    """Showing a history (text and HTML) and paging the panel's way read the kept totals
    and the page: no statement walks the costs of every task or skips rows by OFFSET."""
    import nanobanana_jupyter  # noqa: F401  (installs the display functions)
    from nanobanana_jupyter._display import present

    rng = random.Random(2)
    with Store(tmp_path / "h.sqlite3") as store:
        store.insert_many([rec(i, rng, consumed=Decimal("0.5")) for i in range(60)])
        history = History(store)
        seen = _statements(store)
        present.text(history)
        present.mimebundle(history)
        page = history.latest(21)
        history.latest(21, before=page[19])
        history.count_newer(page[19])
        assert seen, "the trace saw nothing"
        for sql in seen:
            assert "OFFSET" not in sql.upper(), sql
            if "FROM tasks" in sql:  # a page (LIMIT), a count from a key, or one row
                bounded = "LIMIT" in sql or "(created_at, local_id) >" in sql
                assert bounded or "local_id IN (" in sql, sql


# -- frames ----------------------------------------------------------------------------------


def old_to_pandas(history: History, store: Store, ids: list[str] | None = None) -> Any:
    """The frame as the old code built it: one record, then one dict, per row."""
    import pandas as pd

    records = [r.to_dict() for r in history if ids is None or r.local_id in ids]
    notes = store.annotations()
    for row in records:
        annotation = notes.get(row["local_id"])
        row["rating"] = None if annotation is None else annotation.rating
        row["tags"] = [] if annotation is None else list(annotation.tags)
        row["note"] = None if annotation is None else annotation.note
    columns = [*RECORD_COLUMNS, "rating", "tags", "note"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["rating"] = frame["rating"].astype("Int64")
    frame["note"] = pd.Series([row["note"] for row in records], dtype=object)
    for column in ("created_at", "updated_at", "submitted_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame


def _filled(store: Store, rng: random.Random, n: int, *, sparse: bool = False) -> None:
    records = []
    for i in range(n):
        done = not sparse and rng.random() < 0.7
        sha = f"{i:064x}"
        records.append(
            rec(
                i,
                rng,
                task_id=None if sparse else f"T{i}",
                aspect_ratio=None if sparse else rng.choice(["1:1", None]),
                callback_url=None if sparse else rng.choice([None, "https://u:pw@cb.example/x"]),
                references=() if sparse else rng.choice([(), ("https://r.example/a.png",)]),
                submitted_at=None if sparse else T0 + i,
                finished_at=T0 + i + rng.choice([-1.0, 0.0, 2.5]) if done else None,
                consumed=stored_cost(rng.choice(COSTS)) if done else None,
                error=None if done or sparse else "failed: dk-abcdefgh1234 was refused",
                result_urls=(f"https://x.example/{i}.png",) if done else (),
                images=(ImageRecord(sha, f"/img/{sha}.png", "image/png", 4, 4, 9),) if done else (),
                texts=("a caption",) if done and rng.random() < 0.2 else (),
                polls=rng.randint(0, 5),
                reuses=rng.choice([0, 0, 1]),
            )
        )
    store.insert_many(records)
    for record in rng.sample(records, n // 3):
        store.annotate(
            record.local_id,
            rating=rng.choice([None, 0, 3, 5]),
            add_tags=rng.sample(["fav", "blue", "print"], rng.randint(0, 2)),
            note=rng.choice([None, "keep"]),
        )
    # A status this release does not know, and a cost an older release stored as it came.
    conn = store._db()
    conn.execute("UPDATE tasks SET status = 'from_the_future' WHERE local_id = 'L00001'")
    conn.execute("UPDATE tasks SET consumed = '1E+27' WHERE local_id = 'L00002'")


@pytest.mark.parametrize(("seed", "n", "sparse"), [(0, 0, False), (1, 40, False), (2, 25, True)])
def test_to_pandas_is_the_frame_the_records_made(
    tmp_path: Path, seed: int, n: int, sparse: bool
) -> None:
    """Same columns, values and dtypes as the record-by-record frame (empty history, all-
    None columns, unknown statuses and unusable costs included)."""
    pd = pytest.importorskip("pandas")
    from pandas.testing import assert_frame_equal

    with Store(tmp_path / "h.sqlite3") as store:
        if n:
            _filled(store, random.Random(seed), n, sparse=sparse)
        history = History(store)
        assert_frame_equal(history.to_pandas(), old_to_pandas(history, store))
        assert isinstance(pd.DataFrame(), pd.DataFrame)


def test_to_pandas_paths_are_the_records_whatever_the_images_hold(tmp_path: Path) -> None:
    """The paths column (one image's path found in SQL, any other in Python) is the
    records': two images, a path with a comma, quotes and non-ASCII, a path an older or
    foreign writer stored as a number, and none."""
    pytest.importorskip("pandas")
    import dataclasses
    import json

    from pandas.testing import assert_frame_equal

    def images(*paths: object) -> str:
        return json.dumps(
            [
                {**dataclasses.asdict(ImageRecord("a" * 64, "x", "image/png", 4, 4, 9)), "path": p}
                for p in paths
            ]
        )

    with Store(tmp_path / "h.sqlite3") as store:
        _filled(store, random.Random(3), 12)
        conn = store._db()
        stored = {
            "L00003": images("/img/one.png", "/img/two.png"),
            "L00004": images('/img/a,"b" \\ ü.png'),
            "L00005": images(5),
            "L00006": "[]",
        }
        for local_id, value in stored.items():
            conn.execute("UPDATE tasks SET images = ? WHERE local_id = ?", (value, local_id))
        history = History(store)
        frame = history.to_pandas()
        assert_frame_equal(frame, old_to_pandas(history, store))
        paths = dict(zip(frame["local_id"], frame["paths"], strict=True))
        assert paths["L00003"] == ["/img/one.png", "/img/two.png"]
        assert paths["L00004"] == ['/img/a,"b" \\ ü.png']
        assert paths["L00005"] == [5] and paths["L00006"] == []


def test_to_pandas_without_sqlites_json_operators_is_the_same_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SQLite without ``->`` (before 3.38) or its JSON functions gets the plain select
    list; the frame is the same."""
    pytest.importorskip("pandas")
    import sqlite3

    from pandas.testing import assert_frame_equal

    from nanobanana_jupyter._store import frame as frame_module

    with Store(tmp_path / "h.sqlite3") as store:
        _filled(store, random.Random(5), 30)
        history = History(store)
        with_json = history.to_pandas()
        assert frame_module.select_columns(store._db()) == frame_module.SELECT_COLUMNS_JSON

        class OldSQLite:
            def execute(self, sql: str) -> Any:
                raise sqlite3.OperationalError('near "->": syntax error')

        assert frame_module.select_columns(OldSQLite()) == frame_module.SELECT_COLUMNS  # type: ignore[arg-type]
        monkeypatch.setattr(
            frame_module, "select_columns", lambda conn: frame_module.SELECT_COLUMNS
        )
        assert_frame_equal(history.to_pandas(), with_json)


def test_to_pandas_filters_load_only_what_matches(tmp_path: Path) -> None:
    """text, tags, model, status, rating, since, until and limit, alone and together, give
    the old frame's rows of the matching tasks (limit: the newest that many)."""
    pytest.importorskip("pandas")
    from pandas.testing import assert_frame_equal

    with Store(tmp_path / "h.sqlite3") as store:
        _filled(store, random.Random(7), 60)
        history = History(store)
        cases: list[dict[str, Any]] = [
            {"text": "red fox"},
            {"tags": "fav"},
            {"model": "m2", "status": "success"},
            {"rating": (3, None)},
            {"since": T0 + 60, "until": T0 + 150},
            {"limit": 7},
            {"text": "blue", "model": "m1", "limit": 3},
        ]
        for filters in cases:
            found = history.search(
                **{k: v for k, v in filters.items() if k != "limit"},
                limit=filters.get("limit", 10_000),
            )
            ids = [r.local_id for r in found]
            got = history.to_pandas(**filters)
            assert sorted(got["local_id"]) == sorted(ids), filters
            want = old_to_pandas(history, store, ids).reset_index(drop=True)
            assert_frame_equal(got, want, check_dtype=len(ids) > 0)
        narrowed = history.filter(model="m1")
        assert set(narrowed.to_pandas()["model"]) == {"m1"}
        with pytest.raises(ValueError, match="limit"):
            history.to_pandas(limit=-1)


def test_to_polars_without_polars_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "polars", None)  # import polars -> ImportError
    with (
        Store(tmp_path / "h.sqlite3") as store,
        pytest.raises(ImportError, match="pip install polars"),
    ):
        History(store).to_polars()


class _Expr:
    """Enough of a polars expression to record what is asked of a column."""

    def __init__(self, name: str, steps: tuple[Any, ...] = ()) -> None:
        self.name, self.steps = name, steps

    def __mul__(self, factor: object) -> _Expr:
        return _Expr(self.name, (*self.steps, ("mul", factor)))

    def round(self, digits: int) -> _Expr:
        return _Expr(self.name, (*self.steps, ("round", digits)))

    def cast(self, kind: object) -> _Expr:
        return _Expr(self.name, (*self.steps, ("cast", kind)))

    def alias(self, name: str) -> _Expr:
        return _Expr(name, self.steps)


class _FakeFrame:
    def __init__(self, data: dict[str, list[Any]], schema: dict[str, Any]) -> None:
        self.data, self.schema, self.derived = data, schema, []

    def with_columns(self, exprs: list[_Expr]) -> _FakeFrame:
        self.derived = exprs
        return self


def _fake_polars() -> types.ModuleType:
    """A stand-in for polars (not installed here) exposing the calls to_polars makes."""
    module = types.ModuleType("polars")
    module.DataFrame = _FakeFrame  # type: ignore[attr-defined]
    module.Utf8, module.Float64, module.Int64 = "Utf8", "Float64", "Int64"  # type: ignore[attr-defined]
    module.List = lambda inner: ("List", inner)  # type: ignore[attr-defined]
    module.Datetime = lambda unit, zone: ("Datetime", unit, zone)  # type: ignore[attr-defined]
    module.col = _Expr  # type: ignore[attr-defined]
    return module


def test_to_polars_hands_polars_the_same_columns_as_to_pandas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """polars is not installed in this environment: a stand-in module records what
    to_polars gives it; the columns are those of to_pandas, value for value."""
    pytest.importorskip("pandas")
    monkeypatch.setitem(sys.modules, "polars", _fake_polars())
    with Store(tmp_path / "h.sqlite3") as store:
        _filled(store, random.Random(4), 30)
        history = History(store)
        table = history.to_polars(model="m1")
        frame = history.to_pandas(model="m1")
    assert isinstance(table, _FakeFrame)
    assert list(table.data) == list(frame.columns)
    assert table.schema["tags"] == ("List", "Utf8") and table.schema["rating"] == "Int64"
    assert table.schema["created_at"] == "Float64" and table.schema["prompt"] == "Utf8"
    for name in ("local_id", "status", "prompt", "references", "paths", "tags", "polls"):
        assert table.data[name] == frame[name].tolist(), name
    assert table.data["created_at"] == [t.timestamp() for t in frame["created_at"]]
    assert [e.name for e in table.derived] == [
        "created_at",
        "updated_at",
        "submitted_at",
        "finished_at",
    ]
    assert table.derived[0].steps[-1] == ("cast", ("Datetime", "us", "UTC"))
