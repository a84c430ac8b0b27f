"""The gallery's one widget: every thumbnail, its buttons, stars and tags, drawn in the page.

A gallery of 12 images made of ipywidgets was some 750 widgets (each button, label, box
and star its own widget, with its own layout and style), and opening a panel spent most of
its time making them: 170 ms of its 260 ms. Here the whole gallery is one anywidget (an
inline ES module, no network): Python keeps the items (``items``: key, caption, whether it
has stars) and their ratings and tags (``marks``, by key, apart so that a star click sends
a few bytes); the page draws them and sends back what was clicked, as one custom message
each:

- ``{"event": "view" | "use" | "branch", "key": k}``: the item's three buttons;
- ``{"event": "rate", "key": k, "rating": n}``: star ``n`` clicked (Python decides whether
  that clears the rating);
- ``{"event": "tag", "key": k, "text": "..."}``: Enter (or leaving) in the tag field;
- ``{"event": "untag", "key": k, "tag": "..."}``: a tag chip clicked;
- ``{"event": "thumbs", "keys": [...]}``: the page asks for thumbnails it does not have;
  Python answers with the same message and one binary buffer (the JPEG) per key it has.
  It also sends new items' thumbnails as it adds them: a page's ask waits in the kernel's
  queue behind a running cell, and the images would show only once the cell ends.

Thumbnails cross as bytes, apart from the items: in the items they would be sent again,
whole, with every new image. A page that has one ignores it when it comes again. A saved
notebook's widget state has none (the panel needs its kernel; the output below it keeps
the images). The elements carry the classes the cards' and the
larger view's widgets carry (``nanobanana-star``, ``nanobanana-tag-input``,
``nanobanana-tag-chip``...), and the buttons ipywidgets' own (``jupyter-button
widget-button``), so they look like the rest of the panel in every theme. A new image is
put in front of the others, which are not moved: a tag being typed keeps its focus and text.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import traitlets

from .theme import STAR_TEXT

__all__ = ["gallery_view_class"]

_GALLERY_ESM = """
const FULL = "\\u2605", EMPTY = "\\u2606", STARS = 5;

