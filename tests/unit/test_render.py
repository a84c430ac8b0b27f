"""Rendering: escaped HTML, safe URLs, no script, no key, bundles that save and reload."""

from __future__ import annotations

import ast
import base64
import json
import re
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanobanana_jupyter._display.bundles import task_bundle
from nanobanana_jupyter._display.html import (
    data_uri,
    error_html,
    error_text,
    escape,
    history_html,
    safe_src,
    task_html,
)
from nanobanana_jupyter._display.previews import Preview, PreviewLike
from nanobanana_jupyter._display.words import (
    PROMPT_CARD_CHARS,
    PROMPT_META_CHARS,
    PROMPT_TEXT_CHARS,
    format_cost,
    format_duration,
    status_label,
    task_text,
)
from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._wire.errors import redact
from nanobanana_jupyter._wire.models import TaskStatus
from tests.conftest import SENTINEL_KEY

# Bytes only need the right magic numbers: the renderer never decodes images.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(40))
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>'

NASTY = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "' onmouseover='alert(1)",
    "</script>",
    "</div></td></table>",
    "<iframe src=javascript:alert(1)>",
    "<style>*{background:url(javascript:alert(1))}</style>",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java\nscript:alert(1)",
    "java\tscript:alert(1)",
    "vbscript:msgbox(1)",
    "&#106;avascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+",
    "$x$",
    "$$\\frac{a}{b}$$",
    "{{x}}",
    "${x}",
    "\u200b\u200c\u200d\ufeff",
    "\u202etxt.exe",
    "\u2067rtl\u2069",
    "'",
    '"',
    "`",
    "\x00",
    "\x1b[31mred\x1b[0m",
    "&amp;",
    "<!--",
    "]]>",
    "<![CDATA[x]]>",
    "a\r\nb",
]
NASTY_URLS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java\nscript:alert(1)",
    " javascript:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+",
    'data:image/png;base64,AAAA"onerror="alert(1)',
    'https://x.example/"onerror="alert(1)',
    "https://x.example/a b",
    "//evil.example/x.png",
    "/relative/x.png",
    "x.png",
    "https://cdn.example/x.png?a=1&b=2",
    "http://cdn.example/x.png",
    "data:image/png;base64,iVBORw0KGgo=",
]

user_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=60),
    st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=12)), max_size=4).map("".join),
)
urls = st.one_of(st.sampled_from(NASTY_URLS), st.text(max_size=40), user_text)

# Only these may appear anywhere in what the renderer writes.
ALLOWED_TAGS = {
    "a",
    "bdi",
    "code",
    "div",
    "figcaption",
    "figure",
    "img",
    "span",
    "strong",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
}
ALLOWED_ATTRS = {
    "alt",
    "class",
    "height",
    "href",
    "rel",
    "src",
    "style",
    "target",
    "title",
    "width",
}
FORBIDDEN_TAGS = {"script", "iframe", "object", "embed", "style", "link", "meta", "base", "svg"}
RASTER_DATA = re.compile(r"data:image/(?:png|jpeg|webp|gif);base64,[A-Za-z0-9+/]*={0,2}")


