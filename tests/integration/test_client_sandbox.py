"""Both clients against a real sandbox over loopback: the submit path (reliability.md S1-S10).

Each fault scenario checks the sandbox's ledger: no scenario may submit the same request
twice, and a submit that may have been charged is reported as such, never re-sent.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from nanobanana_jupyter import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    Settings,
    SubmitOutcomeUnknownError,
    TaskStatus,
    ValidationError,
)
from nanobanana_jupyter._wire.models import sniff_image_type
from nanobanana_jupyter._wire.retry import RetryPolicy
from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan

pytestmark = pytest.mark.integration


def client_for(sb: Sandbox, **kwargs: object) -> Client:
    settings = Settings.resolve(
        api_key=sb.api_key, base_url=sb.url, environ={}, allow_local_urls=True
    )
    return Client(settings=settings, **kwargs)  # type: ignore[arg-type]


def wait_terminal(client: Client, task_id: str, timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = client.query(task_id)
        if snap.status.is_terminal:
            return snap
        time.sleep(0.02)
    raise AssertionError("task did not finish")


def test_generate_and_download_end_to_end(sandbox: Sandbox) -> None:
    """Submit, poll to success, download the PNG from the CDN origin: one charge."""
    with client_for(sandbox) as client:
        task_id = client.submit("a banana in a tuxedo", aspect_ratio="16:9", idempotency_key="k1")
        snap = wait_terminal(client, task_id)
        assert snap.status is TaskStatus.SUCCESS  # type: ignore[attr-defined]
        data, media = client.download(snap.images[0])  # type: ignore[attr-defined]
    assert media == "image/png" and sniff_image_type(data) == "image/png"
    assert sandbox.ledger.charges == {task_id: pytest.approx(0.5)}
    assert sandbox.ledger.idempotency_keys == {"k1": 1}


def test_cdn_never_sees_the_key(sandbox: Sandbox) -> None:
    """R3: the API origin gets the bearer key; the image origin never does."""
    with client_for(sandbox) as client:
        snap = wait_terminal(client, client.submit("a cat"))
        client.download(snap.images[0])  # type: ignore[attr-defined]
    api = [r for r in sandbox.ledger.requests if r not in sandbox.ledger.cdn_requests]
    assert all(r.headers.get("authorization") == f"Bearer {sandbox.api_key}" for r in api)
    assert sandbox.ledger.cdn_requests
    assert all("authorization" not in r.headers for r in sandbox.ledger.cdn_requests)


def test_data_uri_results(sandbox: Sandbox) -> None:
    """Results given as data URIs decode locally to the same kind of PNG."""
    sandbox.plan(TaskPlan(result_mode="data_uri", images=2))
    with client_for(sandbox) as client:
        snap = wait_terminal(client, client.submit("two cats"))
        images = [client.download(uri) for uri in snap.images]  # type: ignore[attr-defined]
    assert len(images) == 2 and all(m == "image/png" for _, m in images)


def test_s1_connection_refused_is_retried_then_reported() -> None:
    """S1: nothing listening: 3 connect attempts, then a clear error; nothing was sent."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    settings = Settings.resolve(api_key="dk-x", base_url=f"http://127.0.0.1:{port}", environ={})
    with (
        Client(settings=settings, sleep=sleeps.append) as client,
        pytest.raises(APIConnectionError),
    ):
        client.submit("a cat")
    assert len(sleeps) == 2


def test_s3_hang_after_accept_is_unknown_not_resent(sandbox: Sandbox) -> None:
    """S3: the server charges then never answers: outcome unknown, exactly one charge."""
    sandbox.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
    client = client_for(sandbox)
    client.settings = client.settings.replace(submit_timeout=0.3)
    with client, pytest.raises(SubmitOutcomeUnknownError):
        client.submit("a cat", idempotency_key="k3")
    assert sandbox.ledger.submits_received == 1
    assert len(sandbox.ledger.charges) == 1


def test_s4_reset_after_accept_is_unknown_not_resent(sandbox: Sandbox) -> None:
    """S4: the server charges then resets the connection: outcome unknown, one charge."""
    sandbox.faults.add("submit", Fault.RESET_AFTER_ACCEPT)
    with client_for(sandbox) as client, pytest.raises(SubmitOutcomeUnknownError):
        client.submit("a cat")
    assert sandbox.ledger.submits_received == 1 and len(sandbox.ledger.charges) == 1


@pytest.mark.parametrize(
    ("fault", "charged"), [(Fault.SERVER_ERROR_HTML, 0), (Fault.SERVER_ERROR_AFTER_CHARGE, 1)]
)
def test_s5_server_errors_are_never_retried(sandbox: Sandbox, fault: Fault, charged: int) -> None:
    """S5: a 500 before or after charging is reported as unknown and never re-sent."""
    sandbox.faults.add("submit", fault)
    with client_for(sandbox) as client, pytest.raises(SubmitOutcomeUnknownError) as info:
        client.submit("a cat")
    assert "HTML page" in str(info.value)
    assert sandbox.ledger.submits_received == 1
    assert len(sandbox.ledger.charges) == charged


def test_s6_429_then_success_waits_and_charges_once(sandbox: Sandbox) -> None:
    """S6: 429 with Retry-After 2 is retried after 2 s (fake sleep); one charge."""
    sandbox.faults.add("submit", Fault.RATE_LIMIT, retry_after=2)
    sleeps: list[float] = []
    with client_for(sandbox, sleep=sleeps.append) as client:
        task_id = client.submit("a cat")
    assert sleeps == [2.0]
    assert sandbox.ledger.submits_received == 2
    assert list(sandbox.ledger.charges) == [task_id]
    # The refused attempt and its retry carry one key: one logical submission, paid once.
    assert len(sandbox.ledger.idempotency_keys) == 1
    assert sandbox.ledger.double_charges() == []


