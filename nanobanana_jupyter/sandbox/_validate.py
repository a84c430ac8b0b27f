"""Validation of submit bodies, with the service's error details.

Written independently of the client's request building on purpose: if both sides shared one
serialiser, a bug in it would be invisible to the tests.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from ._draw import ASPECT_RATIOS, IMAGE_SIZES
from ._state import SubmitRequest

MAX_IMAGES = 4


class Invalid(Exception):
    """The body is not a valid request; ``detail`` goes in the 400 envelope."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def is_http_url(value: str) -> bool:
    """Whether ``value`` is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _optional_str(body: dict[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string")
    return value


def parse_submit(raw: bytes) -> SubmitRequest:
    """Parse and validate a submit body, raising ``Invalid`` with the first problem found."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("request body must be valid JSON") from None
    if not isinstance(body, dict):
        raise Invalid("request body must be a JSON object")

    prompt = _optional_str(body, "prompt")
    if not prompt or not prompt.strip():
        raise Invalid("prompt is required")
    model = _optional_str(body, "model")
    if not model or not model.strip():
        raise Invalid("model is required")

    images_value = body.get("images")
    if images_value is None:
        images_value = []
    if not isinstance(images_value, list):
        raise Invalid("images must be an array of strings")
    if len(images_value) > MAX_IMAGES:
        raise Invalid(f"images accepts at most {MAX_IMAGES} items")
    images: list[str] = []
    for i, item in enumerate(images_value):
        if not isinstance(item, str) or not (item.startswith("data:image/") or is_http_url(item)):
            raise Invalid(f"images[{i}] must be an http(s) URL or a data:image/ URI")
        images.append(item)

    aspect_ratio = _optional_str(body, "aspect_ratio") or "auto"
    if aspect_ratio not in ASPECT_RATIOS:
        raise Invalid(f"aspect_ratio must be one of: {', '.join(ASPECT_RATIOS)}")
    image_size = _optional_str(body, "image_size") or "1K"
    if image_size not in IMAGE_SIZES:
        raise Invalid(f"image_size must be one of: {', '.join(IMAGE_SIZES)}")
    callback_url = _optional_str(body, "callback_url") or None
    if callback_url is not None and not is_http_url(callback_url):
        raise Invalid("callback_url must be an http(s) URL")

    return SubmitRequest(
        prompt=prompt,
        model=model,
        images=tuple(images),
        aspect_ratio=aspect_ratio,
        image_size=image_size,
        callback_url=callback_url,
    )
