"""Fixtures and helpers for the reliability matrix (research/reliability.md section 7).

Everything runs on 127.0.0.1: a fast sandbox (time_scale 0.01, 64 px images), sessions with
short timeouts, and the in-process fault proxy. Every helper loop is bounded in time.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter import PollPolicy, Session, Settings
from nanobanana_jupyter.sandbox import Sandbox
from tests.reliability.faultproxy import FaultProxy

SCALE = 0.01
"""Sandbox and poll clocks run 100x faster than real time."""


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fast sandbox; at teardown its ledger proves nothing was charged twice."""
    with Sandbox(time_scale=SCALE, max_side=64) as server:
        yield server
        assert server.ledger.double_charges() == []


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[FaultProxy]:
    """A clean fault proxy in front of the sandbox's API origin."""
    with FaultProxy(("127.0.0.1", sandbox.port)) as fp:
        yield fp


def make_settings(base_url: str, api_key: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for one test: no environment, no .env, no Colab; overrides applied.

    Local result URLs are allowed: the sandbox serves its images from 127.0.0.1.
    """
    settings = Settings.resolve(
        api_key=api_key,
        base_url=base_url,
        data_dir=data_dir,
        environ={},
        colab=lambda n: None,
        allow_local_urls=True,
    )
    return settings.replace(**overrides) if overrides else settings


def make_session(
    sb: Sandbox,
    data_dir: Path,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    settings: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Session:
    """A session on the sandbox (or on ``base_url``, e.g. a proxy), polling on its clock."""
    resolved = make_settings(
        base_url or sb.url, api_key or sb.api_key, data_dir, **(settings or {})
    )
    kwargs.setdefault("poll_policy", PollPolicy().scaled(SCALE))
    return Session(settings=resolved, **kwargs)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` every 10 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")


@contextlib.contextmanager
def loopback_server(
    handle: Callable[[socket.socket], None],
    *,
    name: str,
    threaded: bool = False,
    stop: threading.Event | None = None,
) -> Iterator[int]:
    """A TCP listener on 127.0.0.1; yields its port. ``handle(conn)`` gets each connection.

    The accept loop runs in a thread (each ``handle`` in one more when ``threaded``); on exit
    ``stop`` is set and every thread is joined (bounded). ``handle`` closes ``conn``.
    """
    stop = stop or threading.Event()
    workers: list[threading.Thread] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.05)

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                if threaded:
                    worker = threading.Thread(target=handle, args=(conn,), daemon=True)
                    workers.append(worker)
                    worker.start()
                else:
                    handle(conn)

        acceptor = threading.Thread(target=accept, name=name, daemon=True)
        acceptor.start()
        try:
            yield int(listener.getsockname()[1])
        finally:
            stop.set()
            acceptor.join(5)
            for worker in workers:
                worker.join(5)


def open_fds() -> int:
    """File descriptors open in this process (Linux /proc)."""
    return len(os.listdir("/proc/self/fd"))


def thread_names() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


class ResourceBaseline:
    """Open file descriptors and threads, before and after: growth means a leak."""

    def __init__(self) -> None:
        gc.collect()
        self.fds = open_fds()
        self.threads = threading.active_count()
        self.names = thread_names()

    def growth(self, settle: float = 5.0) -> tuple[int, int]:
        """(fd growth, thread growth), after letting closing threads finish (bounded)."""
        deadline = time.monotonic() + settle
        while True:
            gc.collect()
            fds, threads = open_fds() - self.fds, threading.active_count() - self.threads
            if (fds <= 0 and threads <= 0) or time.monotonic() > deadline:
                return fds, threads
            time.sleep(0.05)


def stored_bytes(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under ``root`` with its bytes (store, WAL, images, temporary files)."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()
