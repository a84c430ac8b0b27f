"""The names the panel still imports from here, until it is switched to the display modules.

Everything that was in this module has moved to its owner: :mod:`.words` (status words and
tones, cost, duration), :mod:`.html` (escaping, safe URLs, the card, the history table),
:mod:`.previews`, :mod:`.bundles` and :mod:`.progress`. Nothing new goes here; the module
goes once the panel imports from those modules.
"""

from __future__ import annotations

from .html import data_uri, escape, history_html, safe_src
from .words import format_cost, format_duration, status_label

__all__ = [
    "data_uri",
    "escape",
    "format_cost",
    "format_duration",
    "history_html",
    "safe_src",
    "status_label",
]
