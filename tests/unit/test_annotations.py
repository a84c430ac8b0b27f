"""Ratings, tags, notes and search (issue 17, item 2): kept in the store, shared by every
store on the file, found by indexes; older files are migrated with their prompts indexed."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter._store import database
from nanobanana_jupyter._store.annotations import MAX_NOTE_CHARS, MAX_TAG_CHARS, Annotation
from nanobanana_jupyter._store.history import History
from nanobanana_jupyter._store.rows import INSERT, to_row
from nanobanana_jupyter._store.search import fts_query
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.errors import ValidationError
from nanobanana_jupyter._wire.models import TaskStatus
from tests.conftest import SENTINEL_KEY
from tests.unit.test_store import T0, FakeClock, rec

S = TaskStatus


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    with Store(db, clock=FakeClock()) as s:
        yield s


def ids(records: list[object]) -> list[str]:
    return [r.local_id for r in records]  # type: ignore[attr-defined]


# -- writing and reading --------------------------------------------------------------------


def test_rating_tags_and_note_are_stored_and_read_back(store: Store) -> None:
    store.insert(rec("a"))
    assert store.annotation("a") == Annotation()
    store.annotate("a", rating=4)
    store.annotate("a", add_tags=["  Best   Of ", "keep", "best of"])
    after = store.annotate("a", note="warm light, use for the cover")
    assert after == Annotation(4, ("best of", "keep"), "warm light, use for the cover")
    # Changing one thing leaves the others as they were.
    assert store.annotate("a", rating=0) == Annotation(0, ("best of", "keep"), after.note)
    assert store.annotate("a", remove_tags=["KEEP", "never-there"]).tags == ("best of",)
    assert store.annotate("a", rating=None, note="").rating is None
    assert store.annotation("a") == Annotation(None, ("best of",), None)
    cleared = store.annotate("a", remove_tags=["best of"])
    assert cleared.is_empty
    assert store._read("SELECT count(*) FROM annotations")[0][0] == 0


@pytest.mark.parametrize("bad", [True, False, 6, -1, 4.0, "4", [4]])
def test_a_rating_is_a_whole_number_from_0_to_5(store: Store, bad: object) -> None:
    store.insert(rec("a"))
    with pytest.raises(ValidationError, match="0 to 5"):
        store.annotate("a", rating=bad)  # type: ignore[arg-type]
    assert store.annotation("a").rating is None


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * (MAX_TAG_CHARS + 1), f"at most {MAX_TAG_CHARS}"),
        ("a\x07b", "control"),
        (3, "is a string"),
    ],
)
def test_bad_tags_are_refused_and_nothing_is_written(store: Store, bad: object, words: str) -> None:
    store.insert(rec("a"))
    with pytest.raises(ValidationError, match=words):
        store.annotate("a", rating=5, add_tags=["fine", bad])  # type: ignore[list-item]
    assert store.annotation("a") == Annotation()  # the good rating was not written either
    store.annotate("a", add_tags=["x" * MAX_TAG_CHARS])
    assert store.annotation("a").tags == ("x" * MAX_TAG_CHARS,)


def test_bad_notes_and_unknown_tasks_are_refused(store: Store) -> None:
    store.insert(rec("a"))
    with pytest.raises(ValidationError, match="string"):
        store.annotate("a", note=12)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=f"at most {MAX_NOTE_CHARS}"):
        store.annotate("a", note="n" * (MAX_NOTE_CHARS + 1))
    with pytest.raises(KeyError, match="no task 'zz'"):
        store.annotate("zz", rating=3)
    assert store.annotations() == {}


def test_a_key_in_a_note_or_tag_is_masked(store: Store) -> None:
    store.insert(rec("a"))
    key = SENTINEL_KEY[:40]
    got = store.annotate("a", note=f"the key is {SENTINEL_KEY}", add_tags=[key])
    assert got.note == "the key is dk-***" and got.tags == ("dk-***",)
    stored = store._read("SELECT note FROM annotations UNION ALL SELECT tag FROM tags")
    assert all("SENTINEL" not in str(value) for (value,) in stored)


def test_two_stores_on_one_file_see_each_others_annotations(db: Path) -> None:
    with Store(db, clock=FakeClock()) as one, Store(db, clock=FakeClock()) as two:
        one.insert(rec("a", prompt="a lighthouse at dusk"))
        two.annotate("a", rating=5, add_tags=["cover"], note="from kernel two")
        assert one.annotation("a") == Annotation(5, ("cover",), "from kernel two")
        one.annotate("a", remove_tags=["cover"], add_tags=["print"])
        assert two.annotation("a").tags == ("print",)
        assert ids(two.search("lighthouse", tags="print")) == ["a"]


# -- migration ------------------------------------------------------------------------------


def _schema_1_file(path: Path, records: list[object]) -> None:
    """A history as the release before ratings wrote it: its tables, user_version 1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for statement in database._SCHEMA:
        conn.execute(statement)
    conn.executemany(INSERT, [(*to_row(r), None) for r in records])  # type: ignore[arg-type]
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_a_schema_1_file_is_migrated_and_its_prompts_indexed(db: Path) -> None:
    _schema_1_file(db, [rec("old1", prompt="Crème brûlée close-up"), rec("old2", prompt="a cat")])
    with Store(db, clock=FakeClock()) as store:
        assert store.full_text is True
        assert ids(store.search("creme")) == ["old1"]
        store.annotate("old2", rating=3, add_tags=["pets"])
        store.insert(rec("new", prompt="a cat on a mat", created_at=T0 + 1))
        assert ids(store.search("cat")) == ["new", "old2"]
        assert ids(store.search(tags="pets", rating=3)) == ["old2"]
    conn = sqlite3.connect(db)
    try:
        # Still version 1: an older release goes on using this file (see database.py).
        assert conn.execute("PRAGMA user_version").fetchone()[0] == database.SCHEMA_VERSION == 1
        # Opening again neither backfills twice nor loses anything.
        assert conn.execute("SELECT count(*) FROM prompt_index").fetchone()[0] == 3
    finally:
        conn.close()
    with Store(db, clock=FakeClock()) as store:
        assert store._read("SELECT count(*) FROM prompt_index")[0][0] == 3
        assert store.annotation("old2") == Annotation(3, ("pets",), None)


