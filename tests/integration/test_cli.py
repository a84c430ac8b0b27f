"""The `nanobanana` terminal command, end to end against the sandbox."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
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


# -- issue 16: --sandbox anywhere, the terminal's own key remedies, @refs, plurals, typos ------


def run_keyless(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The command with no key anywhere: none in the environment, no .env where it runs."""
    env = {k: v for k, v in os.environ.items() if k not in ("NANOBANANA_API_KEY", "DEFAPI_API_KEY")}
    env["NANOBANANA_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [sys.executable, "-m", "nanobanana_jupyter._views.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def _sandbox_records(tmp_path: Path) -> list[Any]:
    """The tasks of the sandbox's history (kept apart from a real key's), oldest first."""
    from nanobanana_jupyter._store.store import Store

    with Store(tmp_path / "data" / "sandbox" / "history.sqlite3") as store:
        return store.page(0, 100)


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "a banana boat", "--out", "pictures", "--sandbox"],
        ["--sandbox", "generate", "a banana boat", "--out", "pictures"],
        ["generate", "--sandbox", "a banana boat", "-o", "pictures"],
    ],
)
def test_sandbox_is_accepted_before_or_after_the_subcommand(
    tmp_path: Path, args: list[str]
) -> None:
    """`--sandbox` works wherever it is typed; without a key, so only the sandbox can answer."""
    result = run_keyless(args, tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert Path(line).parent == Path("pictures") and (tmp_path / line).stat().st_size > 0
    assert "pretend credits" in result.stderr
    history = run_keyless(["history", "--sandbox"], tmp_path)
    assert history.returncode == 0, history.stderr
    assert "a banana boat" in history.stdout
    assert "1 task, 0.5 pretend credits" in history.stderr
    resumed = run_keyless(["resume", "--sandbox"], tmp_path)
    assert resumed.returncode == 0 and "nothing to resume" in resumed.stderr


def test_no_key_names_the_terminals_remedies_in_one_line(tmp_path: Path) -> None:
    """Without a key the terminal is told about --sandbox and the environment variable, not
    about the notebook's `%nanobanana sandbox` or `Session.sandbox()`; one line, exit 2."""
    result = run_keyless(["generate", "a cat"], tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("nanobanana: ")
    assert "NANOBANANA_API_KEY" in line and "--sandbox" in line
    assert "%nanobanana" not in line and "Session" not in line and "Traceback" not in line


def test_ref_at_last_and_an_id_prefix_name_earlier_tasks(tmp_path: Path) -> None:
    """`--ref @last` and `--ref @<id prefix>` send the named task's image, as in the magic:
    the child records the hash of exactly that stored image (its lineage)."""
    first = run_keyless(["--sandbox", "generate", "a red apple"], tmp_path)
    assert first.returncode == 0, first.stderr
    (apple_image,) = first.stdout.splitlines()
    second = run_keyless(["generate", "the apple, sliced", "--ref", "@last", "--sandbox"], tmp_path)
    assert second.returncode == 0, second.stderr
    apple, sliced = _sandbox_records(tmp_path)
    assert apple.task_id is not None and apple.prompt == "a red apple"
    (stored,) = apple.images
    assert hashlib.sha256(Path(apple_image).read_bytes()).hexdigest() == stored.sha256
    expected = f"sha256:{stored.sha256}"
    assert sliced.references == (expected,)

    prefix = apple.task_id[:12]
    third = run_keyless(
        ["--sandbox", "generate", "the apple, peeled", "-r", f"@{prefix}"], tmp_path
    )
    assert third.returncode == 0, third.stderr
    peeled = _sandbox_records(tmp_path)[-1]
    assert peeled.prompt == "the apple, peeled" and peeled.references == (expected,)

    unknown = run_keyless(["--sandbox", "generate", "x", "-r", "@zzzz"], tmp_path)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    (line,) = unknown.stderr.strip().splitlines()
    assert line.startswith("nanobanana: --ref @zzzz: no such task 'zzzz' in the sandbox's history")
    assert "nanobanana --sandbox history lists" in line and "session.history" not in line
    assert len(_sandbox_records(tmp_path)) == 3  # nothing was sent

    # A sandbox task's id, used without --sandbox, is looked up in the real history: it says
    # where it looked and that the sandbox keeps its own.
    keyed = run_against(
        "http://127.0.0.1:9", ["generate", "x", "-r", f"@{prefix}"], tmp_path / "data"
    )
    assert keyed.returncode == 2
    (line,) = keyed.stderr.strip().splitlines()
    assert f"no such task {prefix!r} in the history" in line and "add --sandbox" in line


def test_history_totals_read_as_words(tmp_path: Path) -> None:
    """Against a real (non-sandbox) API: "1 task, 0.5 credits", then "2 tasks, 1 credit"."""
    ids = {"one": "task-one", "two": "task-two"}
    with hostile_api(ids) as url:
        assert run_against(url, ["generate", "one"], tmp_path / "d").returncode == 0
        once = run_against(url, ["history"], tmp_path / "d")
        assert run_against(url, ["generate", "two"], tmp_path / "d").returncode == 0
        twice = run_against(url, ["history"], tmp_path / "d")
    assert once.stderr.strip() == "1 task, 0.5 credits"
    assert twice.stderr.strip() == "2 tasks, 1 credit"
    with hostile_api(ids) as url:
        again = run_against(url, ["generate", "one"], tmp_path / "d")
        assert again.returncode == 0
        assert "reused, no new charge" in again.stderr
        reused = run_against(url, ["history"], tmp_path / "d")
    assert reused.stderr.strip() == "2 tasks, 1 credit; reused once (0.5 credits not charged again)"
    rows = {line.split()[-1]: line for line in reused.stdout.splitlines()}
    assert " 1×  task-one " in rows["one"] and "×" not in rows["two"]
    empty = run_keyless(["--sandbox", "history"], tmp_path)
    assert empty.stderr.strip() == "0 tasks, 0 pretend credits"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--sandbox", "generate", "a cat", "--sise", "2K"],
            "nanobanana: unknown option --sise; did you mean --size? nothing was sent",
        ),
        (
            ["generate", "--aspect-ration", "16:9", "a cat", "--sandbox"],
            "nanobanana: unknown option --aspect-ration; did you mean --aspect-ratio? "
            "nothing was sent",
        ),
        (
            ["--sandbox", "generate", "a cat", "--froce"],
            "nanobanana: unknown option --froce; did you mean --force? nothing was sent",
        ),
        (
            ["--sandbox", "history", "--limt=3"],
            "nanobanana: unknown option --limt; did you mean --limit?",
        ),
        (
            ["--sandbox", "generate", "a cat", "--size", "3K"],
            "nanobanana generate: argument --size/-s: invalid choice: '3K' (choose from '1K', "
            "'2K', '4K') (nanobanana generate --help lists the options)",
        ),
        (
            ["--sandbox", "generate", "a cat", "--bogus"],
            "nanobanana: unknown option --bogus; nothing was sent (nanobanana generate --help "
            "lists the options)",
        ),
        (
            ["--sandbox", "generate", "a", "cat"],
            "nanobanana: unexpected word 'cat'; a prompt of several words goes in quotes: "
            "nanobanana generate 'a cat'; nothing was sent",
        ),
    ],
)
def test_a_mistyped_option_is_one_line_with_a_did_you_mean(
    tmp_path: Path, args: list[str], line: str
) -> None:
    """A typo in an option is one line naming the option meant; exit 2, nothing sent."""
    result = run_keyless(args, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]
    assert result.stdout == ""
    assert not (tmp_path / "data" / "sandbox" / "history.sqlite3").exists() or (
        _sandbox_records(tmp_path) == []
    )


