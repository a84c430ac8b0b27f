"""Rating, tagging and searching in the panel against a real sandbox: click the stars, type
tags, press the keys of the larger view (its custom message), search the history tab.

The panel's widgets are driven directly (``.click()``, ``.value = ...``), as a click or a
keystroke in the front end would, and the gallery's one widget by the messages its page
sends (tests/helpers/gallery_page.py); the store is read back through the session's history.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter import Session, TaskStatus
from nanobanana_jupyter._store.history import History
from nanobanana_jupyter._views.panel import Panel
from nanobanana_jupyter._views.panel.rating import EMPTY, FULL
from nanobanana_jupyter.sandbox import Sandbox, TaskPlan
from tests.helpers.gallery_page import GalleryPage
from tests.integration import test_panel as base
from tests.integration.test_panel import _seed, card_of, generate, make_session, wait_for

# The panel tests' fixtures, by the names the tests ask for.
sandbox, session, panel, make_panel = base.sandbox, base.session, base.panel, base.make_panel


def shown_stars(bar: Any) -> str:
    return "".join(star.description for star in bar.stars)


def finished_item(panel: Panel, prompt: str) -> Any:
    """Generate ``prompt``; return its gallery item once its image is in the gallery."""
    (task,) = generate(panel, prompt)
    wait_for(lambda: task.status is TaskStatus.SUCCESS, what="the task to succeed")
    wait_for(lambda: panel.gallery.find(task.path) is not None, what="the gallery image")
    return panel.gallery.find(task.path)


def rows(panel: Panel) -> int:
    return panel.history_html.value.count("<tr><td")  # the rows of the table's body


# -- rating ------------------------------------------------------------------------------------


def test_a_star_click_rates_the_task_and_every_view_of_it_follows(
    panel: Panel, session: Session
) -> None:
    """Star 4 on a gallery image rates its task 4 in the store; its card and the larger view
    show four stars; a click on the current rating clears it."""
    item = finished_item(panel, "a pear on a plate")
    task = panel.tasks[0]
    card = card_of(panel)
    wait_for(lambda: card.bar is not None, what="the card's stars")
    page = GalleryPage(panel)
    assert item.bar is not None and page.stars(item) == EMPTY * 5
    assert page.entry(item)["curating"] and card.bar.view in card.box.children

    page.star(item, 4)
    assert session.history.annotation(task).rating == 4 and task.rating == 4
    assert page.stars(item) == FULL * 4 + EMPTY
    assert shown_stars(card.bar) == FULL * 4 + EMPTY
    panel.gallery.show_detail(item)
    assert panel.gallery.detail_bar is not None
    assert shown_stars(panel.gallery.detail_bar) == FULL * 4 + EMPTY

    card.bar.stars[1].click()  # rated again, from the card
    assert task.rating == 2 and page.stars(item) == FULL * 2 + EMPTY * 3
    panel.gallery.detail_bar.stars[1].click()  # the current rating again: cleared
    assert task.rating is None
    assert page.stars(item) == shown_stars(card.bar) == EMPTY * 5


def test_the_history_table_follows_a_rating_made_in_the_panel_or_from_code(
    panel: Panel, session: Session
) -> None:
    """The history tab shows a new rating without Refresh: a star click in the gallery, and
    ``task.rate`` from a cell (both are the session's writes)."""
    item = finished_item(panel, "a plum on a plate")
    task = panel.tasks[0]
    wait_for(lambda: "a plum on a plate" in panel.history_html.value, what="the history row")
    assert item.bar is not None
    GalleryPage(panel).star(item, 4)
    wait_for(lambda: "★★★★☆" in panel.history_html.value, what="four stars in the history")
    task.rate(2)
    wait_for(lambda: "★★☆☆☆" in panel.history_html.value, what="two stars in the history")


def test_a_failed_card_has_no_stars(panel: Panel, sandbox: Sandbox) -> None:
    sandbox.plan(TaskPlan(outcome="failed", reason="no bananas today"))
    generate(panel, "will fail")
    card = card_of(panel)
    wait_for(lambda: card.status.value == "failed", what="the failed status")
    assert card.bar is None


def test_the_rating_and_tags_come_back_in_a_new_panel_after_a_restart(
    sandbox: Sandbox, tmp_path: Path, make_panel: Callable[..., Panel]
) -> None:
    """What was rated and tagged shows on the gallery of a panel of a new session."""
    data = tmp_path / "data"
    with make_session(sandbox, data) as first:
        panel = make_panel(first)
        item = finished_item(panel, "a plum")
        page = GalleryPage(panel)
        page.star(item, 3)
        page.type_tag(item, "Keep")
        panel.close()
    with make_session(sandbox, data) as second:
        again = make_panel(second)
        (reopened,) = again.gallery.items
        assert reopened.key == item.key
        page = GalleryPage(again)
        assert page.stars(reopened) == FULL * 3 + EMPTY * 2
        assert page.tags(reopened) == ["keep"] and reopened.bar.tags == ("keep",)
        again.close()


def test_an_image_that_left_the_gallery_and_came_back_has_new_marks(panel: Panel) -> None:
    """Pushed out by newer images and shown again, an image is a new item: the marks of its
    first showing stay closed (the rating bar they were also stayed closed for good)."""
    import dataclasses

    from nanobanana_jupyter._views.panel.gallery import MAX_GALLERY

    item = finished_item(panel, "a pear")
    task = panel.tasks[0]
    first = item.bar
    assert first is not None and not first.closed
    record = task.record
    image = record.images[0]
    newer = [
        dataclasses.replace(
            record,
            local_id=f"newer-{i}",
            images=(dataclasses.replace(image, sha256=f"{i:064x}"),),
        )
        for i in range(MAX_GALLERY)
    ]
    with panel.context.lock:
        panel.gallery.add(*newer)
    assert item.key not in [i.key for i in panel.gallery.items]
    assert first.closed
    with panel.context.lock:
        panel.gallery.add(record)
    again = next(i for i in panel.gallery.items if i.key == item.key)
    assert again.bar is not None and again.bar is not first
    assert first.closed and not again.bar.closed
    assert first not in panel.curation.bars_of(task.local_id)
    assert again.bar in panel.curation.bars_of(task.local_id)
    GalleryPage(panel).star(again, 3)
    assert task.rating == 3 and GalleryPage(panel).stars(again) == FULL * 3 + EMPTY * 2


def test_keys_in_the_larger_view_rate_the_image_shown(panel: Panel) -> None:
    """The larger view's key listener sends {"event": "rate", "rating": n} for keys 0-5."""
    pytest.importorskip("anywidget")
    item = finished_item(panel, "a fig")
    task = panel.tasks[0]
    keys = panel.gallery.detail_keys
    assert keys is not None and keys in panel.detail_box.children
    keys._handle_custom_msg({"event": "rate", "rating": 5}, [])
    assert task.rating is None  # the larger view is closed: nothing shown, nothing rated
    panel.gallery.show_detail(item)
    keys._handle_custom_msg({"event": "rate", "rating": 5}, [])
    page = GalleryPage(panel)
    assert task.rating == 5 and page.stars(item) == FULL * 5
    keys._handle_custom_msg({"event": "rate", "rating": 0}, [])
    assert task.rating == 0 and page.stars(item) == EMPTY * 5  # 0 is a rating
    for bad in ({"event": "rate", "rating": 6}, {"event": "rate", "rating": True}, {"x": 1}):
        keys._handle_custom_msg(bad, [])
    assert task.rating == 0


# -- tagging -----------------------------------------------------------------------------------


def test_typed_tags_are_added_and_a_chip_click_removes_one(panel: Panel) -> None:
    item = finished_item(panel, "a lemon")
    task = panel.tasks[0]
    page = GalleryPage(panel)
    page.type_tag(item, "Portrait, keep ")  # what Enter sends
    assert task.tags == ["keep", "portrait"]
    assert page.tags(item) == ["keep", "portrait"]
    card = card_of(panel)
    wait_for(lambda: card.bar is not None, what="the card's stars")
    assert card.bar.tags == ("keep", "portrait")
    page.remove_tag(item, "portrait")
    assert task.tags == ["keep"] and page.tags(item) == ["keep"]
    assert [c.description for c in card.bar.chips.children] == ["keep ×"]


def test_a_bad_tag_or_a_failed_write_shows_in_the_panel_and_never_raises(
    panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = finished_item(panel, "a lime")
    task = panel.tasks[0]
    page = GalleryPage(panel)
    page.type_tag(item, "x" * 65)
    assert "at most 64 characters" in panel.status_text
    assert task.tags == []

    def locked(*args: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(History, "rate", locked)
    page.star(item, 1)
    assert "database is locked" in panel.status_text
    assert page.stars(item) == EMPTY * 5


# -- search ------------------------------------------------------------------------------------


def test_history_search_filters_the_table_and_clear_brings_it_all_back(
    session: Session, make_panel: Callable[..., Panel]
) -> None:
    """Text, tag, model, status and lowest rating narrow the table; Clear shows all again."""
    fox, owl, foxglove = session.map(["a red fox", "a snowy owl", "red foxglove in a vase"])
    for task in (fox, owl, foxglove):
        task.wait(20)
    fox.rate(5).tag("animal")
    owl.rate(3).tag("animal")
    panel = make_panel(session)
    search = panel.pager.search
    assert rows(panel) == 3

    search.text_box.value = "fox"
    assert rows(panel) == 2
    assert "a red fox" in panel.history_html.value and "snowy owl" not in panel.history_html.value
    assert "2 matches" in panel.page_label.value

    search.tag_box.value = "Animal"
    assert rows(panel) == 1 and "red foxglove" not in panel.history_html.value

    search.text_box.value = ""
    search.rating_box.value = 4
    assert rows(panel) == 1 and "a red fox" in panel.history_html.value
    search.rating_box.value = 1
    assert rows(panel) == 2

    search.status_box.value = "failed"
    assert rows(panel) == 0 and "No task matches" in panel.history_html.value
    search.status_box.value = "success"
    search.model_box.value = "no/such-model"
    assert rows(panel) == 0
    search.model_box.value = fox.record.model
    assert rows(panel) == 2

    search.clear_button.click()
    assert search.query() is None and rows(panel) == 3
    assert panel.page_label.value == "page 1 of 1"


def test_search_results_are_paged_like_the_history(
    session: Session, make_panel: Callable[..., Panel]
) -> None:
    tasks = session.map([f"banana number {i}" for i in range(5)] + ["an apple"])
    for task in tasks:
        task.wait(20)
    panel = make_panel(session, history_page_size=2)
    panel.pager.search.text_box.value = "banana"
    assert rows(panel) == 2 and "banana number 4" in panel.history_html.value
    assert panel.page_label.value == "page 1 · 5 matches"
    assert panel.newer_button.disabled and not panel.older_button.disabled
    panel.older_button.click()
    panel.older_button.click()
    assert rows(panel) == 1 and "banana number 0" in panel.history_html.value
    assert panel.older_button.disabled
    panel.pager.search.text_box.value = "apple"  # a new search starts at its first page
    assert rows(panel) == 1 and "an apple" in panel.history_html.value
    assert panel.page_label.value == "page 1 · 1 match"


def test_a_bad_search_shows_in_the_panel(panel: Panel) -> None:
    panel.pager.search.tag_box.value = "t" * 80
    assert "at most 64 characters" in panel.status_text


def test_search_over_50000_rows_stays_fast(
    sandbox: Sandbox, tmp_path: Path, make_panel: Callable[..., Panel]
) -> None:
    _seed(tmp_path / "big" / "history.sqlite3", 50_000)
    with make_session(sandbox, tmp_path / "big") as session:
        panel = make_panel(session)
        search = panel.pager.search
        start = time.perf_counter()
        search.text_box.value = "49979"
        rare = time.perf_counter() - start
        assert rows(panel) == 1 and "seeded prompt 49979" in panel.history_html.value
        start = time.perf_counter()
        search.text_box.value = "seeded"  # every task matches: counted up to a thousand
        common = time.perf_counter() - start
        assert rows(panel) == 20 and "more than 1,000 matches" in panel.page_label.value
        panel.older_button.click()
        assert "seeded prompt 49979" in panel.history_html.value
        print(f"search render: rare {rare * 1000:.1f} ms, common {common * 1000:.1f} ms")
        assert rare < 1.0 and common < 1.0, (rare, common)
        panel.close()
