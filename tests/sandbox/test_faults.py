"""Every scripted fault, observed from a plain HTTP client over loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan

pytestmark = pytest.mark.integration

SUBMIT = "/api/image/gen"
QUERY = "/api/task/query"
BODY = {"prompt": "a banana", "model": "google/gempix2"}


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(time_scale=0.01) as sandbox:
        yield sandbox


@pytest.fixture
def client(sb: Sandbox) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sb.api_key}"}
    with httpx.Client(base_url=sb.url, headers=headers, timeout=5.0) as c:
        yield c


def finished_task(client: httpx.Client, sb: Sandbox, **plan: Any) -> dict[str, Any]:
    """Submit a short task and return its final query data."""
    sb.plan(TaskPlan(duration=1, **plan))
    task_id = client.post(SUBMIT, json=BODY).json()["data"]["task_id"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data: dict[str, Any] = client.get(QUERY, params={"task_id": task_id}).json()["data"]
        if data["status"] == "success":
            return data
        time.sleep(0.005)
    raise AssertionError("task did not finish")


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# -- submit -------------------------------------------------------------------------------


def test_server_error_html_before_charge(client: httpx.Client, sb: Sandbox) -> None:
    """SERVER_ERROR_HTML on submit: 500 with an HTML body and no task created or charged."""
    sb.faults.add("submit", Fault.SERVER_ERROR_HTML)
    response = client.post(SUBMIT, json=BODY)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    assert "<html>" in response.text
    assert sb.ledger.tasks == []
    assert sb.ledger.submits_received == 1


def test_server_error_after_charge(client: httpx.Client, sb: Sandbox) -> None:
    """SERVER_ERROR_AFTER_CHARGE: 500 HTML, but the task exists and was charged."""
    sb.faults.add("submit", Fault.SERVER_ERROR_AFTER_CHARGE)
    response = client.post(SUBMIT, json=BODY)
    assert response.status_code == 500
    assert not is_json(response.text)
    assert len(sb.ledger.tasks) == 1
    assert sb.ledger.total_charged == 0.5
    assert sb.ledger.requests[-1].task_id == sb.ledger.tasks[0]


@pytest.mark.parametrize(
    ("fault", "status"), [(Fault.RATE_LIMIT, 429), (Fault.SERVICE_UNAVAILABLE, 503)]
)
def test_throttling_faults_send_retry_after_and_charge_nothing(
    client: httpx.Client, sb: Sandbox, fault: Fault, status: int
) -> None:
    """429/503 carry the scripted Retry-After and a JSON envelope; nothing is charged."""
    sb.faults.add("submit", fault, retry_after=2)
    response = client.post(SUBMIT, json=BODY)
    assert response.status_code == status
    assert response.headers["Retry-After"] == "2"
    assert response.json()["code"] == 1
    assert sb.ledger.tasks == []


def test_odd_retry_after_values_are_served_verbatim(client: httpx.Client, sb: Sandbox) -> None:
    """Retry-After can be scripted to any string, for parser tests on the client side."""
    sb.faults.add("submit", Fault.RATE_LIMIT, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    sb.faults.add("submit", Fault.RATE_LIMIT, retry_after="-10")
    assert client.post(SUBMIT, json=BODY).headers["Retry-After"].startswith("Wed, 21 Oct")
    assert client.post(SUBMIT, json=BODY).headers["Retry-After"] == "-10"


def test_faults_are_consumed_fifo_with_counts(client: httpx.Client, sb: Sandbox) -> None:
    """A fault with count=2 hits the next two submits; the third goes through."""
    sb.faults.add("submit", Fault.RATE_LIMIT, count=2)
    codes = [client.post(SUBMIT, json=BODY).status_code for _ in range(3)]
    assert codes == [429, 429, 200]
    assert [r.fault for r in sb.ledger.requests] == ["RATE_LIMIT", "RATE_LIMIT", None]
    assert sb.faults.pending("submit") == []


def test_random_faults_hit_a_share_of_requests_after_the_queue(
    client: httpx.Client, sb: Sandbox
) -> None:
    """add_random: queued faults first, then each request suffers the fault with its
    probability (seeded, so the run replays); clear() stops it."""
    sb.faults.add("submit", Fault.SERVER_ERROR_HTML)
    sb.faults.add_random("submit", Fault.RATE_LIMIT, 0.3, retry_after="0.2", seed=7)
    codes = [client.post(SUBMIT, json=BODY).status_code for _ in range(60)]
    assert codes[0] == 500
    limited = codes[1:].count(429)
    assert 5 <= limited <= 35 and set(codes[1:]) == {200, 429}
    sb.faults.clear()
    assert all(client.post(SUBMIT, json=BODY).status_code == 200 for _ in range(10))
    with pytest.raises(ValueError, match="probability"):
        sb.faults.add_random("query", Fault.RATE_LIMIT, 1.0)
    with pytest.raises(ValueError, match="does not apply"):
        sb.faults.add_random("submit", Fault.EXPIRED, 0.1)


def test_hang_after_accept_charges_and_never_answers(client: httpx.Client, sb: Sandbox) -> None:
    """HANG_AFTER_ACCEPT: the task is charged, the client times out, other requests still work."""
    sb.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
    with pytest.raises(httpx.ReadTimeout):
        client.post(SUBMIT, json=BODY, timeout=0.3)
    assert len(sb.ledger.tasks) == 1
    assert sb.ledger.submits_received == 1
    hung = sb.ledger.requests[0]
    assert hung.status is None
    assert hung.fault == "HANG_AFTER_ACCEPT"
    # The hung task is real: it can be queried by id (as a callback would reveal it).
    response = client.get(QUERY, params={"task_id": sb.ledger.tasks[0]})
    assert response.status_code == 200


def test_reset_after_accept_charges_and_resets(client: httpx.Client, sb: Sandbox) -> None:
    """RESET_AFTER_ACCEPT: the task is charged and the connection drops with no response."""
    sb.faults.add("submit", Fault.RESET_AFTER_ACCEPT)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post(SUBMIT, json=BODY)
    assert len(sb.ledger.tasks) == 1
    assert sb.ledger.requests[0].status is None
    assert client.post(SUBMIT, json=BODY).status_code == 200


@pytest.mark.parametrize(
    "fault", [Fault.MALFORMED_JSON, Fault.NO_TASK_ID, Fault.HTML_200], ids=lambda f: f.name
)
def test_unusable_200_answers_come_after_charging(
    client: httpx.Client, sb: Sandbox, fault: Fault
) -> None:
    """Malformed 200 answers to a submit hide a task that was created and charged."""
    sb.faults.add("submit", fault)
    response = client.post(SUBMIT, json=BODY)
    assert response.status_code == 200
    if fault is Fault.NO_TASK_ID:
        assert response.json() == {"code": 0, "message": "ok", "data": {}}
    else:
        assert not is_json(response.text)
    if fault is Fault.HTML_200:
        assert response.headers["content-type"].startswith("text/html")
    assert len(sb.ledger.tasks) == 1
    assert sb.ledger.tasks[0] not in response.text


def test_unauthorized_fault_refuses_a_valid_key(client: httpx.Client, sb: Sandbox) -> None:
    """UNAUTHORIZED answers 401 even though the key is valid (a key revoked mid-session)."""
    sb.faults.add("submit", Fault.UNAUTHORIZED)
    response = client.post(SUBMIT, json=BODY)
    assert response.status_code == 401
    assert response.json() == {"code": 1, "message": "Invalid API key"}
    assert sb.ledger.requests[0].authorized
    assert sb.ledger.tasks == []


# -- query --------------------------------------------------------------------------------


@pytest.fixture
def task_id(client: httpx.Client, sb: Sandbox) -> str:
    sb.plan(TaskPlan(duration=1))
    task: str = client.post(SUBMIT, json=BODY).json()["data"]["task_id"]
    return task


def test_query_not_found_fault_is_transient(
    client: httpx.Client, sb: Sandbox, task_id: str
) -> None:
    """NOT_FOUND answers 404 once; the next query finds the task."""
    sb.faults.add("query", Fault.NOT_FOUND)
    first = client.get(QUERY, params={"task_id": task_id})
    assert first.status_code == 404
    assert first.json() == {"code": 1, "message": "task not found"}
    assert client.get(QUERY, params={"task_id": task_id}).status_code == 200
    assert sb.ledger.queries[task_id] == 2


def test_query_unauthorized_fault(client: httpx.Client, sb: Sandbox, task_id: str) -> None:
    """UNAUTHORIZED on a query answers 401 with code 401."""
    sb.faults.add("query", Fault.UNAUTHORIZED, count=2)
    for _ in range(2):
        response = client.get(QUERY, params={"task_id": task_id})
        assert (response.status_code, response.json()["code"]) == (401, 401)
    assert client.get(QUERY, params={"task_id": task_id}).status_code == 200


@pytest.mark.parametrize(
    ("fault", "status", "content_type"),
    [
        (Fault.SERVER_ERROR_HTML, 500, "text/html"),
        (Fault.RATE_LIMIT, 429, "application/json"),
        (Fault.SERVICE_UNAVAILABLE, 503, "application/json"),
        (Fault.MALFORMED_JSON, 200, "application/json"),
        (Fault.HTML_200, 200, "text/html"),
    ],
    ids=lambda v: v.name if isinstance(v, Fault) else str(v),
)
def test_query_error_answers(
    client: httpx.Client, sb: Sandbox, task_id: str, fault: Fault, status: int, content_type: str
) -> None:
    """Query faults answer with the scripted status and body type, once."""
    sb.faults.add("query", fault)
    response = client.get(QUERY, params={"task_id": task_id})
    assert response.status_code == status
    assert response.headers["content-type"].startswith(content_type)
    if fault in (Fault.SERVER_ERROR_HTML, Fault.MALFORMED_JSON, Fault.HTML_200):
        assert not is_json(response.text)
    assert client.get(QUERY, params={"task_id": task_id}).json()["code"] == 0


def test_query_no_task_id_fault(client: httpx.Client, sb: Sandbox, task_id: str) -> None:
    """NO_TASK_ID on a query drops task_id from an otherwise valid answer."""
    sb.faults.add("query", Fault.NO_TASK_ID)
    data = client.get(QUERY, params={"task_id": task_id}).json()["data"]
    assert "task_id" not in data
    assert "status" in data


def test_stale_and_unknown_status_faults(client: httpx.Client, sb: Sandbox) -> None:
    """STALE_STATUS reports in_progress after success; UNKNOWN_STATUS an undocumented status."""
    done = finished_task(client, sb)
    sb.faults.add("query", Fault.STALE_STATUS)
    sb.faults.add("query", Fault.UNKNOWN_STATUS)
    params = {"task_id": done["task_id"]}
    stale = client.get(QUERY, params=params).json()["data"]
    odd = client.get(QUERY, params=params).json()["data"]
    assert (stale["status"], stale["result"]) == ("in_progress", None)
    assert odd["status"] == "queued"
    assert client.get(QUERY, params=params).json()["data"]["status"] == "success"


def test_query_hang_and_reset(client: httpx.Client, sb: Sandbox, task_id: str) -> None:
    """HANG_AFTER_ACCEPT and RESET_AFTER_ACCEPT also apply to queries."""
    sb.faults.add("query", Fault.HANG_AFTER_ACCEPT)
    sb.faults.add("query", Fault.RESET_AFTER_ACCEPT)
    with pytest.raises(httpx.ReadTimeout):
        client.get(QUERY, params={"task_id": task_id}, timeout=0.2)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.get(QUERY, params={"task_id": task_id})
    assert client.get(QUERY, params={"task_id": task_id}).status_code == 200


# -- CDN ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status"),
    [(Fault.EXPIRED, 410), (Fault.NOT_FOUND, 404), (Fault.SERVER_ERROR_HTML, 500)],
    ids=lambda v: v.name if isinstance(v, Fault) else str(v),
)
def test_cdn_error_faults(client: httpx.Client, sb: Sandbox, fault: Fault, status: int) -> None:
    """CDN faults answer their status once; the URL works again afterwards."""
    url = finished_task(client, sb)["result"][0]["image"]
    sb.faults.add("cdn", fault)
    assert httpx.get(url).status_code == status
    assert httpx.get(url).status_code == 200


def test_cdn_truncated_body(client: httpx.Client, sb: Sandbox) -> None:
    """TRUNCATED promises the full Content-Length and closes after half the bytes."""
    url = finished_task(client, sb)["result"][0]["image"]
    full = httpx.get(url).content
    sb.faults.add("cdn", Fault.TRUNCATED)
    with pytest.raises(httpx.RemoteProtocolError, match="received"):
        httpx.get(url)
    assert httpx.get(url).content == full


def test_cdn_not_an_image(client: httpx.Client, sb: Sandbox) -> None:
    """NOT_AN_IMAGE answers 200 with an HTML page instead of the PNG."""
    url = finished_task(client, sb)["result"][0]["image"]
    sb.faults.add("cdn", Fault.NOT_AN_IMAGE)
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert not response.content.startswith(b"\x89PNG")


def test_cdn_hang_reset_and_rate_limit(client: httpx.Client, sb: Sandbox) -> None:
    """The CDN can hang, reset or throttle a download."""
    url = finished_task(client, sb)["result"][0]["image"]
    sb.faults.add("cdn", Fault.HANG_AFTER_ACCEPT)
    sb.faults.add("cdn", Fault.RESET_AFTER_ACCEPT)
    sb.faults.add("cdn", Fault.RATE_LIMIT, retry_after=3)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, timeout=0.2)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(url)
    throttled = httpx.get(url)
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "3")
    assert [r.fault for r in sb.ledger.cdn_requests] == [
        "HANG_AFTER_ACCEPT",
        "RESET_AFTER_ACCEPT",
        "RATE_LIMIT",
    ]


def test_double_charges_counts_charged_submits_per_key() -> None:
    """The ledger tells a refused-then-resent submit (one charge) from a key charged twice."""
    with Sandbox(time_scale=0.01, max_side=64) as sb:
        headers = {"Authorization": f"Bearer {sb.api_key}", "Idempotency-Key": "same"}
        body = {"model": "google/gempix2", "prompt": "x"}
        sb.faults.add("submit", Fault.RATE_LIMIT)
        assert httpx.post(f"{sb.url}/api/image/gen", json=body, headers=headers).status_code == 429
        assert httpx.post(f"{sb.url}/api/image/gen", json=body, headers=headers).status_code == 200
        assert sb.ledger.duplicate_submits() == ["same"]
        assert sb.ledger.double_charges() == []
        assert httpx.post(f"{sb.url}/api/image/gen", json=body, headers=headers).status_code == 200
        assert sb.ledger.double_charges() == ["same"]
