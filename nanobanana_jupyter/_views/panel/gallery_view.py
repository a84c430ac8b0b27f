"""The gallery's one widget: every thumbnail, its buttons, stars and tags, drawn in the page.

A gallery of 12 images made of ipywidgets was some 750 widgets (each button, label, box
and star its own widget, with its own layout and style), and opening a panel spent most of
its time making them: 170 ms of its 260 ms. Here the whole gallery is one anywidget (an
inline ES module, no network): Python keeps the items (``items``: key, thumbnail, caption,
whether it has stars) and their ratings and tags (``marks``, by key, apart so that a star
click resends no thumbnail); the page draws them and sends back what was clicked, as one
custom message each:

- ``{"event": "view" | "use" | "branch", "key": k}``: the item's three buttons;
- ``{"event": "rate", "key": k, "rating": n}``: star ``n`` clicked (Python decides whether
  that clears the rating);
- ``{"event": "tag", "key": k, "text": "..."}``: Enter (or leaving) in the tag field;
- ``{"event": "untag", "key": k, "tag": "..."}``: a tag chip clicked.

The elements carry the classes the cards' and the larger view's widgets carry
(``nanobanana-star``, ``nanobanana-tag-input``, ``nanobanana-tag-chip``...), and the buttons
ipywidgets' own (``jupyter-button widget-button``), so they look like the rest of the panel
in every theme. Redrawn, an item keeps its element (its image is not decoded again, a
half-typed tag stays).
"""

from __future__ import annotations

import base64
import functools
import importlib
from typing import Any

import traitlets

from .theme import STAR_TEXT

__all__ = ["gallery_view_class", "thumb_source"]

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
    img.src = item.thumb;
    img.alt = item.caption;
    Object.assign(img.style, { width: "216px", height: "auto" });
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
    const made = { box, tags: null };
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
      const chip = button(`${tag} \\u00d7`, "nanobanana-tag-chip", `Remove the tag '${tag}'`);
      Object.assign(chip.style, { height: "22px", padding: "0 6px", margin: "0 4px 2px 0",
                                  fontSize: "11px" });
      chip.addEventListener("click", () => send({ event: "untag", key, tag }));
      return chip;
    }));
  };

  const draw = () => {
    const items = model.get("items");
    const keep = new Set(items.map((item) => item.key));
    for (const key of [...tiles.keys()]) if (!keep.has(key)) tiles.delete(key);
    const boxes = items.map((item) => {
      let made = tiles.get(item.key);
      if (!made) { made = tile(item); tiles.set(item.key, made); }
      mark(item.key, made);
      return made.box;
    });
    root.replaceChildren(...boxes);
  };
  const remark = () => { for (const [key, made] of tiles) mark(key, made); };
  model.on("change:items", draw);
  model.on("change:marks", remark);
  draw();
  return () => {
    model.off("change:items", draw);
    model.off("change:marks", remark);
  };
}
export default { render };
"""


def thumb_source(jpeg: bytes) -> str:
    """A thumbnail as the ``src`` of the page's ``<img>``."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


@functools.lru_cache(maxsize=1)
def gallery_view_class() -> Any:
    """The gallery's anywidget class (the panel's import check makes sure anywidget is there)."""
    base: Any = importlib.import_module("anywidget").AnyWidget

    class GalleryView(base):
        """Every item of the gallery, drawn by the page; clicks come back as messages."""

        _esm = _GALLERY_ESM
        items = traitlets.List(traitlets.Dict()).tag(sync=True)
        """Newest first: ``key``, ``thumb`` (a data URI), ``caption``, ``tooltip``,
        ``branch_tip``, ``curating`` (whether it has stars and tags)."""
        marks = traitlets.Dict().tag(sync=True)
        """By key: ``{"rating": int | None, "tags": [...]}``."""
        star_colour = traitlets.Unicode(STAR_TEXT).tag(sync=True)

    return GalleryView
