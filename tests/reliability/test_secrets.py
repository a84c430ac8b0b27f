"""Secrets, rows K1, K2, K3, K5 and K6: the sentinel key never shows, never lands on disk.

K1 here is the ``caplog`` variant at DEBUG (the nbclient variant is
tests/kernel/test_magic_kernel.py); K3 points HOME and the data directory at a temporary
directory and greps every byte written there.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pickle
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import nanobanana_jupyter
from nanobanana_jupyter import (
    AsyncClient,
    Client,
    MissingAPIKeyError,
    NanoBananaError,
    PollPolicy,
    SecretKey,
    Session,
    Settings,
    TaskStatus,
)
from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan
from tests.reliability.conftest import SCALE, make_session, make_settings, stored_bytes

pytestmark = pytest.mark.integration

PACKAGE = Path(nanobanana_jupyter.__file__).parent


def _leaks(text: str, key: str) -> bool:
    """The key, or its distinctive tail, appears in the text."""
    return key in text or key[3:] in text


# -- K1 (caplog) and K3 (files under HOME) -----------------------------------------------------


def test_k1_k3_debug_logs_errors_reprs_and_files_never_hold_the_key(
    tmp_path: Path,
    sentinel_key: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """K1/K3: DEBUG logs, errors, reprs and every file under HOME never hold the key."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    data_dir = home / ".local" / "share" / "nanobanana-jupyter"
    shown: list[str] = []
    with (
        caplog.at_level(logging.DEBUG),
        Sandbox(time_scale=SCALE, max_side=64, api_key=sentinel_key) as sb,
    ):
        for name in ("httpx", "httpcore", "nanobanana_jupyter", "asyncio"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        sb.plan(TaskPlan())
        sb.plan(TaskPlan(outcome="failed", reason=f"quota for key {sentinel_key} exhausted"))
        sb.plan(TaskPlan(stuck=True))
        sb.faults.add("query", Fault.SERVER_ERROR_HTML)
        with make_session(
            sb,
            data_dir,
            api_key=sentinel_key,
            settings={"deadline": 0.5, "submit_timeout": 0.3},
        ) as session:
            ok = session.generate("succeeds").wait(timeout=15)
            failed = session.generate("fails").wait(timeout=15)
            stuck = session.generate("times out").wait(timeout=15)
            sb.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
            unknown = session.generate("answer lost").wait(timeout=15)
            sb.faults.add("submit", Fault.UNAUTHORIZED)
            refused = session.generate("key refused").wait(timeout=15)
            statuses = [t.status for t in (ok, failed, stuck, unknown, refused)]
            assert statuses == [
                TaskStatus.SUCCESS,
                TaskStatus.FAILED,
                TaskStatus.TIMED_OUT,
                TaskStatus.SUBMIT_UNKNOWN,
                TaskStatus.NOT_SENT,
            ]
            for task in (ok, failed, stuck, unknown, refused):
                error = task.exception()
                shown += [
                    repr(task),
                    str(task.record),
                    json.dumps(task.record.to_dict(), default=str),
                ]
                shown.append(json.dumps(task._repr_mimebundle_(), default=str))
                if error is not None:
                    shown += [str(error), repr(error), repr(getattr(error, "__dict__", {}))]
            shown += [repr(session), repr(session.settings), str(session.settings.describe())]
            shown += [repr(session.history), session.history._repr_html_()]
            shown.append(json.dumps(session.stats(), default=str))
    assert "[secure]" in caplog.text or "Authorization" not in caplog.text
    records = [*caplog.records]
    assert any(r.name.startswith("httpx") for r in records)
    for record in records:
        text = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        assert not _leaks(text, sentinel_key), record.name
    assert not _leaks(caplog.text, sentinel_key)
    for text in shown:
        assert not _leaks(text, sentinel_key), text[:200]
    files = list(stored_bytes(home))
    assert any(path.name.startswith("history.sqlite3") for path, _ in files)
    assert any(path.suffix == ".png" for path, _ in files)
    for path, data in files:
        assert sentinel_key.encode() not in data and sentinel_key[3:].encode() not in data, path


# -- K2: no key-entry widget exists ----------------------------------------------------------


def test_k2_no_widget_ever_holds_a_key() -> None:
    """K2: the package builds no key-entry (Password) widget, so no widget state holds a key."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for needle in ("Password(", "widgets.Password", "PasswordWidget"):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
    assert offenders == [], (
        "a key-entry widget exists: it must clear its value trait right after reading and "
        "be covered by a saved-widget-state grep (reliability.md K2)"
    )


# -- K5: no key anywhere -----------------------------------------------------------------------


class _SecretNotFoundError(Exception):
    """What Colab's userdata raises for a missing secret."""


def _fake_colab(monkeypatch: pytest.MonkeyPatch, get: Callable[[str], Any]) -> None:
    google = types.ModuleType("google")
    colab = types.ModuleType("google.colab")
    userdata = types.ModuleType("google.colab.userdata")
    userdata.get = get  # type: ignore[attr-defined]
    colab.userdata = userdata  # type: ignore[attr-defined]
    google.colab = colab  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)


