"""Session, Task and History against a real sandbox: the core's promises end to end."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from nanobanana_jupyter import (
    PollPolicy,
    Session,
    Settings,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskStatus,
    TaskTimeoutError,
    TaskUnavailableError,
    ValidationError,
)
from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan
from nanobanana_jupyter.sandbox._app import SUBMIT_PATH

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCALE = 0.01


def make_session(sb: Sandbox, data_dir: Path, **kwargs: object) -> Session:
    settings = Settings.resolve(
        api_key=sb.api_key,
        base_url=sb.url,
        data_dir=data_dir,
        environ={},
        allow_local_urls=True,  # the sandbox's images come from 127.0.0.1
        **kwargs.pop("settings", {}),  # type: ignore[arg-type]
    )
    kwargs.setdefault("poll_policy", PollPolicy().scaled(SCALE))
    return Session(settings=settings, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def session(sandbox: Sandbox, tmp_path: Path) -> Iterator[Session]:
    with make_session(sandbox, tmp_path / "data") as s:
        yield s


def test_generate_returns_at_once_and_wait_gives_images_on_disk(
    session: Session, sandbox: Sandbox
) -> None:
    """generate() returns before the task is done; wait() ends with the image stored locally."""
    task = session.generate("a cat in a banana costume", aspect_ratio="1:1")
    assert not task.done()
    assert task.status in (TaskStatus.WAITING_TO_SEND, TaskStatus.SUBMITTING, TaskStatus.PENDING)
    task.wait(timeout=20)
    assert task.status is TaskStatus.SUCCESS, task.error
    assert task.cost == Decimal("0.5")
    (image,) = task.result()
    assert Path(image.path).is_file() and Path(image.thumb_path or "").is_file()
    assert image.url is not None and image.media_type == "image/png"
    assert task.image.size == (image.width, image.height)
    assert sandbox.ledger.charges == {task.task_id: pytest.approx(0.5)}


def test_history_as_records_and_dataframe(session: Session) -> None:
    """The history lists every task; to_pandas gives one row per task with costs."""
    tasks = session.map(["one", "two", "three"], aspect_ratio="4:3")
    for t in tasks:
        t.wait(timeout=20)
    history = session.history
    assert len(history) == 3
    assert [r.prompt for r in history] == ["one", "two", "three"]
    assert history[-1].prompt == "three"
    assert history.total_cost == Decimal("1.5")
    frame = history.to_pandas()
    assert list(frame["status"]) == ["success"] * 3
    assert frame["consumed"].sum() == pytest.approx(1.5)
    assert len(history.filter(status="success", text="tw")) == 1
    html = history._repr_html_()
    assert "3 tasks" in html and "<script" not in html


def test_identical_request_reuses_the_finished_task(session: Session, sandbox: Sandbox) -> None:
    """Re-running an identical request pays nothing; force=True sends it again."""
    first = session.generate("same prompt", aspect_ratio="1:1").wait(timeout=20)
    again = session.generate("same prompt", aspect_ratio="1:1")
    assert again.local_id == first.local_id and again.done()
    assert len(sandbox.ledger.charges) == 1
    forced = session.generate("same prompt", aspect_ratio="1:1", force=True).wait(timeout=20)
    assert forced.local_id != first.local_id
    assert len(sandbox.ledger.charges) == 2


def test_double_click_while_running_submits_once(session: Session, sandbox: Sandbox) -> None:
    """S11: the same request twice while the first is still running is one submit."""
    a = session.generate("double click")
    b = session.generate("double click")
    assert a is b
    a.wait(timeout=20)
    assert sandbox.ledger.submits_received == 1


def test_failed_task_carries_the_reason(session: Session, sandbox: Sandbox) -> None:
    """A task the server fails ends failed, with the server's reason in the error."""
    sandbox.plan(TaskPlan(outcome="failed", reason="no bananas <b>today</b>"))
    task = session.generate("will fail").wait(timeout=20)
    assert task.status is TaskStatus.FAILED
    with pytest.raises(TaskFailedError, match="no bananas"):
        task.result()


def test_submit_unknown_is_recorded_and_never_resent(sandbox: Sandbox, tmp_path: Path) -> None:
    """S3 through the session: a hung submit becomes submit_unknown; one charge, no resend."""
    sandbox.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
    with make_session(sandbox, tmp_path, settings={"submit_timeout": 0.3}) as session:
        task = session.generate("hangs").wait(timeout=20)
        assert task.status is TaskStatus.SUBMIT_UNKNOWN
        assert "may have been charged" in (task.error or "")
        with pytest.raises(SubmitOutcomeUnknownError):
            task.result()
        # A re-run of the same request must not silently pay again either.
        assert session.generate("hangs").local_id == task.local_id
    assert sandbox.ledger.submits_received == 1
    assert len(sandbox.ledger.charges) == 1


