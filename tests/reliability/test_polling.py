"""Polling under hostile networks and clocks: rows P4, P7, P9, P10 and P11, end to end.

P9 runs the session through the fault proxy, which slows, fragments or swallows only the
answers to polls (``GET /api/task/query``), never the submit.
"""

from __future__ import annotations

import html.parser
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nanobanana_jupyter import PollPolicy, Session, TaskStatus
from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan
from tests.reliability.conftest import make_session, make_settings, wait_until
from tests.reliability.faultproxy import FaultProxy, Plan, Toxics

pytestmark = pytest.mark.integration

QUERY = b"GET /api/task/query"
READ_TIMEOUT = 0.3


# -- P9: slow, fragmented or swallowed answers ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "toxics"),
    [
        ("latency 5 s", Toxics(latency=5.0)),
        ("blackhole", Toxics(blackhole=True)),
        ("1-byte slices", Toxics(slice_size=1, slice_delay=0.002)),
        ("bandwidth 4 kB/s", Toxics(bandwidth=4000.0)),
    ],
    ids=["latency", "blackhole", "slicer", "bandwidth"],
)
def test_p9_slow_or_lost_poll_answers_are_retried(
    sandbox: Sandbox, proxy: FaultProxy, tmp_path: Path, name: str, toxics: Toxics
) -> None:
    """P9: late, sliced, throttled or lost poll answers are retried; the task completes."""
    sandbox.plan(TaskPlan(duration=30.0))
    proxy.set(Plan(match=QUERY, down=toxics, limit=2))
    settings = {"read_timeout": READ_TIMEOUT, "deadline": 20.0}
    started = time.monotonic()
    with make_session(sandbox, tmp_path, base_url=proxy.url, settings=settings) as session:
        task = session.generate(f"through a bad network: {name}")
        assert task.wait(timeout=15).status is TaskStatus.SUCCESS, task.error
    assert time.monotonic() - started < 15
    assert sum(s.faulted_exchanges for s in proxy.stats) == 2
    assert sandbox.ledger.submits_received == 1 and len(sandbox.ledger.charges) == 1


@pytest.mark.parametrize(
    ("name", "toxics"),
    [
        ("blackhole", Toxics(blackhole=True)),
        ("a byte every 0.1 s", Toxics(slice_size=1, slice_delay=0.1)),
        ("bandwidth 20 B/s", Toxics(bandwidth=20.0)),
    ],
    ids=["blackhole", "drip", "bandwidth"],
)
def test_p9_polling_never_hangs_past_the_deadline(
    sandbox: Sandbox, proxy: FaultProxy, tmp_path: Path, name: str, toxics: Toxics
) -> None:
    """P9: lost or dribbling poll answers still end the task timed_out soon after its deadline."""
    deadline = 1.5
    sandbox.plan(TaskPlan(stuck=True))
    proxy.set(Plan(match=QUERY, down=toxics))
    settings = {"read_timeout": READ_TIMEOUT, "deadline": deadline}
    with make_session(sandbox, tmp_path, base_url=proxy.url, settings=settings) as session:
        started = time.monotonic()
        task = session.generate(f"stuck behind: {name}")
        try:
            task.wait(timeout=deadline + 2 * READ_TIMEOUT + 1.5)
        except TimeoutError:
            pytest.fail(
                f"{name}: still {task.status.value} {time.monotonic() - started:.1f} s after "
                f"submit, with a {deadline} s deadline and a {READ_TIMEOUT} s read timeout"
            )
        assert task.status is TaskStatus.TIMED_OUT
    assert len(sandbox.ledger.charges) == 1


# -- P10: the wall clock jumps ---------------------------------------------------------------