def test_k5_no_key_anywhere_lists_the_sources_and_never_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """K5: with no key anywhere (fake Colab too) the error lists every source, no env value."""
    decoy = "decoy-value-that-must-not-be-printed"
    monkeypatch.setenv("SOME_OTHER_SECRET", decoy)

    def missing(name: str) -> str:
        raise _SecretNotFoundError(f"secret {name} does not exist")

    _fake_colab(monkeypatch, missing)
    settings = Settings.resolve(data_dir=tmp_path)
    assert settings.api_key is None and settings.key_source is None
    with Session(settings=settings) as session, pytest.raises(MissingAPIKeyError) as caught:
        session.generate("no key")
    message = str(caught.value)
    for source in ("NANOBANANA_API_KEY", "DEFAPI_API_KEY", ".env", "Colab", "sandbox"):
        assert source in message, source
    assert decoy not in message and "SOME_OTHER_SECRET" not in message
    assert len(message) < 600


def test_k5_colab_secret_is_found_through_userdata(
    monkeypatch: pytest.MonkeyPatch, sentinel_key: str
) -> None:
    """K5: in a (fake) Colab the secret is read via userdata.get and kept as a SecretKey."""
    asked: list[str] = []

    def get(name: str) -> str:
        asked.append(name)
        if name == "NANOBANANA_API_KEY":
            return sentinel_key
        raise _SecretNotFoundError(name)

    _fake_colab(monkeypatch, get)
    settings = Settings.resolve()
    assert settings.key_source == "colab" and settings.api_key == SecretKey(sentinel_key)
    assert asked == ["NANOBANANA_API_KEY"]
    assert not _leaks(repr(settings), sentinel_key)


# -- K6: pickling, JSON and copies -------------------------------------------------------------

_OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "pickle": pickle.dumps,
    "pickle protocol 0": lambda obj: pickle.dumps(obj, protocol=0),
    "json": json.dumps,
    "json of vars": lambda obj: json.dumps(vars(obj), default=str),
    "json of repr fields": lambda obj: json.dumps(obj, default=repr),
    "deepcopy": copy.deepcopy,
    "copy": copy.copy,
    "repr": repr,
    "str": str,
    "format": lambda obj: f"{obj!s} {obj!r}",
}


def _k6_subjects(tmp_path: Path, sb: Sandbox, key: str) -> dict[str, Callable[[], Any]]:
    settings = make_settings(sb.url, key, tmp_path / "k6")
    return {
        "settings": lambda: settings,
        "asdict(settings)": lambda: dataclasses.asdict(settings),
        "client": lambda: Client(settings=settings),
        "async client": lambda: AsyncClient(settings=settings),
        "session": lambda: Session(settings=settings),
    }


