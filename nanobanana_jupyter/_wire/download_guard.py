"""The image download guard: result images are never fetched from this machine or its network.

A result URL comes from the server's answer, so it is untrusted (SSRF). Two checks, both
here:

* :func:`check_image_url`, on the URL's text before anything is sent (a clear message): the
  scheme, the host's spelling (non-canonical IPv4 forms are refused outright), and literal
  local addresses;
* :class:`GuardedSyncBackend` and :class:`GuardedAsyncBackend`, the binding check, at the
  connection: the host is resolved once, every address is checked, and the socket is opened
  to an address that was checked. :func:`image_transport` puts them under the image client.

Whether local hosts are allowed depends on ``settings.allow_local_urls`` alone (the sandbox
sets it), never on the base URL: a local proxy in front of the API says nothing about where
images may come from.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from .errors import ProtocolError, safe_url
from .settings import Settings, is_loopback_host
from .timeouts import time_limit

__all__ = [
    "LOCAL_HINT",
    "GuardedAsyncBackend",
    "GuardedSyncBackend",
    "check_image_url",
    "connect_order",
    "image_transport",
    "resolve",
]

LOCAL_HINT = (
    " (your own server on this machine or network? Settings(allow_local_urls=True) or "
    "NANOBANANA_ALLOW_LOCAL_URLS=1 allows it; Session.sandbox() does so for the sandbox)"
)
"""Appended to a refusal of a local image address: the setting that allows it."""

_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# What a failed connect to one address raises: the next address is tried.
_CONNECT_FAILURES = (httpcore.ConnectError, httpcore.ConnectTimeout)


def check_image_url(url: str, *, allow_local: bool) -> None:
    """Refuse result URLs that could reach into this machine or its network (SSRF).

    This is the early, name-level check (a clear message before anything is sent). The
    binding one is at the connection (:func:`connect_order`, used by both guarded backends).
    """
    parts = urlsplit(url)
    if parts.scheme not in ({"https", "http"} if allow_local else {"https"}):
        raise ProtocolError(
            f"refusing to fetch an image from {parts.scheme or '(no scheme)'}: URL; "
            "only https is allowed",
            url=safe_url(url),
        )
    host = parts.hostname
    if not host:
        raise ProtocolError("refusing to fetch an image from a URL with no host")
    if _is_non_canonical_ipv4(host):
        # 2130706433, 127.1, 0x7f000001, 017700000001: resolvers read these as IPv4
        # addresses; no real image host is written so. Refused whatever the settings.
        raise ProtocolError(
            f"refusing to fetch an image from host {host!r}: not a canonical dotted-quad "
            "IPv4 address (decimal, octal, hex and shortened forms are refused)",
            url=safe_url(url),
        )
    if allow_local:
        return
    if is_loopback_host(host) or host.lower().rstrip(".").endswith(".localhost"):
        raise ProtocolError(
            f"refusing to fetch an image from this machine{LOCAL_HINT}", url=safe_url(url)
        )
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return  # a name: checked on every address it resolves to, at the connection
    if _local_reason(address) is not None:
        raise ProtocolError(
            f"refusing to fetch an image from a private, link-local or reserved address"
            f"{LOCAL_HINT}",
            url=safe_url(url),
        )


def _is_non_canonical_ipv4(host: str) -> bool:
    """True for a host that resolvers read as IPv4 but that is not written ``a.b.c.d``.

    As the URL standard does, a host whose last label is a number is an IPv4 address; it
    must then be canonical (four decimal parts, no leading zeros) or it is refused.
    """
    labels = host.rstrip(".").split(".")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return False
    try:
        ipaddress.IPv4Address(host.rstrip("."))
    except ValueError:
        return True
    return host.endswith(".")


def _local_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an image may not be fetched from ``address`` (not a public address), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if address.ipv4_mapped is not None:
            embedded.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.append(address.teredo[1])
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for inner in embedded:
            reason = _local_reason(inner)
            if reason is not None:
                return f"{reason} (inside {address})"
    if address.is_loopback:
        return f"{address} is this machine"
    if not address.is_global or address.is_multicast:
        return f"{address} is a private, link-local or reserved address"
    return None


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (a test seam)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# -- the connect decision, written once for both backends ---------------------------------


def connect_order(host: str, addresses: list[str]) -> list[str]:
    """The addresses to try, in order, for a connection to ``host``; else refuse.

    Every address must be public: one bad answer refuses them all, so no connection is
    opened to a name that resolves to this machine or its network, even in part.
    """
    if not addresses:
        raise httpcore.ConnectError(f"{host} resolves to no address")
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise ProtocolError(
                f"refusing to fetch an image from {host}: it resolves to {text!r}"
            ) from None
        reason = _local_reason(address)
        if reason is not None:
            raise ProtocolError(f"refusing to fetch an image from {host}: {reason}{LOCAL_HINT}")
    return addresses


def _lookup_failed(host: str, exc: OSError) -> httpcore.ConnectError:
    return httpcore.ConnectError(f"cannot resolve {host}: {exc}")


def _unix_socket_refused() -> ProtocolError:
    return ProtocolError("refusing to fetch an image over a Unix socket")


# -- the two backends: the same decisions, blocking and awaited I/O -----------------------


class GuardedSyncBackend(httpcore.NetworkBackend):
    """Connects image downloads only to public addresses, checked at the connection.

    The host is resolved once, every address is checked, and the socket is opened to an
    address that was checked, so a name that answers a public address to a first lookup
    and a loopback one to a second (DNS rebinding) gets no second lookup. TLS still
    verifies the certificate against the host name (httpcore passes the origin's name as
    ``server_hostname``), and the Host header is the URL's.
    """

    def __init__(
        self,
        inner: httpcore.NetworkBackend | None = None,
        *,
        resolve: Callable[[str, int], list[str]] | None = None,
    ) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._resolve = resolve

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        lookup = self._resolve or resolve
        try:
            addresses = lookup(host, port)
        except OSError as exc:
            raise _lookup_failed(host, exc) from exc
        failures: list[Exception] = []
        for address in connect_order(host, addresses):
            try:
                return self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except _CONNECT_FAILURES as exc:
                failures.append(exc)
        raise failures[-1]

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise _unix_socket_refused()

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    """The asyncio twin of :class:`GuardedSyncBackend` (the lookup runs in a thread)."""

    def __init__(
        self,
        inner: httpcore.AsyncNetworkBackend | None = None,
        *,
        resolve: Callable[[str, int], list[str]] | None = None,
    ) -> None:
        self._inner = inner or httpcore.AnyIOBackend()
        self._resolve = resolve

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        lookup = self._resolve or resolve
        loop = asyncio.get_running_loop()
        try:
            async with time_limit(timeout):
                addresses = await loop.run_in_executor(None, lookup, host, port)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(
                f"resolving {host} took longer than {timeout} s"
            ) from None
        except OSError as exc:
            raise _lookup_failed(host, exc) from exc
        failures: list[Exception] = []
        for address in connect_order(host, addresses):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except _CONNECT_FAILURES as exc:
                failures.append(exc)
        raise failures[-1]

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise _unix_socket_refused()

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# -- the image client's transport ----------------------------------------------------------


def _env_proxies() -> bool:
    """True when the environment routes http(s) through a proxy (which resolves names)."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def _install_backend(
    transport: Any, backend: httpcore.NetworkBackend | httpcore.AsyncNetworkBackend
) -> Any:
    """Put ``backend`` under an httpx transport's connection pool.

    httpx (up to 0.28) takes no network backend; its pool (httpcore) does, as the attribute
    set here. Should a future httpx change that shape, this fails at construction (closed)
    rather than downloading without the guard.
    """
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, (httpcore.ConnectionPool, httpcore.AsyncConnectionPool)) or not (
        hasattr(pool, "_network_backend")
    ):
        raise RuntimeError("this httpx version hides its connection pool; cannot guard downloads")
    # httpx offers no public hook for a network backend; the shape is checked just above.
    pool._network_backend = backend  # noqa: SLF001
    return transport


def image_transport(
    settings: Settings, transport: Any, limits: httpx.Limits, *, blocking: bool
) -> Any:
    """The transport for image hosts: the caller's, or one that refuses local addresses.

    None (httpx's default, with environment proxies) when local URLs are allowed, or when an
    environment proxy is set: a proxy resolves the names itself, so only the URL check
    applies there.
    """
    if transport is not None or settings.allow_local_urls or _env_proxies():
        return transport
    if blocking:
        return _install_backend(httpx.HTTPTransport(limits=limits), GuardedSyncBackend())
    return _install_backend(httpx.AsyncHTTPTransport(limits=limits), GuardedAsyncBackend())
