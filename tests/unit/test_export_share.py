"""history.export(): the folder or zip to share, its index.html and history.csv (issue 17, item 6)."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

import nanobanana_jupyter  # noqa: F401 - installs the contact sheet renderer
from nanobanana_jupyter import ValidationError, read_provenance
from nanobanana_jupyter._store.history import History
from nanobanana_jupyter._store.images import ImageStore
from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._store.sharing import CSV_COLUMNS, formula_safe
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.models import TaskStatus

NASTY = "</textarea><script>alert('x')</script> \"quoted\" & 'single' \x00 end"


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(out, format="PNG")
    return out.getvalue()


def make(
    name: str,
    prompt: str,
    image: ImageRecord | None,
    *,
    made_from: ImageRecord | None = None,
    at: float = 1_700_000_000.0,
    status: TaskStatus = TaskStatus.SUCCESS,
    **changes: object,
) -> TaskRecord:
    return TaskRecord(
        local_id=name,
        task_id=f"ta-{name}",
        status=status,
        prompt=prompt,
        model="google/gempix2",
        fingerprint=f"f-{name}",
        created_at=at,
        updated_at=at,
        references=() if made_from is None else (f"sha256:{made_from.sha256}",),
        images=() if image is None else (image,),
        consumed=Decimal("0.5") if image is not None else None,
        **changes,  # type: ignore[arg-type]
    )


@pytest.fixture
def history(tmp_path: Path) -> History:
    images = ImageStore(tmp_path / "images")
    first = images.put(png((200, 30, 30)))
    second = images.put(png((30, 200, 30)))
    store = Store(tmp_path / "history.sqlite3")
    store.insert_many(
        [
            make("cabin", "a snowy cabin", first, at=1_700_000_000),
            make("night", NASTY, second, made_from=first, at=1_700_000_100, reuses=2),
            make(
                "broken",
                '=HYPERLINK("x")',
                None,
                at=1_700_000_200,
                status=TaskStatus.FAILED,
                error="content <b>policy</b>",
            ),
        ]
    )
    store.annotate("night", rating=4, add_tags=["poster", "<i>x</i>"], note=NASTY)
    return History(store, sandbox=True)


class Page(HTMLParser):
    """What a browser would see: elements with their attributes, and every text run."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_an_export_is_a_folder_of_page_csv_and_images_with_their_recipe(
    history: History, tmp_path: Path
) -> None:
    """index.html, history.csv and one image per task with an image, each with provenance."""
    out = history.export(tmp_path / "share")
    assert out == tmp_path / "share"
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "images", "index.html"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["cabin.png", "night.png"]
    found = read_provenance(out / "images" / "night.png")
    assert found is not None and found.prompt == history[1].prompt
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_every_user_string_is_escaped_and_the_page_runs_nothing(
    history: History, tmp_path: Path
) -> None:
    """A prompt, note or tag with markup, quotes or NUL is text on the page, never markup."""
    out = history.export(tmp_path / "share")
    source = (out / "index.html").read_text(encoding="utf-8")
    page = parse(out / "index.html")
    assert page.all("script") == [] and page.all("textarea") == [] and page.all("i") == []
    assert page.all("b") == []  # the failure reason's <b> too
    assert "\x00" not in source
    text = "".join(page.text)
    assert "</textarea><script>alert('x')</script>" in text  # shown as it was typed
    assert "<i>x</i>" in text and "content <b>policy</b>" in text
    assert not any(
        (value or "").lower().startswith(("javascript", "http", "//"))
        for _, attrs in page.tags
        for value in attrs.values()
    )
    assert "http://" not in source and "https://" not in source
    assert "script-src 'none'" in source


def test_tiles_link_to_files_on_disk_and_lineage_to_anchors(
    history: History, tmp_path: Path
) -> None:
    """Every src/href is a file of the export or a tile's anchor; the child links its parent."""
    out = history.export(tmp_path / "share")
    page = parse(out / "index.html")
    ids = {attrs["id"] for attrs in page.all("article")}
    assert ids == {"t-cabin", "t-night", "t-broken"}
    for attrs in page.all("img"):
        assert (out / str(attrs["src"])).is_file()
    hrefs = [str(attrs["href"]) for attrs in page.all("a")]
    for href in hrefs:
        if href.startswith("#"):
            assert href[1:] in ids
        else:
            assert (out / href).is_file()
    assert "#t-cabin" in hrefs and "#t-night" in hrefs  # made from / made into
    text = " ".join("".join(page.text).split())
    assert "3 tasks, 2 images, 1 pretend credit" in text
    assert "★★★★☆" in text and "poster" in text
    assert "no image (failed)" in text


def test_lineage_outside_the_export_is_named_not_linked(history: History, tmp_path: Path) -> None:
    """A parent not exported is named by short id and says so; there is no dangling link."""
    out = history.export(tmp_path / "child", history.search(tags="poster"))
    page = parse(out / "index.html")
    assert [a["id"] for a in page.all("article")] == ["t-night"]
    assert [a["href"] for a in page.all("a") if str(a["href"]).startswith("#")] == []
    assert "ta-cabin (not in this export)" in " ".join("".join(page.text).split())


