"""The webhook receiver, rows W1-W9: callbacks are hints, the authenticated API is the truth.

Session-level tests run a real session with ``webhook=True`` against the sandbox, which
POSTs each finished task to its callback URL. With the receiver on, the session's backup
polling starts only after 90 s, so within these tests every query the sandbox sees was
caused by a callback. Receiver-level tests drive :class:`WebhookReceiver` on a private
engine with raw sockets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import select
import socket
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nanobanana_jupyter import Session, TaskStatus
from nanobanana_jupyter._core.engine import Engine
from nanobanana_jupyter._core.webhook import MAX_BODY, WebhookReceiver
from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan
from tests.reliability.conftest import (
    ResourceBaseline,
    loopback_server,
    make_session,
    wait_until,
)

pytestmark = pytest.mark.integration

Hint = tuple[str, "str | None"]


# -- helpers -------------------------------------------------------------------------------


@contextlib.contextmanager
def running_receiver(**kwargs: Any) -> Iterator[tuple[WebhookReceiver, list[Hint]]]:
    """A receiver on its own engine thread; hints are collected in a list."""
    hints: list[Hint] = []
    engine = Engine("test-webhook")
    receiver = WebhookReceiver(
        lambda local_id, task_id: hints.append((local_id, task_id)), **kwargs
    )
    engine.run(receiver.start(), timeout=10)
    try:
        yield receiver, hints
    finally:
        engine.run(receiver.aclose(), timeout=10)
        engine.stop()


def spy_callback_urls(session: Session) -> dict[str, str]:
    """Record the callback URL the session hands out for each local submission."""
    receiver = session._res.receiver
    assert receiver is not None
    urls: dict[str, str] = {}
    original = receiver.url_for

    def url_for(local_id: str) -> str:
        urls[local_id] = original(local_id)
        return urls[local_id]

    receiver.url_for = url_for  # type: ignore[method-assign]
    return urls


def post_json(url: str, body: object, **headers: str) -> int:
    """POST a JSON body (as the provider does) and return the status."""
    response = httpx.post(
        url,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        timeout=5,
    )
    return response.status_code


def read_head(sock: socket.socket) -> bytes:
    """Read an answer's status line and headers (bounded; a reset ends it early)."""
    answer = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in answer and len(answer) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return the status line and headers of the answer (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may answer and close before reading everything (that is the point).
        with contextlib.suppress(OSError):
            sock.sendall(data)
        return read_head(sock)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def request_bytes(
    method: str, path: str, body: bytes = b"", *, content_type: str = "application/json"
) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def genuine_body(task_id: str) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "status": "success",
        "result": [{"image": "https://cdn.example/a.png"}],
        "consumed": "0.5",
        "status_reason": {"message": None},
    }


@contextlib.contextmanager
def listening_socket() -> Iterator[tuple[int, list[int]]]:
    """A loopback port that counts the connections it gets (the attacker's image host)."""
    accepted = [0]

    def count(conn: socket.socket) -> None:
        accepted[0] += 1
        conn.close()

    with loopback_server(count, name="attacker-host") as port:
        yield port, accepted


def hooked_session(sb: Sandbox, data_dir: Path, **settings: Any) -> Session:
    """A session with the receiver on and only the (90 s) backup polling policy."""
    return make_session(sb, data_dir, webhook=True, poll_policy=None, settings=settings)


# -- W1: a genuine callback before any poll ---------------------------------------------