def _flatten(value: Any) -> bytes:
    """Everything a produced value can show: its bytes, or its text and its repr."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return f"{value!r} {value!s}".encode()


@pytest.mark.parametrize("operation", sorted(_OPERATIONS))
def test_k6_pickling_json_and_copies_never_yield_the_key(
    operation: str, tmp_path: Path, sentinel_key: str
) -> None:
    """K6: pickling, JSON, copies and prints of settings, clients, sessions never yield the key."""
    with Sandbox(time_scale=SCALE, max_side=64, api_key=sentinel_key) as sb:
        for name, build in _k6_subjects(tmp_path, sb, sentinel_key).items():
            subject = build()
            try:
                try:
                    produced = _OPERATIONS[operation](subject)
                except (TypeError, ValueError, AttributeError, pickle.PicklingError) as exc:
                    refusal = f"{exc} {exc!r}"
                else:
                    refusal = None
                if refusal is not None:
                    assert not _leaks(refusal, sentinel_key), (name, operation)
                    continue
                assert sentinel_key.encode() not in _flatten(produced), (name, operation)
                assert sentinel_key[3:].encode() not in _flatten(produced), (name, operation)
                if operation in ("pickle", "pickle protocol 0"):
                    pytest.fail(f"{name} was pickled: a key holder must refuse pickling")
            finally:
                for obj in (subject, locals().get("produced")):
                    _close(obj)


def _close(obj: Any) -> None:
    if isinstance(obj, Client | Session):
        obj.close()
    elif isinstance(obj, AsyncClient):
        import asyncio

        asyncio.run(obj.aclose())


def test_k6_errors_carrying_settings_do_not_pickle_the_key(sentinel_key: str) -> None:
    """K6: the package's own errors pickle (for multiprocessing) without the key in them."""
    error = NanoBananaError(f"server said: bad key {sentinel_key}")
    restored = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, just made
    assert not _leaks(str(restored), sentinel_key)
    assert not _leaks(pickle.dumps(error).decode("latin-1"), sentinel_key)


# -- H8: a key of any shape, echoed by the server ------------------------------------------

_KEY_SHAPES = {
    "sk-live": "sk-live-" + "4f7c2a9e1b6d3058" * 2,
    "bare token": "Zq8rT2vLx0PmW4sN7bYc1HdK",
    "dk with a dot": "dk-SENT.INEL" + "a1b2c3d4e5f60718",
    "base64-ish": "QmFuYW5h/Ym9hdA+c2VjcmV0==",
}


def _echoing_api(seen: list[str]) -> httpx.MockTransport:
    """An API that quotes the bearer token back: in a 401 body and in a failure reason."""
    count = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal count
        token = request.headers["authorization"].removeprefix("Bearer ")
        if request.url.path == "/api/image/gen":
            body = json.loads(request.content)
            seen.append(body["prompt"])
            if body["prompt"] == "refused":
                return httpx.Response(401, json={"code": 1, "message": f"Invalid API key: {token}"})
            if body["prompt"] == "refused as text":
                return httpx.Response(403, text=f"forbidden for bearer {token}")
            count += 1
            return httpx.Response(200, json={"code": 0, "data": {"task_id": f"t-{count}"}})
        task_id = request.url.params["task_id"]
        return httpx.Response(
            200,
            json={
                "code": 0,
                "data": {
                    "task_id": task_id,
                    "status": "failed",
                    "result": None,
                    "consumed": "0",
                    "status_reason": {"message": f"quota exhausted for key {token} today"},
                },
            },
        )

    return httpx.MockTransport(handle)


def _shape_leaks(text: str, key: str) -> bool:
    """The key, or a distinctive piece of it (either half), appears in the text."""
    half = len(key) // 2
    return any(part in text for part in (key, key[:half], key[half:]))


