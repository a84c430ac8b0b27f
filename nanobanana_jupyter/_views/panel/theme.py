"""The panel's one stylesheet: coloured text that reads on light and dark themes.

The display layer's tone colours (:data:`.words.TONE_COLOURS`) are ``color-mix``
expressions, which inline HTML takes as they are, but which ipywidgets' ``Color`` trait
(``style.text_color``) refuses; it does take ``var(--name, fallback)``. So the panel's label
and button widgets name a custom property here (:func:`tone_text`, :data:`STAR_TEXT`), and
the panel carries one hidden ``<style>`` that defines each property on ``.nanobanana-panel``
(a custom property holding ``currentColor`` resolves where it is used, so the mix follows
each element's own theme colour). The fallback is the tone's plain colour, for a page where
the stylesheet never arrived.

The same stylesheet gives the Gallery/History tab labels the theme's first text colour:
JupyterLab's inactive-tab grey on its tab-bar grey is 4.4:1 in Light and 4.2:1 in Dark.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from nanobanana_jupyter._display.words import STAR_COLOUR, TONE_COLOURS, on_theme

__all__ = ["STAR_TEXT", "STYLESHEET", "stylesheet", "tone_text"]


def _name(what: str) -> str:
    return f"--nanobanana-{what}-text"


def tone_text(tone: str) -> str:
    """A tone's text colour for a widget's ``style.text_color``."""
    colours = TONE_COLOURS.get(tone, TONE_COLOURS["neutral"])
    return f"var({_name(tone)}, {colours.hue})"


STAR_TEXT = f"var({_name('star')}, {STAR_COLOUR})"
"""The stars' colour for a button's ``style.text_color``."""

_PROPERTIES = ";".join(
    [f"{_name(tone)}:{colours.text}" for tone, colours in TONE_COLOURS.items()]
    + [f"{_name('star')}:{on_theme(STAR_COLOUR)}"]
)
_TABS = ",".join(
    f".nanobanana-panel .nanobanana-tabs .{bar}-TabBar-tab:not(.{bar}-mod-current)"
    for bar in ("lm", "p")  # Lumino 2 (ipywidgets 8), PhosphorJS (ipywidgets 7)
)
STYLESHEET = (
    f"<style>.nanobanana-panel{{{_PROPERTIES}}}"
    f"{_TABS}{{color:var(--jp-ui-font-color1,inherit)}}</style>"
)


def stylesheet() -> Any:
    """The hidden HTML widget that carries :data:`STYLESHEET` (one per panel)."""
    sheet = widgets.HTML(STYLESHEET, layout=widgets.Layout(display="none"))
    sheet.add_class("nanobanana-stylesheet")
    return sheet