@pytest.mark.parametrize("jump", [365 * 86400.0, -365 * 86400.0], ids=["forward", "back"])
def test_p10_wall_clock_jumps_move_no_deadline(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jump: float
) -> None:
    """P10: a year's jump of time.time() neither ends a deadline early nor extends it."""
    deadline = 1.5
    real_time = time.time
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real_time() + offset[0])
    sandbox.plan(TaskPlan(duration=100.0))  # 1 s
    sandbox.plan(TaskPlan(stuck=True))
    with make_session(sandbox, tmp_path, settings={"deadline": deadline}) as session:
        started = time.monotonic()
        finishes = session.generate("finishes after the jump")
        # Plans go to submits in arrival order: let the first submit land before the second.
        wait_until(lambda: finishes.task_id is not None, 5, "the first submit")
        stuck = session.generate("never finishes")
        wait_until(
            lambda: all(sandbox.ledger.queries.get(t.task_id or "", 0) for t in (finishes, stuck)),
            5,
            "the first polls",
        )
        offset[0] = jump
        assert finishes.wait(timeout=10).status is TaskStatus.SUCCESS
        assert stuck.wait(timeout=10).status is TaskStatus.TIMED_OUT
        took = time.monotonic() - started
    assert deadline - 0.1 <= took <= deadline + 1.0


# -- P11: many tasks and 429 bursts ----------------------------------------------------------


class _CountedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, done: Any) -> None:
        self._inner = inner
        self._done = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._done()


