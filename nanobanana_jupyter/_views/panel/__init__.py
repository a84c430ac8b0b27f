"""The ipywidgets panel: compose, generate, compare, iterate. The only view importing ipywidgets.

``Panel(session=None)`` (or ``%nanobanana panel``) shows a prompt box, model, reference
images, options and a Generate button; live task cards; a gallery of results; and a history
view that pages through the store. It is a thin view over one :class:`Session`, made of
parts that each own their state and widgets:

- ``composer``: the prompt box (``prompt_box``: Ctrl/Cmd+Enter), model and options, Generate
  with its debounce, starting tasks and Retry;
- ``references``: the reference picker (URLs, uploads, earlier results; at most four);
- ``cards``: the live task cards (Cancel, Resume, Retry), throttled and coalesced;
- ``compare``: compare mode (the options as axes, Generate as one compare grid, its live
  table of previews);
- ``gallery``: the gallery and its larger view; ``gallery_view``: the one widget that
  draws every item (thumbnail, buttons, stars, tags) in the page;
- ``history``: history paging and the cost line;
- ``search``: the history tab's search box and filters (text, tag, model, status, rating);
- ``rating``: the stars and tag fields of gallery items, the larger view (keys 0-5) and
  finished cards, written to the history;
- ``notebook_slot``: the plain output below the panel that a saved notebook keeps;
- ``panel``: the :class:`Panel`, which composes the parts and wires their events;
- ``context``: what the parts share (the session, the one lock, owned widgets, the status line);
- ``showing``: every piece of display logic the parts use (tones, text, previews, tiles, the
  contact sheet, the one ticker), in one module.

Threading (design.md section 3, research/jupyter-async.md sections 1 and 3):

- Widget callbacks may run on any thread (ipykernel 7 runs comm messages on subshell threads
  when JupyterLab sends them there). A callback hands the work to the session, whose calls
  return at once, and returns. Small local work stays in the callback: converting one
  reference image to a data URI, reading one page of the history. The one bigger piece of
  Pillow work, the 1024 px preview of the larger view, runs in the engine's executor.
  Callbacks never hold the panel's lock while they call into the session (a cancel waits for
  the engine, whose listener needs that lock).
- Background updates come from ``session.subscribe`` (the session's event delivery thread)
  and from the display layer's ticker on the engine loop (which skips a round rather than
  wait while the lock is held). They only set widget
  traits and update one display slot, always under the panel's single lock. Progress is
  throttled to at most four updates a second per card, and coalesced: a card applies the
  newest state of its task, never a queue of old ones. A task that ends is shown at once.
  Nothing here prints or calls ``display()`` from a callback or from background code; errors
  go into the panel's status line, HTML-escaped.

The API key never reaches any widget trait: the panel only holds the session.
"""

from __future__ import annotations

try:
    import ipywidgets
    import traitlets  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the panel needs ipywidgets 8: pip install 'nanobanana-jupyter[panel]'", name="ipywidgets"
    ) from exc

# ipywidgets 7 (Colab ships 7.7.1 and must keep it) builds the widgets but cannot display
# them the way the panel does, nor take its updates from background threads: refuse in one
# line, which %nanobanana panel prints as is (tests/colab runs this on Colab's pins).
if int(ipywidgets.__version__.split(".")[0]) < 8:
    raise ImportError(
        f"the panel needs ipywidgets 8 and this kernel has ipywidgets {ipywidgets.__version__} "
        "(as Colab ships, where it must stay): use the magic's cards (%%nanobanana) instead, "
        "or elsewhere pip install 'nanobanana-jupyter[panel]' and restart the kernel",
        name="ipywidgets",
    )

# The gallery (and the prompt box, and the larger view's keys) are anywidgets.
try:
    import anywidget  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "the panel needs anywidget: pip install anywidget, then restart the kernel and "
        "reload the page",
        name="anywidget",
    ) from exc

from .panel import Panel

__all__ = ["Panel"]
