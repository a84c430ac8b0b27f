"""The sandbox's API over real loopback: envelopes, statuses, validation, auth, plans.

Requests are written by hand with httpx so that these tests check the wire format, not a
client's idea of it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanobanana_jupyter.sandbox import TEXT_ONLY_MARK, Sandbox, TaskPlan

pytestmark = pytest.mark.integration

SUBMIT = "/api/image/gen"
QUERY = "/api/task/query"
TASK_ID = re.compile(r"^ta[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(time_scale=0.01) as sandbox:
        yield sandbox


@pytest.fixture
def client(sb: Sandbox) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sb.api_key}"}
    with httpx.Client(base_url=sb.url, headers=headers, timeout=5.0) as c:
        yield c


def submit(client: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "a cat in a banana costume")
    body.setdefault("model", "google/gempix2")
    return client.post(SUBMIT, json=body)


def task_id_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["task_id"]
    return task_id


def query(client: httpx.Client, task_id: str) -> httpx.Response:
    return client.get(QUERY, params={"task_id": task_id})


def poll_until(
    client: httpx.Client, task_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 5
) -> tuple[dict[str, Any], list[str]]:
    """Poll every 5 ms until ``done(data)``; return the last data and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = query(client, task_id)
        if response.status_code == 200:
            data: dict[str, Any] = response.json()["data"]
            if not seen or seen[-1] != data["status"]:
                seen.append(data["status"])
            if done(data):
                return data, seen
        time.sleep(0.005)
    raise AssertionError(f"task {task_id} did not get there in {timeout}s; saw {seen}")


def finished(data: dict[str, Any]) -> bool:
    return data["status"] in ("success", "failed")


# -- submit and query ---------------------------------------------------------------------


def test_submit_answers_the_documented_envelope(client: httpx.Client, sb: Sandbox) -> None:
    """A valid submit answers code 0 / "ok" with a service-shaped task id, and charges it."""
    response = submit(client)
    body = response.json()
    assert response.headers["content-type"].startswith("application/json")
    assert body["code"] == 0
    assert body["message"] == "ok"
    assert TASK_ID.match(body["data"]["task_id"])
    assert sb.ledger.charges == {body["data"]["task_id"]: 0.5}


def test_status_progresses_to_success_with_an_image(client: httpx.Client) -> None:
    """Statuses move forward through the documented order and end in success with an image."""
    task_id = task_id_of(submit(client))
    data, seen = poll_until(client, task_id, finished)
    order = ["pending", "submitted", "in_progress", "success"]
    assert seen[-1] == "success"
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
    assert "in_progress" in seen
    assert data["task_id"] == task_id
    assert data["consumed"] == "0.500000"
    assert data["status_reason"] == {"message": None}
    assert isinstance(data["result"], list)
    assert len(data["result"]) == 1
    assert data["result"][0]["image"].startswith("http://127.0.0.1:")
    assert datetime.fromisoformat(data["created_at"].replace("Z", "+00:00")).tzinfo is not None


def test_result_is_null_until_success(client: httpx.Client) -> None:
    """Before the task finishes, result is null."""
    task_id = task_id_of(submit(client))
    data = query(client, task_id).json()["data"]
    assert data["status"] in ("pending", "submitted", "in_progress")
    assert data["result"] is None


def test_constructor_duration_and_credits_are_used() -> None:
    """duration= sets the task length and credits= the charge shown as a decimal string."""
    with (
        Sandbox(time_scale=0.01, duration=lambda prompt: 80.0, credits=0.25) as sb,
        httpx.Client(
            base_url=sb.url, headers={"Authorization": f"Bearer {sb.api_key}"}, timeout=5
        ) as client,
    ):
        task_id = task_id_of(submit(client))
        time.sleep(0.2)
        data = query(client, task_id).json()["data"]
        assert data["status"] == "in_progress"  # 80 API s = 0.8 real s
        assert data["consumed"] == "0.250000"
        assert sb.ledger.total_charged == pytest.approx(0.25)


def test_failed_plan_reports_the_reason(client: httpx.Client, sb: Sandbox) -> None:
    """A failed plan ends with status failed, null result and the reason in status_reason."""
    sb.plan(TaskPlan(outcome="failed", reason="<b>content policy</b>", duration=2))
    task_id = task_id_of(submit(client))
    data, _ = poll_until(client, task_id, finished)
    assert data["status"] == "failed"
    assert data["result"] is None
    assert data["status_reason"] == {"message": "<b>content policy</b>"}
    assert data["consumed"] == "0.500000"


def test_several_images_text_only_and_empty_results(client: httpx.Client, sb: Sandbox) -> None:
    """Plans give several images, a text-only answer, or an empty result list."""
    sb.plan(TaskPlan(images=3, duration=1))
    sb.plan(TaskPlan(text_only=True, duration=1))
    sb.plan(TaskPlan(images=0, duration=1))
    ids = [task_id_of(submit(client)) for _ in range(3)]
    results = [poll_until(client, i, finished)[0]["result"] for i in ids]
    assert [len(r) for r in results] == [3, 1, 0]
    assert len({entry["image"] for entry in results[0]}) == 3
    assert set(results[1][0]) == {"text"}
    assert "a cat" in results[1][0]["text"]


