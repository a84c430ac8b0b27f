"""Starting a local sandbox server for a session: the core's one use of the sandbox.

``Session.sandbox()`` (README, the notebooks, ``%nanobanana sandbox``) calls
:func:`start_sandbox`. The sandbox is a peer of the client, not a layer under it: it imports
none of the client's code, and the client imports only its public package, here, lazily.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from nanobanana_jupyter._wire.settings import Settings, default_data_dir

__all__ = ["LocalServer", "sandbox_settings", "start_sandbox"]


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


def sandbox_settings(
    server: LocalServer, data_dir: str | os.PathLike[str] | None, model: str | None
) -> Settings:
    """Settings for a session on ``server``: its history kept apart from real tasks (in
    ``<data dir>/sandbox`` unless ``data_dir`` is given)."""
    if data_dir is None:
        base = Settings.resolve(colab=lambda name: None, sandbox=False).data_dir
        base = base or default_data_dir()
        data_dir = Path(base) / "sandbox"
    # The sandbox serves its images from 127.0.0.1: the one place local result URLs are
    # allowed without being asked for (a loopback base URL alone does not).
    return Settings.resolve(
        api_key=server.api_key,
        base_url=server.url,
        data_dir=data_dir,
        model=model,
        allow_local_urls=True,
        sandbox=True,
    )