def test_s7_429_with_a_long_wait_fails_with_the_wait(sandbox: Sandbox) -> None:
    """S7: a Retry-After of an hour is not slept: the error says how long to wait."""
    sandbox.faults.add("submit", Fault.RATE_LIMIT, retry_after=3600)
    with client_for(sandbox) as client, pytest.raises(RateLimitError) as info:
        client.submit("a cat")
    assert info.value.retry_after == 3600
    assert sandbox.ledger.charges == {}


def test_s8_bad_parameters_are_refused_by_the_server_with_detail(sandbox: Sandbox) -> None:
    """S8: the server's 400 detail reaches the user; nothing charged. (Client validation
    is bypassed here by sending a raw request body the client would refuse.)"""
    with client_for(sandbox) as client:
        with pytest.raises(ValidationError):
            client.submit("a cat", images=["https://x/1.png"] * 5)
        assert sandbox.ledger.submits_received == 0
        import httpx

        raw = httpx.post(
            f"{sandbox.url}/api/image/gen",
            json={"model": "google/gempix2"},
            headers={"Authorization": f"Bearer {sandbox.api_key}"},
        )
        err = client._read_envelope  # the same mapping the client applies to every answer
        with pytest.raises(BadRequestError) as info:
            err(raw.status_code, raw.content, raw.headers, "x", what="submit")
    assert info.value.detail and "prompt" in info.value.detail
    assert sandbox.ledger.charges == {}


def test_s9_wrong_key_is_refused_once_and_never_shown(sandbox: Sandbox, sentinel_key: str) -> None:
    """S9: a refused key: one request, no retry, and the error never shows the key."""
    settings = Settings.resolve(
        api_key=sentinel_key, base_url=sandbox.url, environ={}, allow_local_urls=True
    )
    with Client(settings=settings) as client, pytest.raises(AuthenticationError) as info:
        client.submit("a cat")
    assert sandbox.ledger.submits_received == 1
    for text in (str(info.value), repr(info.value), repr(client)):
        assert sentinel_key not in text


@pytest.mark.parametrize("fault", [Fault.MALFORMED_JSON, Fault.NO_TASK_ID])
def test_s10_unreadable_200_is_unknown_not_resent(sandbox: Sandbox, fault: Fault) -> None:
    """S10: a 200 whose body cannot be read: the task may exist: unknown, one submit."""
    sandbox.faults.add("submit", fault)
    with client_for(sandbox) as client, pytest.raises(SubmitOutcomeUnknownError):
        client.submit("a cat")
    assert sandbox.ledger.submits_received == 1


def test_s12_idle_keepalive_closed_by_server_never_double_charges() -> None:
    """S12: the server drops idle connections quickly; submits in between are charged once each."""
    with Sandbox(time_scale=0.01, keepalive_timeout=0.1, max_side=64) as sb:
        with client_for(sb) as client:
            ids = []
            for i in range(4):
                try:
                    ids.append(client.submit(f"cat {i}", idempotency_key=f"k{i}"))
                except SubmitOutcomeUnknownError:
                    pass
                time.sleep(0.2)
        assert sb.ledger.duplicate_submits() == []
        assert sb.ledger.double_charges() == []
        assert len(sb.ledger.charges) == sb.ledger.submits_received


def test_query_faults_are_retried(sandbox: Sandbox) -> None:
    """P2: 500s and 503s on queries are retried by the client, invisibly."""
    with client_for(
        sandbox, query_policy=RetryPolicy(max_retries=4, base=0.01, cap=0.05)
    ) as client:
        task_id = client.submit("a cat")
        sandbox.faults.add("query", Fault.SERVER_ERROR_HTML, count=2)
        snap = client.query(task_id)
    assert snap.task_id == task_id


def test_unknown_task_is_not_found(sandbox: Sandbox) -> None:
    """A query for an id the server never issued gives NotFoundError."""
    with client_for(sandbox) as client, pytest.raises(NotFoundError):
        client.query("ta-does-not-exist")


def test_expired_result_url(sandbox: Sandbox) -> None:
    """R1: an expired CDN URL fails at once as expired."""
    with client_for(sandbox) as client:
        snap = wait_terminal(client, client.submit("a cat"))
        sandbox.faults.add("cdn", Fault.EXPIRED)
        with pytest.raises(NotFoundError, match="expired"):
            client.download(snap.images[0])  # type: ignore[attr-defined]


def test_not_an_image_from_cdn(sandbox: Sandbox) -> None:
    """R6: HTML served as a result image is refused."""
    with client_for(sandbox) as client:
        snap = wait_terminal(client, client.submit("a cat"))
        sandbox.faults.add("cdn", Fault.NOT_AN_IMAGE, count=4)
        with pytest.raises(ProtocolError):
            client.download(snap.images[0])  # type: ignore[attr-defined]


def test_async_client_end_to_end(sandbox: Sandbox) -> None:
    """The async client generates and downloads just like the blocking one."""

    async def run() -> bytes:
        settings = Settings.resolve(
            api_key=sandbox.api_key, base_url=sandbox.url, environ={}, allow_local_urls=True
        )
        async with AsyncClient(settings=settings) as client:
            task_id = await client.submit("an async cat")
            for _ in range(500):
                snap = await client.query(task_id)
                if snap.status.is_terminal:
                    break
                await asyncio.sleep(0.02)
            data, _ = await client.download(snap.images[0])
            return data

    assert sniff_image_type(asyncio.run(run())) == "image/png"
    assert len(sandbox.ledger.charges) == 1
