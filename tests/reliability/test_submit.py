"""The submit path end to end: rows S1 (session), S4 (through the proxy) and S13 (TLS).

S13 needs a certificate: ``trustme`` and ``cryptography`` are not installed, so a
self-signed one is made with the ``openssl`` command line tool when it exists (the tests
are skipped, saying so, when it does not). The TLS server is Python's ``ssl`` on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import shutil
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nanobanana_jupyter import (
    APIConnectionError,
    APITimeoutError,
    Client,
    PollPolicy,
    RetryPolicy,
    Session,
    SubmitOutcomeUnknownError,
    TaskStatus,
    ValidationError,
)
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter.sandbox import Sandbox
from tests.conftest import FakeSleep
from tests.reliability.conftest import (
    SCALE,
    ResourceBaseline,
    loopback_server,
    make_session,
    make_settings,
    thread_names,
    wait_until,
)
from tests.reliability.faultproxy import FaultProxy, Plan, Toxics

pytestmark = pytest.mark.integration

SUBMIT = b"POST /api/image/gen"


# -- S1 through the session --------------------------------------------------------------


def test_s1_nothing_listening_ends_not_sent_with_no_charge(tmp_path: Path) -> None:
    """S1: nothing listening ends the task not_sent ("cannot connect") after two quick retries."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(f"http://127.0.0.1:{port}", "dk-nothing-listens", tmp_path)
    with Session(settings=settings) as session:
        started = time.monotonic()
        task = session.generate("nobody home").wait(timeout=20)
        assert task.status is TaskStatus.NOT_SENT
        assert "cannot connect" in (task.error or "")
        assert time.monotonic() - started < 10  # two jittered retries, then a clear error
        assert len(session.history) == 1 and task.task_id is None


# -- H5: failures after the submit succeeded ------------------------------------------------


def _envelope(data: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json={"code": 0, "message": "ok", "data": data})


