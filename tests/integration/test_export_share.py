"""history.export() and `nanobanana export` end to end against the sandbox (issue 17, item 6)."""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nanobanana_jupyter import Session, read_provenance
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter.sandbox import Sandbox
from tests.integration.test_cli import run
from tests.integration.test_session import make_session

pytestmark = pytest.mark.integration


@pytest.fixture
def session(sandbox: Sandbox, tmp_path: Path) -> Iterator[Session]:
    with make_session(sandbox, tmp_path / "data") as s:
        yield s


class Links(HTMLParser):
    """Tiles (article ids), and every src and href, with the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tiles: list[str] = []
        self.sources: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "article":
            self.tiles.append(str(found["id"]))
        if tag == "img":
            self.sources.append(str(found["src"]))
        if tag == "a":
            self.links.append(str(found["href"]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read_page(folder: Path) -> Links:
    page = Links()
    page.feed((folder / "index.html").read_text(encoding="utf-8"))
    return page


def test_an_export_of_a_parent_and_its_edit_links_them_and_keeps_their_recipes(
    session: Session, tmp_path: Path
) -> None:
    """Generate, edit, rate and tag; export; the page's tiles, images and lineage resolve."""
    parent = session.generate("a red <kite>", aspect_ratio="1:1").wait()
    child = session.generate("the red kite at dusk", images=[parent]).wait()
    session.history.rate(child, 5)
    session.history.tag(child, "keeper")
    out = session.history.export(tmp_path / "shared")
    page = read_page(out)
    assert page.tiles == [f"t-{parent.local_id}", f"t-{child.local_id}"]
    assert len(page.sources) == 2 and all((out / src).is_file() for src in page.sources)
    anchors = {f"#{tile}" for tile in page.tiles}
    inner = [link for link in page.links if link.startswith("#")]
    assert set(inner) == anchors  # the parent links its child and the child its parent
    assert all((out / link).is_file() for link in page.links if not link.startswith("#"))
    text = "".join(page.text)
    assert "a red <kite>" in text and "★★★★★" in text and "keeper" in text
    found = read_provenance(out / page.sources[1])
    assert found is not None and found.local_id == child.local_id
    assert found.parent_hashes == (parent.images[0].sha256,)
    with (out / "history.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["local_id"] for row in rows] == [parent.local_id, child.local_id]
    assert rows[1]["parent_ids"] == parent.local_id and rows[1]["tags"] == "keeper"
    assert rows[1]["images"] == page.sources[1]


def test_a_grid_or_a_search_exports_just_those_tasks(session: Session, tmp_path: Path) -> None:
    """tasks= takes a grid, or a search's records; a zip holds the same tiles."""
    grid = session.grid(["a blue bird", "a grey owl"], aspect_ratio=["1:1", "16:9"]).wait()
    out = session.history.export(tmp_path / "grid", grid)
    assert read_page(out).tiles == [f"t-{task.local_id}" for task in grid.tasks]
    assert len(grid.tasks) == 4
    kept = session.generate("a green frog").wait()
    session.history.tag(kept, "frog")
    archive = session.history.export(
        tmp_path / "frogs", session.history.search(tags="frog"), format="zip"
    )
    with zipfile.ZipFile(archive) as zipped:
        page = Links()
        page.feed(zipped.read("frogs/index.html").decode("utf-8"))
        names = zipped.namelist()
    assert page.tiles == [f"t-{kept.local_id}"]
    assert f"frogs/{page.sources[0]}" in names


@pytest.mark.slow
def test_the_command_exports_the_sandbox_history_filtered(tmp_path: Path) -> None:
    """`nanobanana export OUT --tag T` prints the folder; bad input is one line, exit 2."""
    data = tmp_path / "data"
    for prompt in ("a lighthouse", "a windmill"):
        made = run(["--sandbox", "generate", prompt], data)
        assert made.returncode == 0, made.stderr
    with Store(data / "sandbox" / "history.sqlite3") as store:
        first = store.page(0, 10)[0]
        store.annotate(first.local_id, rating=4, add_tags=["best"])
    out = tmp_path / "share"
    result = run(["export", str(out), "--tag", "best", "--rating", "3", "--sandbox"], data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "exported 1 task" in result.stderr
    assert read_page(out).tiles == [f"t-{first.local_id}"]
    assert "pretend credit" in "".join(read_page(out).text)
    again = run(["--sandbox", "export", str(out)], data)
    assert again.returncode == 2 and "not empty" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    replaced = run(["--sandbox", "export", str(out), "--overwrite", "--since", "1d"], data)
    assert replaced.returncode == 0, replaced.stderr
    assert len(read_page(out).tiles) == 2
    packed = run(["--sandbox", "export", str(tmp_path / "all"), "--format", "zip"], data)
    assert packed.returncode == 0 and packed.stdout.strip() == str(tmp_path / "all.zip")
    none = run(["--sandbox", "export", str(tmp_path / "none"), "--search", "zeppelin"], data)
    assert none.returncode == 2 and "nothing to export" in none.stderr
    bad = run(["--sandbox", "export", str(tmp_path / "x"), "--rating", "9"], data)
    assert bad.returncode == 2 and "0 to 5" in bad.stderr
    late = run(["--sandbox", "export", str(tmp_path / "x"), "--since", "soon"], data)
    assert late.returncode == 2 and "is no date" in late.stderr
