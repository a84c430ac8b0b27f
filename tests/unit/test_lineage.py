"""Edit lineage from the history: parents, children and the tree (issue 17, item 3)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import pytest

from nanobanana_jupyter._display.lineage import lineage_html, lineage_text, prompt_diff_html
from nanobanana_jupyter._store.history import History
from nanobanana_jupyter._store.lineage import MAX_NODES
from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.models import TaskStatus


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def record(
    name: str, prompt: str, *, made_from: tuple[str, ...] = (), at: float = 0.0
) -> TaskRecord:
    image = ImageRecord(
        sha256=digest(name),
        media_type="image/png",
        path=f"/nowhere/{name}.png",
        width=4,
        height=4,
        size=10,
    )
    return TaskRecord(
        local_id=name,
        task_id=f"ta-{name}",
        status=TaskStatus.SUCCESS,
        prompt=prompt,
        model="google/gempix2",
        fingerprint=f"f-{name}",
        created_at=at,
        updated_at=at,
        references=tuple(f"sha256:{digest(p)}" for p in made_from),
        images=(image,),
    )


@pytest.fixture
def history(tmp_path: Path) -> History:
    store = Store(tmp_path / "history.sqlite3")
    store.insert_many(
        [
            record("cabin", "a snowy cabin", at=1),
            record("night", "a snowy cabin at night", made_from=("cabin",), at=2),
            record("aurora", "a snowy cabin at night under an aurora", made_from=("night",), at=3),
            record("summer", "a cabin in summer", made_from=("cabin",), at=4),
            record("other", "a red kite", made_from=("kite-from-a-url",), at=5),
        ]
    )
    return History(store)


def test_parents_and_children_are_joined_by_the_image_hash(history: History) -> None:
    assert [r.local_id for r in history.parents("aurora")] == ["night"]
    assert [r.local_id for r in history.children("cabin")] == ["night", "summer"]
    assert history.parents("cabin") == [] and history.children("other") == []
    assert [r.local_id for r in history.parents(history.children("cabin")[0])] == ["cabin"]


def test_the_tree_starts_at_the_first_ancestor_and_marks_the_task_asked_about(
    history: History,
) -> None:
    tree = history.lineage("aurora")
    assert tree.root.record.local_id == "cabin" and len(tree) == 4
    assert [(d, n.record.local_id) for d, n in tree.root.walk()] == [
        (0, "cabin"), (1, "night"), (2, "aurora"), (1, "summer"),
    ]  # fmt: skip
    text = lineage_text(tree)
    assert text.splitlines()[0] == "<Lineage: 4 tasks>"
    assert "    * ta-aurora success 'a snowy cabin at night under an aurora'" in text
    html = lineage_html(tree, thumbs={})
    assert html.count('class="nanobanana-lineage-step"') == 4
    # The step made from "night" shows what its prompt added, word by word.
    assert "under an aurora</ins>" in html


def test_a_prompt_diff_is_by_word_and_escaped() -> None:
    html = prompt_diff_html("a <b>cat</b> in a hat", 'a <b>dog</b> in a "hat" & coat')
    assert "<b>" not in html and "&lt;b&gt;dog&lt;/b&gt;</ins>" in html
    assert re.search(r"^a <del[^>]*>&lt;b&gt;cat&lt;/b&gt;</del> <ins", html)
    assert re.search(r" in a <del[^>]*>hat</del> <ins[^>]*>&quot;hat&quot; &amp; coat</ins>$", html)


def test_a_cycle_made_by_hand_ends_and_a_huge_tree_is_cut(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite3")
    store.insert_many(
        [record("x", "x", made_from=("y",), at=1), record("y", "y", made_from=("x",), at=2)]
    )
    tree = History(store).lineage("x")
    assert {n.record.local_id for _, n in tree.root.walk()} == {"x", "y"}

    wide = Store(tmp_path / "wide.sqlite3")
    wide.insert_many(
        [record("root", "root", at=0)]
        + [
            record(f"c{i}", f"child {i}", made_from=("root",), at=i + 1)
            for i in range(MAX_NODES + 5)
        ]
    )
    cut = History(wide).lineage("root")
    assert len(cut) == MAX_NODES and cut.truncated
    assert "cut" in lineage_text(cut).splitlines()[0]


def test_an_unknown_task_is_a_clear_error(history: History) -> None:
    with pytest.raises(KeyError, match="no task 'nope'"):
        history.lineage("nope")
    with pytest.raises(TypeError, match="a task, a task record or a local id"):
        history.lineage(42)


def test_a_result_url_given_as_a_reference_joins_its_task(tmp_path: Path) -> None:
    """A reference given as a task's result URL (the lightest reference while it is fresh)
    names that task as the parent; a URL no task returned names none. URLs with LIKE
    wildcards and non-ASCII characters match exactly, not as patterns."""
    store = Store(tmp_path / "history.sqlite3")
    url = "https://cdn.example/r/ta_1%25x/é.png?sig=a_b"
    near = "https://cdn.example/r/taX1%25x/é.png?sig=a_b"  # `_` would match X as a pattern
    parent = dataclasses.replace(record("lake", "a lake"), result_urls=(url,))
    decoy = dataclasses.replace(record("pond", "a pond", at=0.5), result_urls=(near,))
    child = dataclasses.replace(record("boat", "a boat on the lake", at=1), references=(url,))
    stray = dataclasses.replace(
        record("kite", "a kite", at=2), references=("https://elsewhere.example/k.png",)
    )
    store.insert_many([parent, decoy, child, stray])
    history = History(store)
    assert [r.local_id for r in history.parents("boat")] == ["lake"]
    assert [r.local_id for r in history.children("lake")] == ["boat"]
    assert history.children("pond") == [] and history.parents("kite") == []
    assert len(history.lineage("boat")) == 2
