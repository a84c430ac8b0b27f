"""``%nanobanana search / rate / tag / untag / note`` in-process, on IPython's
InteractiveShell, over a session talking to a real sandbox; and the history table and
live cards showing ratings and tags."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nanobanana_jupyter import Session
from nanobanana_jupyter._core.defaults import set_default_session
from nanobanana_jupyter._display.html import HISTORY_COLUMNS
from nanobanana_jupyter._views.magic import NanoBananaMagics
from nanobanana_jupyter.sandbox import Sandbox
from tests.integration.test_session import make_session

pytestmark = pytest.mark.integration


class Published:
    """Every display message the shell sends: new outputs and in-place updates."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, Any]] = []
        self.updates: list[tuple[str | None, dict[str, Any]]] = []

    def publish(self, data: dict[str, Any], metadata: Any = None, **kwargs: Any) -> None:
        display_id = (kwargs.get("transient") or {}).get("display_id")
        if kwargs.get("update"):
            self.updates.append((display_id, data))
        else:
            self.outputs.append(data)

    def clear_output(self, wait: bool = False) -> None:  # pragma: no cover - unused
        pass


@pytest.fixture
def session(sandbox: Sandbox, tmp_path: Path) -> Iterator[Session]:
    s = make_session(sandbox, tmp_path / "data", settings={"sandbox": True})
    old = set_default_session(s)
    try:
        yield s
    finally:
        s.wait_all(timeout=20)
        set_default_session(old)
        s.close()


@pytest.fixture
def shell(session: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    ip = InteractiveShell.instance()
    ip.register_magics(NanoBananaMagics)
    published = Published()
    monkeypatch.setattr(ip.display_pub, "publish", published.publish)
    ip.published = published  # type: ignore[attr-defined]
    yield ip
    magics = ip.magics_manager.registry["NanoBananaMagics"]
    if magics._live is not None:
        magics._live.close()
        magics._live = None


def magic(shell: InteractiveShell, line: str) -> object:
    return shell.run_line_magic("nanobanana", line)


def published(shell: InteractiveShell) -> Published:
    found: Published = shell.published  # type: ignore[attr-defined]
    return found


def three_tasks(session: Session) -> list[Any]:
    tasks = [
        session.generate(prompt, aspect_ratio="1:1")
        for prompt in ("a red fox in the snow", "a blue whale at dawn", "a red kite over hills")
    ]
    for task in tasks:
        task.wait(20)
    return tasks


def column(table: str, name: str) -> list[str]:
    """The text of one column of the (first) history table, row by row."""
    body = table.split("<tbody>", 1)[1]
    at = HISTORY_COLUMNS.index(name)
    rows = re.findall(r"<tr>(.*?)</tr>", body)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    return [html.unescape(re.sub(r"<[^>]+>", "", row[at])) for row in cells]


def test_rate_tag_untag_note_by_last_and_prefix_then_search_finds_them(
    shell: InteractiveShell, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    """rate/tag/note take @last and an id prefix, say what the task now has in one line,
    and search by tag and rating shows exactly the matching tasks with thumbnails."""
    fox, whale, kite = three_tasks(session)
    magic(shell, "rate @last 4")
    assert kite.rating == 4
    assert capsys.readouterr().out.strip() == f"{kite.id}: rated ★★★★☆ (4/5)"
    magic(shell, f'tag {fox.id[:12]} red "best of"')
    magic(shell, "tag @last red")
    magic(shell, "untag @last red")
    magic(shell, f"note {whale.id} use for the poster # a comment stays in a note")
    assert fox.tags == ["best of", "red"] and kite.tags == []
    assert whale.note == "use for the poster # a comment stays in a note"
    magic(shell, f"rate {fox.id} 5")
    capsys.readouterr()
    before = len(published(shell).outputs)
    assert magic(shell, "search red --tag red --rating 4-5") is None  # nothing extra
    (shown,) = published(shell).outputs[before:]  # one output
    table = str(shown["text/html"])
    assert "1 match for &#x27;red&#x27; · tag red · rated 4 or more" in table
    assert column(table, "prompt") == ["a red fox in the snow"]
    assert column(table, "rating") == ["★★★★★"]
    assert column(table, "tags") == ["best of, red"]
    assert table.count("<img ") == 1 and "data:image/" in table
    assert "<script" not in table
    assert "a red fox in the snow" in str(shown["text/plain"])
    assert capsys.readouterr().out == ""


def test_search_by_text_model_status_since_and_limit(
    shell: InteractiveShell, session: Session
) -> None:
    """Text matches words of prompts; --status, --since and --limit narrow; the newest first."""
    three_tasks(session)
    out = published(shell).outputs
    magic(shell, "search red --status success --since 1h")
    assert column(str(out[-1]["text/html"]), "prompt") == [
        "a red kite over hills",
        "a red fox in the snow",
    ]
    magic(shell, "search --limit 1")
    table = str(out[-1]["text/html"])
    assert column(table, "prompt") == ["a red kite over hills"]
    assert "the newest 1 (--limit for more)" in table
    magic(shell, "search red --since 2999-01-01")
    assert "0 matches" in str(out[-1]["text/plain"])


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("rate @last 7", "rate: a rating is a whole number of stars from 0 to 5"),
        ("rate @last", "rate: write %nanobanana rate ID N, e.g. %nanobanana rate @last 4"),
        ("rate zzzz 3", "rate: no such task 'zzzz'"),
        ("tag @last", "tag: write %nanobanana tag ID name..."),
        ("search --rating 5-2", "search: --rating 5-2: the lowest is above the highest"),
        ("search --rating lots", "search: --rating is N or N-M"),
        ("search --since yesterdayish", "search: --since is a date (2025-01-31)"),
        (
            "search --status sucess",
            "search: --status 'sucess' is no status (did you mean success?)",
        ),
        ("search --colour red", "search: unrecognized arguments: --colour"),
        ('tag @last "unclosed', "tag: cannot read the words"),
    ],
)
def test_bad_curation_words_are_one_line_that_says_what_to_do(
    shell: InteractiveShell, session: Session, line: str, says: str
) -> None:
    """Each mistake is one line naming the word, and changes nothing."""
    task = session.generate("a lemon", aspect_ratio="1:1")
    task.wait(20)
    with pytest.raises(UsageError) as info:
        magic(shell, line)
    message = str(info.value)
    assert message.startswith(says), message
    assert "\n" not in message
    assert task.rating is None and task.tags == []


