"""The engine: a private loop thread that starts lazily, stops cleanly, and survives fork."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from nanobanana_jupyter._core.engine import Engine, get_engine


def test_runs_coroutines_on_its_own_thread() -> None:
    """Work submitted from this thread runs on the engine's thread and its result comes back."""
    engine = Engine(name="test-engine")
    try:

        async def where() -> str:
            await asyncio.sleep(0)
            return threading.current_thread().name

        assert engine.run(where(), timeout=5) == "test-engine"
        assert engine.running
    finally:
        engine.stop()
    assert not engine.running


def test_stop_runs_closers_and_joins_the_thread() -> None:
    """stop() awaits registered cleanups, then the thread ends; stopping twice is harmless."""
    engine = Engine()
    closed: list[str] = []

    async def closer() -> None:
        closed.append("client")

    engine.add_closer(closer)
    engine.run(asyncio.sleep(0), timeout=5)
    thread = engine._thread
    engine.stop()
    engine.stop()
    assert closed == ["client"]
    assert thread is not None and not thread.is_alive()


def test_run_from_the_engine_thread_refuses_instead_of_deadlocking() -> None:
    """Blocking on the engine from inside it raises at once."""
    engine = Engine()
    try:

        async def nested() -> None:
            engine.run(asyncio.sleep(0))

        with pytest.raises(RuntimeError, match="deadlock"):
            engine.run(nested(), timeout=5)
    finally:
        engine.stop()


def test_call_soon_if_running_never_starts_the_engine() -> None:
    """call_soon_if_running (for finalizers) hands a call over only to a running engine."""
    engine = Engine()
    calls: list[bool] = []
    assert not engine.call_soon_if_running(calls.append, True)
    assert not engine.running
    engine.run(asyncio.sleep(0), timeout=5)
    done = threading.Event()
    assert engine.call_soon_if_running(
        lambda: (calls.append(engine.in_engine_thread()), done.set())
    )
    assert done.wait(5) and calls == [True]
    engine.stop()
    assert not engine.call_soon_if_running(calls.append, False)
    assert calls == [True] and not engine.running


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_forked_child_gets_a_fresh_engine() -> None:
    """After fork, the child starts its own loop thread instead of using the parent's."""
    parent = get_engine()
    parent.run(asyncio.sleep(0), timeout=5)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's teardown
        try:
            child = get_engine()
            ok = child is not parent and child.run(asyncio.sleep(0, "ok"), timeout=5) == "ok"
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
