"""What a person types to curate: ratings, rating ranges and times (``_core/curation.py``)."""

from __future__ import annotations

import datetime as dt

import pytest

from nanobanana_jupyter import ValidationError
from nanobanana_jupyter._core.curation import rating_range, rating_word, time_word


@pytest.mark.parametrize(("word", "rating"), [("0", 0), ("5", 5), (" 3 ", 3), ("none", None)])
def test_a_rating_word_is_0_to_5_or_none(word: str, rating: int | None) -> None:
    """0..5 are ratings (0 is "no stars"), none clears."""
    assert rating_word(word) == rating


@pytest.mark.parametrize("word", ["6", "-1", "4.5", "four", ""])
def test_anything_else_is_refused_saying_what_a_rating_is(word: str) -> None:
    with pytest.raises(ValidationError, match="whole number of stars from 0 to 5"):
        rating_word(word)


@pytest.mark.parametrize(
    ("word", "wanted"),
    [("4", 4), ("3-5", (3, 5)), ("3-", (3, None)), ("-2", (None, 2)), (" 2 - 4 ", (2, 4))],
)
def test_a_rating_range_is_exact_or_inclusive_bounds(word: str, wanted: object) -> None:
    assert rating_range(word) == wanted


@pytest.mark.parametrize("word", ["-", "6", "2-9", "x", "1-2-3"])
def test_a_bad_rating_range_says_the_forms(word: str) -> None:
    with pytest.raises(ValidationError, match="--rating is N or N-M"):
        rating_range(word)


def test_a_range_the_wrong_way_round_says_which_way() -> None:
    with pytest.raises(ValidationError, match="write 2-5"):
        rating_range("5-2")


def test_times_are_dates_datetimes_or_ages_before_now() -> None:
    """2h is two hours before now; a date is its local midnight."""
    now = 1_000_000.0
    assert time_word("2h", now=now) == now - 7200
    assert time_word("3d", now=now) == now - 3 * 86400
    assert time_word("1w", now=now) == now - 7 * 86400
    assert time_word("2025-01-31", now=now) == dt.datetime(2025, 1, 31).timestamp()
    assert time_word("2025-01-31 14:05", now=now) == dt.datetime(2025, 1, 31, 14, 5).timestamp()
    with pytest.raises(ValidationError, match="--until is a date"):
        time_word("tomorrow", now=now, option="--until")