def test_an_older_release_writing_the_file_keeps_the_index_in_step(db: Path) -> None:
    with Store(db, clock=FakeClock()) as store:
        store.insert(rec("a", prompt="first"))
    # An older release names its columns and knows nothing of the index: the triggers keep up.
    conn = sqlite3.connect(db)
    conn.execute(INSERT, (*to_row(rec("b", prompt="second sunrise")), None))
    conn.commit()
    conn.close()
    with Store(db, clock=FakeClock()) as store:
        assert ids(store.search("sunrise")) == ["b"]


def test_without_fts5_text_search_is_a_substring_match(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "fts5_available", lambda: False)
    with Store(db, clock=FakeClock()) as store:
        assert store.full_text is False
        store.insert_many([rec("a", prompt="red foxglove"), rec("b", prompt="blue")])
        assert ids(store.search("FOX")) == ["a"]
        assert ids(store.search("red fox")) == ["a"]  # as one substring here
    monkeypatch.undo()
    with Store(db, clock=FakeClock()) as store:  # FTS5 again: the index is built then
        assert store.full_text is True
        assert ids(store.search("foxglove")) == ["a"]


# -- search ---------------------------------------------------------------------------------


@pytest.fixture
def filled(store: Store) -> Store:
    store.insert_many(
        [
            rec("a", S.SUCCESS, prompt="A red fox in the snow", created_at=T0 + 1),
            rec("b", S.FAILED, prompt="red-fox sketch, pencil", created_at=T0 + 2),
            rec("c", S.SUCCESS, prompt="Foxes and a red barn", created_at=T0 + 3, model="m2"),
            rec("d", S.SUCCESS, prompt="Café at night (50% off!)", created_at=T0 + 4),
            rec("e", S.SUCCESS, prompt='say "AND" OR NOT: * ^ -x', created_at=T0 + 5),
        ]
    )
    store.annotate("a", rating=5, add_tags=["fav", "winter"])
    store.annotate("b", rating=2, add_tags=["fav"])
    store.annotate("c", rating=4, add_tags=["winter"])
    store.annotate("d", rating=0)
    return store