class InFlightCounter(httpx.AsyncBaseTransport):
    """A real transport that records how many polls are in flight at most."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def _enter(self) -> None:
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)

    def _leave(self) -> None:
        with self._lock:
            self.current -= 1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/api/task/query":
            return await self._inner.handle_async_request(request)
        self._enter()
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self._leave()
            raise
        left = [False]

        def done() -> None:
            if not left[0]:
                left[0] = True
                self._leave()

        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CountedStream(response.stream, done),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def _most_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_p11_fifty_tasks_and_429_bursts_respect_the_caps(tmp_path: Path) -> None:
    """P11: 50 tasks and 429 bursts keep within the in-flight and rate caps, and slow down."""
    rate, in_flight, scale = 25.0, 4, 0.02
    burst = max(1.0, rate / 2)
    counter = InFlightCounter()
    slowed: list[float] = []
    with (
        Sandbox(time_scale=scale, max_side=64, result_mode="data_uri") as sb,
        make_session(
            sb,
            tmp_path,
            max_requests_per_second=rate,
            max_in_flight=in_flight,
            poll_policy=PollPolicy().scaled(scale),
            transport=counter,
        ) as session,
    ):
        tasks = session.map([f"crowd {i}" for i in range(50)], concurrency=8)
        for _ in range(3):  # three bursts of five 429s, 0.5 s apart
            wait_until(lambda: not sb.faults.pending("query"), 10, "the last burst")
            sb.faults.add("query", Fault.RATE_LIMIT, count=5, retry_after="0.2")
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                slowed.append(session.stats()["request_rate"] or rate)
                time.sleep(0.02)
        for task in tasks:
            assert task.wait(timeout=60).status is TaskStatus.SUCCESS, task.error
    polls = [r.time for r in sb.ledger.requests if r.path == "/api/task/query"]
    limited = [r for r in sb.ledger.requests if r.status == 429]
    assert len(limited) == 15
    assert counter.peak <= in_flight
    for window in (0.5, 1.0, 2.0):
        assert _most_in_window(polls, window) <= rate * window + burst, window
    assert min(slowed) < rate  # a 429 halved the session's rate
    assert len(sb.ledger.charges) == 50 and sb.ledger.double_charges() == []


# -- P4: the key is refused in the middle of polling -----------------------------------------


def test_p4_key_refused_while_polling_stops_every_poll_and_stays_resumable(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """P4: after a 401 on a poll, at most 2 more polls; tasks stay resumable and then finish."""
    sandbox.plan(TaskPlan(duration=150.0), count=3)  # 1.5 s
    with make_session(sandbox, tmp_path) as session:
        tasks = [session.generate(f"revoked {i}") for i in range(3)]
        wait_until(
            lambda: all(sandbox.ledger.queries.get(t.task_id or "", 0) for t in tasks),
            5,
            "the first polls",
        )
        sandbox.faults.add("query", Fault.UNAUTHORIZED, count=100)
        for task in tasks:
            task.wait(timeout=10)
        time.sleep(0.3)
        queries = [r for r in sandbox.ledger.requests if r.path == "/api/task/query"]
        first = next(i for i, r in enumerate(queries) if r.status == 401)
        assert len(queries) - first - 1 <= 2
        assert all(t.status is TaskStatus.TIMED_OUT and "key" in (t.error or "") for t in tasks)
        sandbox.faults.clear()
        resumed = session.resume()
        assert {t.local_id for t in resumed} == {t.local_id for t in tasks}
        for task in resumed:
            assert task.wait(timeout=15).status is TaskStatus.SUCCESS
    assert len(sandbox.ledger.charges) == 3


# -- P7: a hostile failure reason, end to end -------------------------------------------------


class _Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.handlers: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.handlers.append(name)
            if name.lower() in ("src", "href") and value:
                self.urls.append(value)


def test_p7_hostile_failure_reason_is_stored_capped_and_shown_escaped(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """P7: a 100 KB hostile status_reason is stored capped and shown escaped, unable to run."""
    reason = (
        '<script>alert(1)</script>"><img src=x onerror=alert(2)>\x1b[31m\x00\u202e' + "A" * 100_000
    )
    sandbox.plan(TaskPlan(outcome="failed", reason=reason))
    with make_session(sandbox, tmp_path) as session:
        task = session.generate("fails with a hostile reason").wait(timeout=15)
        assert task.status is TaskStatus.FAILED
        stored = session._store.get(task.local_id)
        assert stored is not None and stored.error is not None
        assert len(stored.error) <= 2000
        bundle = task._repr_mimebundle_()
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        page = data["text/html"]
        parser = _Elements()
        parser.feed(page)
        assert "script" not in parser.tags and parser.handlers == []
        assert all(u.startswith(("https:", "http:", "data:image/")) for u in parser.urls)
        assert "&lt;script&gt;" in page
        assert len(page) < 20_000 and len(data["text/plain"]) < 2_000
        for text in (data["text/plain"], repr(task)):
            assert "\x1b" not in text and "\x00" not in text


def test_p7_control_characters_never_reach_html_raw(sandbox: Sandbox, tmp_path: Path) -> None:
    """P7: ESC and NUL from a server reason or a prompt never reach text/html as raw bytes."""
    sandbox.plan(TaskPlan(outcome="failed", reason="bad \x1b[31mred\x00 reason"))
    with make_session(sandbox, tmp_path) as session:
        task = session.generate("a \x1b[2J prompt").wait(timeout=15)
        bundle = task._repr_mimebundle_()
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        page = data["text/html"]
    assert "\x1b" not in page and "\x00" not in page
    assert "\u241b" in page and "\u2400" in page  # shown as the control pictures ␛ and ␀


def _seeded(seed: int) -> Iterator[float]:
    rng = random.Random(seed)
    while True:
        yield rng.random()


def test_p2_thirty_percent_poll_errors_still_complete_with_one_charge(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """P2: with about 30 % 500/503 poll answers (seeded) the task completes with one charge."""
    sandbox.plan(TaskPlan(duration=100.0))
    draws = _seeded(7)
    with make_session(sandbox, tmp_path) as session:
        task = session.generate("flaky polls")
        seen = 0
        deadline = time.monotonic() + 15
        while not task.done() and time.monotonic() < deadline:
            count = sum(sandbox.ledger.queries.values())
            for _ in range(count - seen):
                if next(draws) < 0.3:
                    fault = (
                        Fault.SERVER_ERROR_HTML if next(draws) < 0.5 else Fault.SERVICE_UNAVAILABLE
                    )
                    sandbox.faults.add("query", fault, retry_after="0")
            seen = count
            time.sleep(0.005)
        assert task.wait(timeout=5).status is TaskStatus.SUCCESS
    faulted = [r for r in sandbox.ledger.requests if r.fault is not None]
    assert faulted, "no poll was faulted"
    assert sandbox.ledger.submits_received == 1 and len(sandbox.ledger.charges) == 1


# -- H2, H3: answers that do not mean what they seem (issue 14) ----------------------------

H_POLICY = PollPolicy(
    initial_delay=0.01,
    age_fraction=0.1,
    min_interval=0.01,
    max_interval=0.05,
    min_samples=10**9,
    not_found_grace=0.2,
    not_found_span=0.3,
)
CDN_URL = "https://cdn.example/result.png"


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (250, 200, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


class ScriptedAPI:
    """The provider behind an httpx MockTransport: each query answers what ``answer`` says.

    ``answer(n, age)`` gets the query's number (from 1) and the seconds since the submit,
    and returns ``("status", result)`` or ``404``. Submits and queries are counted.
    """

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.lock = threading.Lock()
        self.submits = 0
        self.queries = 0
        self.submitted_at = 0.0
        self.png = _png_bytes()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example":
            return httpx.Response(200, content=self.png, headers={"content-type": "image/png"})
        if request.method == "POST":
            with self.lock:
                self.submits += 1
                self.submitted_at = time.monotonic()
            data = {"task_id": f"ta-h-{self.submits}"}
            return httpx.Response(200, json={"code": 0, "message": "ok", "data": data})
        with self.lock:
            self.queries += 1
            n, age = self.queries, time.monotonic() - self.submitted_at
        answer = self.answer(n, age)
        if answer == 404:
            return httpx.Response(404, json={"code": 1, "message": "task not found"})
        status, result = answer
        data = {
            "task_id": request.url.params.get("task_id"),
            "status": status,
            "result": result,
            "consumed": "0.5",
            "status_reason": {"message": None},
        }
        return httpx.Response(200, json={"code": 0, "message": "ok", "data": data})


def _scripted_session(api: ScriptedAPI, data_dir: Path, **settings: Any) -> Any:
    from nanobanana_jupyter import Session
    from tests.conftest import SENTINEL_KEY
    from tests.reliability.conftest import make_settings

    resolved = make_settings("https://api.example", SENTINEL_KEY, data_dir, **settings)
    return Session(
        settings=resolved,
        transport=httpx.MockTransport(api),
        poll_policy=H_POLICY,
        max_requests_per_second=500.0,
    )


@pytest.mark.parametrize(
    "filled",
    [
        [{"image": CDN_URL}],
        {"image": CDN_URL},
        CDN_URL,
        [{"big_image_url": CDN_URL}],
        [{"image": None, "url": CDN_URL}],
    ],
    ids=["list", "object", "bare-string", "big_image_url", "null-image-then-url"],
)
def test_h2_success_before_its_result_is_written_still_gets_the_image(
    tmp_path: Path, filled: object
) -> None:
    """H2: a first success with a null result, then any known shape: success with the image."""

    def answer(n: int, age: float) -> tuple[str, object]:
        if n == 1:
            return "in_progress", None
        return ("success", None) if n <= 3 else ("success", filled)

    api = ScriptedAPI(answer)
    with _scripted_session(api, tmp_path) as session:
        task = session.generate("a result written late").wait(timeout=10)
        assert task.status is TaskStatus.SUCCESS, task.error
        assert len(task.images) == 1 and task.record.result_urls == (CDN_URL,)
        assert session.generate("a result written late").local_id == task.local_id
    assert api.submits == 1


def test_h2_success_that_never_carries_an_image_is_unavailable_resumable_and_never_repaid(
    tmp_path: Path,
) -> None:
    """H2: a success with no image ends unavailable with the raw answer; resume() gets it."""
    filled = threading.Event()

    def answer(n: int, age: float) -> tuple[str, object]:
        if filled.is_set():
            return "success", [{"image": CDN_URL}]
        return "success", {"picture": "not-a-url", "image": None}

    api = ScriptedAPI(answer)
    with _scripted_session(api, tmp_path) as session:
        task = session.generate("no image yet").wait(timeout=10)
        assert task.status is TaskStatus.UNAVAILABLE, (task.status, task.error)
        error = task.error or ""
        assert '{"picture": "not-a-url", "image": null}' in error and "resume()" in error
        assert session.history[-1].error == task.error  # kept where the user reads it
        looks = api.queries
        assert 2 <= looks <= 1 + H_POLICY.empty_success_polls  # bounded
        # A re-run of the cell reuses it (and looks again) instead of paying again.
        again = session.generate("no image yet")
        assert again.local_id == task.local_id
        assert again.wait(timeout=10).status is TaskStatus.UNAVAILABLE
        assert api.submits == 1
        filled.set()
        assert task.resume() is True
        assert task.wait(timeout=10).status is TaskStatus.SUCCESS, task.error
        assert len(task.images) == 1 and task.error is None
    assert api.submits == 1


def test_h2_unavailable_success_is_resumed_after_a_restart(tmp_path: Path) -> None:
    """H2: after a restart, session.resume() looks again at a success that had no image."""
    filled = threading.Event()

    def answer(n: int, age: float) -> tuple[str, object]:
        return ("success", [{"url": CDN_URL}]) if filled.is_set() else ("success", None)

    api = ScriptedAPI(answer)
    with _scripted_session(api, tmp_path) as first:
        task = first.generate("no image before the restart").wait(timeout=10)
        assert task.status is TaskStatus.UNAVAILABLE
    filled.set()
    with _scripted_session(api, tmp_path) as second:
        (resumed,) = second.resume()
        assert resumed.wait(timeout=10).status is TaskStatus.SUCCESS, resumed.error
        assert len(resumed.images) == 1
    assert api.submits == 1


def test_h3_one_late_404_does_not_fail_the_task(tmp_path: Path) -> None:
    """H3: one 404 well past the grace period is looked at again; the task succeeds."""
    seen: list[int] = []

    def answer(n: int, age: float) -> tuple[str, object] | int:
        if age < 2 * H_POLICY.not_found_grace:
            return "in_progress", None
        if not seen:
            seen.append(n)
            return 404
        return "success", [{"image": CDN_URL}]

    api = ScriptedAPI(answer)
    with _scripted_session(api, tmp_path) as session:
        task = session.generate("one late 404").wait(timeout=10)
        assert seen and task.status is TaskStatus.SUCCESS, (task.status, task.error)
    assert api.submits == 1


def test_h3_late_404s_over_time_end_resumable_never_failed_and_never_repaid(
    tmp_path: Path,
) -> None:
    """H3: 404s that go on end timed_out saying so (not failed); resume() then finishes it."""
    visible = threading.Event()

    def answer(n: int, age: float) -> tuple[str, object] | int:
        if visible.is_set():
            return "success", [{"image": CDN_URL}]
        return "in_progress" if n == 1 else 404

    api = ScriptedAPI(answer)
    with _scripted_session(api, tmp_path) as session:
        started = time.monotonic()
        task = session.generate("the server forgot it").wait(timeout=10)
        elapsed = time.monotonic() - started
        assert task.status is TaskStatus.TIMED_OUT, (task.status, task.error)
        assert "404" in (task.error or "") and "resume()" in (task.error or "")
        assert elapsed >= H_POLICY.not_found_span
        assert api.queries >= 1 + H_POLICY.not_found_polls
        again = session.generate("the server forgot it")
        assert again.local_id == task.local_id  # reused: the server may still finish it
        visible.set()
        assert again.wait(timeout=10).status is TaskStatus.SUCCESS, again.error
        assert task.resume() is False  # finished for good now
        assert task.status is TaskStatus.SUCCESS
    assert api.submits == 1


def test_h3_resume_after_a_restart_survives_a_404_on_its_first_poll(tmp_path: Path) -> None:
    """H3: a restarted kernel resumes an older task whose first poll answers 404: success."""
    restarted = threading.Event()
    after: list[int] = []

    def answer(n: int, age: float) -> tuple[str, object] | int:
        if not restarted.is_set():
            return "in_progress", None
        after.append(n)
        return 404 if len(after) == 1 else ("success", [{"image": CDN_URL}])

    api = ScriptedAPI(answer)
    with _scripted_session(api, tmp_path) as first:
        task = first.generate("older than the grace period")
        wait_until(lambda: api.queries >= 1, 5, "the first poll")
    time.sleep(2 * H_POLICY.not_found_grace)  # the task is now "old"
    restarted.set()
    with _scripted_session(api, tmp_path) as second:
        (resumed,) = second.resume()
        assert resumed.local_id == task.local_id
        assert resumed.wait(timeout=10).status is TaskStatus.SUCCESS, resumed.error
        assert after and len(after) >= 2
    assert api.submits == 1


# -- H1, H17: answers the server gives -------------------------------------------------------


def _png_data_uri() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class _Answers:
    """A mock API: every submit gets a new task id; queries answer with ``data(task_id)``."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.posts = 0
        self.queries = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.posts += 1
            return httpx.Response(200, json={"code": 0, "data": {"task_id": f"ta{self.posts}"}})
        self.queries += 1
        task_id = request.url.params["task_id"]
        return httpx.Response(
            200, content=b'{"code": 0, "message": "ok", "data": ' + self.data(task_id) + b"}"
        )


