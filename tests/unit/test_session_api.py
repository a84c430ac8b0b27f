"""The session's public seams that every view uses: samples, reuse, references.

Against an httpx MockTransport: submits get task ids, queries say the task is still running
(nothing here needs a finished task), so no server and no clock is involved.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobanana_jupyter import Session, Task, ValidationError
from nanobanana_jupyter._core.events import TaskEvent
from tests.helpers.mock_api import Accepting, mock_session


@pytest.fixture
def accepting() -> Accepting:
    return Accepting()


@pytest.fixture
def session(accepting: Accepting, tmp_path: Path) -> Iterator[Session]:
    with mock_session(tmp_path / "data", accepting) as s:
        yield s


def _sent(session: Session, count: int) -> None:
    """Wait (on the tasks' own state, no clock) until ``count`` tasks have task ids."""
    for task in session.tasks[:count]:
        has_id = threading.Event()

        def listener(event: TaskEvent, task: Task = task, has_id: threading.Event = has_id) -> None:
            if event.task is task and event.record.task_id is not None:
                has_id.set()

        unsubscribe = session.subscribe(listener)
        if task.task_id is None:
            assert has_id.wait(10)
        unsubscribe()


def test_n_makes_that_many_samples_once(session: Session, accepting: Accepting) -> None:
    """generate(n=3) starts three samples of one request; the same call again reuses all."""
    first = session.generate("a cat", n=3)
    assert isinstance(first, list) and len(first) == 3
    assert len({task.local_id for task in first}) == 3
    assert [task.reused for task in first] == [False, False, False]
    _sent(session, 3)
    again = session.generate("a cat", n=3)
    assert [task.local_id for task in again] == [task.local_id for task in first]
    assert all(task.reused for task in again)
    assert len(accepting.submits) == 3


@pytest.mark.parametrize("n", [0, 17, -1, 2.5, "3"])
def test_n_out_of_bounds_is_refused_before_anything_is_sent(
    session: Session, accepting: Accepting, n: object
) -> None:
    """n is 1 to 16, checked in one place, before any row is written."""
    with pytest.raises(ValidationError, match="1 to 16"):
        session.generate("a cat", n=n)  # type: ignore[arg-type]
    assert session.tasks == [] and len(session.history) == 0 and accepting.submits == []


def test_a_new_request_is_not_reused(session: Session) -> None:
    """A task a generate call submitted says reused=False."""
    assert session.generate("a dog").reused is False


def test_resolve_reference_names_tasks_of_the_history(session: Session) -> None:
    """@<id> is a task of the history; an unknown id or no success yet is a ValidationError."""
    task = session.generate("a dog")
    assert session.resolve_reference(f"@{task.local_id}") is task
    assert session.resolve_reference("https://example.test/a.png") == "https://example.test/a.png"
    with pytest.raises(ValidationError, match="no such task"):
        session.resolve_reference("@nope")
    with pytest.raises(ValidationError, match="still running"):
        session.resolve_reference("@last", wait=0.0)