def test_words_are_prefixes_that_must_all_appear_newest_first(filled: Store) -> None:
    assert ids(filled.search("red fox")) == ["c", "b", "a"]
    assert ids(filled.search("FOX snow")) == ["a"]
    assert ids(filled.search("cafe")) == ["d"]  # accents and case ignored
    assert ids(filled.search('"red fox"')) == ["b", "a"]  # a phrase: those words in a row
    assert ids(filled.search("red fox", limit=2)) == ["c", "b"]
    assert filled.search("red", limit=0) == []
    assert ids(filled.search("")) == ["e", "d", "c", "b", "a"]


@pytest.mark.parametrize(
    "text",
    ['"', '""', 'red "fox', "AND", "OR NOT", "*", "^", "NEAR(red fox)", "prompt:red", "-x",
     "(", "a)", "50%", "%", "_", "'; DROP TABLE tasks; --", "\\", "\x00", "🦊"],
)  # fmt: skip
def test_any_text_is_safe(filled: Store, text: str) -> None:
    filled.search(text)  # never an FTS5 syntax error
    assert len(filled.search()) == 5


def test_special_text_still_finds_what_it_says(filled: Store) -> None:
    assert ids(filled.search('"AND"')) == ["e", "c"]  # "Foxes and a red barn": any case
    assert ids(filled.search("AND OR")) == ["e"]
    assert ids(filled.search("50%")) == ["d"]
    assert ids(filled.search("%")) == ["d"]  # no word: a substring match, % taken literally
    assert ids(filled.search("*")) == ["e"]
    assert ids(filled.search("(50")) == ["d"]


def test_fts_query_quotes_every_term() -> None:
    assert fts_query('red "big fox" a"b') == '"red"* AND "big fox" AND "a""b"*'
    assert fts_query("!!! ...") is None


def test_tags_all_must_be_on_the_task(filled: Store) -> None:
    assert ids(filled.search(tags="fav")) == ["b", "a"]
    assert ids(filled.search(tags=["FAV", "winter"])) == ["a"]
    assert ids(filled.search(tags=("winter",))) == ["c", "a"]
    assert filled.search(tags="nothing") == []
    assert len(filled.search(tags=[])) == 5
    with pytest.raises(ValidationError):
        filled.search(tags=[""])


def test_rating_exact_and_ranges(filled: Store) -> None:
    assert ids(filled.search(rating=5)) == ["a"]
    assert ids(filled.search(rating=0)) == ["d"]
    assert ids(filled.search(rating=(4, None))) == ["c", "a"]
    assert ids(filled.search(rating=(None, 2))) == ["d", "b"]
    assert ids(filled.search(rating=(2, 4))) == ["c", "b"]
    assert ids(filled.search(rating=(None, None))) == ["d", "c", "b", "a"]
    for bad in (True, 7, (4, 2), (1, 2, 3), "5"):
        with pytest.raises(ValidationError):
            filled.search(rating=bad)  # type: ignore[arg-type]