def test_h5_a_task_id_another_row_holds_ends_the_submit_with_a_clear_error(
    tmp_path: Path, sentinel_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """H5: an API (a de-duplicating proxy) answering with a task id another row holds ends the
    new handle at once: submit_unknown, the id on the handle, in the store's error and the log."""
    submits: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            submits.append(request)
            return _envelope({"task_id": "ta-shared-1"})
        return _envelope({"task_id": "ta-shared-1", "status": "in_progress", "result": None})

    settings = make_settings("https://api.defapi.org", sentinel_key, tmp_path)
    with (
        caplog.at_level(logging.INFO, logger="nanobanana_jupyter"),
        Session(
            settings=settings,
            transport=httpx.MockTransport(api),
            poll_policy=PollPolicy().scaled(SCALE),
        ) as session,
    ):
        first = session.generate("first request")
        wait_until(lambda: first.task_id == "ta-shared-1", 10, "the first submit")
        second = session.generate("another request")
        try:
            second.wait(timeout=5)
        except TimeoutError:
            pytest.fail(f"the handle is still {second.status.value}: the store error vanished")
        assert second.status is TaskStatus.SUBMIT_UNKNOWN
        assert second.task_id == "ta-shared-1"
        assert "ta-shared-1" in (second.error or "") and "already holds" in (second.error or "")
        with pytest.raises(SubmitOutcomeUnknownError, match="ta-shared-1"):
            second.result()
        stored = session._store.get(second.local_id)
        assert stored is not None and stored.status is TaskStatus.SUBMIT_UNKNOWN
        assert stored.task_id is None and "ta-shared-1" in (stored.error or "")
        assert session.get("ta-shared-1").local_id == first.local_id
        assert first.status.is_active  # the row that holds the id is untouched
    assert len(submits) == 2  # nothing was sent again
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("ta-shared-1" in m and second.local_id in m for m in logged), logged
    assert sentinel_key not in caplog.text and sentinel_key[3:15] not in caplog.text


@pytest.mark.parametrize("fails", ["once", "always"])
def test_h5_a_store_write_failing_after_the_submit_keeps_the_task_id(
    tmp_path: Path,
    sentinel_key: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    fails: str,
) -> None:
    """H5: the store refusing the task id (disk full, locked) is logged with the id (never the
    key) and tried again: saved then, the task goes on; never saved, the handle ends at once,
    submit_unknown with the id on it. Nothing is sent again."""
    original = Store.update
    refused: list[str] = []

    def update(self: Store, record: TaskRecord) -> TaskRecord:
        if record.task_id is not None and (fails == "always" or not refused):
            refused.append(record.task_id)
            raise sqlite3.OperationalError("database or disk is full")
        return original(self, record)

    monkeypatch.setattr(Store, "update", update)
    with (
        Sandbox(time_scale=SCALE, max_side=64, api_key=sentinel_key) as sb,
        caplog.at_level(logging.INFO, logger="nanobanana_jupyter"),
    ):
        with make_session(sb, tmp_path, api_key=sentinel_key) as session:
            task = session.generate("saved too late")
            try:
                task.wait(timeout=5)
            except TimeoutError:
                pytest.fail(f"the handle is still {task.status.value}: the store error vanished")
            (task_id,) = sb.ledger.tasks
            assert refused and refused[0] == task_id and task.task_id == task_id
            if fails == "once":  # the second try saved it: polled and collected as usual
                assert task.status is TaskStatus.SUCCESS and task.path is not None
            else:
                assert task.status is TaskStatus.SUBMIT_UNKNOWN
                assert task_id in (task.error or "") and "full" in (task.error or "")
                with pytest.raises(SubmitOutcomeUnknownError, match=task_id):
                    task.result()
        monkeypatch.setattr(Store, "update", original)
        with make_session(sb, tmp_path, api_key=sentinel_key) as again:
            (row,) = again.history
            # Never left "submitting", never re-sent; the id is kept wherever it fits.
            if fails == "once":
                assert row.status is TaskStatus.SUCCESS and row.task_id == task_id
            else:
                assert row.status is TaskStatus.SUBMIT_UNKNOWN and task_id in (row.error or "")
        assert sb.ledger.submits_received == 1
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(task_id in m and task.local_id in m for m in logged), logged
    assert sentinel_key not in caplog.text and sentinel_key[3:15] not in caplog.text


# -- S4 through the proxy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "toxics"),
    [
        ("reset before any answer byte", Toxics(reset_after=0)),
        ("reset mid-status-line", Toxics(reset_after=7)),
        ("closed after the headers began", Toxics(close_after=40)),
    ],
    ids=["reset-at-once", "reset-mid-status", "closed-early"],
)
def test_s4_connection_lost_after_the_request_is_unknown_and_never_resent(
    sandbox: Sandbox, proxy: FaultProxy, tmp_path: Path, name: str, toxics: Toxics
) -> None:
    """S4: an answer reset or cut after the charge is submit_unknown: one submit, one charge."""
    proxy.set(Plan(match=SUBMIT, down=toxics, limit=1))
    with make_session(sandbox, tmp_path, base_url=proxy.url) as session:
        task = session.generate(f"lost answer: {name}").wait(timeout=15)
        assert task.status is TaskStatus.SUBMIT_UNKNOWN, task.error
        assert "may have been charged" in (task.error or "")
        # A re-run of the same cell pays nothing more.
        assert session.generate(f"lost answer: {name}").local_id == task.local_id
    assert sandbox.ledger.submits_received == 1 and len(sandbox.ledger.charges) == 1
    assert [s.faulted_exchanges for s in proxy.stats if s.faulted_exchanges] == [1]


def test_s4_lost_upstream_request_is_unknown_not_resent(
    sandbox: Sandbox, proxy: FaultProxy, tmp_path: Path
) -> None:
    """S4: a request swallowed on its way is submit_unknown too; nothing charged or re-sent."""
    proxy.set(Plan(match=SUBMIT, up=Toxics(blackhole=True), limit=1))
    with make_session(
        sandbox, tmp_path, base_url=proxy.url, settings={"submit_timeout": 0.3}
    ) as session:
        task = session.generate("swallowed").wait(timeout=15)
        assert task.status is TaskStatus.SUBMIT_UNKNOWN
    assert sandbox.ledger.submits_received == 0 and sandbox.ledger.charges == {}


# -- S13: TLS ----------------------------------------------------------------------------------