@pytest.mark.parametrize("shape", sorted(_KEY_SHAPES))
def test_h8_a_key_of_any_shape_echoed_by_the_server_is_masked_everywhere(
    shape: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """H8: the configured key, whatever its shape, never reaches an error, row, log or file."""
    key = _KEY_SHAPES[shape]
    data_dir = tmp_path / "data"
    seen: list[str] = []
    shown: list[str] = []
    settings = make_settings("https://api.example.test", key, data_dir)
    with (
        caplog.at_level(logging.DEBUG),
        Session(
            settings=settings,
            transport=_echoing_api(seen),
            poll_policy=PollPolicy().scaled(SCALE),
        ) as session,
    ):
        logging.getLogger("nanobanana_jupyter").setLevel(logging.DEBUG)
        tasks = [
            session.generate(prompt).wait(timeout=15)
            for prompt in ("refused", "refused as text", "fails", f"a cat, my key is {key}")
        ]
        assert [t.status for t in tasks] == [
            TaskStatus.NOT_SENT,
            TaskStatus.NOT_SENT,
            TaskStatus.FAILED,
            TaskStatus.FAILED,
        ]
        for task in tasks:
            error = task.exception()
            assert error is not None
            shown += [str(error), repr(error), repr(vars(error)), task.error or "", repr(task)]
            shown += [task.prompt, str(task.record), json.dumps(task.record.to_dict())]
            shown.append(json.dumps(task._repr_mimebundle_(), default=str))
        shown += [session.history._repr_html_(), repr(session.history.latest(10))]
        logging.getLogger("nanobanana_jupyter").warning("the server said: %s", f"bad {key}")
        files = list(stored_bytes(data_dir))  # while open: the WAL file holds the newest rows
    assert any(path.name.endswith("-wal") for path, _ in files)
    files += list(stored_bytes(data_dir))
    # The prompt sent is the user's own; only what is stored and shown is masked.
    assert seen[-1] == f"a cat, my key is {key}"
    assert "***" in tasks[-1].prompt
    for text in shown:
        assert not _shape_leaks(text, key), text[:300]
    for record in caplog.records:
        text = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        assert not _shape_leaks(text, key), record.name
    assert not _shape_leaks(caplog.text, key)
    for path, data in files:
        assert not _shape_leaks(data.decode("latin-1"), key), path


# -- H11: credentials in a reference URL --------------------------------------------------


def test_h11_credentials_in_a_reference_url_are_never_stored_or_shown(tmp_path: Path) -> None:
    """H11: user:pass in a reference URL goes to the server as given, masked everywhere else."""
    password = "hunter2-Pa55w0rd-xyz"
    url = f"https://alice:{password}@images.example.test/cat.png?sig=1"
    data_dir = tmp_path / "data"
    seen: list[list[str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/image/gen":
            seen.append(json.loads(request.content)["images"])
            return httpx.Response(200, json={"code": 0, "data": {"task_id": "t-1"}})
        return httpx.Response(
            200,
            json={
                "code": 0,
                "data": {
                    "task_id": "t-1",
                    "status": "failed",
                    "status_reason": {"message": f"could not fetch {url}"},
                },
            },
        )

    settings = make_settings("https://api.example.test", "dk-" + "ab" * 16, data_dir)
    with Session(
        settings=settings,
        transport=httpx.MockTransport(handle),
        poll_policy=PollPolicy().scaled(SCALE),
    ) as session:
        task = session.generate("a cat", images=[url]).wait(timeout=15)
        assert task.status is TaskStatus.FAILED
        shown = [
            repr(task),
            task.error or "",
            str(task.exception()),
            json.dumps(task.record.to_dict()),
            json.dumps(task._repr_mimebundle_(), default=str),
            session.history._repr_html_(),
            json.dumps([r.to_dict() for r in session.history.latest(5)]),
        ]
    assert seen == [[url]]
    assert task.record.references == ("https://***@images.example.test/cat.png?sig=1",)
    for text in shown:
        assert password not in text and "alice" not in text, text[:300]
    for path, data in stored_bytes(data_dir):
        assert password.encode() not in data and b"alice:" not in data, path
