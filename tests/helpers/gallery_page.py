"""The panel's gallery as the page shows it, and the clicks the page sends.

The gallery is one widget whose ES module (``_views/panel/gallery_view.py``) draws every
item from the widget's ``items`` and ``marks`` and sends a custom message per click. Tests
in the kernel read that state as the module draws it and send those messages, through the
widget's own message handler; tests/browser clicks the drawn elements themselves.
"""

from __future__ import annotations

from typing import Any

from nanobanana_jupyter._views.panel import Panel
from nanobanana_jupyter._views.panel.rating import EMPTY, FULL


class GalleryPage:
    def __init__(self, panel: Panel) -> None:
        self.view = panel.gallery.gallery_box

    def entry(self, item: Any) -> dict[str, Any]:
        """What the page draws of ``item``."""
        return next(e for e in self.view.items if e["key"] == item.key)

    def stars(self, item: Any) -> str:
        """The item's five stars as drawn (``★★★☆☆``)."""
        rating = self.view.marks.get(item.key, {}).get("rating")
        return "".join(FULL if rating is not None and n <= rating else EMPTY for n in range(1, 6))

    def tags(self, item: Any) -> list[str]:
        """The item's tag chips as drawn, without their ``×``."""
        return list(self.view.marks.get(item.key, {}).get("tags", []))

    def click(self, item: Any, event: str, **extra: Any) -> None:
        """What the page sends when a button of ``item`` is clicked."""
        self.view._handle_custom_msg({"event": event, "key": item.key, **extra}, [])

    def star(self, item: Any, n: int) -> None:
        self.click(item, "rate", rating=n)

    def type_tag(self, item: Any, text: str) -> None:
        """Text typed in the item's tag field, then Enter."""
        self.click(item, "tag", text=text)

    def remove_tag(self, item: Any, tag: str) -> None:
        self.click(item, "untag", tag=tag)