def _make_cert(directory: Path, name: str, common_name: str, san: str) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("S13 needs a certificate: no openssl, and trustme/cryptography not installed")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={common_name}",
            "-addext", f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[tuple[int, list[int]]]:
    """A TLS listener on 127.0.0.1 that counts handshake attempts and never answers HTTP."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    attempts = [0]

    def handshake(conn: socket.socket) -> None:
        attempts[0] += 1
        conn.settimeout(2)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    with loopback_server(handshake, name="tls-server") as port:
        yield port, attempts


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    return _make_cert(tmp_path, "self", "localhost", "IP:127.0.0.1,DNS:localhost")


def test_s13_untrusted_certificate_fails_fast_without_retry(
    self_signed: tuple[Path, Path], tmp_path: Path, sentinel_key: str
) -> None:
    """S13: an untrusted certificate fails at once (one handshake, no sleep) and says so."""
    sleep = FakeSleep()
    with tls_server(*self_signed) as (port, attempts):
        settings = make_settings(f"https://127.0.0.1:{port}", sentinel_key, tmp_path)
        with Client(settings=settings, sleep=sleep) as client:
            with pytest.raises(APIConnectionError) as caught:
                client.submit("over TLS")
            with pytest.raises(APIConnectionError) as caught_query:
                client.query("t-1")
    assert attempts == [2], f"{attempts[0]} handshakes for one submit and one query"
    assert sleep.calls == []
    for error in (caught.value, caught_query.value):
        assert "certificate" in str(error).lower()
        assert sentinel_key not in str(error) and sentinel_key not in repr(error)


def test_s13_certificate_for_another_host_fails_fast(tmp_path: Path, sentinel_key: str) -> None:
    """S13: a trusted certificate for another host name: refused at once, no retry."""
    cert, key = _make_cert(tmp_path, "wrong", "wrong.example", "DNS:wrong.example")
    sleep = FakeSleep()
    trusting = ssl.create_default_context(cafile=str(cert))
    with tls_server(cert, key) as (port, attempts):
        settings = make_settings(f"https://127.0.0.1:{port}", sentinel_key, tmp_path)
        transport = httpx.HTTPTransport(verify=trusting)
        with (
            Client(settings=settings, sleep=sleep, transport=transport) as client,
            pytest.raises(APIConnectionError) as caught,
        ):
            client.submit("over TLS to the wrong host")
    assert attempts == [1] and sleep.calls == []
    assert "certificate" in str(caught.value).lower()


def test_s13_session_with_a_bad_certificate_is_not_sent_and_says_why(
    self_signed: tuple[Path, Path], tmp_path: Path
) -> None:
    """S13: via the session, a bad certificate ends not_sent after one handshake, saying why."""
    with tls_server(*self_signed) as (port, attempts):
        settings = make_settings(f"https://127.0.0.1:{port}", "dk-tls-session", tmp_path)
        with Session(settings=settings) as session:
            task = session.generate("tls session").wait(timeout=20)
    assert task.status is TaskStatus.NOT_SENT
    assert "certificate" in (task.error or "").lower()
    assert attempts == [1]


def test_s13_never_falls_back_to_plain_http_or_no_verification(tmp_path: Path) -> None:
    """S13: after a TLS failure nothing is sent in clear: the server only saw TLS handshakes."""
    received: list[bytes] = []

    def first_bytes(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1)
            with contextlib.suppress(OSError):
                received.append(conn.recv(5))

    with loopback_server(first_bytes, name="tls-first-bytes") as port:
        settings = make_settings(f"https://127.0.0.1:{port}", "dk-no-fallback", tmp_path)
        with (
            Client(settings=settings, sleep=FakeSleep()) as client,
            pytest.raises((APIConnectionError, SubmitOutcomeUnknownError)),
        ):
            client.submit("no fallback")
    assert received, "the client never connected"
    assert all(chunk.startswith(b"\x16\x03") for chunk in received), received


# -- H12: the blocking client bounds the whole exchange ---------------------------------------

_LIMITS = {"connect_timeout": 0.5, "read_timeout": 0.5, "submit_timeout": 0.5}
_WHOLE = 0.5 + 2 * 0.5  # connect + two reads: the most one exchange may take (_total_time)


@contextlib.contextmanager
def dribbling_server(interval: float) -> Iterator[tuple[int, list[bytes]]]:
    """A server that reads each request, then sends its status line one byte at a time.

    Each byte comes well inside the read timeout, so only a bound on the whole exchange
    ends the wait. It stops (and closes) when the test leaves the block.
    """
    requests: list[bytes] = []
    stop = threading.Event()

    def dribble(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                requests.append(conn.recv(65536))
                for byte in itertools.cycle(b"HTTP/1.1 200 OK\r\nX-Slow: "):
                    if stop.wait(interval * random.uniform(0.7, 1.3)):
                        return
                    conn.sendall(bytes([byte]))

    with loopback_server(dribble, name="dribbler", threaded=True, stop=stop) as port:
        yield port, requests


@pytest.mark.parametrize("repeat", range(3))
def test_h12_blocking_client_bounds_a_dribbling_answer(
    tmp_path: Path, sentinel_key: str, repeat: int
) -> None:
    """H12: header bytes every ~0.15 s end query and submit at the whole-exchange limit.

    The query gives up with APITimeoutError; the submit (which may have arrived) is
    SubmitOutcomeUnknownError and was sent once. No thread is left behind.
    """
    baseline = ResourceBaseline()
    with dribbling_server(interval=0.15) as (port, requests):
        settings = make_settings(f"http://127.0.0.1:{port}", sentinel_key, tmp_path, **_LIMITS)
        with Client(
            settings=settings, sleep=FakeSleep(), query_policy=RetryPolicy(max_retries=0)
        ) as client:
            started = time.monotonic()
            with pytest.raises(APITimeoutError, match="no complete answer"):
                client.query("ta-dribble")
            query_took = time.monotonic() - started
            started = time.monotonic()
            with pytest.raises(SubmitOutcomeUnknownError, match="may have been charged"):
                client.submit("a dribbled answer")
            submit_took = time.monotonic() - started
    assert _WHOLE - 0.2 < query_took < _WHOLE + 1.5, query_took
    assert _WHOLE - 0.2 < submit_took < _WHOLE + 1.5, submit_took
    assert [r.split(b" ", 1)[0] for r in requests] == [b"GET", b"POST"]
    assert baseline.growth()[1] <= 0, thread_names()


# -- H17: a refusal that names a task ---------------------------------------------------------


def test_h17_refusal_naming_a_task_is_submit_unknown_with_its_id(tmp_path: Path) -> None:
    """H17: HTTP 200, code 1, yet a task id: submit_unknown with that id, sent once, never again."""
    posts: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(request)
            body = {"code": 1, "message": "failed", "data": {"task_id": "ta-charged"}}
            return httpx.Response(200, json=body)
        return httpx.Response(404, json={"code": 1, "message": "task not found"})

    settings = make_settings("https://api.defapi.org", "dk-refused-but-named", tmp_path)
    with Session(settings=settings, transport=httpx.MockTransport(answer)) as session:
        task = session.generate("named in a refusal").wait(timeout=20)
        assert task.status is TaskStatus.SUBMIT_UNKNOWN, (task.status, task.error)
        assert task.task_id == "ta-charged"
        assert "may have been charged" in (task.error or "")
        assert session.generate("named in a refusal").local_id == task.local_id
        assert session.get("ta-charged").local_id == task.local_id
        assert len(posts) == 1
        # Sent again on purpose, and the server names the same task: that id stays with the
        # first row; the second is submit_unknown too, without an id that is not its own.
        again = session.generate("named in a refusal", force=True).wait(timeout=20)
        assert again.local_id != task.local_id
        assert (again.status, again.task_id) == (TaskStatus.SUBMIT_UNKNOWN, None)
        assert session.get("ta-charged").local_id == task.local_id
    assert len(posts) == 2


# -- H16: text that cannot be sent ------------------------------------------------------------


def test_h16_lone_surrogate_is_refused_before_anything_is_stored_or_sent(tmp_path: Path) -> None:
    """H16: a prompt with half an emoji is a ValidationError; no row is written, nothing sent."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"code": 0, "data": {"task_id": "ta1"}})

    settings = make_settings("https://api.defapi.org", "dk-surrogate", tmp_path)
    with Session(settings=settings, transport=httpx.MockTransport(answer)) as session:
        with pytest.raises(ValidationError, match="lone surrogate") as info:
            session.generate("a cat \ud83d on a mat")
        assert "remove or replace" in str(info.value)
        with pytest.raises(ValidationError, match="lone surrogate"):
            session.map(["a fine cat", "a broken \udc31 cat"])
        assert len(session.history) == 0
    assert sent == []