def test_not_sent_on_validation_by_server(sandbox: Sandbox, session: Session) -> None:
    """A 401 at submit: the task ends not_sent, nothing charged, the reason says the key."""
    sandbox.faults.add("submit", Fault.UNAUTHORIZED)
    task = session.generate("refused").wait(timeout=20)
    assert task.status is TaskStatus.NOT_SENT
    assert "key" in (task.error or "")
    assert sandbox.ledger.charges == {}


def test_bad_input_raises_at_once_and_writes_nothing(session: Session) -> None:
    """Bad input is refused in the caller's thread; the history stays empty."""
    with pytest.raises(ValidationError):
        session.generate("")
    with pytest.raises(ValidationError):
        session.generate("x", images=["/no/such/file.png"])
    with pytest.raises(ValidationError):
        session.map(["good", ""])
    assert len(session.history) == 0


def test_a_huge_reference_image_is_refused_before_anything_is_sent(
    session: Session, sandbox: Sandbox, tmp_path: Path
) -> None:
    """H16: a 300-megapixel reference is a ValidationError saying to downscale; nothing sent."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + kind + body + crc

    huge = tmp_path / "huge.png"
    huge.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20_000, 15_000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(ValidationError, match="downscale"):
        session.generate("edit this", images=[huge])
    assert len(session.history) == 0
    assert sandbox.ledger.submits_received == 0


def test_image_of_a_deleted_file_says_which_file_and_what_to_do(session: Session) -> None:
    """H16: task.image after its file was deleted raises TaskUnavailableError naming the file."""
    task = session.generate("soon deleted").wait(timeout=20)
    assert task.status is TaskStatus.SUCCESS, task.error
    path = Path(task.images[0].path)
    path.unlink()
    with pytest.raises(TaskUnavailableError) as info:
        _ = task.image
    message = str(info.value)
    assert str(path) in message and "force=True" in message
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_stuck_task_times_out_and_resumes(sandbox: Sandbox, tmp_path: Path) -> None:
    """P5: a stuck task times out locally (resumable); resume() after it finishes completes it."""
    sandbox.plan(TaskPlan(stuck=True))
    with make_session(sandbox, tmp_path, settings={"deadline": 0.5}) as session:
        task = session.generate("stuck").wait(timeout=20)
        assert task.status is TaskStatus.TIMED_OUT
        with pytest.raises(TaskTimeoutError, match="resume"):
            task.result()
    assert len(sandbox.ledger.charges) == 1


def test_invisible_task_is_tolerated(session: Session, sandbox: Sandbox) -> None:
    """P3: a task the server does not show for its first moments still completes."""
    sandbox.plan(TaskPlan(invisible_for=3.0))
    task = session.generate("eventually consistent").wait(timeout=20)
    assert task.status is TaskStatus.SUCCESS


def test_expired_image_leaves_the_task_unavailable(session: Session, sandbox: Sandbox) -> None:
    """R1: success whose image URL expired: unavailable with the reason; no new charge."""
    sandbox.faults.add("cdn", Fault.EXPIRED, count=5)
    task = session.generate("gone too soon").wait(timeout=20)
    assert task.status is TaskStatus.UNAVAILABLE
    with pytest.raises(TaskUnavailableError, match="expired"):
        task.result()
    assert len(sandbox.ledger.charges) == 1


def test_several_images_and_data_uris(session: Session, sandbox: Sandbox) -> None:
    """R8: several images, mixed URLs and data URIs, are all stored."""
    sandbox.plan(TaskPlan(images=3, result_mode="mixed"))
    task = session.generate("three of them").wait(timeout=20)
    assert task.status is TaskStatus.SUCCESS
    assert len(task.images) == 3
    assert len({i.sha256 for i in task.images}) == 3


def test_reference_images_from_files_and_results(session: Session, tmp_path: Path) -> None:
    """A local file and an earlier task can be references; they become inline images."""
    first = session.generate("base image").wait(timeout=20)
    local = tmp_path / "ref.png"
    first.image.save(local)
    second = session.generate("edit it", images=[local, first]).wait(timeout=20)
    assert second.status is TaskStatus.SUCCESS
    assert len(second.record.references) == 2
    assert all(r.startswith("sha256:") for r in second.record.references)


def test_await_and_done_callbacks(session: Session) -> None:
    """`await task` works on any loop, and done callbacks fire once with the task."""
    seen: list[str] = []
    fired = threading.Event()

    def on_done(task: object) -> None:
        seen.append(task.status.value)
        fired.set()

    async def main() -> str:
        task = session.generate("awaited")
        task.add_done_callback(on_done)
        done = await task
        return done.status.value

    assert asyncio.run(main()) == "success"
    assert fired.wait(5)
    assert seen == ["success"]


def test_cancel_abandons_locally(sandbox: Sandbox, session: Session) -> None:
    """P8: cancel stops polling and marks the task abandoned (the server may still charge)."""
    sandbox.plan(TaskPlan(duration=500))
    task = session.generate("cancel me")
    for _ in range(200):
        if task.task_id:
            break
        threading.Event().wait(0.01)
    assert task.cancel()
    assert task.status is TaskStatus.ABANDONED and task.done()
    assert "may still" in (task.error or "")


def test_webhook_callbacks_trigger_a_confirming_query(sandbox: Sandbox, tmp_path: Path) -> None:
    """W1: with the receiver on, each task is seen done through its callback, with few queries."""
    with make_session(sandbox, tmp_path, webhook=True, poll_policy=None) as session:
        tasks = session.map([f"hooked {i}" for i in range(5)])
        for t in tasks:
            t.wait(timeout=30)
        assert all(t.status is TaskStatus.SUCCESS for t in tasks)
        assert session.stats()["queries"] <= 2 * len(tasks)
    assert all(cb.ok for cb in sandbox.ledger.callbacks)


def _first_line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The worker's first stdout line, or a failure showing its stderr (stack dumps)."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"worker printed nothing in {timeout} s; its stderr:\n{err}")
    return proc.stdout.readline().strip()


def _worker(args: list[str], sb: Sandbox, data_dir: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "NANOBANANA_BASE_URL": sb.url,
        "NANOBANANA_ALLOW_LOCAL_URLS": "1",
        "NANOBANANA_API_KEY": sb.api_key,
        "NANOBANANA_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.session_worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_killed_kernel_resumes_without_loss_or_double_charge(tmp_path: Path) -> None:
    """A process submitting 50 tasks is SIGKILLed mid-flight; another resumes: 50 done, 50 charges."""
    with Sandbox(time_scale=0.05, duration=40.0, max_side=64) as sb:
        first = _worker(["submit", "50"], sb, tmp_path)
        assert _first_line(first) == "ALL_SUBMITTED"
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        assert len(sb.ledger.charges) == 50
        unfinished = 50 - len(sb.ledger.completed_at)
        assert unfinished > 0, "the kill should land while tasks are still running"

        second = _worker(["resume", "0.05"], sb, tmp_path)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert report["statuses"] == ["success"]
        assert report["resumed"] >= unfinished
        assert len(sb.ledger.charges) == 50
        assert sb.ledger.submits_received == 50
        assert sb.ledger.duplicate_submits() == []


def test_killed_while_requests_wait_to_be_sent_they_are_not_sent_and_a_rerun_sends_them(
    tmp_path: Path,
) -> None:
    """Killed with most of a paced map() still queued: those rows are not_sent (never charged,
    never received), the sent ones keep their tasks, and re-running the map sends only the rest."""
    with Sandbox(time_scale=0.05, duration=5.0, max_side=64) as sb:
        first = _worker(["queue", "12", "0.5"], sb, tmp_path)
        assert _first_line(first) == "SOME_SUBMITTED"
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        received = set(sb.ledger.idempotency_keys)
        assert 1 <= len(received) < 12

        with make_session(sb, tmp_path) as session:
            records = list(session.history)
            unsent = [r for r in records if r.status is TaskStatus.NOT_SENT]
            assert len(records) == 12
            assert unsent and all(r.task_id is None for r in unsent)
            assert all("nothing was charged" in (r.error or "") for r in unsent)
            assert not {r.local_id for r in unsent} & received
            # What was sent is neither lost nor flagged as maybe charged twice.
            assert all(r.status is not TaskStatus.SUBMIT_UNKNOWN for r in records)

            again = session.map([f"queued image {i}" for i in range(12)])
            for task in again:
                task.wait(timeout=30)
        assert all(t.status is TaskStatus.SUCCESS for t in again)
        assert sb.ledger.submits_received == 12  # each prompt sent exactly once in all
        assert sb.ledger.duplicate_submits() == []


@pytest.mark.parametrize("repeat", range(3))
def test_h4_reusing_a_request_another_process_has_not_sent_follows_it_to_the_end(
    tmp_path: Path, repeat: int
) -> None:
    """H4: a request another kernel has queued but not sent is reused here and followed to its
    end: this wait returns with the other kernel's images, and nothing is sent twice."""
    rate = random.Random(repeat).uniform(1.5, 3.0)  # burst 1-3, then one every 0.33-0.67 s
    with Sandbox(time_scale=0.05, duration=5.0, max_side=64) as sb:
        worker = _worker(["queue", "8", f"{rate:.2f}"], sb, tmp_path)
        try:
            assert _first_line(worker) == "SOME_SUBMITTED"
            with make_session(sb, tmp_path) as session:
                reused = session.generate("queued image 7")
                assert reused.status.is_local, "the other kernel sent it already"
                try:
                    reused.wait(timeout=20)
                except TimeoutError:
                    pytest.fail(f"still {reused.status.value}: nothing follows the reused row")
                assert reused.status is TaskStatus.SUCCESS
                assert reused.path is not None and os.path.exists(reused.path)
        finally:
            worker.kill()
            worker.communicate(timeout=10)
        # Sent once, by its writer (the worker is killed with others perhaps still queued).
        assert sb.ledger.idempotency_keys[reused.local_id] == 1
        assert sb.ledger.submits_received <= 8 and sb.ledger.duplicate_submits() == []