def test_a_prompt_marked_text_only_is_answered_in_words(client: httpx.Client, sb: Sandbox) -> None:
    """'[text only]' in a prompt (any case) gives one text entry; a queued plan wins."""
    worded = task_id_of(submit(client, prompt="a fox [Text Only]"))
    sb.plan(TaskPlan(duration=1))
    planned = task_id_of(submit(client, prompt="a fox [text only] again"))
    plain = task_id_of(submit(client, prompt="a fox"))
    results = [poll_until(client, i, finished)[0]["result"] for i in (worded, planned, plain)]
    assert results[0] == [{"text": "I can only describe this one: a fox [Text Only]"}]
    assert set(results[1][0]) == {"image"} and set(results[2][0]) == {"image"}
    assert TEXT_ONLY_MARK == "[text only]"


def test_invisible_task_answers_404_then_appears(client: httpx.Client, sb: Sandbox) -> None:
    """A task planned invisible_for N seconds is 'not found' at first, then visible."""
    sb.plan(TaskPlan(invisible_for=40, duration=50))  # 0.4 s, then 0.5 s
    task_id = task_id_of(submit(client))
    first = query(client, task_id)
    assert first.status_code == 404
    assert first.json() == {"code": 1, "message": "task not found"}
    data, _ = poll_until(client, task_id, lambda d: True)
    assert data["task_id"] == task_id


def test_stuck_task_stays_in_progress(client: httpx.Client, sb: Sandbox) -> None:
    """A stuck plan keeps answering in_progress long after a normal task would end."""
    sb.plan(TaskPlan(stuck=True, duration=1))
    task_id = task_id_of(submit(client))
    time.sleep(0.15)
    assert query(client, task_id).json()["data"]["status"] == "in_progress"
    assert sb.ledger.completed_at == {}


def test_capacity_queues_tasks_in_submitted() -> None:
    """With capacity 1, a second task waits in submitted while the first is in progress."""
    with (
        Sandbox(time_scale=0.01, duration=100.0, capacity=1) as sb,
        httpx.Client(
            base_url=sb.url, headers={"Authorization": f"Bearer {sb.api_key}"}, timeout=5
        ) as client,
    ):
        first, second = task_id_of(submit(client)), task_id_of(submit(client))
        poll_until(client, first, lambda d: d["status"] == "in_progress")
        time.sleep(0.1)
        assert query(client, second).json()["data"]["status"] == "submitted"
        poll_until(client, second, lambda d: d["status"] == "in_progress")
        assert query(client, first).json()["data"]["status"] == "success"


def test_query_counts_and_completion_times_are_recorded(client: httpx.Client, sb: Sandbox) -> None:
    """The ledger counts queries per task and records when each task ended."""
    task_id = task_id_of(submit(client))
    poll_until(client, task_id, finished)
    assert sb.ledger.queries[task_id] >= 2
    completed = sb.ledger.completed_at[task_id]
    assert completed <= time.monotonic()
    assert sb.ledger.submits_received == 1


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "request body must be valid JSON"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'{"model": "m"}', "prompt is required"),
        (b'{"model": "m", "prompt": "   "}', "prompt is required"),
        (b'{"model": "m", "prompt": 3}', "prompt must be a string"),
        (b'{"prompt": "p"}', "model is required"),
        (b'{"prompt": "p", "model": "m", "images": "x"}', "images must be an array of strings"),
        (
            b'{"prompt": "p", "model": "m", "images": ["https://a/1", "https://a/2",'
            b' "https://a/3", "https://a/4", "https://a/5"]}',
            "images accepts at most 4 items",
        ),
        (
            b'{"prompt": "p", "model": "m", "images": ["file:///etc/passwd"]}',
            "images[0] must be an http(s) URL or a data:image/ URI",
        ),
        (
            b'{"prompt": "p", "model": "m", "images": [7]}',
            "images[0] must be an http(s) URL or a data:image/ URI",
        ),
        (b'{"prompt": "p", "model": "m", "aspect_ratio": "7:3"}', "aspect_ratio must be one of"),
        (b'{"prompt": "p", "model": "m", "image_size": "8K"}', "image_size must be one of"),
        (
            b'{"prompt": "p", "model": "m", "callback_url": "javascript:alert(1)"}',
            "callback_url must be an http(s) URL",
        ),
    ],
)
def test_invalid_submits_get_400_and_no_charge(
    client: httpx.Client, sb: Sandbox, body: bytes, detail: str
) -> None:
    """Bad parameters answer the documented 400 envelope and create nothing."""
    response = client.post(SUBMIT, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == 1
    assert payload["message"] == "failed"
    assert payload["detail"].startswith(detail)
    assert sb.ledger.tasks == []
    assert sb.ledger.submits_received == 1


def test_all_documented_options_are_accepted(client: httpx.Client, sb: Sandbox) -> None:
    """Every documented aspect ratio and size, refs and callback URL pass validation."""
    response = submit(
        client,
        model="some/unknown-model",
        aspect_ratio="21:9",
        image_size="4K",
        images=["https://example.com/a.png", "data:image/png;base64,AAAA"],
        callback_url="http://127.0.0.1:9/hook",
    )
    task_id_of(response)
    assert len(sb.ledger.tasks) == 1


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )
    | st.fixed_dictionaries(
        {},
        optional={
            "prompt": st.one_of(st.text(max_size=10), st.integers()),
            "model": st.one_of(st.text(max_size=10), st.none()),
            "images": st.lists(st.text(max_size=12), max_size=6),
            "aspect_ratio": st.sampled_from(["1:1", "x", "16:9"]),
        },
    )
)
def test_any_json_body_gets_200_or_400(client: httpx.Client, body: object) -> None:
    """Whatever JSON arrives, the submit endpoint answers 200 or a 400 envelope, never 500."""
    response = client.post(SUBMIT, content=json.dumps(body).encode())
    assert response.status_code in (200, 400)
    assert response.json()["code"] in (0, 1)


