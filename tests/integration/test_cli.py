"""The `nanobanana` terminal command, end to end against the sandbox."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanobanana_jupyter._views.cli import terminal_text

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanobanana_jupyter._views.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NANOBANANA_DATA_DIR": str(data_dir)},
        check=False,
    )


def test_generate_prints_saved_paths_then_history_lists_them(tmp_path: Path) -> None:
    """generate shows progress on stderr, prints image paths on stdout; history lists the task."""
    out_dir = tmp_path / "pictures"
    result = run(
        [
            "--sandbox",
            "generate",
            "a banana lighthouse",
            "-a",
            "1:1",
            "-n",
            "2",
            "--out",
            str(out_dir),
        ],
        tmp_path / "data",
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert len(paths) == 2 and all(p.parent == out_dir and p.stat().st_size > 0 for p in paths)
    assert "2/2" in result.stderr and "credits" in result.stderr
    history = run(["--sandbox", "history"], tmp_path / "data")
    assert history.returncode == 0, history.stderr
    assert history.stdout.count("a banana lighthouse") == 2
    assert "2 tasks, 1 pretend credit" in history.stderr  # one credit, and a sandbox's


def test_bad_input_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    """An invalid request fails with one readable line, no traceback."""
    result = run(["--sandbox", "generate", "   "], tmp_path / "data")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("nanobanana: the prompt is empty")
    assert "Traceback" not in result.stderr


def test_no_key_says_where_to_put_one(tmp_path: Path) -> None:
    """Without a key (and without --sandbox) the command explains the options."""
    result = run(["generate", "a cat"], tmp_path / "data")
    assert result.returncode == 2
    assert "NANOBANANA_API_KEY" in result.stderr and "Traceback" not in result.stderr


# -- H10: hostile task ids and server text ---------------------------------------------------


def _png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 180, 40)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


HOSTILE_REASON = (
    "\x1b[31mred\x1b[0m \x1b]8;;https://evil.test\x07click\x1b]8;;\x07 \x1b]0;title\x1b\\"
    " \x9b2J\x07\x08\x00 end"
)


@contextlib.contextmanager
def hostile_api(task_ids: dict[str, str]) -> Iterator[str]:
    """An API on 127.0.0.1 whose task ids are paths and whose failure reasons are escapes."""
    image = _png()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, data: object) -> None:
            body = json.dumps({"code": 0, "message": "ok", "data": data}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["prompt"]
            self._send({"task_id": task_ids[prompt]})

        def do_GET(self) -> None:
            task_id = parse_qs(urlsplit(self.path).query)["task_id"][0]
            if "fail" in task_id:
                data = {"status": "failed", "status_reason": {"message": HOSTILE_REASON}}
            else:
                data = {"status": "success", "result": [{"image": image}], "consumed": "0.5"}
            self._send({"task_id": task_id, "consumed": "0", **data})

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run_against(url: str, args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanobanana_jupyter._views.cli", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        env={
            **os.environ,
            "NANOBANANA_DATA_DIR": str(data_dir),
            "NANOBANANA_BASE_URL": url,
            "NANOBANANA_API_KEY": "dk-" + "0123456789abcdef" * 2,
        },
        check=False,
    )


def _controls(text: str) -> list[str]:
    """Every C0 (but newline), DEL and C1 character in the text."""
    return [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0]


def test_h10_a_task_id_that_is_a_path_never_writes_outside_out(tmp_path: Path) -> None:
    """H10: --out names files by content hash; ids like ../../x or /abs write nowhere else."""
    out_dir = tmp_path / "a" / "b" / "out"
    absolute = tmp_path / "elsewhere" / "owned"
    ids = {"up": "../../escaped", "absolute": str(absolute), "dots": ".."}
    with hostile_api(ids) as url:
        for prompt in ids:
            result = run_against(url, ["generate", prompt, "--out", str(out_dir)], tmp_path / "d")
            assert result.returncode == 0, result.stderr
            (line,) = result.stdout.splitlines()
            written = Path(line)
            assert written.parent == out_dir and written.is_file(), line
            assert ".." not in written.name and "escaped" not in written.name
    outside = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and p.parent != out_dir and tmp_path / "d" not in p.parents
    ]
    assert outside == [] and not (tmp_path / "elsewhere").exists()
    assert len(list(out_dir.iterdir())) == 1  # the same image each time: one content hash


def test_h10_server_text_reaches_the_terminal_without_control_characters(
    tmp_path: Path,
) -> None:
    """H10: ANSI/OSC escapes and C0/C1 controls in ids and reasons never reach the terminal."""
    ids = {"hostile": "fail-\x1b]0;pwned\x07-\x9b31m-1"}
    with hostile_api(ids) as url:
        generated = run_against(url, ["generate", "hostile"], tmp_path / "d")
        history = run_against(url, ["history"], tmp_path / "d")
    assert generated.returncode == 1
    assert "red" in generated.stderr and "end" in generated.stderr
    assert history.returncode == 0 and "hostile" in history.stdout
    for stream in (generated.stdout, generated.stderr, history.stdout, history.stderr):
        assert _controls(stream) == [], repr(stream)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[1;31mred\x1b[0m", "red"),
        ("\x1b]8;;https://evil.test\x07link\x1b]8;;\x07", "link"),
        ("\x1b]0;title\x1b\\after", "after"),
        ("\x9b2Jcleared", "cleared"),
        ("one\nforged line\r\tx", "one forged line x"),
        ("bidi \u202eevil\u202c text", "bidi evil text"),
        ("nul\x00 bell\x07 del\x7f", "nul bell del"),
        ("plain, café, 🍌 — ok", "plain, café, 🍌 — ok"),
    ],
)
def test_h10_terminal_text_strips_escapes_and_controls(raw: str, shown: str) -> None:
    """H10: escape sequences go whole, other controls go, line breaks become spaces."""
    assert terminal_text(raw) == shown


@given(st.text())
def test_h10_terminal_text_never_leaves_a_control_character(text: str) -> None:
    """H10: whatever the server sends, what reaches the terminal has no control character."""
    assert _controls(terminal_text(text)) == []
