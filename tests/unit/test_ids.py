"""Ids as users type them: exact ids, unique prefixes of server or local ids, and the
messages for an ambiguous or unknown one (issue 16, item 1)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter import (
    AmbiguousTaskError,
    NanoBananaError,
    Session,
    UnknownTaskError,
    ValidationError,
)
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.models import TaskStatus
from tests.helpers.mock_api import Accepting, mock_session

T0 = 1_700_000_000.0


def rec(local_id: str, task_id: str | None = None, n: int = 0, **changes: Any) -> TaskRecord:
    return TaskRecord(
        local_id=local_id,
        task_id=task_id,
        status=TaskStatus.SUCCESS if task_id else TaskStatus.NOT_SENT,
        prompt=changes.pop("prompt", f"prompt of {local_id}"),
        model="google/gempix2",
        fingerprint=f"fp-{local_id}",
        created_at=T0 + n,
        updated_at=T0 + n,
        **changes,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    with mock_session(tmp_path / "data", Accepting()) as s:
        yield s


# -- the store ------------------------------------------------------------------------


def test_prefix_written_by_one_store_is_found_by_another_on_the_same_file(db: Path) -> None:
    """Two Store instances on one file: the second finds the first's rows by prefix."""
    with Store(db) as writer, Store(db) as reader:
        writer.insert_many([rec("aaa111", "tx-9f01", 1), rec("bbb222", "tx-9f02", 2)])
        found, count = reader.find_by_id_prefix("aaa")
        assert count == 1 and [r.local_id for r in found] == ["aaa111"]
        found, count = reader.find_by_id_prefix("tx-9f")
        assert count == 2 and [r.local_id for r in found] == ["bbb222", "aaa111"]  # newest first
        found, count = reader.find_by_id_prefix("tx-9f02")
        assert count == 1 and found[0].task_id == "tx-9f02"


def test_a_task_matched_by_both_its_ids_counts_once(db: Path) -> None:
    with Store(db) as store:
        store.insert(rec("t1-local", "t1-server"))
        found, count = store.find_by_id_prefix("t1-")
        assert count == 1 and len(found) == 1


def test_percent_and_underscore_are_plain_characters(db: Path) -> None:
    """No LIKE: '%' or '_' in a prefix match only themselves."""
    with Store(db) as store:
        store.insert_many([rec("a_b1", n=1), rec("axb2", n=2), rec("a%c3", n=3)])
        assert [r.local_id for r in store.find_by_id_prefix("a_")[0]] == ["a_b1"]
        assert [r.local_id for r in store.find_by_id_prefix("a%")[0]] == ["a%c3"]
        assert store.find_by_id_prefix("%")[1] == 0
        assert store.find_by_id_prefix("")[1] == 0


def test_the_limit_keeps_the_newest_and_counts_all(db: Path) -> None:
    with Store(db) as store:
        store.insert_many([rec(f"ff{i:02d}", n=i) for i in range(10)])
        found, count = store.find_by_id_prefix("ff", limit=3)
        assert count == 10 and [r.local_id for r in found] == ["ff09", "ff08", "ff07"]


def test_a_prefix_ending_in_the_last_code_point_still_matches(db: Path) -> None:
    with Store(db) as store:
        store.insert(rec("z\U0010ffffq"))
        assert store.find_by_id_prefix("z\U0010ffff")[1] == 1


def test_prefix_lookup_is_a_range_search_on_the_indexes(db: Path) -> None:
    """The lookup SQL is served by the indexes (SEARCH), not a scan of the table."""
    with Store(db):
        pass
    conn = sqlite3.connect(db)
    try:
        for column in ("task_id", "local_id"):
            plan = " ".join(
                str(row[-1])
                for row in conn.execute(
                    f"EXPLAIN QUERY PLAN SELECT local_id, {column}, created_at FROM tasks "  # noqa: S608
                    f"WHERE {column} >= ? AND {column} < ?",
                    ("ab", "ac"),
                )
            )
            assert "SEARCH" in plan and "INDEX" in plan, plan
    finally:
        conn.close()


# -- the session ----------------------------------------------------------------------


def test_get_takes_a_unique_prefix_of_a_server_id_or_a_local_id(session: Session) -> None:
    session._store.insert_many([rec("4f3a9c", "taa04f7806-1", 1), rec("77bb01", "tbb9-2", 2)])
    assert session.get("taa04f7806").local_id == "4f3a9c"
    assert session.get("4f3").task_id == "taa04f7806-1"
    assert session.get("  77b ").local_id == "77bb01"
    assert session.get("taa04f7806-1").local_id == "4f3a9c"


def test_an_exact_id_wins_over_a_longer_id_it_prefixes(session: Session) -> None:
    session._store.insert_many([rec("abc", n=1), rec("abcdef", n=2)])
    assert session.get("abc").local_id == "abc"
    assert session.get("abcd").local_id == "abcdef"


def test_an_ambiguous_prefix_lists_a_few_candidates_and_says_to_type_more(
    session: Session,
) -> None:
    session._store.insert_many(
        [rec(f"cafe{i}", f"t-cafe{i}", i, prompt=f"a fox number {i} " * 5) for i in range(5)]
    )
    with pytest.raises(AmbiguousTaskError) as caught:
        session.get("t-ca")
    error = caught.value
    assert isinstance(error, KeyError) and isinstance(error, NanoBananaError)
    message = str(error)
    assert "\n" not in message and not message.startswith("'")
    assert "5 tasks" in message and "and 2 more" in message
    assert "t-cafe4" in message and "t-cafe3" in message and "t-cafe2" in message
    assert "t-cafe0" not in message
    assert "a fox number 4" in message
    assert "type more characters" in message
    assert error.count == 5 and error.candidates == ("cafe4", "cafe3", "cafe2")


def test_an_unknown_id_is_a_key_error_saying_where_it_looked(session: Session) -> None:
    with pytest.raises(KeyError) as caught:
        session.get("zz9")
    error = caught.value
    assert isinstance(error, UnknownTaskError) and isinstance(error, NanoBananaError)
    assert str(session.data_dir) in str(error) and "zz9" in str(error)
    assert "\n" not in str(error)
    with pytest.raises(UnknownTaskError):
        session.get("")


def test_a_reference_takes_a_prefix_and_reports_an_ambiguous_one(session: Session) -> None:
    session._store.insert_many([rec("d00d1", "srv-1", 1), rec("d00d2", "srv-2", 2)])
    found = session.resolve_reference("@srv-1")
    assert getattr(found, "local_id", None) == "d00d1"
    assert getattr(session.resolve_reference("@d00d2"), "task_id", None) == "srv-2"
    with pytest.raises(ValidationError, match=r"@d00d: 2 tasks .*type more characters"):
        session.resolve_reference("@d00d")
    with pytest.raises(ValidationError, match="no such task"):
        session.resolve_reference("@nothing")