@pytest.mark.parametrize(
    "consumed", ['"1e30"', '"1e309"', "1e28", "1" + "0" * 28, '"1e27"', '"-0"', "-0.0"]
)
def test_h1_unusable_cost_never_costs_the_result(
    tmp_path: Path, consumed: str, caplog: pytest.LogCaptureFixture
) -> None:
    """H1: a success whose `consumed` cannot be used ends success (image saved), cost unknown.

    No poll logs an unexpected error, and the history's total, repr and HTML keep working.
    """
    uri = _png_data_uri()
    answers = _Answers(
        lambda task_id: (
            f'{{"task_id": "{task_id}", "status": "success", "consumed": {consumed}, '
            f'"result": [{{"image": "{uri}"}}]}}'
        ).encode()
    )
    settings = make_settings("https://api.defapi.org", "dk-odd-costs", tmp_path, deadline=5.0)
    with Session(
        settings=settings,
        transport=httpx.MockTransport(answers),
        poll_policy=PollPolicy().scaled(0.01),
    ) as session:
        tasks = [session.generate(f"odd cost {i}") for i in range(10)]
        for task in tasks:
            task.wait(timeout=20)
            assert task.status is TaskStatus.SUCCESS, task.error
            assert task.path is not None and Path(task.path).exists()
            assert task.cost is None or (task.cost == 0 and str(task.cost) == "0")
        history = session.history
        assert history.total_cost == 0 and str(history.total_cost) == "0"
        assert repr(history) == "<History: 10 tasks, 0 credits>"
        page = history._repr_html_()
        assert "10 tasks · 0 credits" in page and "-0 credit" not in page
    assert answers.posts == 10
    assert "unexpected error" not in caplog.text


def test_h17_an_answer_about_another_task_is_never_this_tasks_result(tmp_path: Path) -> None:
    """H17: polls answered about another task are ignored; the task never takes that result."""
    uri = _png_data_uri()
    answers = _Answers(
        lambda task_id: (
            f'{{"task_id": "ta-other", "status": "success", "consumed": "0.5", '
            f'"result": [{{"image": "{uri}"}}]}}'
        ).encode()
    )
    settings = make_settings("https://api.defapi.org", "dk-other-task", tmp_path, deadline=1.0)
    with Session(
        settings=settings,
        transport=httpx.MockTransport(answers),
        poll_policy=PollPolicy().scaled(0.01),
    ) as session:
        task = session.generate("about another task")
        task.wait(timeout=20)
        assert task.status is TaskStatus.TIMED_OUT, task.status
        assert task.path is None and task.cost is None
    assert answers.queries >= 2 and answers.posts == 1
