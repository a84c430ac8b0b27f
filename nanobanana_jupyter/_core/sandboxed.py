"""Starting a local sandbox server for a session: the core's one use of the sandbox.

``Session.sandbox()`` (README, the notebooks, ``%nanobanana sandbox``) calls
:func:`start_sandbox`. The sandbox is a peer of the client, not a layer under it: it imports
none of the client's code, and the client imports only its public package, here, lazily.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["LocalServer", "start_sandbox"]


class LocalServer(Protocol):
    """What a session needs of a server it started: where it is, its key, how to stop it."""

    @property
    def url(self) -> str: ...

    @property
    def api_key(self) -> str: ...

    def stop(self) -> None: ...


def start_sandbox(time_scale: float) -> LocalServer:
    """A sandbox server on 127.0.0.1 that accepts any key, started and ready."""
    from nanobanana_jupyter.sandbox import Sandbox

    server = Sandbox(time_scale=time_scale, accept_any_key=True)
    server.start()
    return server
