"""``GET /api/user`` through a mock transport: the balance read, retried, and refused clearly."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest

from nanobanana_jupyter import (
    AsyncClient,
    AuthenticationError,
    BudgetExceededError,
    NanoBananaError,
    ProtocolError,
)
from nanobanana_jupyter._wire.credits import parse_balance
from tests.conftest import FakeSleep
from tests.unit.test_client import API, Script, make_client, ok


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100.50000000", Decimal("100.5")),
        ("0.00000000", Decimal(0)),
        (100, Decimal(100)),
        (2.25, Decimal("2.25")),
        (" 7 ", Decimal(7)),
        ("-1.50", Decimal("-1.5")),
        (-3, Decimal(-3)),
    ],
)
def test_parse_balance_reads_strings_and_numbers(value: object, expected: Decimal) -> None:
    """A credit as a decimal string or a number is read exactly; below zero is allowed."""
    assert parse_balance(value) == expected


@pytest.mark.parametrize(
    "value", [None, True, "", "abc", "NaN", "inf", "-inf", "1e30", "--1", [], {}, float("nan")]
)
def test_parse_balance_refuses_what_is_no_balance(value: object) -> None:
    """Text, NaN, infinity, bools and absurd amounts are no balance."""
    assert parse_balance(value) is None


def test_balance_sends_an_authorised_get_and_reads_the_credit(
    fake_sleep: FakeSleep, sentinel_key: str
) -> None:
    """balance() GETs /api/user with the bearer key and returns data.credit as a Decimal."""
    script = Script(ok({"credit": "100.50000000"}))
    with make_client(script, fake_sleep, sentinel_key) as client:
        assert client.balance() == Decimal("100.5")
    (request,) = script.requests
    assert request.method == "GET" and str(request.url) == f"{API}/api/user"
    assert request.headers["authorization"] == f"Bearer {sentinel_key}"


def test_balance_is_retried_as_a_query(fake_sleep: FakeSleep) -> None:
    """A 503 and a dropped connection are retried with backoff; then the balance comes."""
    script = Script(httpx.Response(503), httpx.ReadTimeout, ok({"credit": 3}))
    with make_client(script, fake_sleep) as client:
        assert client.balance() == Decimal(3)
    assert len(script.requests) == 3 and len(fake_sleep.calls) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"code": 0, "message": "ok", "data": {}},
        {"code": 0, "message": "ok", "data": {"credit": "lots"}},
        {"code": 0, "message": "ok", "data": {"credit": None}},
        {"code": 0, "message": "ok", "data": ["credit", "1"]},
        {"code": 0, "message": "ok"},
    ],
)
def test_a_malformed_balance_answer_is_a_protocol_error(
    body: dict[str, object], fake_sleep: FakeSleep
) -> None:
    """An answer without a usable data.credit is a ProtocolError saying what was expected."""
    script = Script(httpx.Response(200, json=body))
    with make_client(script, fake_sleep) as client, pytest.raises(ProtocolError) as info:
        client.balance()
    assert "balance answer" in info.value.message


def test_a_refused_key_is_never_shown(fake_sleep: FakeSleep, sentinel_key: str) -> None:
    """401 on /api/user is an AuthenticationError whose text holds no key, even if echoed."""
    echoed = httpx.Response(401, json={"code": 1, "message": f"Invalid API key {sentinel_key}"})
    with (
        make_client(Script(echoed), fake_sleep, sentinel_key) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.balance()
    assert sentinel_key not in str(info.value) and sentinel_key not in repr(info.value)
    assert len(fake_sleep.calls) == 0


def test_async_balance_reads_the_same(fake_sleep: FakeSleep) -> None:
    """AsyncClient.balance() reads and retries like the blocking one."""
    script = Script(httpx.ConnectError, ok({"credit": "0.5"}))

    async def run() -> Decimal:
        async with AsyncClient(
            "dk-x", transport=httpx.MockTransport(script), sleep=fake_sleep.asleep
        ) as client:
            return await client.balance()

    assert asyncio.run(run()) == Decimal("0.5")
    assert len(script.requests) == 2


def test_budget_error_is_a_nanobanana_error_with_its_numbers() -> None:
    """BudgetExceededError is public, a NanoBananaError, and carries the amounts."""
    error = BudgetExceededError(
        "over", budget=Decimal(2), spent=Decimal(1), in_flight=Decimal("0.5"), estimate=None
    )
    assert isinstance(error, NanoBananaError)
    assert (error.budget, error.spent, error.in_flight, error.estimate) == (
        2,
        1,
        Decimal("0.5"),
        None,
    )