def test_filters_combine(filled: Store) -> None:
    history = History(filled)
    assert ids(history.search("red", status="success")) == ["c", "a"]
    assert ids(history.search("red", model="m2")) == ["c"]
    assert ids(history.search(tags="fav", status=["failed"])) == ["b"]
    assert ids(history.search("fox", tags="winter", rating=(5, 5))) == ["a"]
    assert ids(history.search(since=T0 + 3)) == ["e", "d", "c"]
    since = dt.datetime.fromtimestamp(T0 + 4, tz=dt.timezone.utc)
    assert ids(history.search(since=since)) == ["e", "d"]
    assert ids(history.search(until=T0 + 2)) == ["a"]
    # A filtered history searches within its filters, its text as a substring.
    narrow = history.filter(status="success", text="snow")
    assert ids(narrow.search("fox")) == ["a"]
    assert ids(history.filter(model="m2").search(tags="winter")) == ["c"]


def test_history_annotates_records_and_ids(filled: Store) -> None:
    history = History(filled)
    (record,) = history.search("pencil")
    assert history.rate(record, 3).rating == 3
    assert history.tag("b", "Redo").tags == ("fav", "redo")
    assert history.untag(record, "fav").tags == ("redo",)
    assert history.set_note(record, "try ink").note == "try ink"
    assert history.annotation("b") == Annotation(3, ("redo",), "try ink")
    with pytest.raises(KeyError):
        history.rate("nope", 1)


def test_to_pandas_gains_rating_tags_and_note(filled: Store) -> None:
    pd = pytest.importorskip("pandas")
    filled.annotate("a", note="cover")
    frame = History(filled).to_pandas()
    assert list(frame.columns[-3:]) == ["rating", "tags", "note"]
    assert str(frame["rating"].dtype) == "Int64"
    by_id = frame.set_index("local_id")
    assert by_id.loc["a", "rating"] == 5
    assert by_id.loc["a", "tags"] == ["fav", "winter"]
    assert by_id.loc["a", "note"] == "cover"
    assert by_id.loc["d", "rating"] == 0
    assert pd.isna(by_id.loc["e", "rating"])
    assert by_id.loc["e", "tags"] == [] and by_id.loc["e", "note"] is None


# -- the Task handle ------------------------------------------------------------------------


def test_a_task_rates_tags_and_notes_through_the_history(tmp_path: Path) -> None:
    from tests.helpers.mock_api import Accepting, mock_session

    with mock_session(tmp_path / "data", Accepting()) as session:
        task = session.generate("a lighthouse at dusk")
        assert (task.rating, task.tags, task.note) == (None, [], None)
        assert task.rate(4).tag("Cover", "print") is task
        task.note = "use for the poster"
        assert (task.rating, task.tags, task.note) == (4, ["cover", "print"], "use for the poster")
        task.untag("print")
        task.note = None
        with pytest.raises(ValidationError, match="0 to 5"):
            task.rate(True)  # type: ignore[arg-type]
        # Another store on the same data directory (another kernel) sees it, and its
        # writes show on this handle at once.
        with Store(session.data_dir / "history.sqlite3") as other:
            assert other.annotation(task.local_id) == Annotation(4, ("cover",), None)
            other.annotate(task.local_id, rating=1)
        assert task.rating == 1
        assert ids(session.history.search("lighthouse", tags="cover", rating=1)) == [task.local_id]


def test_the_index_follows_changed_prompts_but_not_status_updates(store: Store) -> None:
    store.insert(rec("a", prompt="an owl"))
    store.update(rec("a", S.PENDING, prompt="an owl", updated_at=T0 + 1, task_id="t1"))
    assert store._read("SELECT count(*) FROM prompt_index")[0][0] == 1
    with store._write() as conn:  # never done by the package; the trigger keeps up anyway
        conn.execute("UPDATE tasks SET prompt = 'a heron' WHERE local_id = 'a'")
    assert ids(store.search("heron")) == ["a"] and store.search("owl") == []
    with store._write() as conn:
        conn.execute("DELETE FROM tasks WHERE local_id = 'a'")
    assert store._read("SELECT count(*) FROM prompt_index")[0][0] == 0


