"""Fixtures shared by every test: a clean environment, a sentinel key, a fake clock."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

# Random per run, so no code can know it; the same in every pytest-xdist worker of one run
# (tests parametrized with it must be collected alike by all workers).
SENTINEL_KEY = f"dk-SENTINEL{os.environ.get('PYTEST_XDIST_TESTRUNUID') or uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts with no NANOBANANA_*/DEFAPI_* variables and an empty working dir."""
    for name in list(os.environ):
        if name.startswith(("NANOBANANA_", "DEFAPI_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _unknown_models_told_again() -> None:
    """An unknown model is told once per process; every test starts as a new process."""
    from nanobanana_jupyter._wire.models import _forget_told_models

    _forget_told_models()


@pytest.fixture
def sentinel_key() -> str:
    """A key-shaped secret that must never appear in any output, error or file."""
    return SENTINEL_KEY


class FakeSleep:
    """Records requested sleeps instead of sleeping (fake clock for retry tests)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()
