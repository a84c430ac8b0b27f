"""The sandbox's ``GET /api/user``: the account's credits, lowered by each charge.

Requests are written by hand with httpx, so these tests check the wire format the client
reads, not the client's idea of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from nanobanana_jupyter.sandbox import Sandbox

pytestmark = pytest.mark.integration

USER = "/api/user"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(time_scale=0.01, credits=0.25, balance=10) as sandbox:
        yield sandbox


def _headers(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.api_key}"}


def test_user_answers_the_credit_as_a_decimal_string(sb: Sandbox) -> None:
    """The answer is the envelope with data.credit a string of eight decimals."""
    response = httpx.get(sb.url + USER, headers=_headers(sb), timeout=5)
    assert response.status_code == 200
    assert response.json() == {"code": 0, "message": "ok", "data": {"credit": "10.00000000"}}


def test_each_charge_lowers_the_balance(sb: Sandbox) -> None:
    """Two submits charged 0.25 each leave 9.5 credits, on the wire and on the sandbox."""
    with httpx.Client(base_url=sb.url, headers=_headers(sb), timeout=5) as client:
        for prompt in ("one", "two"):
            answer = client.post("/api/image/gen", json={"prompt": prompt, "model": "m/x"})
            assert answer.status_code == 200, answer.text
        credit = client.get(USER).json()["data"]["credit"]
    assert credit == "9.50000000"
    assert sb.balance == pytest.approx(9.5)


def test_a_refused_submit_charges_nothing(sb: Sandbox) -> None:
    """A submit the sandbox refuses (400) leaves the balance as it was."""
    with httpx.Client(base_url=sb.url, headers=_headers(sb), timeout=5) as client:
        assert client.post("/api/image/gen", json={"model": "m/x"}).status_code == 400
        assert client.get(USER).json()["data"]["credit"] == "10.00000000"


def test_user_checks_the_key(sb: Sandbox) -> None:
    """Without the key, or with another, /api/user answers 401 with the documented body."""
    for headers in ({}, {"Authorization": "Bearer dk-not-the-key"}):
        response = httpx.get(sb.url + USER, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == {"code": 1, "message": "Invalid API key"}


def test_user_refuses_other_methods(sb: Sandbox) -> None:
    """A POST to /api/user is 405 in the envelope, recorded in the ledger."""
    response = httpx.post(sb.url + USER, headers=_headers(sb), timeout=5)
    assert response.status_code == 405
    assert any(r.path == USER and r.status == 405 for r in sb.ledger.requests)


def test_the_balance_can_be_set_and_the_default_is_100() -> None:
    """A sandbox starts with 100 credits unless told; assigning sets the account's credits."""
    with Sandbox(time_scale=0.01) as sandbox:
        assert sandbox.balance == 100
        sandbox.balance = 1.5
        response = httpx.get(sandbox.url + USER, headers=_headers(sandbox), timeout=5)
        assert response.json()["data"]["credit"] == "1.50000000"
    with pytest.raises(ValueError, match="finite"):
        Sandbox(balance=float("nan"))
