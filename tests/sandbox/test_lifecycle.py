"""Sandbox lifecycle, ledger, callbacks and the command line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan

pytestmark = pytest.mark.integration

SUBMIT = "/api/image/gen"
QUERY = "/api/task/query"
BODY = {"prompt": "a banana boat", "model": "google/gempix2"}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def api(sb: Sandbox, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(
        base_url=sb.url, headers={"Authorization": f"Bearer {sb.api_key}"}, timeout=timeout
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- callbacks ----------------------------------------------------------------------------


class Receiver:
    """A tiny webhook receiver on 127.0.0.1 that records JSON bodies."""

    def __init__(self, status: int = 200) -> None:
        received: list[dict[str, Any]] = []
        answer = status

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        # A short poll interval makes shutdown() quick.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(time_scale=0.01, duration=1.0, max_side=64) as sandbox:
        yield sandbox


def test_callback_posts_the_documented_payload(sb: Sandbox, receiver: Receiver) -> None:
    """A finished task with callback_url POSTs result/status/task_id/consumed/status_reason."""
    with api(sb) as client:
        response = client.post(SUBMIT, json={**BODY, "callback_url": receiver.url})
        task_id = response.json()["data"]["task_id"]
    wait_for(lambda: len(sb.ledger.callbacks) == 1)
    (payload,) = receiver.received
    assert set(payload) == {"result", "status", "task_id", "consumed", "status_reason"}
    assert payload["task_id"] == task_id
    assert payload["status"] == "success"
    assert payload["consumed"] == "0.500000"
    assert payload["status_reason"] == {"message": None}
    assert payload["result"][0]["image"].startswith(sb.cdn_url)
    (record,) = sb.ledger.callbacks
    assert (record.ok, record.status, record.task_id, record.url) == (
        True,
        200,
        task_id,
        receiver.url,
    )


def test_callback_for_a_failed_task(sb: Sandbox, receiver: Receiver) -> None:
    """A failed task's callback carries status failed, no result and the reason."""
    sb.plan(TaskPlan(outcome="failed", reason="too many bananas"))
    with api(sb) as client:
        client.post(SUBMIT, json={**BODY, "callback_url": receiver.url})
    wait_for(lambda: len(sb.ledger.callbacks) == 1)
    payload = receiver.received[0]
    assert payload["status"] == "failed"
    assert payload["result"] is None
    assert payload["status_reason"] == {"message": "too many bananas"}


def test_callback_outcomes_are_recorded_when_delivery_fails(sb: Sandbox) -> None:
    """Error statuses, refused connections and non-loopback hosts are recorded, once each."""
    failing = Receiver(status=500)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    closed.close()
    try:
        with api(sb) as client:
            for url in (failing.url, refused_url, "http://example.com/hook"):
                client.post(SUBMIT, json={**BODY, "callback_url": url})
        wait_for(lambda: len(sb.ledger.callbacks) == 3)
    finally:
        failing.close()
    by_url = {c.url: c for c in sb.ledger.callbacks}
    assert (by_url[failing.url].status, by_url[failing.url].ok) == (500, False)
    assert by_url[refused_url].status is None
    assert by_url[refused_url].error
    assert by_url["http://example.com/hook"].error is not None
    assert "loopback" in by_url["http://example.com/hook"].error
    assert len(failing.received) == 1  # one attempt, no retries


def test_callback_in_data_uri_mode_embeds_the_image(receiver: Receiver) -> None:
    """In data_uri mode the webhook carries the image inline."""
    with Sandbox(time_scale=0.01, duration=1.0, max_side=32, result_mode="data_uri") as sb:
        with api(sb) as client:
            client.post(SUBMIT, json={**BODY, "callback_url": receiver.url})
        wait_for(lambda: len(sb.ledger.callbacks) == 1)
    assert receiver.received[0]["result"][0]["image"].startswith("data:image/png;base64,")


# -- ledger -------------------------------------------------------------------------------


def test_duplicate_submits_are_found_by_idempotency_key(sb: Sandbox) -> None:
    """duplicate_submits() lists exactly the Idempotency-Key values sent more than once."""
    with api(sb) as client:
        for key in ("a", "b", "a", None):
            headers = {"Idempotency-Key": key} if key else {}
            client.post(SUBMIT, json=BODY, headers=headers)
    assert sb.ledger.idempotency_keys == {"a": 2, "b": 1}
    assert sb.ledger.duplicate_submits() == ["a"]
    assert sb.ledger.submits_received == 4