def test_out_copies_carry_their_recipe_with_the_pixels_unchanged(tmp_path: Path) -> None:
    """--out writes through the same function as task.save: each copy holds its recipe."""
    from PIL import Image

    from nanobanana_jupyter import read_provenance

    out_dir = tmp_path / "pictures"
    args = ["--sandbox", "generate", "a banana <kite> 猫", "-a", "3:2", "--out", str(out_dir)]
    result = run(args, tmp_path / "data")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    copy = Path(line)
    found = read_provenance(copy)
    assert found is not None
    assert (found.prompt, found.aspect_ratio) == ("a banana <kite> 猫", "3:2")
    assert found.image_sha256 is not None and copy.name.startswith(found.image_sha256[:16])
    (stored,) = (tmp_path / "data").rglob(f"{found.image_sha256}.*")
    with Image.open(copy) as a, Image.open(stored) as b:
        assert a.tobytes() == b.tobytes() and a.size == b.size
    again = run(args, tmp_path / "data")  # reused, and the copy rewritten in place
    assert again.returncode == 0 and again.stdout == result.stdout


def test_rate_tag_then_search_finds_the_task_with_its_stars_and_tags(tmp_path: Path) -> None:
    """rate and tag take @last and an id prefix; search by tag and rating lists that task
    only, with its stars and tags; a bad rating or an unknown id is one line, exit 2."""
    data = tmp_path / "data"
    for prompt in ("a red fox in the snow", "a blue whale at dawn"):
        assert run(["--sandbox", "generate", prompt], data).returncode == 0
    rated = run(["--sandbox", "rate", "@last", "4"], data)
    assert rated.returncode == 0, rated.stderr
    whale_id = rated.stdout.split(":", 1)[0]
    assert rated.stdout.strip() == f"{whale_id}: rated ★★★★☆ (4/5)"
    tagged = run(["tag", "--sandbox", whale_id[:14], "keep", "best of"], data)
    assert tagged.returncode == 0, tagged.stderr
    assert tagged.stdout.strip().endswith("tags best of, keep")
    found = run(["--sandbox", "search", "whale", "--tag", "keep", "--rating", "3-5"], data)
    assert found.returncode == 0, found.stderr
    (line,) = found.stdout.splitlines()
    assert whale_id in line and "★★★★☆" in line and "[best of, keep]" in line
    assert found.stderr.strip() == "1 match for 'whale' · tag keep · rated 3 or more"
    none = run(["--sandbox", "search", "--tag", "keep", "--rating", "5"], data)
    assert none.stdout == "" and none.stderr.startswith("0 matches")
    bad = run(["--sandbox", "rate", "@last", "9"], data)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "a rating is a whole number of stars from 0 to 5" in bad.stderr
    unknown = run(["--sandbox", "rate", "zzzz", "3"], data)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "rate: no such task 'zzzz' in the sandbox's history; nanobanana --sandbox" in (
        unknown.stderr
    )
    wrong = run(["--sandbox", "search", "--since", "soon"], data)
    assert wrong.returncode == 2 and "--since is a date" in wrong.stderr
