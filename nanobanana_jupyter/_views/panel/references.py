"""The reference picker: URLs, uploads and earlier results, at most four, shown as chips."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from nanobanana_jupyter._store.records import ImageRecord
from nanobanana_jupyter._wire.errors import NanoBananaError
from nanobanana_jupyter._wire.models import MAX_REFERENCE_IMAGES

from .context import PanelContext
from .showing import reference_thumb, safe_src, shorten

__all__ = ["MAX_REFERENCE_IMAGES", "Reference", "ReferencePicker"]


@dataclass
class Reference:
    """One chosen reference image: what is sent (a URL or data URI) and how it is shown."""

    key: str
    payload: str
    label: str
    thumb: bytes | None
    widget: Any = None


def _full() -> str:
    return f"At most {MAX_REFERENCE_IMAGES} reference images; remove one first."


class ReferencePicker:
    """The URL field, the upload button and the chips of the chosen reference images."""

    def __init__(self, context: PanelContext) -> None:
        self._ctx = context
        self._refs: list[Reference] = []
        own = context.own
        self.url_box = own(
            widgets.Text(
                placeholder="https://… reference image URL", layout=widgets.Layout(width="260px")
            )
        )
        self.url_box.add_class("nanobanana-url")
        self.add_url_button = context.button(
            "Add URL", "link", "nanobanana-add-url", "Add as reference"
        )
        self.add_url_button.on_click(lambda _b: self.add_typed_url())
        self.upload = own(
            widgets.FileUpload(
                accept="image/png,image/jpeg,image/webp,image/gif",
                multiple=True,
                description="Upload",
                layout=widgets.Layout(width="110px"),
            )
        )
        self.upload.observe(self._on_upload, names="value")
        self.refs_label = own(widgets.Label("References: none"))
        self.refs_box = context.row([])
        self.refs_box.add_class("nanobanana-refs")
        self.row = context.row([self.url_box, self.add_url_button, self.upload, self.refs_label])

    # -- what the panel reads -------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        """What the chosen reference images are called (URL or file name)."""
        with self._ctx.lock:
            return [r.label for r in self._refs]

    def payloads(self) -> tuple[str, ...]:
        """What is sent for the chosen images (URLs and data URIs), in order."""
        with self._ctx.lock:
            return tuple(r.payload for r in self._refs)

    # -- adding and removing --------------------------------------------------------------

    def add_reference(self, obj: object, *, label: str | None = None) -> bool:
        """Add a reference image: an http(s) URL, a file path, bytes, a PIL image or a task.

        Returns whether it was added; the reason for a refusal shows in the panel.
        """
        from nanobanana_jupyter._core.references import to_reference

        ctx = self._ctx
        if isinstance(obj, str) and obj.strip().lower().startswith(("http://", "https://")):
            url = obj.strip()
            if safe_src(url) is None:
                ctx.say("That URL cannot be used (only plain http(s) URLs).", error=True)
                return False
            return self._push(Reference(url, url, label or url, None))
        with ctx.lock:
            if len(self._refs) >= MAX_REFERENCE_IMAGES:
                ctx.say(_full(), error=True)
                return False
        try:
            payload = to_reference(obj)
        except NanoBananaError as exc:
            ctx.say(exc.message, error=True)
            return False
        thumb = reference_thumb(payload)
        if label is not None:
            name = label
        elif isinstance(obj, Path) or (isinstance(obj, str) and not obj.startswith("data:")):
            name = Path(obj).name
        else:
            name = "image"
        key = hashlib.sha256(payload.encode()).hexdigest()
        return self._push(Reference(key, payload, name, thumb))

    def add_image(self, key: str, image: ImageRecord, thumb: bytes) -> bool:
        """Add an earlier result (a gallery image, ``key`` its content hash)."""
        ctx = self._ctx
        with ctx.lock:
            if any(r.key == key for r in self._refs):
                ctx.say("That image is already a reference.")
                return False
            if len(self._refs) >= MAX_REFERENCE_IMAGES:
                ctx.say(_full(), error=True)
                return False
        from nanobanana_jupyter._core.references import to_reference

        try:
            payload = to_reference(image)
        except NanoBananaError as exc:
            ctx.say(exc.message, error=True)
            return False
        return self._push(Reference(key, payload, Path(image.path).name, thumb))

    def add_typed_url(self) -> bool:
        """Add the URL typed in the field (True when the field is empty); clears it when added."""
        url = self.url_box.value.strip()
        if not url:
            return True
        if not url.lower().startswith(("http://", "https://")):
            self._ctx.say("A reference URL starts with http:// or https://.", error=True)
            return False
        added = self.add_reference(url)
        if added:
            with self._ctx.lock:
                self.url_box.value = ""
        return added

    def clear(self) -> None:
        """Drop every chosen reference image."""
        with self._ctx.lock:
            for ref in list(self._refs):
                self._remove(ref.key)

    def remove_reference(self, index: int) -> None:
        """Drop the ``index``-th chosen reference image."""
        with self._ctx.lock:
            if 0 <= index < len(self._refs):
                self._remove(self._refs[index].key)

    def _remove(self, key: str) -> None:
        with self._ctx.lock:
            ref = next((r for r in self._refs if r.key == key), None)
            if ref is None or self._ctx.closed:
                return
            self._refs.remove(ref)
            self._render()
            self._ctx.drop(ref.widget)

    def _push(self, ref: Reference) -> bool:
        ctx = self._ctx
        with ctx.lock:
            if ctx.closed:
                return False
            if any(r.key == ref.key for r in self._refs):
                ctx.say("That image is already a reference.")
                return False
            if len(self._refs) >= MAX_REFERENCE_IMAGES:
                ctx.say(_full(), error=True)
                return False
            self._refs.append(ref)
            self._render()
        ctx.say(f"Reference added ({len(self._refs)} of {MAX_REFERENCE_IMAGES}).")
        return True

    def _on_upload(self, change: Any) -> None:
        files = change.get("new") or ()
        if not files:
            return
        for item in files:
            try:
                content = item["content"]
                name = str(item.get("name") or "upload")
            except (KeyError, TypeError, AttributeError):
                continue
            if not self.add_reference(bytes(content), label=name):
                break
        with self._ctx.lock:
            if not self._ctx.closed:
                self.upload.value = ()

    # -- the chips ------------------------------------------------------------------------

    def _render(self) -> None:
        """Rebuild the chips of the chosen references (caller holds the lock)."""
        chips = []
        for ref in self._refs:
            if ref.widget is None:
                ref.widget = self._chip(ref)
            chips.append(ref.widget)
        self.refs_box.children = chips
        count = len(self._refs)
        self.refs_label.value = (
            "References: none"
            if not count
            else f"References: {count} of {MAX_REFERENCE_IMAGES} (sent with the next Generate)"
        )

    def _chip(self, ref: Reference) -> Any:
        if ref.thumb is not None:
            shown: Any = widgets.Image(
                value=ref.thumb, format="jpeg", layout=widgets.Layout(height="56px")
            )
        else:
            shown = widgets.Label(
                shorten(ref.label, 28), tooltip=ref.label, layout={"width": "auto"}
            )
        remove = widgets.Button(
            description="Remove",
            icon="times",
            tooltip=f"Remove {ref.label}",
            layout=widgets.Layout(width="auto"),
        )
        remove.add_class("nanobanana-remove-ref")
        remove.on_click(lambda _b, key=ref.key: self._remove(key))
        chip = widgets.VBox(
            [shown, remove],
            layout=widgets.Layout(
                margin="0 6px 6px 0",
                padding="4px",
                border="1px dashed var(--jp-border-color2, #ccc)",
                align_items="center",
            ),
        )
        chip.add_class("nanobanana-ref")
        for w in (shown, remove, chip):
            self._ctx.own(w)
        return chip