class Collector(HTMLParser):
    """Collects every tag with its attributes, the text content, and anything else seen."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.other: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.other.append(f"comment {data!r}")

    def handle_decl(self, decl: str) -> None:
        self.other.append(f"decl {decl!r}")

    def handle_pi(self, data: str) -> None:
        self.other.append(f"pi {data!r}")

    def unknown_decl(self, data: str) -> None:
        self.other.append(f"unknown {data!r}")

    @property
    def content(self) -> str:
        return "".join(self.text)

    def attrs_of(self, tag: str, cls: str | None = None) -> list[dict[str, str | None]]:
        found = [dict(attrs) for name, attrs in self.tags if name == tag]
        if cls is None:
            return found
        return [a for a in found if cls in (a.get("class") or "").split()]


def check_html(markup: str) -> Collector:
    """Parse ``markup`` and fail on anything that could run script or load a resource."""
    parser = Collector()
    parser.feed(markup)
    parser.close()
    assert not parser.other, parser.other
    for tag, attrs in parser.tags:
        assert tag not in FORBIDDEN_TAGS, tag
        assert tag in ALLOWED_TAGS, tag
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name)
            assert name in ALLOWED_ATTRS, (tag, name)
            text = value or ""
            squashed = re.sub(r"[\x00-\x20]", "", text).lower()
            if name in {"src", "href"}:
                assert not squashed.startswith(("javascript:", "vbscript:")), text
                if squashed.startswith("data:"):
                    assert RASTER_DATA.fullmatch(text), text[:80]
                else:
                    assert text.startswith(("https://", "http://")), text
            if name == "style":
                for bad in ("url(", "expression(", "\\", "@import", "javascript:"):
                    assert bad not in squashed, text
    return parser


def make_record(
    status: TaskStatus = TaskStatus.SUCCESS,
    *,
    prompt: str = "a cat in a banana costume",
    model: str = "google/gempix2",
    error: str | None = None,
    paths: tuple[str, ...] = ("/data/images/ab.png",),
    **changes: object,
) -> TaskRecord:
    images = tuple(
        ImageRecord(
            sha256=f"{i:064x}", path=p, media_type="image/png", width=64, height=48, size=100
        )
        for i, p in enumerate(paths)
    )
    record = TaskRecord(
        local_id="loc-1",
        status=status,
        prompt=prompt,
        model=model,
        fingerprint="f" * 64,
        created_at=1_700_000_000.0,
        updated_at=1_700_000_014.0,
        task_id="ta1234567890abcdef",
        submitted_at=1_700_000_000.0,
        finished_at=1_700_000_014.0 if status.is_terminal else None,
        consumed=Decimal("0.5"),
        error=error,
        images=images,
        polls=3,
    )
    return record.replace(**changes) if changes else record


@st.composite
def records(draw: st.DrawFn) -> TaskRecord:
    """Records whose every free-text field may be hostile."""
    return make_record(
        draw(st.sampled_from(list(TaskStatus))),
        prompt=draw(user_text),
        model=draw(user_text),
        error=draw(st.one_of(st.none(), user_text)),
        paths=tuple(draw(st.lists(user_text, max_size=3))),
        task_id=draw(st.one_of(st.none(), user_text)),
        local_id=draw(user_text),
        aspect_ratio=draw(st.one_of(st.none(), user_text)),
        texts=tuple(draw(st.lists(user_text, max_size=2))),
        result_urls=tuple(draw(st.lists(urls, max_size=3))),
        references=tuple(draw(st.lists(urls, max_size=2))),
    )


def all_html(record: TaskRecord, text: str, url: str) -> list[str]:
    """Every HTML the module can make, from one hostile record, string and URL."""
    previews: list[PreviewLike] = [
        (PNG, "image/png", (64, 48)),
        Preview(JPEG, "image/jpeg"),
        (SVG, "image/svg+xml"),
    ]
    data, _ = task_bundle(record, previews=previews, elapsed=3.0)
    out = [
        task_html(record, previews=previews, elapsed=3.0),
        str(data["text/html"]),
        history_html(
            [record, record],
            total=7,
            offset=2,
            total_cost=Decimal("1.5"),
            thumbs={record.local_id: (PNG, "image/png")},
        ),
        error_html(text, hint=text),
        f'<span title="{escape(text)}">{escape(text)}</span>',
    ]
    src = safe_src(url)
    if src is not None:
        out.append(f'<img src="{src}" alt="">')
    return out


def all_plain(record: TaskRecord, text: str) -> list[str]:
    data, metadata = task_bundle(record, previews=[(PNG, "image/png", (64, 48))])
    return [
        task_text(record, elapsed=3.0),
        str(data["text/plain"]),
        json.dumps(metadata),
        error_text(text, hint=text),
    ]


# -- J1/J2: hostile strings stay text -----------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records(), text=user_text, url=urls)
def test_every_renderer_emits_no_script_handler_or_unsafe_url(
    record: TaskRecord, text: str, url: str
) -> None:
    """Hostile prompts, reasons, models, paths and URLs never become tags, handlers or URLs."""
    for markup in all_html(record, text, url):
        assert "<script" not in markup.lower()
        check_html(markup)


def pictured(text: str) -> str:
    """Control characters as a page shows them: C0 (not tab, LF, CR) and DEL as pictures."""
    return "".join(
        chr(0x2400 + ord(c))
        if ord(c) < 0x20 and c not in "\t\n\r"
        else "\u2421"
        if c == "\x7f"
        else c
        for c in text
    )


def test_control_characters_are_shown_as_pictures() -> None:
    """P7: ESC, NUL and DEL never reach a page raw; they read as their control pictures."""
    markup = escape("a\x1b[31mred\x00 and \x7f\ttab\nline")
    assert markup == "a\u241b[31mred\u2400 and \u2421\ttab\nline"


@settings(max_examples=150, deadline=None)
@given(prompt=user_text, reason=user_text)
def test_prompt_and_reason_read_back_as_literal_text(prompt: str, reason: str) -> None:
    """The prompt and the reason parse back out of the card as the text given (controls pictured)."""
    record = make_record(TaskStatus.FAILED, prompt=prompt, error=reason)
    parsed = check_html(task_html(record, previews=[(PNG, "image/png")]))
    clean = pictured(redact(prompt, limit=None))
    shown = clean if len(clean) <= PROMPT_CARD_CHARS else clean[: PROMPT_CARD_CHARS - 1] + "…"
    assert shown in parsed.content
    assert pictured(redact(reason, limit=None)) in parsed.content
    (prompt_div,) = parsed.attrs_of("div", "nanobanana-prompt")
    assert prompt_div["title"] == clean
    (img,) = parsed.attrs_of("img")
    assert img["alt"] == shown


@settings(max_examples=100, deadline=None)
@given(message=user_text)
def test_error_html_reads_back_as_literal_text(message: str) -> None:
    """A user error shows its message verbatim (redacted), never as markup."""
    parsed = check_html(error_html(message, hint="try again"))
    assert pictured(redact(message, limit=None)) in parsed.content
    assert "try again" in parsed.content


@settings(max_examples=100, deadline=None)
@given(prompt=user_text, model=user_text)
def test_history_shows_hostile_cells_as_text(prompt: str, model: str) -> None:
    """History cells hold the prompt and model as text, with the prompt in its title."""
    record = make_record(prompt=prompt, model=model)
    parsed = check_html(history_html([record], total=1))
    clean = pictured(redact(prompt, limit=None))
    titles = [a["title"] for a in parsed.attrs_of("span") if "title" in a]
    assert titles == [clean]  # hostile strings here stay under the title limit
    if len(clean) <= 79:
        assert clean in parsed.content
    if len(redact(model, limit=None)) <= 39:
        assert pictured(redact(model, limit=None)) in parsed.content


@settings(max_examples=100, deadline=None)
@given(value=user_text)
def test_escape_round_trips_in_text_and_in_attributes(value: str) -> None:
    """escape() output parses back to the same string (controls pictured), as text or attribute."""
    shown = pictured(value)
    parsed = check_html(f'<span title="{escape(value)}">{escape(value)}</span>')
    assert parsed.content == shown
    assert parsed.attrs_of("span")[0]["title"] == shown
    single = check_html(f"<span title='{escape(value)}'></span>")
    assert single.attrs_of("span")[0]["title"] == shown


def test_html_roots_opt_out_of_mathjax() -> None:
    """Every HTML root asks MathJax to leave it alone, so `$x$` shows as typed."""
    record = make_record(prompt="costs $5 and $6")
    for markup in (task_html(record), history_html([record], total=1), error_html("$x$")):
        root_class = check_html(markup).tags[0][1][0]
        assert root_class[0] == "class"
        assert {"tex2jax_ignore", "mathjax_ignore"} <= set((root_class[1] or "").split())


def test_bidi_controls_are_isolated() -> None:
    """User text sits in <bdi>, so a right-to-left override cannot reorder the card around it."""
    markup = task_html(make_record(prompt="\u202eabc", model="\u202egpt"))
    assert "<bdi>\u202eabc</bdi>" in markup
    assert "<bdi>\u202egpt</bdi>" in markup


# -- safe_src ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.example/x.png", "https://cdn.example/x.png"),
        ("http://127.0.0.1:8000/img/1.png", "http://127.0.0.1:8000/img/1.png"),
        ("https://cdn.example/x.png?a=1&b=2", "https://cdn.example/x.png?a=1&amp;b=2"),
        ("HTTPS://cdn.example/x.png", "HTTPS://cdn.example/x.png"),
        ("data:image/png;base64,iVBORw0KGgo=", "data:image/png;base64,iVBORw0KGgo="),
        ("data:image/jpeg;base64,/9j/4A==", "data:image/jpeg;base64,/9j/4A=="),
        ("data:image/webp;base64,UklGRg==", "data:image/webp;base64,UklGRg=="),
        ("data:image/gif;base64,R0lGODlh", "data:image/gif;base64,R0lGODlh"),
        ("javascript:alert(1)", None),
        ("JaVaScRiPt:alert(1)", None),
        ("java\nscript:alert(1)", None),
        ("java\x00script:alert(1)", None),
        (" https://cdn.example/x.png", None),
        ("https://cdn.example/x.png\n", None),
        ("https://cdn.example/\u200bx.png", None),
        ("vbscript:msgbox(1)", None),
        ("javascript://x.example/%0Aalert(1)", None),
        ("data:text/html,<script>alert(1)</script>", None),
        ("data:text/html;base64,PHNjcmlwdD4=", None),
        ("data:image/svg+xml;base64,PHN2Zz4=", None),
        ("data:image/svg+xml,<svg onload=alert(1)>", None),
        ("data:image/png,rawbytes", None),
        ("data:image/png;base64,AAAA\"onerror='alert(1)'", None),
        ("data:image/png;base64,AA AA", None),
        ('https://x.example/"onerror="alert(1)', None),
        ("https://x.example/'onerror='alert(1)", None),
        ("https://x.example/<b>", None),
        ("https://x.example/a\\b", None),
        ("https://x.example/`x`", None),
        ("https://user:pw@x.example/x.png", None),
        (f"https://x.example/x.png?key={SENTINEL_KEY}", None),
        ("https://x.example:99999/x.png", None),
        ("https:///x.png", None),
        ("https:x.example/x.png", None),
        ("//evil.example/x.png", None),
        ("/relative/x.png", None),
        ("x.png", None),
        ("ftp://x.example/x.png", None),
        ("file:///etc/passwd", None),
        ("", None),
        (None, None),
    ],
)
def test_safe_src_table(url: str | None, expected: str | None) -> None:
    """Only http(s) URLs with a host and raster base64 data URIs pass, escaped for attributes."""
    assert safe_src(url) == expected


@settings(max_examples=300, deadline=None)
@given(url=urls)
def test_safe_src_output_is_always_a_safe_attribute(url: str) -> None:
    """Whatever goes in, what comes out parses as one http(s) or raster data src attribute."""
    src = safe_src(url)
    if src is not None:
        parsed = check_html(f'<img src="{src}">')
        assert parsed.attrs_of("img") == [{"src": url}]


# -- data_uri and previews -------------------------------------------------------------------


def test_data_uri_round_trips_raster_bytes() -> None:
    """A PNG becomes a data URI whose payload decodes to the same bytes."""
    uri = data_uri(PNG, "image/PNG")
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri[len(prefix) :]) == PNG
    assert safe_src(uri) == uri


@pytest.mark.parametrize(
    "media_type", ["image/svg+xml", "text/html", "application/javascript", "image/jpg", ""]
)
def test_data_uri_refuses_non_raster_types(media_type: str) -> None:
    """SVG, HTML, script and unknown types are never turned into data URIs."""
    with pytest.raises(ValueError, match="only"):
        data_uri(SVG, media_type)


def test_svg_previews_are_dropped_everywhere() -> None:
    """An SVG preview is neither embedded in the card nor put in the bundle."""
    record = make_record()
    data, metadata = task_bundle(record, previews=[(SVG, "image/svg+xml", (10, 10))])
    assert "svg" not in str(data["text/html"]).lower()
    assert set(data) == {"text/plain", "text/html"}
    assert set(metadata) == {"nanobanana"}
    assert "<img" not in history_html(
        [record], total=1, thumbs={record.local_id: (SVG, "image/svg+xml")}
    )


def test_previews_accept_plain_tuples_and_sizes() -> None:
    """Previews may be Preview tuples or plain (bytes, type[, (w, h)]); sizes reach the <img>."""
    record = make_record(paths=("/a.png", "/b.png", "/c.png"))
    markup = task_html(
        record,
        previews=[
            (PNG, "image/png"),
            (JPEG, "image/jpeg", (64, 48)),
            Preview(PNG, "image/png", 8, 6),
        ],
    )
    imgs = check_html(markup).attrs_of("img")
    assert [(i.get("width"), i.get("height")) for i in imgs] == [
        (None, None),
        ("64", "48"),
        ("8", "6"),
    ]
    assert imgs[1]["src"] == data_uri(JPEG, "image/jpeg")


def test_malformed_previews_are_left_out_without_raising() -> None:
    """Bad previews (no bytes, wrong types, odd sizes) are skipped or lose their size."""
    previews: list[object] = [
        (b"", "image/png"),
        ("not bytes", "image/png"),
        (PNG, 5),
        (PNG,),
        (PNG, "image/png", "junk"),
        (PNG, "image/png", (0, True)),
        (PNG, "image/png", 8, 6),
    ]
    markup = task_html(make_record(), previews=cast("list[PreviewLike]", previews))
    imgs = check_html(markup).attrs_of("img")
    assert [(i.get("width"), i.get("height")) for i in imgs] == [
        (None, None),
        (None, None),
        ("8", "6"),
    ]


def test_paths_without_previews_are_still_listed() -> None:
    """Every full-size file is named in the card, with or without a preview."""
    record = make_record(paths=("/data/one <1>.png", "/data/two.png"))
    content = check_html(task_html(record, previews=[(PNG, "image/png")])).content
    assert "/data/one <1>.png" in content
    assert "/data/two.png" in content


def test_unstored_result_urls_become_safe_links_only() -> None:
    """Result URLs never downloaded show as links when safe, and not at all otherwise."""
    record = make_record(
        TaskStatus.UNAVAILABLE,
        paths=(),
        result_urls=(
            "https://cdn.example/1.png",
            "javascript:alert(1)",
            "data:image/png;base64,AA==",
        ),
    )
    links = check_html(task_html(record)).attrs_of("a")
    assert [a["href"] for a in links] == ["https://cdn.example/1.png"]


# -- J3: the key never shows -----------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["prompt", "error", "paths", "model", "task_id", "local_id", "texts", "result_urls"]
)
def test_sentinel_key_never_appears_in_any_output(field: str) -> None:
    """A key-shaped string in any field of a record is masked in every output."""
    embedded = f"see {SENTINEL_KEY} here"
    changes: dict[str, dict[str, Any]] = {
        "prompt": {"prompt": embedded},
        "error": {"error": embedded},
        "paths": {"paths": (f"/data/{SENTINEL_KEY}.png",)},
        "model": {"model": embedded},
        "task_id": {"task_id": SENTINEL_KEY},
        "local_id": {"local_id": SENTINEL_KEY},
        "texts": {"texts": (embedded,)},
        "result_urls": {"paths": (), "result_urls": (f"https://x.example/{SENTINEL_KEY}.png",)},
    }
    values = changes[field]
    for status in TaskStatus:
        record = make_record(status, **values)
        outputs = all_html(record, embedded, f"https://x.example/?k={SENTINEL_KEY}")
        outputs += all_plain(record, embedded)
        outputs.append(escape(embedded))
        for out in outputs:
            assert "SENTINEL" not in out, (field, status, out[:200])


@pytest.mark.parametrize("limit", [40, 80, 300, 500, 2000])
def test_truncation_never_leaks_part_of_a_key(limit: int) -> None:
    """Keys are masked before text is shortened, so no cut leaves a piece of a key visible."""
    for shift in range(12):
        prompt = "x" * (limit - 1 - shift) + SENTINEL_KEY + " tail"
        record = make_record(TaskStatus.FAILED, prompt=prompt, error=prompt, model=prompt)
        for out in all_html(record, prompt, prompt) + all_plain(record, prompt):
            assert "dk-S" not in out, (limit, shift)


# -- J4: bundles ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(record=records())
def test_bundle_has_no_javascript_and_json_metadata(record: TaskRecord) -> None:
    """Bundles hold only plain, HTML and raster image types, and JSON-serialisable metadata."""
    data, metadata = task_bundle(record, previews=[(JPEG, "image/jpeg", (64, 48))])
    assert set(data) <= {"text/plain", "text/html", "image/jpeg", "image/png"}
    assert "application/javascript" not in data
    json.dumps(data)
    json.dumps(metadata)
    meta = metadata["nanobanana"]
    assert isinstance(meta, dict)
    assert len(meta["prompt"]) <= PROMPT_META_CHARS


def test_bundle_embeds_the_first_jpeg_or_png_as_base64() -> None:
    """The first JPEG/PNG preview is the image/* entry, base64 of exactly its bytes, sized."""
    record = make_record()
    previews: list[PreviewLike] = [
        (b"GIF89a....", "image/gif"),
        Preview(JPEG, "image/jpeg", 64, 48),
        (PNG, "image/png"),
    ]
    data, metadata = task_bundle(record, previews=previews)
    assert set(data) == {"text/plain", "text/html", "image/jpeg"}
    encoded = data["image/jpeg"]
    assert isinstance(encoded, str)
    assert base64.b64decode(encoded, validate=True) == JPEG
    assert metadata["image/jpeg"] == {"width": 64, "height": 48}


def test_bundle_can_leave_the_image_out() -> None:
    """embed_first_image=False keeps only text/plain and text/html."""
    data, metadata = task_bundle(
        make_record(), previews=[(PNG, "image/png", (4, 3))], embed_first_image=False
    )
    assert set(data) == {"text/plain", "text/html"}
    assert set(metadata) == {"nanobanana"}


def test_bundle_metadata_names_the_task() -> None:
    """Metadata carries ids, status, model, prompt, paths and credits as plain JSON values."""
    record = make_record(paths=("/a.png", "/b.png"), prompt="p" * 2000)
    _, metadata = task_bundle(record)
    assert metadata == {
        "nanobanana": {
            "local_id": "loc-1",
            "task_id": "ta1234567890abcdef",
            "status": "success",
            "model": "google/gempix2",
            "prompt": "p" * (PROMPT_META_CHARS - 1) + "…",
            "paths": ["/a.png", "/b.png"],
            "consumed": 0.5,
            "reused": False,
        }
    }


# -- words and numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (TaskStatus.WAITING_TO_SEND, "waiting to send"),
        (TaskStatus.SUBMITTING, "submitting"),
        (TaskStatus.PENDING, "queued"),
        (TaskStatus.SUBMITTED, "queued"),
        (TaskStatus.IN_PROGRESS, "generating 12 s"),
        (TaskStatus.UNRECOGNIZED, "waiting (the server sent a status"),
        (TaskStatus.SUCCESS, "success: 1 image, 0.5 credits, 14 s"),
        (TaskStatus.FAILED, "failed: reason 'content policy', 0.5 credits"),
        (TaskStatus.NOT_SENT, "not sent (nothing charged)"),
        (TaskStatus.SUBMIT_UNKNOWN, "submit unknown (may have been charged; not re-sent)"),
        (TaskStatus.TIMED_OUT, "timed out (may still finish on the server; resumable)"),
        (TaskStatus.ABANDONED, "abandoned (the server may still finish and charge; resumable)"),
        (TaskStatus.UNAVAILABLE, "unavailable (succeeded, but no image is here yet"),
    ],
)
def test_task_text_per_status(status: TaskStatus, words: str) -> None:
    """text/plain is one line naming the task, its state in words, model and short prompt."""
    error = None if status is TaskStatus.SUCCESS else "content policy"
    line = task_text(make_record(status, error=error), elapsed=12.3)
    assert line.startswith("<NanoBanana task ta123456789… ")
    assert words in line
    assert line.endswith(", model google/gempix2, prompt 'a cat in a banana costume'>")
    assert "\n" not in line


def test_task_text_shortens_and_quotes_the_prompt() -> None:
    """Long prompts are cut with an ellipsis; newlines and escapes are shown, not obeyed."""
    line = task_text(make_record(prompt="line one\nline two \x1b[31m" + "z" * 100))
    assert "\n" not in line
    assert "\x1b" not in line
    assert "'line one\\nline two \\x1b[31m" in line
    assert line.endswith("…'>")
    shown = ast.literal_eval(line.split("prompt ", 1)[1][:-1])
    assert len(shown) == PROMPT_TEXT_CHARS


def test_task_text_before_the_server_answered_uses_the_local_id() -> None:
    """A task with no server id yet is named by its local id."""
    line = task_text(make_record(TaskStatus.SUBMITTING, task_id=None))
    assert line.startswith("<NanoBanana local task loc-1 submitting")


@pytest.mark.parametrize("status", list(TaskStatus))
def test_card_renders_for_every_status(status: TaskStatus) -> None:
    """Every status renders a safe card whose badge shows its words."""
    error = None if status is TaskStatus.SUCCESS else "out of credits"
    markup = task_html(make_record(status, error=error), previews=[(PNG, "image/png")], elapsed=12)
    parsed = check_html(markup)
    badges = parsed.attrs_of("strong", "nanobanana-status")
    assert len(badges) == 1
    assert status_label(status) in parsed.content
    if status.is_terminal and status is not TaskStatus.SUCCESS:
        assert "out of credits" in parsed.content


def test_badge_colours_follow_the_state() -> None:
    """Success, failure, warning and running states get different badge colours."""

    def style(status: TaskStatus) -> str:
        parsed = check_html(task_html(make_record(status)))
        return parsed.attrs_of("strong", "nanobanana-status")[0]["style"] or ""

    colours = {s: style(s) for s in TaskStatus}
    assert len({colours[s] for s in (TaskStatus.SUCCESS, TaskStatus.FAILED)}) == 2
    assert colours[TaskStatus.TIMED_OUT] == colours[TaskStatus.SUBMIT_UNKNOWN]
    assert colours[TaskStatus.PENDING] == colours[TaskStatus.IN_PROGRESS]
    assert len({colours[s] for s in TaskStatus}) == 5


def test_running_card_shows_elapsed_time() -> None:
    """While running the card reads 'generating · 12 s'; once ended it shows the duration."""
    running = check_html(task_html(make_record(TaskStatus.IN_PROGRESS), elapsed=12.4)).content
    assert "generating · 12 s" in running
    done = check_html(task_html(make_record(TaskStatus.SUCCESS), elapsed=99)).content
    assert "success · 14 s" in done


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (TaskStatus.TIMED_OUT, "session.resume()"),
        (TaskStatus.TIMED_OUT, "%nanobanana resume"),
        (TaskStatus.ABANDONED, "session.resume()"),
        (TaskStatus.UNAVAILABLE, "%nanobanana resume"),
        (TaskStatus.SUBMIT_UNKNOWN, "may have been charged"),
        (TaskStatus.SUBMIT_UNKNOWN, "not re-sent"),
        (TaskStatus.NOT_SENT, "nothing was charged"),
        (TaskStatus.FAILED, "Reason: the server gave none."),
    ],
)
def test_card_says_what_to_do(status: TaskStatus, advice: str) -> None:
    """Cards for states that need the user's attention say what happened and what to do."""
    assert advice in check_html(task_html(make_record(status))).content


def test_long_prompt_is_truncated_with_full_text_in_title() -> None:
    """A long prompt shows its first few hundred characters; the tooltip holds all of it."""
    prompt = "word " * 1000
    parsed = check_html(task_html(make_record(prompt=prompt)))
    (div,) = parsed.attrs_of("div", "nanobanana-prompt")
    assert div["title"] == prompt
    assert prompt[: PROMPT_CARD_CHARS - 1] + "…" in parsed.content
    assert prompt[:PROMPT_CARD_CHARS] + " " not in parsed.content


def test_model_reply_text_is_shown() -> None:
    """Text answers from the model appear in the card, escaped."""
    content = check_html(task_html(make_record(texts=("I can't <draw> that",)))).content
    assert "I can't <draw> that" in content


@pytest.mark.parametrize(
    ("total", "offset", "count", "cost", "header"),
    [
        (57, 20, 10, Decimal("12.50"), "57 tasks · 12.5 credits · showing 21–30"),
        (1, 0, 1, None, "1 task · showing 1–1"),
        (3, 0, 3, Decimal("1"), "3 tasks · 1 credit · showing 1–3"),
        (5, 10, 0, None, "5 tasks · showing 0 of 5"),
        (0, 0, 0, Decimal("0"), "0 tasks · 0 credits"),
    ],
)
def test_history_header_numbers(
    total: int, offset: int, count: int, cost: Decimal | None, header: str
) -> None:
    """The header counts all tasks and credits and names the rows of this page."""
    page = [make_record(local_id=f"loc-{i}") for i in range(count)]
    parsed = check_html(history_html(page, total=total, offset=offset, total_cost=cost))
    assert parsed.content.startswith(header)
    assert len([t for t, _ in parsed.tags if t == "tr"]) == (count + 1 if count else 0)


def test_history_row_cells() -> None:
    """A row shows status words, model, prompt, cost, duration, polls and a tiny thumb."""
    record = make_record(prompt="p" * 200)
    parsed = check_html(
        history_html([record], total=1, thumbs={"loc-1": Preview(PNG, "image/png", 512, 384)})
    )
    for text in ("success", "google/gempix2", "p" * 79 + "…", "0.5 credits", "14 s", "3"):
        assert text in parsed.content
    (img,) = parsed.attrs_of("img")
    assert img["src"] == data_uri(PNG, "image/png")
    assert "width" not in img


def test_error_text_is_one_redacted_line() -> None:
    """error_text folds whitespace into one line, adds the hint, and masks keys."""
    line = error_text(f"bad key {SENTINEL_KEY}\nfix it", hint="set NANOBANANA_API_KEY")
    assert line == "NanoBanana: bad key dk-*** fix it (set NANOBANANA_API_KEY)"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (Decimal("0"), "0 credits"),
        (Decimal("1"), "1 credit"),
        (Decimal("1.000"), "1 credit"),
        (Decimal("0.50"), "0.5 credits"),
        (Decimal("20"), "20 credits"),
        (Decimal("2E+1"), "20 credits"),
        (Decimal("0.123456"), "0.1235 credits"),
        (Decimal("NaN"), "—"),
        (Decimal("Infinity"), "—"),
        (Decimal("-0"), "0 credits"),
        (Decimal("-0.000000"), "0 credits"),
        (Decimal("-0.00001"), "—"),
        (Decimal("0.00001"), "0 credits"),
        (Decimal("0E-8"), "0 credits"),
        (Decimal("123456789012345678901234567.12345"), "—"),
        (Decimal("1E+30"), "—"),
        (Decimal("-1"), "—"),
    ],
)
def test_format_cost_table(value: Decimal | None, text: str) -> None:
    """Credits read naturally: trailing zeros dropped, singular for one, dash when unknown."""
    assert format_cost(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (float("nan"), "—"),
        (float("inf"), "—"),
        (-3.0, "0.0 s"),
        (0.44, "0.4 s"),
        (4.25, "4.2 s"),
        (12.4, "12 s"),
        (59.4, "59 s"),
        (59.6, "1 min"),
        (185.0, "3 min 5 s"),
        (3600.0, "1 h 0 min"),
        (3725.0, "1 h 2 min"),
    ],
)
def test_format_duration_table(seconds: float | None, text: str) -> None:
    """Durations read naturally from tenths of a second to hours; dash when unknown."""
    assert format_duration(seconds) == text


def test_status_labels_are_distinct_words() -> None:
    """Every status has a human label; only the two queued states share one."""
    labels = {s: status_label(s) for s in TaskStatus}
    assert all(labels.values())
    assert labels[TaskStatus.PENDING] == labels[TaskStatus.SUBMITTED] == "queued"
    assert len(set(labels.values())) == len(TaskStatus) - 1


def test_batch_bundle_counts_and_escapes() -> None:
    """The batch line counts finished tasks and those without images, and is plain HTML."""
    from nanobanana_jupyter._display.bundles import batch_bundle

    class FakeTask:
        def __init__(self, status: TaskStatus) -> None:
            self.status = status

        def done(self) -> bool:
            return self.status.is_terminal

    tasks = [
        FakeTask(TaskStatus.SUCCESS),
        FakeTask(TaskStatus.FAILED),
        FakeTask(TaskStatus.IN_PROGRESS),
    ]
    bundle = batch_bundle(tasks)
    assert "2/3 done" in str(bundle["text/plain"])
    assert "1 without images" in str(bundle["text/plain"])
    html = str(bundle["text/html"])
    assert "<script" not in html and "width:67%" in html