def test_w1_callback_before_any_poll_is_confirmed_by_one_query(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """W1: the callback triggers one confirming query that finalises the task; polling stops."""
    with hooked_session(sandbox, tmp_path) as session:
        tasks = [session.generate(f"hooked {i}") for i in range(3)]
        for task in tasks:
            assert task.wait(timeout=15).status is TaskStatus.SUCCESS, task.error
        time.sleep(0.3)  # anything still scheduled would poll now
        assert sandbox.ledger.queries == {t.task_id: 1 for t in tasks}
        assert session.stats()["polling"] == 0
        assert len(session.history) == 3
        assert len({r.task_id for r in session.history}) == 3
    assert sorted(cb.task_id for cb in sandbox.ledger.callbacks if cb.ok) == sorted(
        t.task_id for t in tasks if t.task_id
    )


# -- W2: wrong or missing token ------------------------------------------------------------


def _mutations(token: str) -> list[str]:
    flipped = ("A" if token[0] != "A" else "B") + token[1:]
    return [flipped, token[:-1], token + "x", secrets.token_urlsafe(32), "", token.upper()]


def test_w2_wrong_or_missing_token_is_404_and_changes_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """W2: a mutated, truncated, extended, random or missing path token gets 404; no query."""
    sandbox.plan(TaskPlan(stuck=True))
    with hooked_session(sandbox, tmp_path) as session:
        urls = spy_callback_urls(session)
        task = session.generate("waiting for a callback")
        wait_until(lambda: task.task_id is not None, what="the task id")
        base, token = urls[task.local_id].rsplit("/", 1)
        before = task.record
        for bad in _mutations(token):
            if bad == token:
                continue
            assert post_json(f"{base}/{bad}", genuine_body(task.task_id or "")) == 404, bad
        time.sleep(0.3)
        assert sandbox.ledger.queries == {}
        assert task.status is before.status and task.record.polls == before.polls
        assert session._res.receiver is not None and session._res.receiver.received == 0


# -- W3: right token, forged body ----------------------------------------------------------


def test_w3_forged_body_is_ignored_and_the_attacker_url_never_fetched(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """W3: a fake success with an attacker image only causes a query; a foreign id, nothing."""
    sandbox.plan(TaskPlan(stuck=True))
    with (
        listening_socket() as (attacker_port, attacker_hits),
        hooked_session(sandbox, tmp_path) as session,
    ):
        urls = spy_callback_urls(session)
        task = session.generate("forge me")
        wait_until(lambda: task.task_id is not None, what="the task id")
        task_id = task.task_id or ""
        forged = {
            "task_id": task_id,
            "status": "success",
            "result": [{"image": f"http://127.0.0.1:{attacker_port}/evil.png"}],
            "consumed": "0",
            "status_reason": {"message": "<script>alert(1)</script>"},
        }
        assert post_json(urls[task.local_id], forged) == 204
        wait_until(lambda: sandbox.ledger.queries.get(task_id) == 1, what="the confirming query")
        time.sleep(0.3)
        assert task.status.is_active and not task.done()
        assert task.images == [] and attacker_hits == [0]

        with caplog.at_level(logging.WARNING, logger="nanobanana_jupyter"):
            other = dict(forged, task_id="ta-someone-elses-task")
            assert post_json(urls[task.local_id], other) == 204
            time.sleep(0.3)
        assert sandbox.ledger.queries == {task_id: 1}
        assert "does not match" in caplog.text
        assert task.status.is_active and attacker_hits == [0]


# -- W4: replays and expiry --------------------------------------------------------------


def test_w4_replays_after_the_end_are_2xx_and_do_no_work(sandbox: Sandbox, tmp_path: Path) -> None:
    """W4: the same callback 5 times after the task ended: 2xx each, no query, one row."""
    with hooked_session(sandbox, tmp_path) as session:
        urls = spy_callback_urls(session)
        task = session.generate("replayed").wait(timeout=15)
        assert task.status is TaskStatus.SUCCESS
        task_id = task.task_id or ""
        queries = sandbox.ledger.queries[task_id]
        for _ in range(5):
            assert post_json(urls[task.local_id], genuine_body(task_id)) == 204
        time.sleep(0.3)
        assert sandbox.ledger.queries[task_id] == queries
        assert len(session.history) == 1 and task.status is TaskStatus.SUCCESS


def test_w4_token_expires_after_the_task_ended() -> None:
    """W4: after the end a token answers 2xx for token_ttl, then 410, then 404 once purged."""
    now = [1000.0]
    with running_receiver(token_ttl=5.0, clock=lambda: now[0]) as (receiver, hints):
        url = receiver.url_for("local-1")
        assert post_json(url, {"task_id": "t1"}) == 204
        receiver.finished("local-1")
        now[0] += 4.0
        assert post_json(url, {"task_id": "t1"}) == 204
        now[0] += 2.0
        assert post_json(url, {"task_id": "t1"}) == 410
        now[0] += 10.0
        receiver.finished("another")  # purges tokens expired for more than a ttl
        assert post_json(url, {"task_id": "t1"}) == 404
        time.sleep(0.1)
        assert hints == [("local-1", "t1"), ("local-1", "t1")]


# -- W5: abuse ---------------------------------------------------------------------------


def test_w5_abuse_is_refused_at_once_while_a_genuine_callback_lands() -> None:
    """W5: 10 MB, non-JSON, GET and mistyped requests are refused fast; a genuine one lands."""
    with running_receiver() as (receiver, hints):
        port = receiver.port or 0
        path = receiver.url_for("genuine").removeprefix(receiver.base_url)
        abuse_path = receiver.url_for("abused").removeprefix(receiver.base_url)
        slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
        try:
            for sock in slow:  # slowloris: headers that never end
                sock.sendall(f"POST {abuse_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ".encode())
            tracemalloc.start()
            try:
                started = time.monotonic()
                declared = (
                    f"POST {abuse_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n"
                ).encode()
                answers = {"declared 10 MB": raw_exchange(port, declared + b"{" * 1024)}
                answers["chunked 10 MB"] = _send_chunked(port, abuse_path, 10 * 1024 * 1024)
                answers["not JSON"] = raw_exchange(
                    port, request_bytes("POST", abuse_path, b"<html>not json</html>")
                )
                answers["GET"] = raw_exchange(port, request_bytes("GET", abuse_path))
                answers["wrong type"] = raw_exchange(
                    port, request_bytes("POST", abuse_path, b"a=1", content_type="text/plain")
                )
                genuine = post_json(f"{receiver.base_url}{path}", {"task_id": "t-genuine"})
                elapsed = time.monotonic() - started
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        finally:
            for sock in slow:
                sock.close()
        codes = {name: status_of(answer) for name, answer in answers.items()}
        assert codes == {  # the answers themselves are in the assertion's diff
            "declared 10 MB": 413,
            "chunked 10 MB": 413,
            "not JSON": 400,
            "GET": 405,
            "wrong type": 415,
        }
        assert genuine == 204, answers
        wait_until(lambda: ("genuine", "t-genuine") in hints, 5, "the genuine hint")
        assert [h for h in hints if h[0] == "abused"] == []
        assert elapsed < 5.0, f"the abuse took {elapsed:.1f} s to be answered"
        assert peak < 4 * MAX_BODY + 2 * 1024 * 1024, f"peak {peak} bytes while refusing 10 MB"


def _send_chunked(port: int, path: str, total: int) -> bytes:
    """Stream a chunked body of ``total`` bytes until the server answers or stops reading."""
    piece = b"x" * 65536
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        sock.settimeout(0.5)
        sent = 0
        deadline = time.monotonic() + 10
        while sent < total and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # the server has answered (or closed)
            try:
                sock.sendall(frame)  # whole frames only, or we stop sending
            except OSError:
                break
            sent += len(piece)
        sock.settimeout(5)
        return read_head(sock)


def test_w5_a_genuine_body_arriving_in_pieces_is_read_whole() -> None:
    """W5: a small genuine callback whose body arrives in two TCP pieces is read whole (204)."""
    with running_receiver() as (receiver, hints):
        port = receiver.port or 0
        path = receiver.url_for("split").removeprefix(receiver.base_url)
        body = json.dumps(genuine_body("t-split")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(head + body[:20])
            time.sleep(0.3)  # a slow link or a tunnel splits the body
            sock.sendall(body[20:])
            answer = read_head(sock)
        assert status_of(answer) == 204, answer[:200]
        wait_until(lambda: ("split", "t-split") in hints, 5, "the hint")


def test_w5_slowloris_connections_are_cut_within_about_10_seconds() -> None:
    """W5: a connection whose headers never end, or that stays silent, is closed within 12 s."""
    with running_receiver() as (receiver, _):
        port = receiver.port or 0
        path = receiver.url_for("x").removeprefix(receiver.base_url)
        drip = socket.create_connection(("127.0.0.1", port), timeout=0.2)
        idle = socket.create_connection(("127.0.0.1", port), timeout=0.2)
        outcome: dict[str, float | None] = {"drip": None, "idle": None}
        try:
            drip.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode())
            started = time.monotonic()
            while time.monotonic() - started < 12 and None in outcome.values():
                for name, sock in (("drip", drip), ("idle", idle)):
                    if outcome[name] is not None:
                        continue
                    try:
                        if name == "drip":
                            sock.sendall(b"a")
                        data = sock.recv(1024)
                    except TimeoutError:
                        continue
                    except OSError:
                        data = b""
                    if not data or status_of(data) == 408:
                        outcome[name] = time.monotonic() - started
        finally:
            drip.close()
            idle.close()
        assert outcome["drip"] is not None, "a slowloris connection stayed open for 12 s"
        assert outcome["idle"] is not None, "a silent connection stayed open for 12 s"


# -- W6: browsers and DNS rebinding --------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Origin": "https://attacker.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Host": "attacker.example"}, 403),
        ({"Host": "attacker.example:80"}, 403),
        ({"Host": "127.0.0.1.attacker.example"}, 403),
        ({"Host": "localhost"}, 204),
    ],
    ids=["origin", "origin-null", "host", "host-port", "host-suffix", "localhost-ok"],
)
def test_w6_browser_origin_and_foreign_host_are_403(headers: dict[str, str], expected: int) -> None:
    """W6: any Origin header, or a Host other than loopback (DNS rebinding), gets 403."""
    with running_receiver() as (receiver, hints):
        url = receiver.url_for("local")
        assert post_json(url, {"task_id": "t"}, **headers) == expected
        time.sleep(0.05)
        assert len(hints) == (1 if expected == 204 else 0)