def test_h4_a_reused_request_whose_writer_was_killed_ends_not_sent(tmp_path: Path) -> None:
    """H4: the kernel that queued a request this one reuses is killed before sending it: this
    wait ends, not_sent (nothing charged), within a lease round; a re-run then sends it."""
    with Sandbox(time_scale=0.05, duration=5.0, max_side=64) as sb:
        worker = _worker(["queue", "8", "0.5"], sb, tmp_path)  # one every 2 s
        try:
            assert _first_line(worker) == "SOME_SUBMITTED"
            with make_session(sb, tmp_path, lease_ttl=3.0) as session:
                reused = session.generate("queued image 7")
                assert reused.status is TaskStatus.WAITING_TO_SEND
                worker.kill()
                worker.communicate(timeout=10)
                try:
                    reused.wait(timeout=10)
                except TimeoutError:
                    pytest.fail(f"still {reused.status.value} after its writer was killed")
                assert reused.status is TaskStatus.NOT_SENT
                assert "nothing was charged" in (reused.error or "")
                assert session.generate("queued image 7").wait(timeout=20).status is (
                    TaskStatus.SUCCESS
                )
        finally:
            worker.kill()
            worker.communicate(timeout=10)
        assert sb.ledger.duplicate_submits() == []


@pytest.mark.slow
@pytest.mark.parametrize("repeat", range(3))
def test_two_resuming_processes_never_poll_the_same_task(tmp_path: Path, repeat: int) -> None:
    """D3: two kernels resuming one store each poll a task only if they hold its lease.

    The tasks have ended on the server by then, so one kernel polls a task to its end and
    lets go of its lease while the other may still hold a stale read of the row: that one
    must not take the lease and poll it again (it did, once in a few runs on a busy machine).
    The second kernel starts after a random delay, so the two meet at different points.
    """
    stagger = random.Random(repeat).uniform(0.0, 0.4)
    with Sandbox(time_scale=0.05, duration=60.0, max_side=64) as sb:
        first = _worker(["submit", "12"], sb, tmp_path)
        assert _first_line(first) == "ALL_SUBMITTED"
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        # Leases of the killed process expire after lease_ttl (3 s); both newcomers race.
        threading.Event().wait(3.5)
        a = _worker(["resume", "0.05"], sb, tmp_path)
        threading.Event().wait(stagger)
        b = _worker(["resume", "0.05"], sb, tmp_path)
        out_a, err_a = a.communicate(timeout=120)
        out_b, err_b = b.communicate(timeout=120)
        assert a.returncode == 0, err_a
        assert b.returncode == 0, err_b
        ra = json.loads(out_a.strip().splitlines()[-1])
        rb = json.loads(out_b.strip().splitlines()[-1])
        # The later one may find nothing left to resume; whatever either resumed succeeded.
        assert ra["statuses"] == ["success"] and rb["statuses"] in (["success"], [])
        assert not set(ra["polled"]) & set(rb["polled"])
        assert set(ra["polled"]) | set(rb["polled"]) == set(sb.ledger.tasks) - {
            t for t in sb.ledger.tasks if sb.ledger.queries.get(t, 0) == 0
        }
        assert len(sb.ledger.charges) == 12


