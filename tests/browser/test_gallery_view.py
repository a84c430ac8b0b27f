"""The gallery's ES module in a real browser, against a stand-in of its widget model.

The module (``_views/panel/gallery_view.py``) is imported into an empty page in Chromium and
rendered with a model object that keeps ``items`` and ``marks``, records what the module
sends and can deliver a message to it: what the page does, without a kernel between. The
panel's browser tests (test_lab.py) drive the same module inside JupyterLab.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from nanobanana_jupyter._views.panel.gallery_view import _GALLERY_ESM

pytestmark = pytest.mark.browser

HARNESS = """async ([source, items]) => {
    const state = { items, marks: {}, star_colour: "rgb(180, 120, 0)" };
    const handlers = {};
    const sent = [];
    const model = {
        get: (name) => state[name],
        on: (name, fn) => { (handlers[name] = handlers[name] || []).push(fn); },
        off: () => {},
        send: (content) => sent.push(content),
    };
    window.gallery = {
        sent,
        set: (name, value) => {
            state[name] = value;
            (handlers["change:" + name] || []).forEach((fn) => fn());
        },
        deliver: (content, buffers) => (handlers["msg:custom"] || []).forEach(
            (fn) => fn(content, buffers)),
    };
    const url = "data:text/javascript;base64," + btoa(unescape(encodeURIComponent(source)));
    const module = await import(url);
    module.default.render({ model, el: document.getElementById("el") });
}"""


def item(key: str, caption: str) -> dict[str, Any]:
    return {
        "key": key,
        "caption": caption,
        "tooltip": caption,
        "branch_tip": "Branch",
        "curating": True,
    }


def jpeg(colour: tuple[int, int, int]) -> list[int]:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(out, format="JPEG")
    return list(out.getvalue())


@pytest.fixture
def gallery_page(page: Any) -> Any:
    page.set_content('<html><body><div id="el"></div></body></html>')
    return page


def render(page: Any, items: list[dict[str, Any]]) -> None:
    page.evaluate(HARNESS, [_GALLERY_ESM, items])


def sent(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.gallery.sent))")  # type: ignore[no-any-return]


def deliver_thumbs(page: Any, thumbs: dict[str, list[int]]) -> None:
    page.evaluate(
        """([keys, bytes]) => window.gallery.deliver(
            { event: "thumbs", keys },
            bytes.map((b) => new DataView(new Uint8Array(b).buffer)))""",
        [list(thumbs), list(thumbs.values())],
    )


def test_thumbnails_are_asked_for_once_and_drawn_from_the_bytes(gallery_page: Any) -> None:
    page = gallery_page
    render(page, [item("b", "a blue bird"), item("a", "a red apple")])
    assert sent(page) == [{"event": "thumbs", "keys": ["b", "a"]}]
    deliver_thumbs(page, {"b": jpeg((0, 0, 255)), "a": jpeg((255, 0, 0))})
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.nanobanana-thumb')]"
        ".every((img) => img.complete && img.naturalWidth === 24)"
    )
    # Redrawn with the same items: nothing is asked again. A new item whose thumbnail is
    # sent with it (as the gallery does once a page has asked) is not asked for either.
    same = json.dumps([item("b", "a blue bird"), item("a", "a red apple")])
    page.evaluate(f"() => window.gallery.set('items', {same})")
    more = json.dumps([item("c", "a cat"), item("b", "a blue bird"), item("a", "a red apple")])
    page.evaluate(f"() => window.gallery.set('items', {more})")
    deliver_thumbs(page, {"c": jpeg((0, 255, 0))})
    page.wait_for_timeout(1300)  # past the page's second look for what is still missing
    assert sent(page) == [{"event": "thumbs", "keys": ["b", "a"]}]
    page.wait_for_function(
        "() => document.querySelector('img.nanobanana-thumb').naturalWidth === 24"
    )


def test_a_new_image_leaves_a_half_typed_tag_and_its_focus_alone(gallery_page: Any) -> None:
    """A new item goes in front; the others are not moved, so the tag field being typed in
    keeps the focus and the text, and nothing is sent as a tag."""
    page = gallery_page
    render(page, [item("a", "a red apple")])
    field = page.locator(".nanobanana-gallery-item .nanobanana-tag-input input")
    field.click()
    page.keyboard.type("portr")
    both = json.dumps([item("n", "a new pear"), item("a", "a red apple")])
    page.evaluate(f"() => window.gallery.set('items', {both})")
    captions = page.locator(".nanobanana-caption").all_inner_texts()
    assert captions == ["a new pear", "a red apple"]
    assert page.evaluate("() => document.activeElement.tagName") == "INPUT"
    apple_field = page.locator(".nanobanana-gallery-item").nth(1).locator("input")
    assert apple_field.input_value() == "portr"
    assert [m for m in sent(page) if m["event"] == "tag"] == []
    page.wait_for_timeout(1300)  # its thumbnail never came: asked for, the new one's only
    assert sent(page)[-1] == {"event": "thumbs", "keys": ["n"]}
    assert page.evaluate("() => document.activeElement.tagName") == "INPUT"
    page.keyboard.type("ait")
    page.keyboard.press("Enter")
    assert [m for m in sent(page) if m["event"] == "tag"] == [
        {"event": "tag", "key": "a", "text": "portrait"}
    ]
    assert apple_field.input_value() == ""


def test_an_input_methods_enter_is_not_a_tag(gallery_page: Any) -> None:
    page = gallery_page
    render(page, [item("a", "a red apple")])
    page.evaluate(
        """() => {
            const input = document.querySelector(".nanobanana-tag-input input");
            input.value = "かんじ";
            input.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", isComposing: true }));
        }"""
    )
    assert [m for m in sent(page) if m["event"] == "tag"] == []


def test_captions_and_tags_are_text_never_markup(gallery_page: Any) -> None:
    page = gallery_page
    hostile = '<img src=x onerror="window.pwned=1">'
    render(page, [item("a", hostile)])
    page.evaluate(
        """() => window.gallery.set("marks", { a: { rating: 2, tags: ['a"b<i>x</i>'] } })"""
    )
    assert page.locator(".nanobanana-caption").inner_text() == hostile
    assert page.locator("button.nanobanana-tag-chip").inner_text() == 'a"b<i>x</i> ×'
    assert page.locator(".nanobanana-gallery-item i").count() == 2  # the two button icons
    stars = page.locator("button.nanobanana-star").all_inner_texts()
    assert stars == ["★", "★", "☆", "☆", "☆"]
    assert page.evaluate("() => window.pwned === undefined")
    page.locator("button.nanobanana-tag-chip").click()
    page.locator("button.nanobanana-star").nth(3).click()
    assert sent(page)[-2:] == [
        {"event": "untag", "key": "a", "tag": 'a"b<i>x</i>'},
        {"event": "rate", "key": "a", "rating": 4},
    ]