function button(text, css, tip, icon) {
  const b = document.createElement("button");
  b.className = "jupyter-widgets jupyter-button widget-button " + css;
  b.title = tip || "";
  if (icon) {
    const i = document.createElement("i");
    i.className = "fa fa-" + icon;
    b.appendChild(i);
    b.appendChild(document.createTextNode(" "));
  }
  b.appendChild(document.createTextNode(text));
  b.style.width = "auto";
  return b;
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "nanobanana-gallery-items";
  Object.assign(root.style, { display: "flex", flexFlow: "row wrap", alignItems: "flex-start" });
  el.appendChild(root);
  const tiles = new Map();  // key -> {box, stars, chips, input, tags}
  const send = (content) => model.send(content);

  const bar = (key) => {
    const view = document.createElement("div");
    view.className = "nanobanana-rating-bar";
    view.style.margin = "2px 0";
    const row = document.createElement("div");
    Object.assign(row.style, { display: "flex", alignItems: "center" });
    const stars = [];
    for (let n = 1; n <= STARS; n++) {
      const star = button(EMPTY, "nanobanana-star",
                          `Rate ${n} of ${STARS} (click the current rating to clear it)`);
      Object.assign(star.style, { width: "24px", height: "24px", padding: "0", margin: "0",
                                  background: "transparent", color: model.get("star_colour"),
                                  fontSize: "16px" });
      star.addEventListener("click", () => send({ event: "rate", key, rating: n }));
      stars.push(star);
      row.appendChild(star);
    }
    const field = document.createElement("div");
    field.className = "nanobanana-tag-input";
    const input = document.createElement("input");
    input.type = "text";
    input.placeholder = "tag, Enter";
    Object.assign(input.style, {
      width: "86px", marginLeft: "4px", boxSizing: "border-box", padding: "2px 6px",
      height: "var(--jp-widgets-inline-height, 28px)",
      fontFamily: "var(--jp-ui-font-family, inherit)",
      fontSize: "var(--jp-widgets-font-size, 13px)",
      color: "var(--jp-widgets-input-color, inherit)",
      background: "var(--jp-widgets-input-background-color, transparent)",
      border: "1px solid var(--jp-widgets-input-border-color, #9e9e9e)",
    });
    // Lumino leaves the keys typed here to the field (no cell shortcuts while tagging).
    input.setAttribute("data-lm-suppress-shortcuts", "true");
    const commit = () => {
      const text = input.value;
      input.value = "";
      if (text.trim()) send({ event: "tag", key, text });
    };
    input.addEventListener("keydown", (event) => {
      event.stopPropagation();
      if (event.isComposing || event.keyCode === 229) return;  // an input method's Enter
      if (event.key === "Enter") { event.preventDefault(); commit(); }
    });
    input.addEventListener("blur", commit);
    field.appendChild(input);
    row.appendChild(field);
    const chips = document.createElement("div");
    chips.className = "nanobanana-tag-chips";
    Object.assign(chips.style, { display: "flex", flexFlow: "row wrap" });
    view.appendChild(row);
    view.appendChild(chips);
    return { view, stars, chips, input };
  };

  const tile = (item) => {
    const box = document.createElement("div");
    box.className = "nanobanana-gallery-item";
    Object.assign(box.style, { width: "224px", margin: "0 8px 8px 0", display: "flex",
                               flexDirection: "column", alignItems: "flex-start" });
    const img = document.createElement("img");
    img.className = "nanobanana-thumb";
    img.alt = item.caption;
    Object.assign(img.style, { width: "216px", height: "auto", minHeight: "40px" });
    const caption = document.createElement("div");
    caption.className = "widget-label nanobanana-caption";
    caption.textContent = item.caption;
    caption.title = item.tooltip;
    Object.assign(caption.style, {
      width: "216px", overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap",
      color: "var(--jp-widgets-label-color, var(--jp-ui-font-color1, inherit))",
      fontSize: "var(--jp-widgets-font-size, 13px)",
      lineHeight: "var(--jp-widgets-inline-height, 28px)",
    });
    const buttons = document.createElement("div");
    buttons.className = "nanobanana-gallery-buttons";
    Object.assign(buttons.style, { display: "flex", flexFlow: "row wrap", gap: "2px" });
    const key = item.key;
    const actions = [
      ["View", "nanobanana-view", "Larger view and file path", "search-plus", "view"],
      ["Use as reference", "nanobanana-use-ref", "Add to the reference images", null, "use"],
      ["Branch", "nanobanana-branch", item.branch_tip, "code-fork", "branch"],
    ];
    for (const [text, css, tip, icon, event] of actions) {
      const b = button(text, css, tip, icon);
      b.addEventListener("click", () => send({ event, key }));
      buttons.appendChild(b);
    }
    box.append(img, caption, buttons);
    const made = { box, img, url: null, asked: false, tags: null };
    if (item.curating) {
      Object.assign(made, bar(key));
      box.appendChild(made.view);
    }
    return made;
  };

  const mark = (key, made) => {
    if (!made.stars) return;
    const marks = model.get("marks")[key] || { rating: null, tags: [] };
    made.stars.forEach((star, i) => {
      star.textContent = marks.rating !== null && i < marks.rating ? FULL : EMPTY;
    });
    const tags = JSON.stringify(marks.tags);
    if (made.tags === tags) return;
    made.tags = tags;
    made.chips.replaceChildren(...marks.tags.map((tag) => {
      const chip = button(`${tag} \u00d7`, "nanobanana-tag-chip", `Remove the tag '${tag}'`);
      Object.assign(chip.style, { height: "22px", padding: "0 6px", margin: "0 4px 2px 0",
                                  fontSize: "11px" });
      chip.addEventListener("click", () => send({ event: "untag", key, tag }));
      return chip;
    }));
  };

  const forget = (made) => { if (made.url) URL.revokeObjectURL(made.url); };

  const draw = () => {
    const items = model.get("items");
    const keep = new Set(items.map((item) => item.key));
    for (const [key, made] of [...tiles]) {
      if (!keep.has(key)) { made.box.remove(); forget(made); tiles.delete(key); }
    }
    // In order, each box where it belongs: a new one is inserted, the others stay put
    // (a moved element loses the focus, and a half-typed tag with it).
    items.forEach((item, i) => {
      let made = tiles.get(item.key);
      if (!made) { made = tile(item); tiles.set(item.key, made); }
      mark(item.key, made);
      const here = root.children[i] || null;
      if (here !== made.box) root.insertBefore(made.box, here);
    });
    // A first drawing asks at once; later, new items' thumbnails are on their way (sent
    // with them), so the page asks only for those still missing a second later.
    if (drawn) setTimeout(ask, 1000); else ask();
    drawn = true;
  };
  let drawn = false;
  const ask = () => {
    const missing = [...tiles].filter(([, made]) => !made.url && !made.asked);
    if (missing.length) {
      missing.forEach(([, made]) => { made.asked = true; });
      send({ event: "thumbs", keys: missing.map(([key]) => key) });
    }
  };
  const remark = () => { for (const [key, made] of tiles) mark(key, made); };
  const receive = (content, buffers) => {
    if (!content || content.event !== "thumbs" || !Array.isArray(content.keys)) return;
    content.keys.forEach((key, i) => {
      const made = tiles.get(key);
      const data = buffers && buffers[i];
      if (!made || !data || made.url) return;
      made.url = URL.createObjectURL(new Blob([data], { type: "image/jpeg" }));
      made.img.src = made.url;
    });
  };
  model.on("change:items", draw);
  model.on("change:marks", remark);
  model.on("msg:custom", receive);
  draw();
  return () => {
    model.off("change:items", draw);
    model.off("change:marks", remark);
    model.off("msg:custom", receive);
    for (const made of tiles.values()) forget(made);
  };
}
export default { render };
"""


@functools.lru_cache(maxsize=1)
def gallery_view_class() -> Any:
    """The gallery's anywidget class (the panel's import check makes sure anywidget is there)."""
    base: Any = importlib.import_module("anywidget").AnyWidget

    class GalleryView(base):
        """Every item of the gallery, drawn by the page; clicks come back as messages."""

        _esm = _GALLERY_ESM
        items = traitlets.List(traitlets.Dict()).tag(sync=True)
        """Newest first: ``key``, ``caption``, ``tooltip``, ``branch_tip``, ``curating``
        (whether it has stars and tags). The thumbnails come by message, as bytes."""
        marks = traitlets.Dict().tag(sync=True)
        """By key: ``{"rating": int | None, "tags": [...]}``."""
        star_colour = traitlets.Unicode(STAR_TEXT).tag(sync=True)

    return GalleryView
