"""The prompt box: a textarea whose Ctrl/Cmd+Enter generates.

ipywidgets 8's ``Textarea`` has no key events (its view stops every keydown from
propagating, and ``Text.on_submit`` is deprecated and single-line). So the prompt box is a
tiny anywidget (an inline ES module, no network) that renders a textarea, syncs ``value`` as
you type, and on Ctrl+Enter or Cmd+Enter sends one custom message ``{"event": "submit"}``;
it carries ``data-lm-suppress-shortcuts`` so JupyterLab and Notebook 7 leave those keys to
it. The panel needs anywidget (its package refuses to import without it).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import traitlets

__all__ = ["make_prompt_box", "prompt_class"]

_PROMPT_ESM = """
function render({ model, el }) {
  const box = document.createElement("textarea");
  box.className = "nanobanana-prompt-input";
  box.rows = 3;
  box.spellcheck = true;
  // Lumino (JupyterLab, Notebook 7) skips its keyboard shortcuts for events from inside an
  // element carrying this attribute: Ctrl/Cmd+Enter here generates instead of running the cell.
  box.setAttribute("data-lm-suppress-shortcuts", "true");
  Object.assign(box.style, {
    width: "100%", boxSizing: "border-box", resize: "vertical", minHeight: "64px",
    padding: "6px 8px", fontFamily: "var(--jp-ui-font-family, inherit)",
    fontSize: "var(--jp-widgets-font-size, 13px)",
    color: "var(--jp-widgets-input-color, inherit)",
    background: "var(--jp-widgets-input-background-color, transparent)",
    border: "1px solid var(--jp-widgets-input-border-color, #9e9e9e)", borderRadius: "3px",
  });
  const sync = () => {
    box.placeholder = model.get("placeholder") || "";
    box.disabled = !!model.get("disabled");
    const value = model.get("value") || "";
    if (box.value !== value) box.value = value;
  };
  const push = () => {
    if (model.get("value") !== box.value) {
      model.set("value", box.value);
      model.save_changes();
    }
  };
  box.addEventListener("input", push);
  box.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      push();
      model.send({ event: "submit" });
    }
  });
  box.addEventListener("keypress", (event) => event.stopPropagation());
  model.on("change:value", sync);
  model.on("change:placeholder", sync);
  model.on("change:disabled", sync);
  sync();
  el.appendChild(box);
  return () => {
    model.off("change:value", sync);
    model.off("change:placeholder", sync);
    model.off("change:disabled", sync);
  };
}
export default { render };
"""


@functools.lru_cache(maxsize=1)
def prompt_class() -> Any:
    """The anywidget prompt box class."""
    base: Any = importlib.import_module("anywidget").AnyWidget

    class PromptBox(base):
        """A textarea whose Ctrl/Cmd+Enter sends ``{"event": "submit"}`` to Python."""

        _esm = _PROMPT_ESM
        value = traitlets.Unicode("").tag(sync=True)
        placeholder = traitlets.Unicode("").tag(sync=True)
        disabled = traitlets.Bool(False).tag(sync=True)

    return PromptBox


def make_prompt_box(placeholder: str) -> tuple[Any, bool]:
    """The prompt widget and whether it has the Ctrl/Cmd+Enter shortcut (it has)."""
    return prompt_class()(placeholder=placeholder), True
