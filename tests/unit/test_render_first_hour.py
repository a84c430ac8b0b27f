"""The card and the history table as a new user reads them (issue 16): whole ids that can be
copied, reuse and pretend credits said plainly, paths on one line, words for a text answer."""

from __future__ import annotations

import html as html_lib
import re
from decimal import Decimal

import pytest

from nanobanana_jupyter._display.bundles import task_bundle
from nanobanana_jupyter._display.html import HISTORY_COLUMNS, history_html, task_html
from nanobanana_jupyter._display.words import REUSED, task_text
from nanobanana_jupyter._wire.models import TaskStatus

from .test_render import make_record

LONG_ID = "ta" + "0123456789abcdef" * 3


def _selectable_codes(page: str) -> list[str]:
    """The texts of the elements a click selects whole."""
    return [
        html_lib.unescape(m)
        for m in re.findall(
            r'<code class="nanobanana-id"[^>]*user-select:all[^>]*>([^<]*)</code>', page
        )
    ]


def test_the_card_holds_the_whole_task_id_and_local_id_selectable_in_one_click() -> None:
    page = task_html(make_record(task_id=LONG_ID, local_id="loc-" + "9" * 30))
    assert LONG_ID in _selectable_codes(page)
    assert "loc-" + "9" * 30 in _selectable_codes(page)
    assert "…" not in "".join(_selectable_codes(page))


def test_a_hostile_id_is_escaped_in_the_card_and_the_table() -> None:
    nasty = 'ta"><script>alert(1)</script>'
    record = make_record(task_id=nasty)
    for page in (task_html(record), history_html([record], total=1)):
        assert "<script>" not in page
        assert "&lt;script&gt;" in page


def test_a_reused_task_says_no_new_charge_on_the_card_and_in_its_line() -> None:
    record = make_record(consumed=Decimal("0.5"))
    card = task_html(record, reused=True)
    assert REUSED in card
    assert "first made for 0.5 credits" in card  # the original charge, as such
    line = task_text(record, reused=True)
    assert REUSED in line
    assert "0.5 credits" not in line
    data, metadata = task_bundle(record, reused=True)
    assert metadata["nanobanana"]["reused"] is True  # type: ignore[index]
    assert REUSED in str(data["text/plain"])
    # A fresh one says its cost.
    assert REUSED not in task_html(record)
    assert "0.5 credits" in task_text(record)


def test_sandbox_costs_are_pretend_credits_on_cards_lines_and_the_history() -> None:
    record = make_record(consumed=Decimal("0.5"))
    assert "0.5 pretend credits" in task_html(record, pretend=True)
    assert "0.5 pretend credits" in task_text(record, pretend=True)
    page = history_html([record], total=1, total_cost=Decimal("0.5"), pretend=True)
    assert page.count("pretend credits") == 2  # the total and the row
    assert "pretend" not in history_html([record], total=1, total_cost=Decimal("0.5"))


def test_cards_do_not_count_polls_but_the_history_does() -> None:
    record = make_record(polls=13)
    assert "poll" not in task_html(record)
    page = history_html([record], total=1)
    assert "polls" in page
    assert ">13<" in page


def test_the_full_size_path_stays_on_one_line_and_is_copied_whole() -> None:
    path = "/home/user/.local/share/nanobanana/images/34/" + "349afc9ff1" * 6 + ".png"
    page = task_html(make_record(paths=(path,)))
    (code,) = re.findall(r'<code title="[^"]*" style="([^"]*)">' + re.escape(path), page)
    assert "white-space:nowrap" in code
    assert "user-select:all" in code
    assert "overflow-wrap:anywhere" not in code


def test_the_history_table_has_an_id_column_a_reused_column_and_cells_that_do_not_wrap() -> None:
    record = make_record(task_id=LONG_ID, reuses=2)
    page = history_html([record], total=1)
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", page)
    assert headers == list(HISTORY_COLUMNS)
    assert "id" in headers
    assert "reused" in headers
    assert LONG_ID in _selectable_codes(page)
    cells = re.findall(r'<td style="([^"]*)">(.*?)</td>', page)
    by_column = dict(zip(HISTORY_COLUMNS, cells, strict=True))
    assert by_column["reused"][1] == "2×"
    for name in ("time", "cost", "duration", "id"):
        assert "white-space:nowrap" in by_column[name][0], name


def test_a_history_row_without_reuse_shows_a_dash() -> None:
    page = history_html([make_record()], total=1)
    cells = re.findall(r'<td style="[^"]*">(.*?)</td>', page)
    assert dict(zip(HISTORY_COLUMNS, cells, strict=True))["reused"] == "—"


@pytest.mark.parametrize("texts", [("The model says: no picture today.",)])
def test_a_success_with_only_text_reads_as_an_answer_not_as_a_missing_image(
    texts: tuple[str, ...],
) -> None:
    record = make_record(TaskStatus.SUCCESS, paths=(), texts=texts)
    card = task_html(record)
    assert "answered in words" in card
    assert "0 images" not in card
    assert "no picture today" in card
    line = task_text(record)
    assert "0 images" not in line
    assert "1 text answer" in line
    # A success with neither still says it has no image.
    assert "0 images" in task_html(make_record(TaskStatus.SUCCESS, paths=()))


def test_a_wrong_reference_type_takes_the_right_article() -> None:
    from nanobanana_jupyter._core.references import to_reference
    from nanobanana_jupyter._wire.errors import ValidationError

    with pytest.raises(ValidationError, match="cannot use an int as a reference image"):
        to_reference(3)
    with pytest.raises(ValidationError, match="cannot use a float as a reference image"):
        to_reference(2.5)
