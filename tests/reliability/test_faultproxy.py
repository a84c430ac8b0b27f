"""The fault proxy itself: each toxic does what it says, and the proxy always stops."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.reliability.conftest import ResourceBaseline, loopback_server
from tests.reliability.faultproxy import CLEAN, FaultProxy, Plan, Toxics

BODY = bytes(range(256)) * 8  # 2048 bytes
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY


@contextlib.contextmanager
def upstream() -> Iterator[tuple[int, list[bytes]]]:
    """A keep-alive HTTP server on loopback answering every request with RESPONSE."""
    seen: list[bytes] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buffer = b""
        with conn:
            while not stop.is_set():
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    request, buffer = buffer.split(b"\r\n\r\n", 1)
                    seen.append(request.split(b"\r\n", 1)[0])
                    try:
                        conn.sendall(RESPONSE)
                    except OSError:
                        return

    with loopback_server(serve, name="upstream", threaded=True, stop=stop) as port:
        yield port, seen


def exchange(
    port: int, path: str = "/", *, sock: socket.socket | None = None, timeout: float = 5.0
) -> tuple[bytes, str]:
    """Send one GET and read until the whole response, EOF, a reset or the timeout."""
    own = sock is None
    if sock is None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionResetError:  # refused by the proxy before connect() returned
            return b"", "reset"
    sock.settimeout(timeout)
    received = b""
    outcome = "complete"
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        while len(received) < len(RESPONSE):
            chunk = sock.recv(65536)
            if not chunk:
                outcome = "eof"
                break
            received += chunk
    except (ConnectionResetError, BrokenPipeError):
        outcome = "reset"
    except TimeoutError:
        outcome = "timeout"
    finally:
        if own:
            sock.close()
    return received, outcome


def test_clean_plan_passes_bytes_unchanged_both_ways() -> None:
    """A clean proxy forwards requests and answers byte for byte, on keep-alive too."""
    with upstream() as (port, seen), FaultProxy(("127.0.0.1", port)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            for _ in range(3):
                assert exchange(proxy.port, "/a", sock=sock) == (RESPONSE, "complete")
        assert seen == [b"GET /a HTTP/1.1"] * 3
        assert proxy.accepted == 1


@pytest.mark.parametrize(
    ("toxics", "at_least", "at_most"),
    [
        (Toxics(latency=0.3), 0.3, 2.0),
        (Toxics(latency=0.3, jitter=0.1), 0.2, 2.0),
        (Toxics(slice_size=256, slice_delay=0.05), 0.3, 3.0),
        (Toxics(bandwidth=4096.0), 0.4, 3.0),
    ],
)
def test_slowing_toxics_delay_but_deliver_everything(
    toxics: Toxics, at_least: float, at_most: float
) -> None:
    """Latency, slicing and bandwidth make the answer late but complete."""
    with upstream() as (port, _), FaultProxy(("127.0.0.1", port), plan=Plan(down=toxics)) as proxy:
        started = time.monotonic()
        assert exchange(proxy.port) == (RESPONSE, "complete")
        assert at_least <= time.monotonic() - started <= at_most


def test_reset_after_n_bytes_resets_the_client() -> None:
    """reset_after: the client gets at most N bytes, then a connection reset."""
    plan = Plan(down=Toxics(reset_after=100))
    with upstream() as (port, _), FaultProxy(("127.0.0.1", port), plan=plan) as proxy:
        received, outcome = exchange(proxy.port)
        assert outcome in ("reset", "eof") and len(received) <= 100
        wait = time.monotonic() + 2
        while proxy.stats[0].outcome == "open" and time.monotonic() < wait:
            time.sleep(0.01)
        assert proxy.stats[0].outcome == "reset"


def test_close_after_n_bytes_ends_the_answer_early() -> None:
    """close_after: exactly N bytes arrive, then a clean end of stream."""
    plan = Plan(down=Toxics(close_after=100))
    with upstream() as (port, _), FaultProxy(("127.0.0.1", port), plan=plan) as proxy:
        assert exchange(proxy.port) == (RESPONSE[:100], "eof")


def test_blackhole_upstream_swallows_the_request() -> None:
    """blackhole (up): the server never sees the request and the client never gets a byte."""
    plan = Plan(up=Toxics(blackhole=True))
    with upstream() as (port, seen), FaultProxy(("127.0.0.1", port), plan=plan) as proxy:
        assert exchange(proxy.port, timeout=0.3) == (b"", "timeout")
        assert seen == []
        assert proxy.stats[0].dropped_bytes > 0


def test_match_and_limit_fault_only_the_named_exchanges() -> None:
    """match + limit: only the first 2 requests starting with the bytes are faulted."""
    plan = Plan(match=b"GET /slow", down=Toxics(blackhole=True), limit=2)
    with upstream() as (port, _), FaultProxy(("127.0.0.1", port), plan=plan) as proxy:
        assert exchange(proxy.port, "/fast") == (RESPONSE, "complete")
        assert exchange(proxy.port, "/slow", timeout=0.3)[1] == "timeout"
        assert exchange(proxy.port, "/slow", timeout=0.3)[1] == "timeout"
        assert exchange(proxy.port, "/slow") == (RESPONSE, "complete")
        assert sum(s.faulted_exchanges for s in proxy.stats) == 2


def test_plans_switch_at_runtime_and_per_connection() -> None:
    """set() heals open connections and applies to new ones; a function picks per index."""
    with upstream() as (port, _), FaultProxy(("127.0.0.1", port)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            assert exchange(proxy.port, sock=sock)[1] == "complete"
            proxy.set(Plan(down=Toxics(close_after=10)))
            assert exchange(proxy.port, sock=sock) == (RESPONSE[:10], "eof")
        proxy.set(CLEAN)
        assert exchange(proxy.port)[1] == "complete"
        proxy.set(lambda index: Plan(down=Toxics(close_after=5)) if index % 2 else CLEAN)
        outcomes = [exchange(proxy.port)[1] for _ in range(4)]
        assert sorted(outcomes) == ["complete", "complete", "eof", "eof"]


def test_connection_cap_and_stop_are_bounded() -> None:
    """Connections beyond the cap are refused; stop() ends held ones at once, leaking nothing."""
    with upstream() as (port, _):
        baseline = ResourceBaseline()
        proxy = FaultProxy(
            ("127.0.0.1", port), plan=Plan(down=Toxics(blackhole=True)), max_connections=2
        )
        proxy.start()
        held = [socket.create_connection(("127.0.0.1", proxy.port), timeout=2) for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            deadline = time.monotonic() + 2
            while proxy.active < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert exchange(proxy.port, timeout=1)[1] in ("reset", "eof")
            started = time.monotonic()
            proxy.stop()
            assert time.monotonic() - started < 3
            for sock in held:
                assert exchange(proxy.port, sock=sock, timeout=1)[1] in ("reset", "eof")
        finally:
            proxy.stop()
            for sock in held:
                sock.close()
        assert [s.outcome for s in proxy.stats].count("refused") == 1
    fds, threads = baseline.growth()
    assert fds <= 0 and threads <= 0, (fds, threads)


def test_the_proxy_refuses_non_loopback_upstreams() -> None:
    """The proxy only forwards to loopback, so no test can reach the network through it."""
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(("192.0.2.1", 80))
