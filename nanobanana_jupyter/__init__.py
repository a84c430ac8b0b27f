"""Nano Banana Pro image generation (defapi.org) for Jupyter and plain Python.

The public surface is what ``__all__`` lists. Only the errors are imported eagerly (so
``except nanobanana_jupyter.APIError`` costs nothing); every other name is imported on first
use, so ``import nanobanana_jupyter`` stays cheap (benchmarks/bench_import.py) and never
touches httpx, Pillow or Jupyter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
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
    TaskTimeoutError,
    TaskUnavailableError,
    ValidationError,
)
from ._version import __version__

if TYPE_CHECKING:
    from ._client import AsyncClient, Client
    from ._history import History
    from ._models import (
        ASPECT_RATIOS,
        IMAGE_SIZES,
        KNOWN_MODELS,
        GenerationRequest,
        ResultItem,
        TaskSnapshot,
        TaskStatus,
        UnknownModelWarning,
    )
    from ._panel import Panel
    from ._record import ImageRecord, TaskRecord
    from ._retry import RetryPolicy
    from ._scheduler import PollPolicy
    from ._session import Session, get_default_session, set_default_session
    from ._settings import SecretKey, Settings
    from ._task import Task

__all__ = [
    "ASPECT_RATIOS",
    "IMAGE_SIZES",
    "KNOWN_MODELS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "CertificateError",
    "Client",
    "ConfigurationError",
    "ConnectionLostError",
    "GenerationRequest",
    "History",
    "ImageRecord",
    "MissingAPIKeyError",
    "NanoBananaError",
    "NotFoundError",
    "Panel",
    "PollPolicy",
    "ProtocolError",
    "RateLimitError",
    "ResultItem",
    "RetryPolicy",
    "SecretKey",
    "ServerError",
    "Session",
    "Settings",
    "SubmitOutcomeUnknownError",
    "Task",
    "TaskAbandonedError",
    "TaskError",
    "TaskFailedError",
    "TaskRecord",
    "TaskSnapshot",
    "TaskStatus",
    "TaskTimeoutError",
    "TaskUnavailableError",
    "UnknownModelWarning",
    "ValidationError",
    "__version__",
    "get_default_session",
    "set_default_session",
]

# Public name -> private module that defines it, imported on first access.
_LAZY = {
    "ASPECT_RATIOS": "._models",
    "IMAGE_SIZES": "._models",
    "KNOWN_MODELS": "._models",
    "GenerationRequest": "._models",
    "ResultItem": "._models",
    "TaskSnapshot": "._models",
    "TaskStatus": "._models",
    "UnknownModelWarning": "._models",
    "ImageRecord": "._record",
    "TaskRecord": "._record",
    "RetryPolicy": "._retry",
    "SecretKey": "._settings",
    "Settings": "._settings",
    "AsyncClient": "._client",
    "Client": "._client",
    "History": "._history",
    "Panel": "._panel",
    "PollPolicy": "._scheduler",
    "Session": "._session",
    "Task": "._task",
    "get_default_session": "._session",
    "set_default_session": "._session",
}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nanobanana_jupyter``: register the ``%nanobanana`` magic."""
    from ._magic import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nanobanana_jupyter``."""
    from ._magic import unload_ipython_extension as unload

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