def test_faulted_submits_count_as_received(sb: Sandbox) -> None:
    """A submit that got a fault still counts, and still groups by its Idempotency-Key."""
    sb.faults.add("submit", Fault.SERVER_ERROR_HTML)
    with api(sb) as client:
        for _ in range(2):
            client.post(SUBMIT, json=BODY, headers={"Idempotency-Key": "k1"})
    assert sb.ledger.submits_received == 2
    assert len(sb.ledger.tasks) == 1
    assert sb.ledger.duplicate_submits() == ["k1"]


def test_request_records_and_reset(sb: Sandbox) -> None:
    """Each request is recorded with method, path, query, status and auth; reset() clears all."""
    with api(sb) as client:
        task_id = client.post(SUBMIT, json=BODY).json()["data"]["task_id"]
        client.get(QUERY, params={"task_id": task_id})
        client.get(QUERY, params={"task_id": task_id}, headers={"Authorization": "Bearer x"})
    submit, good, bad = sb.ledger.requests
    assert (submit.method, submit.path, submit.status, submit.task_id) == (
        "POST",
        SUBMIT,
        200,
        task_id,
    )
    assert (good.query, good.status, good.authorized) == (f"task_id={task_id}", 200, True)
    assert (bad.status, bad.authorized) == (401, False)
    assert sb.ledger.queries == {task_id: 2}
    sb.ledger.reset()
    ledger = sb.ledger
    assert (ledger.requests, ledger.tasks, ledger.charges, ledger.queries) == ([], [], {}, {})
    assert (ledger.submits_received, ledger.total_charged, ledger.callbacks) == (0, 0, [])


def test_ledger_is_consistent_under_concurrent_clients(sb: Sandbox) -> None:
    """Many threads submitting at once: every accepted submit is charged exactly once."""
    accepted: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with api(sb) as client:
            for _ in range(15):
                task_id = client.post(SUBMIT, json=BODY).json()["data"]["task_id"]
                with lock:
                    accepted.append(task_id)
                assert len(sb.ledger.requests) >= 1  # reading while the server writes

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(accepted) == sorted(sb.ledger.tasks)
    assert sb.ledger.total_charged == pytest.approx(0.5 * 90)
    assert sb.ledger.submits_received == 90


# -- lifecycle ----------------------------------------------------------------------------


def test_stop_is_prompt_with_hung_requests_open() -> None:
    """stop() returns within a second while submit, query and CDN requests hang."""
    sb = Sandbox(time_scale=0.01, duration=1.0, max_side=32).start()
    with api(sb) as client:
        task_id = client.post(SUBMIT, json=BODY).json()["data"]["task_id"]
        wait_for(lambda: client.get(QUERY, params={"task_id": task_id}).json()["data"]["result"])
        url = client.get(QUERY, params={"task_id": task_id}).json()["data"]["result"][0]["image"]
    sb.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
    sb.faults.add("query", Fault.HANG_AFTER_ACCEPT)
    sb.faults.add("cdn", Fault.HANG_AFTER_ACCEPT)
    errors: list[Exception] = []

    def call(method: str, target: str, **kwargs: Any) -> None:
        try:
            with api(sb, timeout=30) as client:
                client.request(method, target, **kwargs)
        except httpx.HTTPError as exc:
            errors.append(exc)

    calls = [
        threading.Thread(target=call, args=("POST", SUBMIT), kwargs={"json": BODY}),
        threading.Thread(target=call, args=("GET", QUERY), kwargs={"params": {"task_id": "x"}}),
        threading.Thread(target=call, args=("GET", url)),
    ]
    for t in calls:
        t.start()
    wait_for(lambda: sum(r.fault is not None for r in sb.ledger.requests) == 3)
    started = time.monotonic()
    sb.stop()
    assert time.monotonic() - started < 1.0
    for t in calls:
        t.join(5)
    assert len(errors) == 3
    sb.stop()  # idempotent


