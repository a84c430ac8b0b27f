"""The panel's gallery as the page shows it, and the messages the page sends.

The gallery is one widget whose ES module (``_views/panel/gallery_view.py``) draws every
item from the widget's ``items`` and ``marks``, asks for thumbnails by message, and sends a
custom message per click. Tests in the kernel read that state as the module draws it and
send those messages to the gallery's handler; tests/browser clicks the drawn elements.

The handler keeps a failure from reaching the kernel (it logs it and says so in the status
line), and ipywidgets' own dispatch would swallow one as well: so each message here is
handed to the handler directly, and a failure that escaped what the click does (the
handler's last guard logged it) fails the test. Failures handled where they belong (a
store that refuses a rating: said in the status line) are the tests' to check.
"""

from __future__ import annotations

import logging
from typing import Any

from nanobanana_jupyter._views.panel import Panel
from nanobanana_jupyter._views.panel.rating import EMPTY, FULL

ESCAPED = "the gallery could not do what was clicked"


class _Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == ESCAPED:
            self.records.append(record)


class GalleryPage:
    def __init__(self, panel: Panel) -> None:
        self.gallery = panel.gallery
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

    def send(self, content: Any) -> None:
        """A message from the page, to the gallery's handler; a failure it logs fails."""
        failures = _Failures()
        logger = logging.getLogger("nanobanana_jupyter")
        logger.addHandler(failures)
        try:
            self.gallery._on_message(self.view, content, [])
        finally:
            logger.removeHandler(failures)
        assert not failures.records, [r.getMessage() for r in failures.records]

    def click(self, item: Any, event: str, **extra: Any) -> None:
        """What the page sends when a button of ``item`` is clicked."""
        self.send({"event": event, "key": item.key, **extra})

    def star(self, item: Any, n: int) -> None:
        self.click(item, "rate", rating=n)

    def type_tag(self, item: Any, text: str) -> None:
        """Text typed in the item's tag field, then Enter."""
        self.click(item, "tag", text=text)

    def remove_tag(self, item: Any, tag: str) -> None:
        self.click(item, "untag", tag=tag)

    def thumbs(self, keys: list[Any]) -> dict[str, bytes]:
        """What the gallery answers the page's ask for thumbnails: key -> JPEG bytes."""
        answers: list[tuple[Any, list[bytes]]] = []
        send = self.view.send
        self.view.send = lambda content, buffers=None: answers.append((content, buffers or []))
        try:
            self.send({"event": "thumbs", "keys": keys})
        finally:
            self.view.send = send
        found: dict[str, bytes] = {}
        for content, buffers in answers:
            assert content["event"] == "thumbs" and len(content["keys"]) == len(buffers)
            found.update(zip(content["keys"], (bytes(b) for b in buffers), strict=True))
        return found
