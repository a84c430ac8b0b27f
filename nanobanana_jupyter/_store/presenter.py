"""How objects of the layers below the display are shown, installed from above.

``History`` (store) and ``Task`` (core) are shown by the display layer, which sits above
them, so they cannot import it. The package's top (``nanobanana_jupyter/__init__.py``, which
composes the layers) installs the display layer's functions here; they import the display
modules on the first repr, so ``import nanobanana_jupyter`` stays cheap. Without them
(nothing installed, as in a test that calls :func:`install` with its own) the fallback is
plain text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "Bundle",
    "contact_sheet",
    "install",
    "install_contact_sheet",
    "mimebundle",
    "show",
    "text",
]

Bundle = dict[str, Any] | tuple[dict[str, Any], dict[str, Any]]

_text: Callable[[object], str] | None = None
_bundle: Callable[[object], Bundle] | None = None
_show: Callable[[object], None] | None = None
_sheet: Callable[[object], str] | None = None


def install(
    *,
    text: Callable[[object], str],
    bundle: Callable[[object], Bundle],
    show: Callable[[object], None] | None = None,
) -> None:
    """Set the functions that give an object's plain text and its Jupyter mimebundle, and
    the one that shows it as a cell's result (``_ipython_display_``)."""
    global _text, _bundle, _show
    _text, _bundle, _show = text, bundle, show


def text(obj: object, fallback: str) -> str:
    """``obj``'s plain text, as the display layer writes it (``fallback`` without one)."""
    return fallback if _text is None else _text(obj)


def mimebundle(obj: object, fallback: str) -> Bundle:
    """``obj``'s mimebundle for ``_repr_mimebundle_`` (plain ``fallback`` without one)."""
    return {"text/plain": fallback} if _bundle is None else _bundle(obj)


def show(obj: object) -> None:
    """Show ``obj`` as a cell's result, as the display layer does (its text without one)."""
    if _show is not None:
        _show(obj)
    else:
        print(text(obj, repr(obj)))


def install_contact_sheet(render: Callable[[object], str]) -> None:
    """Set the function that writes an export's ``index.html`` from its
    :class:`.sharing.ContactSheet` (kept apart from :func:`install`, which tests call with
    their own text and bundle functions)."""
    global _sheet
    _sheet = render


def contact_sheet(sheet: object) -> str:
    """The page of an export (``index.html``), as the display layer writes it.

    Raises:
        RuntimeError: no renderer is installed (the package's top installs it on import).
    """
    if _sheet is None:
        raise RuntimeError("no contact sheet renderer is installed; import nanobanana_jupyter")
    return _sheet(sheet)
