"""An in-process stand-in of the API for unit tests: no server, no clock.

:class:`Accepting` accepts every submit with a new task id and answers every query "in
progress"; :func:`mock_session` is a session over it with the sentinel key.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx

from nanobanana_jupyter import Session, Settings
from tests.conftest import SENTINEL_KEY


class Accepting:
    """Accepts every submit with a new task id (noting it); every query says "in_progress"."""

    def __init__(self) -> None:
        self.submits: list[dict[str, object]] = []
        self.submitted = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            with self._lock:
                self.submits.append(json.loads(request.read()))
                task_id = f"ta{len(self.submits)}"
            self.submitted.set()
            return httpx.Response(200, json={"code": 0, "data": {"task_id": task_id}})
        task_id = request.url.params.get("task_id", "")
        body = {"code": 0, "data": {"task_id": task_id, "status": "in_progress"}}
        return httpx.Response(200, json=body)


def mock_session(data_dir: Path, api: Accepting | None = None, **settings: Any) -> Session:
    """A session over ``api`` (a new :class:`Accepting` by default), keyed with the sentinel
    key unless ``api_key`` is given, its history in ``data_dir``."""
    resolved = Settings.resolve(
        api_key=settings.pop("api_key", SENTINEL_KEY),
        base_url="https://api.example.test",
        data_dir=data_dir,
        environ={},
        colab=lambda name: None,
        **settings,
    )
    return Session(settings=resolved, transport=httpx.MockTransport(api or Accepting()))