def test_csv_has_a_row_per_task_and_never_a_formula(history: History, tmp_path: Path) -> None:
    """history.csv: the columns, ISO times, joined tags, relative image names, formula-safe."""
    out = history.export(tmp_path / "share")
    with (out / "history.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == list(CSV_COLUMNS)
    by_id = {row["local_id"]: row for row in rows}
    night = by_id["night"]
    assert night["prompt"] == NASTY.replace("\x00", "\u2400")
    assert night["tags"] == "<i>x</i>;poster" and night["rating"] == "4"
    assert night["images"] == "images/night.png" and (out / night["images"]).is_file()
    assert night["parent_hashes"] == history[0].images[0].sha256
    assert night["parent_ids"] == "cabin" and night["reuses"] == "2"
    assert night["created_at"] == "2023-11-14T22:15:00+00:00" and night["consumed"] == "0.5"
    assert by_id["broken"]["prompt"] == '\'=HYPERLINK("x")'
    for row in rows:
        assert not any(v.startswith(("=", "+", "-", "@")) for v in row.values())


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("a = b", "a = b"),
        ("", ""),
        ("nul\x00", "nul\u2400"),
    ],
)
def test_formula_safe(given: str, written: str) -> None:
    """A cell a spreadsheet would run gets a leading quote; others stay as they are."""
    assert formula_safe(given) == written


def test_a_zip_holds_the_same_files_as_the_folder(history: History, tmp_path: Path) -> None:
    """format="zip" writes one .zip whose files (under one folder) equal the folder's."""
    folder = history.export(tmp_path / "share")
    archive = history.export(tmp_path / "packed", format="zip")
    assert archive == tmp_path / "packed.zip"
    with zipfile.ZipFile(archive) as zipped:
        names = sorted(zipped.namelist())
        inside = {name.removeprefix("packed/"): zipped.read(name) for name in names}
    assert all(name.startswith("packed/") for name in names)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sorted(inside) == files
    for name in files:
        if name != "index.html":  # the page says when it was exported
            assert inside[name] == (folder / name).read_bytes(), name
    with pytest.raises(ValidationError, match="exists"):
        history.export(tmp_path / "packed.zip", format="zip")


def test_a_taken_folder_is_refused_unless_overwrite(history: History, tmp_path: Path) -> None:
    """A non-empty folder or a file in the way is refused whole; overwrite replaces it."""
    target = tmp_path / "share"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(ValidationError, match="not empty"):
        history.export(target)
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    history.export(target, overwrite=True)
    assert not (target / "mine.txt").exists() and (target / "index.html").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValidationError, match="is a file"):
        history.export(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert history.export(empty) == empty and (empty / "history.csv").is_file()


def test_nothing_to_export_is_a_clear_error(history: History, tmp_path: Path) -> None:
    """An empty selection is refused in one line and writes nothing."""
    with pytest.raises(ValidationError, match="nothing to export"):
        history.export(tmp_path / "none", [])
    with pytest.raises(ValidationError, match="nothing to export"):
        history.filter(text="no such prompt").export(tmp_path / "none")
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValidationError, match="format"):
        history.export(tmp_path / "x", format="pdf")


def test_a_filtered_history_exports_its_tasks_and_given_ones_keep_their_order(
    history: History, tmp_path: Path
) -> None:
    """tasks=None: the filtered history; an iterable: those, in order, each once."""
    out = history.filter(status="failed").export(tmp_path / "failed")
    assert [a["id"] for a in parse(out / "index.html").all("article")] == ["t-broken"]
    out = history.export(tmp_path / "two", ["night", history[0], "night"])
    assert [a["id"] for a in parse(out / "index.html").all("article")] == ["t-night", "t-cabin"]
    with pytest.raises(KeyError):
        history.export(tmp_path / "unknown", ["nope"])


def test_an_image_whose_file_is_gone_is_told_not_fatal(history: History, tmp_path: Path) -> None:
    """A lost stored file leaves its tile saying so; the rest is exported."""
    Path(history[0].images[0].path).unlink()
    out = history.export(tmp_path / "share")
    assert sorted(p.name for p in (out / "images").iterdir()) == ["night.png"]
    assert "image missing" in " ".join("".join(parse(out / "index.html").text).split())
    assert re.search(r"cabin", (out / "history.csv").read_text(encoding="utf-8"))


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_every_text_colour_of_the_contact_sheet_is_legible_on_its_backgrounds() -> None:
    """The sheet has its own light palette (it is opened from a file, with no theme): every
    text colour it sets has a contrast of at least 4.5:1 (WCAG AA) on every background it
    sets (the stars were 2.95:1 on a white tile)."""
    from nanobanana_jupyter._display import contact_sheet

    def full(colour: str) -> str:  # "#fff" -> "#ffffff"
        return colour if len(colour) == 7 else "#" + "".join(c * 2 for c in colour[1:])

    css = contact_sheet._CSS
    hexes = r"(#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3})\b"
    texts = {full(c) for c in re.findall(r"(?<![-\w])color:" + hexes, css)}
    backgrounds = {full(c) for c in re.findall(r"background:" + hexes, css)}
    assert len(texts) >= 3 and {"#ffffff", "#f6f8fa"} <= backgrounds
    for text in texts:
        for background in backgrounds:
            light, dark = sorted((_luminance(text), _luminance(background)), reverse=True)
            ratio = (light + 0.05) / (dark + 0.05)
            assert ratio >= 4.5, f"{text} on {background}: {ratio:.2f}:1"
