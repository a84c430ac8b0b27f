"""Fixtures for tests against a real sandbox server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nanobanana_jupyter.sandbox import Sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh sandbox, 100x faster than real time (a 4-12 s task takes 40-120 ms).

    At teardown it proves, from its ledger, that no logical submission was charged twice.
    """
    with Sandbox(time_scale=0.01, max_side=256) as server:
        yield server
        assert server.ledger.double_charges() == []