def test_submit_without_or_with_a_wrong_key_is_401(client: httpx.Client, sb: Sandbox) -> None:
    """Missing or wrong keys get 401 "Invalid API key" (code 1) and nothing is charged."""
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer dk-wrong"}):
        response = client.post(SUBMIT, json={"prompt": "p", "model": "m"}, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"code": 1, "message": "Invalid API key"}
    assert sb.ledger.tasks == []
    assert [r.authorized for r in sb.ledger.requests] == [False, False]


def test_query_with_a_wrong_key_answers_code_401(client: httpx.Client) -> None:
    """The query endpoint's 401 puts 401 in the envelope's code, as observed."""
    task_id = task_id_of(submit(client))
    response = client.get(
        QUERY, params={"task_id": task_id}, headers={"Authorization": "Bearer dk-nope"}
    )
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Invalid API key"}


def test_accept_any_key_mode_takes_any_dk_key() -> None:
    """accept_any_key accepts any 'Bearer dk-...' token but still refuses other tokens."""
    with Sandbox(accept_any_key=True) as sb, httpx.Client(base_url=sb.url, timeout=5) as client:
        good = client.post(
            SUBMIT, json={"prompt": "p", "model": "m"}, headers={"Authorization": "Bearer dk-x1"}
        )
        bad = client.post(
            SUBMIT, json={"prompt": "p", "model": "m"}, headers={"Authorization": "Bearer sk-x"}
        )
        own = client.post(
            SUBMIT,
            json={"prompt": "p", "model": "m"},
            headers={"Authorization": f"Bearer {sb.api_key}"},
        )
        assert (good.status_code, bad.status_code, own.status_code) == (200, 401, 200)


def test_explicit_api_key_is_the_accepted_one() -> None:
    """An api_key given to the constructor is the one accepted, and is never in the repr."""
    key = "dk-0123456789abcdef0123456789abcdef"
    with Sandbox(api_key=key) as sb, httpx.Client(base_url=sb.url, timeout=5) as client:
        assert sb.api_key == key
        assert key not in repr(sb)
        headers = {"Authorization": f"Bearer {key}"}
        response = client.post(SUBMIT, json={"prompt": "p", "model": "m"}, headers=headers)
        assert response.status_code == 200


def test_generated_keys_are_dk_hex_and_unique() -> None:
    """Without api_key, each sandbox makes a fresh 'dk-' + 32 hex key."""
    keys = {Sandbox().api_key for _ in range(5)}
    assert len(keys) == 5
    assert all(re.fullmatch(r"dk-[0-9a-f]{32}", k) for k in keys)


def test_unknown_task_missing_id_unknown_path_and_method(client: httpx.Client) -> None:
    """404 for unknown tasks and paths, 400 without task_id, 405 for a wrong method."""
    missing = query(client, "ta00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.json() == {"code": 1, "message": "task not found"}
    no_id = client.get(QUERY)
    assert no_id.status_code == 400
    assert no_id.json()["detail"] == "task_id is required"
    assert client.get("/api/nope").status_code == 404
    assert client.get(SUBMIT).status_code == 405


def test_injected_clock_drives_statuses() -> None:
    """With an injected clock, statuses change only when that clock moves."""
    now = [500.0]
    with (
        Sandbox(clock=lambda: now[0], duration=10.0) as sb,
        httpx.Client(
            base_url=sb.url, headers={"Authorization": f"Bearer {sb.api_key}"}, timeout=5
        ) as client,
    ):
        task_id = task_id_of(submit(client))
        time.sleep(0.05)
        assert query(client, task_id).json()["data"]["status"] == "pending"
        now[0] += 5.0
        assert query(client, task_id).json()["data"]["status"] == "in_progress"
        now[0] += 5.0
        data = query(client, task_id).json()["data"]
        assert data["status"] == "success"
        assert sb.ledger.completed_at == {task_id: pytest.approx(510.0)}
