"""H9: result URLs never reach this machine or its network, whatever the host looks like.

A TCP listener on 127.0.0.1 counts the connections it accepts; every download aimed at it
through a name, an unusual IPv4 spelling, a resolver that answers loopback, or a redirect
must fail with ProtocolError and leave the count at zero. A control run with
``allow_local_urls=True`` proves the listener is reachable, so the zero means something.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from nanobanana_jupyter import AsyncClient, Client, NotFoundError, ProtocolError, Settings
from nanobanana_jupyter._wire import download_guard
from tests.reliability.conftest import loopback_server

pytestmark = pytest.mark.integration


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self, conn: socket.socket) -> None:
        with self.lock:
            self.count += 1
        with conn:
            conn.settimeout(1.0)
            try:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass


@pytest.fixture
def listener() -> Iterator[tuple[int, Counter]]:
    counter = Counter()
    with loopback_server(counter, name="h9-listener") as port:
        yield port, counter


def strict_settings() -> Settings:
    settings = Settings.resolve(api_key="dk-test", environ={}, colab=lambda n: None)
    assert not settings.allow_local_urls
    return settings.replace(read_timeout=2.0, connect_timeout=2.0)


def local_names() -> list[str]:
    names = ["localhost"]
    own = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(own, 443)}
    except OSError:
        addresses = set()
    if addresses and all(a.startswith("127.") or a == "::1" for a in addresses):
        names.append(own)  # this machine's own name resolves to loopback here
    return names


HOST_FORMS = ["2130706433", "127.1", "0x7f000001", "017700000001", "[::ffff:127.0.0.1]"]


def urls(port: int) -> list[str]:
    hosts = [*local_names(), *HOST_FORMS, "images.example.test"]
    return [f"https://{host}:{port}/a.png" for host in hosts]


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """``images.example.test`` resolves to 127.0.0.1, as a hostile DNS name would."""
    real = download_guard.resolve

    def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "images.example.test" else real(host, port)

    monkeypatch.setattr(download_guard, "resolve", resolve)


def test_the_blocking_client_never_reaches_the_listener(listener: tuple[int, Counter]) -> None:
    """Each local-looking or loopback-resolving host is refused; no connection is accepted."""
    port, counter = listener
    with Client(settings=strict_settings()) as client:
        for url in urls(port):
            with pytest.raises(ProtocolError, match="refusing"):
                client.download(url)
    assert counter.count == 0


def test_the_async_client_never_reaches_the_listener(listener: tuple[int, Counter]) -> None:
    """The asyncio client (the session's) refuses the same hosts at the connection."""
    port, counter = listener

    async def main() -> None:
        async with AsyncClient(settings=strict_settings()) as client:
            for url in urls(port):
                with pytest.raises(ProtocolError, match="refusing"):
                    await client.download(url)

    asyncio.run(main())
    assert counter.count == 0


def test_the_listener_is_reachable_when_local_urls_are_allowed(
    listener: tuple[int, Counter],
) -> None:
    """Control: with allow_local_urls, the same client does connect (the counter works)."""
    port, counter = listener
    settings = strict_settings().replace(allow_local_urls=True)
    with Client(settings=settings) as client, pytest.raises(NotFoundError):
        client.download(f"http://localhost:{port}/a.png")  # the listener answers 404
    assert counter.count >= 1