def test_both_plans_give_the_same_answers(filled: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from nanobanana_jupyter._store import search

    queries = [{"text": "red fox"}, {"text": "red", "tags": "fav"}, {"text": "cafe", "rating": 0}]
    few = [ids(filled.search(**q)) for q in queries]  # type: ignore[arg-type]
    monkeypatch.setattr(search, "COMMON_MATCHES", 0)  # every word counts as common
    assert [ids(filled.search(**q)) for q in queries] == few  # type: ignore[arg-type]
    assert few == [["c", "b", "a"], ["b", "a"], ["d"]]


def test_an_index_out_of_step_is_rebuilt_at_open(db: Path) -> None:
    with Store(db, clock=FakeClock()) as store:
        store.insert_many([rec("a", prompt="a gull"), rec("b", prompt="a tern")])
        with store._write() as conn:
            conn.execute("DELETE FROM prompt_index WHERE local_id = 'b'")
        assert store.search("tern") == []
    with Store(db, clock=FakeClock()) as store:
        assert ids(store.search("tern")) == ["b"]
        assert store._read("SELECT count(*) FROM prompt_index")[0][0] == 2


# -- cards ----------------------------------------------------------------------------------


def test_a_card_shows_stars_tags_and_note_escaped_and_static() -> None:
    from nanobanana_jupyter._display.bundles import task_bundle
    from nanobanana_jupyter._display.html import task_html

    record = rec("a", S.SUCCESS, prompt="a cat")
    plain = task_html(record)
    assert "nanobanana-rating" not in plain and "nanobanana-tag" not in plain
    said = Annotation(3, ("<b>bold</b>", "keep"), 'a "note" & <script>')
    card = task_html(record, annotation=said)
    assert "★★★☆☆" in card and 'title="rated 3 of 5"' in card
    assert "&lt;b&gt;bold&lt;/b&gt;" in card and "<b>bold" not in card
    assert "&lt;script&gt;" in card and "<script" not in card
    data, _ = task_bundle(record, annotation=said)
    assert str(data["text/plain"]).endswith(
        "rated ★★★☆☆ (3/5), tags <b>bold</b>, keep, note 'a \"note\" & <script>'"
    )
    assert (
        task_bundle(record)[0]["text/plain"]
        == task_bundle(record, annotation=Annotation())[0]["text/plain"]
    )


def test_a_tasks_card_shows_its_current_annotation(tmp_path: Path) -> None:
    from nanobanana_jupyter._display import present
    from tests.helpers.mock_api import Accepting, mock_session

    with mock_session(tmp_path / "data", Accepting()) as session:
        task = session.generate("a fox")
        assert "nanobanana-rating" not in str(present.mimebundle(task)[0]["text/html"])  # type: ignore[index]
        task.rate(5).tag("cover")
        html = str(present.mimebundle(task)[0]["text/html"])  # type: ignore[index]
        assert "★★★★★" in html and ">cover<" in html
    # After the session closed, the card still renders (without the annotation).
    assert "nanobanana-card" in str(present.mimebundle(task)[0]["text/html"])  # type: ignore[index]


def test_each_search_plan_finds_what_a_scan_finds(store: Store) -> None:
    """A word in almost every prompt (the newest-first walk over the list of matches), one
    in a tenth and a rare one (the matches sorted), with and without a model or a tag (the
    tag's lookup leading): the newest matches a plain scan finds."""
    import random

    from nanobanana_jupyter._store import search as search_module

    rng = random.Random(18)
    records = []
    for i in range(4000):
        words = ["common"] if rng.random() < 0.95 else ["other"]
        if i % 10 == 0:
            words.append("tenth")
        if i % 500 == 0:
            words.append("rare")
        records.append(
            rec(
                f"t{i:05d}",
                S.SUCCESS,
                prompt=" ".join(words),
                model=rng.choice(["m1", "m2"]),
                created_at=T0 + rng.randint(0, 400),  # ties on creation time too
            )
        )
    store.insert_many(records)
    for r in records[::7]:
        store.annotate(r.local_id, rating=rng.randint(0, 5), add_tags=["keep"])
    kept = {r.local_id for r in records[::7]}
    chosen: list[str] = []
    real = search_module.count_matches

    def recording(conn: Any, clauses: list[str], params: list[Any], **kw: Any) -> None:
        real(conn, clauses, params, **kw)
        chosen.extend(c for c in clauses if "MATCH" in c)

    search_module.count_matches = recording  # type: ignore[assignment]
    import nanobanana_jupyter._store.store as store_module

    store_module.count_matches = recording  # type: ignore[assignment]
    try:
        for word in ("common", "tenth", "rare"):
            for model in (None, "m1"):
                for tags in (None, "keep"):
                    expected = [
                        r
                        for r in records
                        if word in r.prompt.split()
                        and (model is None or r.model == model)
                        and (tags is None or r.local_id in kept)
                    ]
                    expected.sort(key=lambda r: (r.created_at, r.local_id), reverse=True)
                    found = store.search(word, model=model, tags=tags, limit=50)
                    assert ids(found) == ids(expected[:50]), (word, model, tags)
    finally:
        search_module.count_matches = real  # type: ignore[assignment]
        store_module.count_matches = real  # type: ignore[assignment]
    assert search_module.COMMON_TEXT_CLAUSE in chosen  # both plans were taken
    assert any(c.startswith("rowid IN") for c in chosen)


def test_a_common_word_s_newest_matches_are_read_newest_first_and_checked(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A word in most prompts: only its newest matches are read from the index, and the
    answer is what a scan finds, also where tasks were written out of creation order (an
    old task written last; a task written first that is the newest of all: the check sees
    it and the full plan answers)."""
    import random

    import nanobanana_jupyter._store.store as store_module
    from nanobanana_jupyter._store import search as search_module

    rng = random.Random(17)
    newest_of_all = rec(
        "t-first", S.SUCCESS, prompt="common first", model="m1", created_at=T0 + 10**6
    )
    records = [newest_of_all]
    for i in range(4000):
        model = "rare" if i % 150 == 0 else rng.choice(["m1", "m2"])
        words = "common" if rng.random() < 0.95 else "other"
        records.append(rec(f"t{i:05d}", S.SUCCESS, prompt=words, model=model, created_at=T0 + i))
    written_last = rec("t-late", S.SUCCESS, prompt="common late", model="m1", created_at=T0 - 5)
    answers: list[list[int] | None] = []

    def spying(*args: Any) -> list[int] | None:
        answer = search_module.newest_matches(*args)
        answers.append(answer)
        return answer

    monkeypatch.setattr(store_module, "newest_matches", spying)

    def check(store: Store, pool: list[Any], **filters: Any) -> list[bool]:
        """Whether the newest-first read answered, for limits 1, 50 and 100."""
        answers.clear()
        for limit in (1, 50, 100):
            expected = [
                r
                for r in pool
                if "common" in r.prompt.split()
                and all(getattr(r, k) == v for k, v in filters.items())
            ]
            expected.sort(key=lambda r: (r.created_at, r.local_id), reverse=True)
            assert ids(store.search("common", limit=limit, **filters)) == ids(expected[:limit])
        return [a is not None for a in answers]

    in_order = [*records[1:], written_last]
    store.insert_many(in_order)
    assert check(store, in_order) == [True] * 3  # read newest first
    assert check(store, in_order, model="m1") == [True] * 3
    # One in 150: the first 2,048 matches hold too few for 100 (the full plan answers).
    assert check(store, in_order, model="rare") == [True, False, False]
    store.insert_many([newest_of_all])  # the newest, written last: still in order
    assert check(store, [*in_order, newest_of_all]) == [True] * 3
    # The newest task of all written first: the check sees it and the full plan answers.
    with Store(store.path.with_name("second.sqlite3")) as other:
        other.insert_many([*records, written_last])
        assert check(other, [*records, written_last]) == [False] * 3
