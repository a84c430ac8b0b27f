"""Nano Banana Pro image generation (defapi.org) for Jupyter and plain Python.

The public surface is what ``__all__`` lists. Only the errors are imported eagerly (so
``except nanobanana_jupyter.APIError`` costs nothing); every other name is imported on first
use, so ``import nanobanana_jupyter`` stays cheap (benchmarks/bench_import.py) and never
touches httpx, Pillow or Jupyter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._store import presenter as _presenter
from ._version import __version__
from ._wire.errors import (
    AmbiguousTaskError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    CertificateError,
    ConfigurationError,
    ConnectionLostError,
    MissingAPIKeyError,
    NanoBananaError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    SubmitOutcomeUnknownError,
    TaskAbandonedError,
    TaskError,
    TaskFailedError,
    TaskLookupError,
    TaskTimeoutError,
    TaskUnavailableError,
    UnknownTaskError,
    ValidationError,
)

if TYPE_CHECKING:
    from ._core.defaults import get_default_session, set_default_session
    from ._core.events import TaskEvent
    from ._core.grid import Grid
    from ._core.poll_policy import PollPolicy
    from ._core.session import Session
    from ._core.spending import SessionCredits
    from ._core.task import Task
    from ._store.annotations import Annotation
    from ._store.history import History
    from ._store.lineage import Lineage
    from ._store.provenance import Provenance, read_provenance
    from ._store.records import ImageRecord, TaskRecord
    from ._views.panel import Panel
    from ._wire.client import AsyncClient, Client
    from ._wire.models import (
        ASPECT_RATIOS,
        IMAGE_SIZES,
        KNOWN_MODELS,
        GenerationRequest,
        TaskStatus,
        UnknownModelWarning,
    )
    from ._wire.retry import RetryPolicy
    from ._wire.settings import SecretKey, Settings
    from ._wire.snapshot import ResultItem, TaskSnapshot

__all__ = [
    "ASPECT_RATIOS",
    "IMAGE_SIZES",
    "KNOWN_MODELS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousTaskError",
    "Annotation",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "CertificateError",
    "Client",
    "ConfigurationError",
    "ConnectionLostError",
    "GenerationRequest",
    "Grid",
    "History",
    "ImageRecord",
    "Lineage",
    "MissingAPIKeyError",
    "NanoBananaError",
    "NotFoundError",
    "Panel",
    "PollPolicy",
    "ProtocolError",
    "Provenance",
    "RateLimitError",
    "ResultItem",
    "RetryPolicy",
    "SecretKey",
    "ServerError",
    "Session",
    "SessionCredits",
    "Settings",
    "SubmitOutcomeUnknownError",
    "Task",
    "TaskAbandonedError",
    "TaskError",
    "TaskEvent",
    "TaskFailedError",
    "TaskList",
    "TaskLookupError",
    "TaskRecord",
    "TaskSnapshot",
    "TaskStatus",
    "TaskTimeoutError",
    "TaskUnavailableError",
    "UnknownModelWarning",
    "UnknownTaskError",
    "ValidationError",
    "__version__",
    "get_default_session",
    "read_provenance",
    "set_default_session",
]

# Public name -> private module that defines it, imported on first access.
_LAZY = {
    "ASPECT_RATIOS": "._wire.models",
    "IMAGE_SIZES": "._wire.models",
    "KNOWN_MODELS": "._wire.models",
    "GenerationRequest": "._wire.models",
    "ResultItem": "._wire.snapshot",
    "TaskSnapshot": "._wire.snapshot",
    "TaskStatus": "._wire.models",
    "UnknownModelWarning": "._wire.models",
    "ImageRecord": "._store.records",
    "TaskRecord": "._store.records",
    "RetryPolicy": "._wire.retry",
    "SecretKey": "._wire.settings",
    "Settings": "._wire.settings",
    "AsyncClient": "._wire.client",
    "Client": "._wire.client",
    "Annotation": "._store.annotations",
    "History": "._store.history",
    "Lineage": "._store.lineage",
    "Provenance": "._store.provenance",
    "read_provenance": "._store.provenance",
    "Panel": "._views.panel",
    "PollPolicy": "._core.poll_policy",
    "Session": "._core.session",
    "SessionCredits": "._core.spending",
    "Task": "._core.task",
    "TaskEvent": "._core.events",
    "Grid": "._core.grid",
    "TaskList": "._core.task_list",
    "get_default_session": "._core.defaults",
    "set_default_session": "._core.defaults",
}


def _text(obj: object) -> str:
    from ._display.present import text

    return text(obj)


def _mimebundle(obj: object) -> Any:
    from ._display.present import mimebundle

    return mimebundle(obj)


def _show(obj: object) -> None:
    from IPython.display import display

    from ._display.present import show

    show(obj, display=display)


def _contact_sheet(sheet: Any) -> str:
    from ._display.contact_sheet import contact_sheet_html

    return contact_sheet_html(sheet)


# The top composes the layers: objects of the store and the core are shown by the display
# layer above them (imported on the first repr, not now), and an export's page is written
# by it.
_presenter.install(text=_text, bundle=_mimebundle, show=_show)
_presenter.install_contact_sheet(_contact_sheet)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nanobanana_jupyter``: register the ``%nanobanana`` magic."""
    from ._views.magic import load_ipython_extension as load

    load(ipython, open_panel=_open_panel)


def _open_panel(session: Any) -> Any:
    try:
        from ._views.panel import Panel
    except ImportError as exc:
        if exc.name not in ("ipywidgets", "anywidget"):
            raise
        # No ipywidgets (or ipywidgets 7), or no anywidget: the panel's one line, which the
        # magic prints.
        raise ConfigurationError(str(exc)) from None
    return Panel(session=session)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nanobanana_jupyter``."""
    from ._views.magic import unload_ipython_extension as unload

    unload(ipython)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
