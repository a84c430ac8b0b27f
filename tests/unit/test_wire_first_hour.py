"""Issue 16 on the wire: the unknown-model warning (once, one line), image sizes in any case,
and the User-Agent sent to the API and to image hosts."""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell

from nanobanana_jupyter import (
    AsyncClient,
    Client,
    GenerationRequest,
    Session,
    Settings,
    UnknownModelWarning,
    ValidationError,
    __version__,
)
from nanobanana_jupyter._core.defaults import set_default_session
from nanobanana_jupyter._views.magic import NanoBananaMagics
from nanobanana_jupyter._wire import models
from tests.conftest import SENTINEL_KEY
from tests.helpers.mock_api import Accepting, mock_session

# -- the unknown-model warning ---------------------------------------------------------


@pytest.fixture
def api() -> Accepting:
    return Accepting()


@pytest.fixture
def session(api: Accepting, tmp_path: Path) -> Iterator[Session]:
    s = mock_session(tmp_path / "data", api)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def as_a_user_sees_it() -> Iterator[None]:
    """Warnings as in a plain Python process or a kernel: the default filters (pytest turns
    warnings into errors here)."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        yield


def _unknown_model_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "unknown model" in r.getMessage()]


@pytest.mark.usefixtures("as_a_user_sees_it")
def test_an_unknown_model_is_told_once_in_one_clean_line(
    session: Session, api: Accepting, caplog: pytest.LogCaptureFixture, capsys: Any
) -> None:
    """Two generate() calls and a map() with the same unknown model: one line, naming the
    package, the model and the known ones, with no file name or source line; both sent."""
    with caplog.at_level(logging.WARNING, logger="nanobanana_jupyter"):
        session.generate("a cat", model="acme/first-hour")
        session.generate("a dog", model="acme/first-hour")
        session.map(["a fish"], model="acme/first-hour")
        # Anything that touches the warning filters (the panel, many libraries) used to
        # reset Python's per-line memory, and the same warning came back.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
        session.generate("a bird", model="acme/first-hour")
    (line,) = _unknown_model_lines(caplog)
    assert line.startswith("nanobanana: unknown model 'acme/first-hour'; sending it anyway")
    assert "google/gempix2" in line
    assert "\n" not in line and ".py" not in line and "UnknownModelWarning" not in line
    assert "acme/first-hour" not in capsys.readouterr().err  # not a second, raw copy
    assert api.submitted.wait(10)


@pytest.mark.usefixtures("as_a_user_sees_it")
def test_each_unknown_model_is_told_once(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="nanobanana_jupyter"):
        for model in ("acme/one", "acme/two", "acme/one", "google/gempix2", "acme/two"):
            session.generate(f"a cat by {model}", model=model)
    lines = _unknown_model_lines(caplog)
    assert len(lines) == 2 and "'acme/one'" in lines[0] and "'acme/two'" in lines[1]


@pytest.mark.usefixtures("as_a_user_sees_it")
def test_an_ignored_unknown_model_warning_is_silent_and_not_yet_counted(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """A user's (or the panel's) ``ignore`` filter for the category silences it; the next
    unfiltered use still tells it once."""
    with caplog.at_level(logging.WARNING, logger="nanobanana_jupyter"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownModelWarning)
            session.generate("a cat", model="acme/quiet")
        assert _unknown_model_lines(caplog) == []
        session.generate("a dog", model="acme/quiet")
        session.generate("a fox", model="acme/quiet")
    assert len(_unknown_model_lines(caplog)) == 1


def test_an_error_filter_makes_it_an_error_before_anything_is_sent(
    session: Session, api: Accepting
) -> None:
    """``-W error`` (pytest's own setting here) still raises the category, every time."""
    for _ in range(2):
        with pytest.raises(UnknownModelWarning, match="unknown model 'acme/strict'"):
            session.generate("a cat", model="acme/strict")
    assert api.submits == []


def test_filters_by_message_or_module_apply_too(caplog: pytest.LogCaptureFixture) -> None:
    """Filters are matched as Python matches them: on the text, and on the caller's module
    (the first frame outside this package)."""
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="nanobanana_jupyter"):
        warnings.resetwarnings()
        warnings.filterwarnings("ignore", message="nanobanana: unknown model 'acme/hush'")
        warnings.filterwarnings("ignore", category=UnknownModelWarning, module=__name__)
        GenerationRequest(prompt="x", model="acme/hush").validated()
        GenerationRequest(prompt="x", model="acme/mine").validated()
        assert _unknown_model_lines(caplog) == []
        warnings.resetwarnings()
        GenerationRequest(prompt="x", model="acme/mine").validated()
    assert len(_unknown_model_lines(caplog)) == 1