def test_resume_shows_what_another_kernel_finished_meanwhile(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A task finished by another kernel after resume() read the store still ends in this one."""
    with make_session(sandbox, tmp_path / "d") as first:
        task = first.generate("finished elsewhere").wait(timeout=20)
        assert task.status is TaskStatus.SUCCESS
        with make_session(sandbox, tmp_path / "d") as second:
            # Simulate the race: the second kernel holds a stale, unfinished view of the task.
            stale = task.record.replace(status=TaskStatus.IN_PROGRESS, images=(), finished_at=None)
            handle = second._registry.register(stale)
            second.run_in_background(second._tracker.resume([stale.local_id])).result(10)
            assert handle.wait(timeout=5).status is TaskStatus.SUCCESS


def test_success_with_no_images_says_so(session: Session, sandbox: Sandbox) -> None:
    """R8: a success with an empty result list ends unavailable (resumable), saying so."""
    sandbox.plan(TaskPlan(images=0))
    task = session.generate("nothing to show").wait(timeout=20)
    # Issue 14 item 2: such a success is not final (the result may not be written yet).
    assert task.status is TaskStatus.UNAVAILABLE
    assert task.images == [] and "no image" in (task.error or "")
    assert "[]" in (task.error or "")  # what the server sent, for the user to see
    assert session.generate("nothing to show").local_id == task.local_id  # never paid twice
    assert len(sandbox.ledger.charges) == 1


def test_text_only_answer_is_kept(session: Session, sandbox: Sandbox) -> None:
    """A model that answers in words: the text is kept on the record."""
    sandbox.plan(TaskPlan(text_only=True))
    task = session.generate("describe instead").wait(timeout=20)
    assert task.status is TaskStatus.SUCCESS
    assert task.record.texts and task.images == []


def test_text_only_answer_by_prompt_is_a_success_with_text_after_a_restart(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The sandbox's '[text only]' prompt: a success that keeps its words, also for a new
    session on the same data dir, which reuses it (not unavailable, no image missing)."""
    with make_session(sandbox, tmp_path / "data") as first:
        task = first.generate("a fox [text only]").wait(timeout=20)
        assert task.status is TaskStatus.SUCCESS and task.error is None
        assert task.record.texts == ("I can only describe this one: a fox [text only]",)
    with make_session(sandbox, tmp_path / "data") as second:
        again = second.generate("a fox [text only]")
        assert again.local_id == task.local_id and again.status is TaskStatus.SUCCESS
        assert again.record.texts == task.record.texts and again.images == []
    assert len(sandbox.ledger.charges) == 1


def test_abandoned_task_resumes_and_completes(session: Session, sandbox: Sandbox) -> None:
    """A cancelled task can be picked up again with task.resume(); it completes, unpaid twice."""
    sandbox.plan(TaskPlan(duration=50))
    task = session.generate("change of mind")
    for _ in range(200):
        if task.task_id:
            break
        threading.Event().wait(0.01)
    assert task.cancel()
    assert task.status is TaskStatus.ABANDONED
    assert task.resume()
    assert not task.done()
    assert task.wait(timeout=20).status is TaskStatus.SUCCESS
    assert len(sandbox.ledger.charges) == 1


def test_close_with_a_submit_in_flight_records_it_as_unknown(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Closing a session mid-submit leaks nothing, and the row says the outcome is unknown."""
    sandbox.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
    import nanobanana_jupyter._core.resources as resources_module

    session = make_session(sandbox, tmp_path)
    old = resources_module.SUBMIT_GRACE_ON_CLOSE
    resources_module.SUBMIT_GRACE_ON_CLOSE = 0.2
    try:
        task = session.generate("closing too soon")
        threading.Event().wait(0.3)
        session.close()
    finally:
        resources_module.SUBMIT_GRACE_ON_CLOSE = old
    import gc

    gc.collect()  # an unclosed socket would raise ResourceWarning here (warnings are errors)
    assert task.status is TaskStatus.SUBMIT_UNKNOWN
    assert "closed while the submit was in flight" in (task.error or "")


def test_last_prefers_this_sessions_own_tasks(sandbox: Sandbox, tmp_path: Path) -> None:
    """last() is this session's newest success, even when the store holds newer ones."""
    with make_session(sandbox, tmp_path / "d") as first:
        mine = first.generate("mine").wait(timeout=20)
        with make_session(sandbox, tmp_path / "d") as other:
            newer = other.generate("someone else's").wait(timeout=20)
            assert other.last() is newer
        assert first.last() is mine
    with make_session(sandbox, tmp_path / "d") as fresh:
        assert fresh.last() is not None and fresh.last().prompt == "someone else's"  # type: ignore[union-attr]


def _submit_times(sandbox: Sandbox) -> list[float]:
    return sorted(r.time for r in sandbox.ledger.requests if r.path == SUBMIT_PATH)


def test_submits_are_spaced_by_the_rate_cap(sandbox: Sandbox, tmp_path: Path) -> None:
    """A burst up to the cap goes at once; the rest follow at the capped rate, none is lost."""
    with make_session(sandbox, tmp_path, max_submits_per_second=5.0) as session:
        tasks = session.map([f"paced {i}" for i in range(13)])
        for task in tasks:
            task.wait(timeout=30)
    assert all(t.status is TaskStatus.SUCCESS for t in tasks)
    times = _submit_times(sandbox)
    assert len(times) == 13 and sandbox.ledger.duplicate_submits() == []
    # 5 at once, then 8 more at 5 per second: the last leaves about 1.6 s after the first
    # (as the server sees them: under load the first, opening connections, can arrive a
    # few tenths late, 1.37 s seen in the suite; without the cap all 13 arrive within 0.2 s).
    assert times[4] - times[0] < 0.5
    assert 1.1 <= times[-1] - times[0] < 6.0


def test_close_while_submits_wait_for_their_turn_records_them_as_not_sent(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Requests still queued behind the cap at close were never sent: not_sent, not unknown."""
    import nanobanana_jupyter._core.resources as resources_module

    session = make_session(sandbox, tmp_path, max_submits_per_second=0.1)
    old = resources_module.SUBMIT_GRACE_ON_CLOSE
    resources_module.SUBMIT_GRACE_ON_CLOSE = 0.5
    try:
        first, second, third = session.map(["queued 1", "queued 2", "queued 3"])
        first.wait(timeout=20)
        session.close()
    finally:
        resources_module.SUBMIT_GRACE_ON_CLOSE = old
    assert first.status is TaskStatus.SUCCESS
    for task in (second, third):
        assert task.status is TaskStatus.NOT_SENT
        assert "nothing was charged" in (task.error or "")
    assert len(_submit_times(sandbox)) == 1


@pytest.mark.parametrize("cap", ["max_submits_per_second", "max_requests_per_second"])
def test_rate_caps_must_be_positive(sandbox: Sandbox, tmp_path: Path, cap: str) -> None:
    with pytest.raises(ValueError, match=cap):
        make_session(sandbox, tmp_path, **{cap: 0})


def test_a_429_slows_the_submits_that_follow(sandbox: Sandbox, tmp_path: Path) -> None:
    """After a 429 the session spaces its submits instead of firing its whole burst."""
    sandbox.faults.add("submit", Fault.RATE_LIMIT, retry_after="0")
    with make_session(sandbox, tmp_path, max_submits_per_second=20.0) as session:
        first = session.generate("told to slow down")
        first.wait(timeout=20)
        rest = session.map([f"after the 429 {i}" for i in range(10)])
        for task in rest:
            task.wait(timeout=30)
    assert all(t.status is TaskStatus.SUCCESS for t in [first, *rest])
    times = _submit_times(sandbox)
    assert len(times) == 12  # the refused submit, its retry, and ten more
    # Without the slow-down, the ten fit in the burst of 20 and leave at once; at half the
    # rate (10/s, recovering slowly), with no tokens left, they take most of a second.
    assert times[-1] - times[2] >= 0.6


def test_session_sandbox_allows_its_own_local_images(tmp_path: Path) -> None:
    """H9: Session.sandbox() asks for local result URLs explicitly, and its images arrive."""
    with Session.sandbox(data_dir=tmp_path, time_scale=SCALE) as session:
        assert session.settings.allow_local_urls
        task = session.generate("a sandbox banana").wait(timeout=20)
        assert task.status is TaskStatus.SUCCESS, task.error
    plain = Settings.resolve(base_url=session.settings.base_url, environ={})
    assert not plain.allow_local_urls