def test_stop_is_prompt_with_a_callback_in_flight() -> None:
    """A callback to a receiver that never answers is cancelled, and recorded, at stop()."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        sb = Sandbox(time_scale=0.01, duration=1.0, max_side=32).start()
        with api(sb) as client:
            hook = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
            client.post(SUBMIT, json={**BODY, "callback_url": hook})
        time.sleep(0.1)
        started = time.monotonic()
        sb.stop()
        assert time.monotonic() - started < 1.0
    finally:
        silent.close()
    (record,) = sb.ledger.callbacks
    assert record.error is not None
    assert "cancelled" in record.error


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count fds")
def test_no_threads_or_sockets_are_left_behind(receiver: Receiver) -> None:
    """Starting and stopping sandboxes (with traffic, drawing and callbacks) leaks nothing."""
    threads, fds = threading.active_count(), open_fds()
    for _ in range(3):
        with Sandbox(time_scale=0.01, duration=1.0, max_side=32) as sb, api(sb) as client:
            client.post(SUBMIT, json={**BODY, "callback_url": receiver.url})
            wait_for(lambda sb=sb: len(sb.ledger.callbacks) == 1)  # type: ignore[misc]
            task_id = sb.ledger.tasks[0]
            data = client.get(QUERY, params={"task_id": task_id}).json()["data"]
            assert httpx.get(data["result"][0]["image"]).status_code == 200
    assert threading.active_count() == threads
    assert open_fds() == fds


def test_lifecycle_rules() -> None:
    """Ports exist only once started, a stopped sandbox cannot restart, start() twice fails."""
    sb = Sandbox()
    with pytest.raises(RuntimeError, match="not been started"):
        _ = sb.url
    sb.start()
    try:
        assert sb.url == f"http://127.0.0.1:{sb.port}"
        assert not sb.url.endswith("/")
        with pytest.raises(RuntimeError, match="already running"):
            sb.start()
    finally:
        sb.stop()
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        sb.start()


def test_listens_on_loopback_only_by_default() -> None:
    """Both listeners are bound to 127.0.0.1."""
    with Sandbox() as sb:
        assert sb.url.startswith("http://127.0.0.1:")
        assert sb.cdn_url.startswith("http://127.0.0.1:")


def test_port_in_use_raises_at_start() -> None:
    """Asking for a busy port fails in start() with OSError, leaving nothing running."""
    threads = threading.active_count()
    with Sandbox() as first:
        second = Sandbox(port=first.port)
        with pytest.raises(OSError, match="in use"):
            second.start()
    assert threading.active_count() == threads


# -- command line -------------------------------------------------------------------------


def _launch(*args: str) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanobanana_jupyter.sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url_line, key_line = proc.stdout.readline(), proc.stdout.readline()
    if not url_line.startswith("url="):
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"unexpected CLI output {url_line!r}; stderr: {err}")
    return proc, url_line.strip().removeprefix("url="), key_line.strip().removeprefix("api_key=")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_prints_url_and_key_serves_and_exits_cleanly(signum: signal.Signals) -> None:
    """The CLI prints url= and api_key= lines, serves the API, and exits 0 on a signal."""
    proc, url, key = _launch("--time-scale", "0.01")
    try:
        assert url.startswith("http://127.0.0.1:")
        assert key.startswith("dk-")
        response = httpx.post(
            url + SUBMIT, json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=5
        )
        assert response.status_code == 200
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_cli_accept_any_key_and_result_mode() -> None:
    """--accept-any-key takes any dk- key; --result-mode data_uri inlines results."""
    proc, url, _ = _launch("--time-scale", "0.001", "--accept-any-key", "--result-mode", "data_uri")
    try:
        headers = {"Authorization": "Bearer dk-anything"}
        with httpx.Client(base_url=url, headers=headers, timeout=5) as client:
            task_id = client.post(SUBMIT, json=BODY).json()["data"]["task_id"]
            wait_for(
                lambda: (
                    client.get(QUERY, params={"task_id": task_id}).json()["data"]["status"]
                    == "success"
                )
            )
            data = client.get(QUERY, params={"task_id": task_id}).json()["data"]
            assert data["result"][0]["image"].startswith("data:image/png;base64,")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


def test_cli_rejects_bad_arguments() -> None:
    """A bad option value exits with a usage error, not a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "nanobanana_jupyter.sandbox", "--result-mode", "ftp"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
