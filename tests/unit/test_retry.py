"""Retry maths: finite, bounded delays for any Retry-After, capped jittered backoff."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanobanana_jupyter import RetryPolicy
from nanobanana_jupyter._wire.retry import backoff_delay, parse_retry_after, retry_delay

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 0.0),
        ("2", 2.0),
        ("1.5", 1.5),
        ("3600", 3600.0),
        ("-10", None),
        ("abc", None),
        ("inf", None),
        ("nan", None),
        ("1e309", None),
        ("", None),
        (None, None),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Fri, 15 Jan 2027 08:00:30 GMT", 30.0),  # NOW + 30 s
        ("Mon, 99 Foo 2027 08:00:30 GMT", None),
    ],
)
def test_parse_retry_after_table(header: str | None, expected: float | None) -> None:
    """Seconds and HTTP dates are read; nonsense, negatives and infinities give None."""
    assert parse_retry_after(header, now=lambda: NOW) == expected


@given(st.text(max_size=80))
def test_parse_retry_after_never_raises_and_stays_finite(header: str) -> None:
    """Any header text gives None or a finite, non-negative number of seconds."""
    value = parse_retry_after(header, now=lambda: NOW)
    assert value is None or (math.isfinite(value) and value >= 0)


@given(st.integers(min_value=-5, max_value=10_000), st.floats(min_value=0, max_value=1))
def test_backoff_is_capped_and_jittered(attempt: int, r: float) -> None:
    """Backoff lies between (1 - jitter) and 1 of min(cap, base * 2**n), for any attempt."""
    policy = RetryPolicy(base=0.5, cap=8.0, jitter=0.25)
    delay = backoff_delay(attempt, policy, rand=lambda: r)
    ceiling = min(8.0, 0.5 * 2 ** max(attempt, 0)) if attempt < 10 else 8.0
    assert 0.75 * ceiling - 1e-9 <= delay <= ceiling + 1e-9


def test_backoff_grows_then_caps() -> None:
    """Without jitter the delays double from the base up to the cap."""
    policy = RetryPolicy(base=0.5, cap=8.0, jitter=0.0, max_retries=10)
    assert [backoff_delay(n, policy) for n in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]


def test_retry_after_is_honoured_up_to_the_limit() -> None:
    """A short Retry-After replaces the backoff; a long one means no retry at all."""
    policy = RetryPolicy(max_retries=3, max_retry_after=60)
    assert retry_delay(0, policy, 2.0) == 2.0
    assert retry_delay(0, policy, 61.0) is None
    assert retry_delay(3, policy, 1.0) is None


@given(st.integers(0, 20), st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)))
def test_retry_delay_is_bounded(attempt: int, hint: float | None) -> None:
    """Every retry delay is finite, >= 0 and <= max(cap, max_retry_after)."""
    policy = RetryPolicy()
    delay = retry_delay(attempt, policy, hint)
    assert delay is None or 0 <= delay <= max(policy.cap, policy.max_retry_after)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": -1}, {"jitter": 2}, {"base": 0}, {"cap": math.inf}, {"base": 9, "cap": 8}],
)
def test_insane_policies_are_refused(kwargs: dict[str, float]) -> None:
    """Policies that could sleep forever or never are refused at construction."""
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