# -- W7: where it listens, and what remains after shutdown -------------------------------


def _listening_address(port: int) -> str | None:
    psutil = pytest.importorskip("psutil")
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return str(conn.laddr.ip)
    return None


def _non_loopback_address() -> str | None:
    psutil = pytest.importorskip("psutil")
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return None


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


def test_w7_listens_on_loopback_only_and_leaves_nothing_behind(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """W7: 127.0.0.1 only, one port per receiver; after shutdown no port, fd or thread remains."""
    with running_receiver():
        pass  # the first engine thread of a process may leave interpreter-level state
    baseline = ResourceBaseline()
    ports: list[int] = []
    other = _non_loopback_address()
    for _ in range(2):
        with running_receiver() as (a, _), running_receiver() as (b, _):
            assert a.port is not None and b.port is not None and a.port != b.port
            for receiver in (a, b):
                assert _listening_address(receiver.port or 0) == "127.0.0.1"
                if other is not None:
                    assert _refused(other, receiver.port or 0)
            ports += [a.port, b.port]
    assert all(_refused("127.0.0.1", port) for port in ports)
    fds, threads = baseline.growth()
    assert fds <= 0 and threads <= 0, (fds, threads)

    with hooked_session(sandbox, tmp_path) as session:
        assert session._res.receiver is not None
        port = session._res.receiver.port or 0
        assert _listening_address(port) == "127.0.0.1"
    assert _refused("127.0.0.1", port)


# -- W8: the callback recovers a submission whose answer was lost ---------------------------


def test_w8_late_callback_reconciles_a_submit_unknown(sandbox: Sandbox, tmp_path: Path) -> None:
    """W8: a late callback ties a lost submission to its task, which then ends; one charge."""
    sandbox.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
    sandbox.plan(TaskPlan(duration=100.0))  # 1 s: ends after the submit gave up
    with hooked_session(sandbox, tmp_path, submit_timeout=0.3) as session:
        task = session.generate("answer lost, callback found")
        wait_until(lambda: task.status is TaskStatus.SUBMIT_UNKNOWN, 5, "submit_unknown")
        assert task.task_id is None
        wait_until(lambda: task.status is TaskStatus.SUCCESS, 15, "reconciliation")
        assert task.task_id == sandbox.ledger.tasks[0]
        assert len(task.images) == 1 and len(session.history) == 1
    assert sandbox.ledger.submits_received == 1 and len(sandbox.ledger.charges) == 1


def test_w8_callback_during_the_lost_submit_is_not_forgotten(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """W8: a callback during the hanging submit is used once the submit gives up; one charge."""
    sandbox.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
    sandbox.plan(TaskPlan(duration=5.0))  # 50 ms: the callback comes before the timeout
    with hooked_session(sandbox, tmp_path, submit_timeout=1.0) as session:
        task = session.generate("callback first, answer never")
        wait_until(lambda: len(sandbox.ledger.callbacks) == 1, 5, "the callback delivery")
        assert task.status is TaskStatus.SUBMITTING
        wait_until(lambda: task.status is not TaskStatus.SUBMITTING, 5, "the submit timeout")
        wait_until(lambda: task.status is TaskStatus.SUCCESS, 5, "reconciliation")
        assert task.task_id == sandbox.ledger.tasks[0]
    assert sandbox.ledger.submits_received == 1 and len(sandbox.ledger.charges) == 1


# -- W9: the callback comes while the kernel is down -----------------------------------------


def test_w9_callback_while_down_is_recovered_by_resume(sandbox: Sandbox, tmp_path: Path) -> None:
    """W9: a callback sent while the kernel is down is recovered by resume(); one charge."""
    sandbox.plan(TaskPlan(duration=60.0))
    with hooked_session(sandbox, tmp_path) as first:
        task = first.generate("finishes while the kernel is down")
        wait_until(lambda: task.task_id is not None, what="the task id")
        task_id = task.task_id
    wait_until(lambda: len(sandbox.ledger.callbacks) == 1, 10, "the failed delivery")
    (delivery,) = sandbox.ledger.callbacks
    assert delivery.task_id == task_id and not delivery.ok
    with make_session(sandbox, tmp_path) as second:
        (resumed,) = second.resume()
        assert resumed.wait(timeout=15).status is TaskStatus.SUCCESS
        assert resumed.task_id == task_id and len(resumed.images) == 1
        assert len(second.history) == 1
    assert sandbox.ledger.submits_received == 1 and len(sandbox.ledger.charges) == 1


def test_receiver_answers_json_bodies_of_any_shape() -> None:
    """W3/W5: any JSON value as a body (list, number, nested, huge id) gets 204, never a 500."""
    bodies: list[object] = [[], 1, None, "x", {"task_id": 5}, {"task_id": "x" * 5000}, {"a": {}}]
    with running_receiver() as (receiver, hints):
        url = receiver.url_for("shapes")
        for body in bodies:
            assert post_json(url, body) == 204, json.dumps(body)[:40]
        time.sleep(0.1)
        assert all(task_id is None for _, task_id in hints)
        assert len(hints) == len(bodies)


# -- W3/W8: a callback must not bind a lost submission to another task ----------------------


def test_w3_forged_callback_naming_an_unknown_task_leaves_submit_unknown_alone(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """W3/W8: a callback naming an unknown task id leaves a submit_unknown row as it is."""
    sandbox.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
    sandbox.plan(TaskPlan(stuck=True))
    with hooked_session(sandbox, tmp_path, submit_timeout=0.3) as session:
        urls = spy_callback_urls(session)
        task = session.generate("answer lost")
        wait_until(lambda: task.status is TaskStatus.SUBMIT_UNKNOWN, 5, "submit_unknown")
        forged = genuine_body("ta-not-a-task-of-this-account")
        assert post_json(urls[task.local_id], forged) == 204
        time.sleep(1.0)  # the 404 grace is 0.3 s on this clock
        record = session._store.get(task.local_id)
        assert record is not None
        assert (record.status, record.task_id) == (TaskStatus.SUBMIT_UNKNOWN, None)
        assert "may have been charged" in (record.error or "")


def test_w3_forged_callback_naming_another_submissions_task_is_not_bound(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """W3/W8: a callback naming a task another submission of this store holds is not bound.

    Decided limit: a forged callback that names some *other* real task of the same account,
    not in this store, is bound once the API confirms it. Forging needs the submission's
    secret callback URL (32 random bytes, given only to the API), so the token is the
    authentication; the task's ``created_at`` has no documented format to check a window on.
    """
    with make_session(sandbox, tmp_path) as earlier:
        foreign = earlier.generate("an earlier task of this notebook").wait(timeout=15)
    assert foreign.task_id is not None
    sandbox.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
    sandbox.plan(TaskPlan(stuck=True))
    with hooked_session(sandbox, tmp_path, submit_timeout=0.3) as session:
        urls = spy_callback_urls(session)
        task = session.generate("answer lost")
        wait_until(lambda: task.status is TaskStatus.SUBMIT_UNKNOWN, 5, "submit_unknown")
        queries = dict(sandbox.ledger.queries)
        assert post_json(urls[task.local_id], genuine_body(foreign.task_id)) == 204
        time.sleep(1.0)
        assert task.task_id is None and task.images == []
        assert task.status is TaskStatus.SUBMIT_UNKNOWN
        assert sandbox.ledger.queries == queries, "the forged id was not even queried"


def test_w5_a_deeply_nested_callback_body_is_refused_with_400() -> None:
    """W5 (issue 14, H16): JSON nested past the parser's recursion limit, well under the body
    cap, is refused as not JSON (400), not answered with a 500 and a traceback."""
    with running_receiver() as (receiver, hints):
        port = receiver.port or 0
        path = receiver.url_for("nested").removeprefix(receiver.base_url)
        body = b"[" * 30_000 + b"]" * 30_000  # under the 64 KiB cap
        answer = raw_exchange(port, request_bytes("POST", path, body))
        assert status_of(answer) == 400, answer[:200]
        assert hints == []