def test_an_ambiguous_prefix_lists_candidates_and_asks_for_more(
    shell: InteractiveShell, session: Session
) -> None:
    """A prefix two tasks share is refused, asking for more characters of the id."""
    tasks = three_tasks(session)
    first, second = tasks[:2]
    a, b = str(first.task_id), str(second.task_id)
    prefix = a[: next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)]
    assert prefix  # the sandbox's ids start alike ("ta...")
    # The third task's random id shares the prefix or not (1 in 16 for "ta0..."): count it.
    sharing = sum(str(t.task_id).startswith(prefix) for t in tasks)
    with pytest.raises(UsageError, match="type more characters of the id") as info:
        magic(shell, f"rate {prefix} 3")
    assert str(info.value).startswith(f"rate: {sharing} tasks have an id starting with {prefix!r}")
    assert first.rating is None


def test_history_shows_rating_and_tags_columns(shell: InteractiveShell, session: Session) -> None:
    """%nanobanana history has rating (stars, not wrapped) and tags columns."""
    fox = three_tasks(session)[0]
    fox.rate(3).tag("keep")
    magic(shell, "history")
    table = str(published(shell).outputs[-1]["text/html"])
    assert column(table, "rating") == ["—", "—", "★★★☆☆"]
    assert column(table, "tags") == ["—", "—", "keep"]
    assert 'white-space:nowrap">' + '<span class="nanobanana-rating"' in table


def test_a_live_card_shows_a_new_rating_and_tags_at_once(
    shell: InteractiveShell, session: Session
) -> None:
    """A card the magic showed is redrawn with the stars and tags right after rate/tag,
    also once its task has ended, from the thread that rated it (no store read per tick)."""
    task = magic(shell, "--wait a green pear")
    assert task is not None
    card_id = published(shell).outputs[-1]
    assert "nanobanana-rating" not in str(card_id["text/html"])
    updates = published(shell).updates
    before = len(updates)
    magic(shell, "rate @last 2")
    magic(shell, "tag @last green")
    redrawn = [data for _, data in updates[before:]]
    assert len(redrawn) == 2
    assert "★★☆☆☆" in str(redrawn[-1]["text/html"])
    assert "green" in str(redrawn[-1]["text/html"])
    assert "rated ★★☆☆☆ (2/5), tags green" in str(redrawn[-1]["text/plain"])
    # The same comes from Python: task.rate() redraws the card too.
    task.rate(5)  # type: ignore[attr-defined]
    assert "★★★★★" in str(updates[-1][1]["text/html"])