def test_the_terminal_command_tells_an_unknown_model_in_one_line(tmp_path: Path) -> None:
    """`nanobanana --sandbox generate ... --model foo -n 2`: one stderr line about it."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanobanana_jupyter._views.cli",
            "--sandbox",
            "generate",
            "x",
            "--model",
            "foo",
            "-n",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NANOBANANA_DATA_DIR": str(tmp_path / "data")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "foo" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nanobanana: unknown model 'foo'; sending it anyway"), lines
    assert "session.py" not in result.stderr and "request = " not in result.stderr


def test_a_script_tells_it_once_even_after_the_filters_change(tmp_path: Path) -> None:
    """A plain Python script (no pytest, no logging set up): one line on stderr."""
    script = (
        "import warnings\n"
        "from nanobanana_jupyter import GenerationRequest\n"
        "GenerationRequest(prompt='x', model='foo').validated()\n"
        "with warnings.catch_warnings():\n"
        "    pass\n"
        "GenerationRequest(prompt='y', model='foo').validated()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "nanobanana: unknown model 'foo'; sending it anyway (known: "
        + ", ".join(models.KNOWN_MODELS)
        + ")"
    ]


class Refusing(Accepting):
    """Notes every submit and refuses it (the task ends at once: nothing keeps running)."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        super().__call__(request)
        return httpx.Response(400, json={"code": 400, "message": "refused by the test"})


@pytest.fixture
def magic(tmp_path: Path) -> Iterator[tuple[InteractiveShell, Refusing]]:
    """The magic in-process (InteractiveShell) over a session whose submits are refused."""
    api = Refusing()
    s = mock_session(tmp_path / "magic-data", api)
    old = set_default_session(s)
    shell = InteractiveShell.instance()
    shell.register_magics(NanoBananaMagics)
    try:
        yield shell, api
    finally:
        for task in s.tasks:
            task.wait(10)
        set_default_session(old)
        s.close()


@pytest.mark.usefixtures("as_a_user_sees_it")
def test_the_magic_tells_an_unknown_model_once(
    magic: tuple[InteractiveShell, Refusing], caplog: pytest.LogCaptureFixture
) -> None:
    """Two magic lines with the same unknown model: one line; both were sent."""
    shell, api = magic
    with caplog.at_level(logging.WARNING, logger="nanobanana_jupyter"):
        shell.run_line_magic("nanobanana", "--model acme/magic --wait a cat")
        shell.run_line_magic("nanobanana", "--model acme/magic --wait a dog")
    assert len(_unknown_model_lines(caplog)) == 1
    assert [s["model"] for s in api.submits] == ["acme/magic", "acme/magic"]


# -- image sizes in any case ----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "sent"),
    [("1k", "1K"), ("2k", "2K"), ("4k", "4K"), (" 2k ", "2K"), ("4K\n", "4K"), ("2K", "2K")],
)
def test_an_image_size_in_any_case_is_sent_in_the_documented_form(
    session: Session, api: Accepting, given: str, sent: str
) -> None:
    request = GenerationRequest(prompt="a cat", image_size=given).validated()
    assert request.image_size == sent
    assert request.to_payload()["image_size"] == sent
    session.generate("a cat", image_size=given)
    assert api.submitted.wait(10)
    assert api.submits[-1]["image_size"] == sent


def test_map_sends_the_documented_size(session: Session, api: Accepting) -> None:
    tasks = session.map(["a cat", "a dog"], image_size="4k")
    for task in tasks:
        assert task.record.image_size == "4K"
    deadline = time.monotonic() + 10
    while len(api.submits) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # the engine thread sends them
    assert sorted(s["image_size"] for s in api.submits) == ["4K", "4K"]  # type: ignore[type-var]


def test_2k_and_2K_are_one_request_reused(session: Session, api: Accepting) -> None:
    """The fingerprint is taken of the normalised request: a re-run with another case reuses
    the first task instead of paying again."""
    assert (
        GenerationRequest(prompt="a cat", image_size="2k").validated().fingerprint()
        == GenerationRequest(prompt="a cat", image_size=" 2K").validated().fingerprint()
    )
    first = session.generate("a cat", image_size="2k")
    assert api.submitted.wait(10)
    again = session.generate("a cat", image_size="2K")
    assert again.local_id == first.local_id
    assert len(api.submits) == 1


@pytest.mark.parametrize("bad", ["3k", "", "2 K", 2])
def test_a_wrong_image_size_is_one_clear_error(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"image size .* is not one of 1K, 2K, 4K") as info:
        GenerationRequest(prompt="a cat", image_size=bad).validated()  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_the_magic_takes_a_lower_case_size(magic: tuple[InteractiveShell, Refusing]) -> None:
    shell, api = magic
    shell.run_line_magic("nanobanana", "--size 2k --wait a cat")
    assert [s["image_size"] for s in api.submits] == ["2K"]


def test_the_terminal_command_takes_a_lower_case_size(tmp_path: Path) -> None:
    """`--size 2k` is accepted, and the sandbox (which takes only 1K/2K/4K) accepts what is
    sent; the history keeps 2K."""
    env = {**os.environ, "NANOBANANA_DATA_DIR": str(tmp_path / "data")}
    cmd = [sys.executable, "-m", "nanobanana_jupyter._views.cli", "--sandbox"]
    result = subprocess.run(
        [*cmd, "generate", "a cat", "--size", "2k"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    bad = subprocess.run(
        [*cmd, "generate", "a cat", "--size", "3k"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert bad.returncode == 2
    assert "1K" in bad.stderr and "Traceback" not in bad.stderr
    with Session.sandbox(data_dir=tmp_path / "data" / "sandbox") as s:
        sizes = [r.image_size for r in s.history]
    assert sizes == ["2K"]


# -- the User-Agent ---------------------------------------------------------------------


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (2, 2), "yellow").save(out, format="PNG")
    return out.getvalue()


PNG = _png()


class Recorded(http.server.ThreadingHTTPServer):
    """A tiny API and image host on 127.0.0.1 that notes each request's path and headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Recorded

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _note(self) -> None:
        self.server.seen.append(
            (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        )

    def do_POST(self) -> None:
        self._note()
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"code": 0, "message": "ok", "data": {"task_id": "ta1"}})
        self._answer(200, body.encode(), "application/json")

    def do_GET(self) -> None:
        self._note()
        if self.path.startswith("/api/task/query"):
            data = {
                "task_id": "ta1",
                "status": "success",
                "consumed": "0.5",
                "result": [{"image": f"{self.server.url}/hop/1.png"}],
            }
            body = json.dumps({"code": 0, "message": "ok", "data": data})
            self._answer(200, body.encode(), "application/json")
        elif self.path.startswith("/hop/"):
            self._answer(302, b"", "text/plain", Location="/img/1.png")
        else:
            self._answer(200, PNG, "image/png")


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    server = Recorded()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _settings(server: Recorded, tmp_path: Path) -> Settings:
    return Settings.resolve(
        api_key=SENTINEL_KEY,
        base_url=server.url,
        data_dir=tmp_path / "data",
        allow_local_urls=True,
        environ={},
        colab=lambda name: None,
    )


def _check_agents(seen: list[tuple[str, str, dict[str, str]]]) -> None:
    api = [h for _, path, h in seen if path.startswith("/api/")]
    images = [h for _, path, h in seen if not path.startswith("/api/")]
    assert len(api) >= 2 and len(images) == 2, seen  # submit, query; the hop and the image
    for headers in api:
        assert (
            headers["user-agent"] == f"nanobanana-jupyter/{__version__} httpx/{httpx.__version__}"
        )
    for headers in images:
        assert headers["user-agent"] == f"nanobanana-jupyter/{__version__}"
        assert "authorization" not in headers


def test_the_client_names_itself_to_the_api_and_to_image_hosts(
    recorded: Recorded, tmp_path: Path
) -> None:
    with Client(settings=_settings(recorded, tmp_path)) as client:
        task_id = client.submit("a cat")
        snapshot = client.query(task_id)
        data, media_type = client.download(snapshot.images[0])
    assert media_type == "image/png" and data == PNG
    _check_agents(recorded.seen)


def test_the_async_client_names_itself_too(recorded: Recorded, tmp_path: Path) -> None:
    async def run() -> bytes:
        async with AsyncClient(settings=_settings(recorded, tmp_path)) as client:
            task_id = await client.submit("a cat")
            snapshot = await client.query(task_id)
            data, _ = await client.download(snapshot.images[0])
            return data

    assert asyncio.run(run()) == PNG
    _check_agents(recorded.seen)


def test_a_session_names_itself_on_every_request(recorded: Recorded, tmp_path: Path) -> None:
    with Session(settings=_settings(recorded, tmp_path)) as session:
        task = session.generate("a cat")
        task.wait(30)
        assert task.paths
    _check_agents(recorded.seen)
