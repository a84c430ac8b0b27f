"""Client behaviour through a mock transport: retry policy, error mapping, key hygiene."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

import httpcore
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nanobanana_jupyter import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    NanoBananaError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    Settings,
    SubmitOutcomeUnknownError,
    TaskStatus,
    ValidationError,
)
from nanobanana_jupyter._wire import download_guard
from tests.conftest import FakeSleep

API = "https://api.defapi.org"
Handler = Callable[[httpx.Request], httpx.Response]


def ok(data: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"code": 0, "message": "ok", "data": data})


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    return buf.getvalue()


class Script:
    """A mock server answering from a list: each item a response or an exception to raise."""

    def __init__(self, *steps: httpx.Response | type[Exception] | Handler) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, type) and issubclass(step, Exception):
            raise step("scripted", request=request)  # type: ignore[call-arg]
        if isinstance(step, httpx.Response):
            return step
        return step(request)


def make_client(script: Script, sleep: FakeSleep, key: str = "dk-test") -> Client:
    return Client(key, transport=httpx.MockTransport(script), sleep=sleep, rand=lambda: 0.5)


# -- submit ---------------------------------------------------------------------------


def test_submit_sends_the_documented_request(fake_sleep: FakeSleep, sentinel_key: str) -> None:
    """A submit POSTs the JSON body with the bearer key and an Idempotency-Key."""
    script = Script(ok({"task_id": "ta1"}))
    with make_client(script, fake_sleep, sentinel_key) as client:
        task_id = client.submit("a cat", aspect_ratio="1:1", idempotency_key="local-1")
    assert task_id == "ta1"
    (req,) = script.requests
    assert req.method == "POST" and str(req.url) == f"{API}/api/image/gen"
    assert req.headers["authorization"] == f"Bearer {sentinel_key}"
    assert req.headers["idempotency-key"] == "local-1"
    assert json.loads(req.content) == {
        "model": "google/gempix2",
        "prompt": "a cat",
        "aspect_ratio": "1:1",
    }


def test_submit_retries_connect_errors_then_gives_up(fake_sleep: FakeSleep) -> None:
    """S1/S2: a submit that never connected is retried twice with backoff, then fails clearly."""
    script = Script(httpx.ConnectError)
    with (
        make_client(script, fake_sleep) as client,
        pytest.raises(APIConnectionError, match="cannot connect"),
    ):
        client.submit("a cat")
    assert len(script.requests) == 3
    assert len(fake_sleep.calls) == 2 and 0 < fake_sleep.calls[0] < fake_sleep.calls[1] <= 8


def test_submit_connect_timeout_then_success(fake_sleep: FakeSleep) -> None:
    """A connect timeout proves the request was never sent, so one retry is safe."""
    script = Script(httpx.ConnectTimeout, ok({"task_id": "ta2"}))
    with make_client(script, fake_sleep) as client:
        assert client.submit("a cat") == "ta2"
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout,
        httpx.WriteTimeout,
        httpx.ReadError,
        httpx.RemoteProtocolError,
        httpx.Response(500, text="<html><body>Internal error</body></html>"),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(200, json={"code": 0, "data": {}}),
        httpx.Response(200, json={"code": 0, "data": {"task_id": 12.5}}),
        httpx.Response(200, json=[1, 2]),
    ],
)
def test_submit_that_may_have_arrived_is_never_resent(failure: Any, fake_sleep: FakeSleep) -> None:
    """S3-S5, S10: a timeout, reset, 5xx or unreadable 200 gives 'outcome unknown' after one send."""
    script = Script(failure, ok({"task_id": "never"}))
    with (
        make_client(script, fake_sleep) as client,
        pytest.raises(SubmitOutcomeUnknownError) as info,
    ):
        client.submit("a cat")
    assert len(script.requests) == 1
    assert fake_sleep.calls == []
    assert "may have been charged" in str(info.value)
    assert isinstance(info.value.cause, NanoBananaError)


def test_submit_html_500_message_is_short(fake_sleep: FakeSleep) -> None:
    """An HTML error page becomes a short sentence, not a page of markup."""
    script = Script(httpx.Response(500, text="<html>" + "x" * 10_000 + "</html>"))
    with (
        make_client(script, fake_sleep) as client,
        pytest.raises(SubmitOutcomeUnknownError) as info,
    ):
        client.submit("a cat")
    assert "HTML page" in str(info.value) and len(str(info.value)) < 400


def test_submit_429_with_short_retry_after_is_retried_once(fake_sleep: FakeSleep) -> None:
    """S6: 429 with Retry-After 2 is retried after exactly 2 s, and succeeds."""
    script = Script(
        httpx.Response(429, headers={"Retry-After": "2"}, json={"code": 1}), ok({"task_id": "ta3"})
    )
    with make_client(script, fake_sleep) as client:
        assert client.submit("a cat") == "ta3"
    assert fake_sleep.calls == [2.0]
    assert len(script.requests) == 2


@pytest.mark.parametrize("header", ["3600", None, "abc"])
def test_submit_429_long_or_missing_wait_is_not_retried(
    header: str | None, fake_sleep: FakeSleep
) -> None:
    """S7: a 429 asking for a long wait, or none, fails at once and says how long to wait."""
    headers = {"Retry-After": header} if header else {}
    script = Script(httpx.Response(429, headers=headers, json={"code": 1, "message": "slow down"}))
    with make_client(script, fake_sleep) as client, pytest.raises(RateLimitError) as info:
        client.submit("a cat")
    assert len(script.requests) == 1 and fake_sleep.calls == []
    if header == "3600":
        assert info.value.retry_after == 3600 and "3600" in str(info.value)


def test_submit_400_carries_the_server_detail(fake_sleep: FakeSleep) -> None:
    """S8: 400 is not retried and carries the server's detail."""
    body = {"code": 1, "message": "failed", "detail": "prompt is required"}
    script = Script(httpx.Response(400, json=body))
    with make_client(script, fake_sleep) as client, pytest.raises(BadRequestError) as info:
        client.submit("a cat")
    assert info.value.detail == "prompt is required" and info.value.status_code == 400
    assert len(script.requests) == 1


def test_submit_401_is_not_retried_and_never_shows_the_key(
    fake_sleep: FakeSleep, sentinel_key: str
) -> None:
    """S9/K4: a refused key fails at once; an echoed key is redacted from the error."""
    script = Script(
        httpx.Response(401, json={"code": 1, "message": f"Invalid API key {sentinel_key}"})
    )
    with (
        make_client(script, fake_sleep, sentinel_key) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.submit("a cat")
    assert len(script.requests) == 1
    for text in (str(info.value), repr(info.value), repr(info.value.detail), repr(client)):
        assert sentinel_key not in text


def test_submit_code_nonzero_in_200_is_an_error(fake_sleep: FakeSleep) -> None:
    """An envelope with a non-zero code is an error even under HTTP 200."""
    script = Script(httpx.Response(200, json={"code": 401, "message": "Invalid API key"}))
    with make_client(script, fake_sleep) as client, pytest.raises(AuthenticationError):
        client.submit("a cat")


def test_validation_happens_before_anything_is_sent(fake_sleep: FakeSleep) -> None:
    """A bad request raises ValidationError and no request leaves the client."""
    script = Script(ok({"task_id": "x"}))
    with make_client(script, fake_sleep) as client:
        with pytest.raises(ValidationError):
            client.submit("")
        with pytest.raises(ValidationError):
            client.submit("a cat", images=["https://a/1"] * 5)
        with pytest.raises(TypeError, match="unknown option"):
            client.submit("a cat", colour="red")
    assert script.requests == []


def test_huge_answer_is_refused_without_reading_it_all(fake_sleep: FakeSleep) -> None:
    """S10: a 10 MB body is cut off at the API body cap."""
    script = Script(httpx.Response(200, content=b"{" + b" " * 10_000_000))
    with make_client(script, fake_sleep) as client, pytest.raises(SubmitOutcomeUnknownError):
        client.submit("a cat")


# -- query ----------------------------------------------------------------------------


def test_query_parses_and_retries_server_errors(fake_sleep: FakeSleep) -> None:
    """P2: 503s on a query are retried with backoff, then the snapshot is returned."""
    script = Script(
        httpx.Response(503),
        httpx.Response(502, text="<html/>"),
        ok({"task_id": "ta1", "status": "in_progress", "consumed": "0.5"}),
    )
    with make_client(script, fake_sleep) as client:
        snap = client.query("ta1")
    assert snap.status is TaskStatus.IN_PROGRESS
    assert len(script.requests) == 3 and len(fake_sleep.calls) == 2
    assert script.requests[0].url.params["task_id"] == "ta1"


def test_query_gives_up_after_the_retry_budget(fake_sleep: FakeSleep) -> None:
    """Persistent read timeouts end in APITimeoutError after 1 + 4 attempts."""
    script = Script(httpx.ReadTimeout)
    with make_client(script, fake_sleep) as client, pytest.raises(APITimeoutError):
        client.query("ta1")
    assert len(script.requests) == 5


@pytest.mark.parametrize(
    ("status", "error"), [(404, NotFoundError), (401, AuthenticationError), (400, BadRequestError)]
)
def test_query_client_errors_are_not_retried(
    status: int, error: type[Exception], fake_sleep: FakeSleep
) -> None:
    """404/401/400 on a query are raised at once for the scheduler to handle."""
    script = Script(httpx.Response(status, json={"code": 1, "message": "task not found"}))
    with make_client(script, fake_sleep) as client, pytest.raises(error):
        client.query("ta1")
    assert len(script.requests) == 1


def test_query_honours_retry_after(fake_sleep: FakeSleep) -> None:
    """A 429 on a query waits what the server asked before trying again."""
    script = Script(
        httpx.Response(429, headers={"Retry-After": "3"}), ok({"task_id": "t", "status": "pending"})
    )
    with make_client(script, fake_sleep) as client:
        client.query("t")
    assert fake_sleep.calls == [3.0]


_IDS = st.sampled_from(["ta1", "ta2", 1, "", None, "  ta1  "])
_CONSUMED = st.sampled_from(
    [
        '"0.500000"', '"1e30"', '"1e309"', "1e28", "1e309", "NaN", "Infinity", "-Infinity",
        '"NaN"', '"-0"', "-0", "-0.0", "1" + "0" * 28, '"' + "9" * 29 + '"', '"abc"', "null",
        "true", "[1]", '{"a": 1}', '"-1"', "0.5",
    ]
)  # fmt: skip
_RESULT = st.sampled_from(
    [
        "null", '"https://cdn.example/a.png"', '{"image": "https://cdn.example/a.png"}',
        '[{"big_image_url": "https://cdn.example/a.png"}]',
        '[{"image": null, "url": "https://cdn.example/a.png"}]',
        '[{"image": "https://cdn.example/a.png"}]', '[{"text": "words"}]', "[null, 1, []]",
        '{"big_image_url": "https://cdn.example/a.png"}', "[[[[]]]]", "0", '""',
    ]
)  # fmt: skip
_STATUS = st.sampled_from(
    ['"success"', '"failed"', '"in_progress"', '"odd"', "null", "1", '{"a": [1]}', "[]"]
)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def _envelopes(draw: st.DrawFn) -> str:
    """A query answer shaped like the API's, with odd values in every field."""
    fields = {
        "task_id": json.dumps(draw(_IDS)),
        "status": draw(_STATUS),
        "consumed": draw(_CONSUMED),
        "result": draw(_RESULT | st.integers(1, 200_000).map(_nested)),
        "status_reason": draw(st.sampled_from(['{"message": "why"}', "null", '"why"', "[]"])),
        "created_at": draw(st.sampled_from(['"2024-01-01"', "1e400", "null", "{}"])),
    }
    chosen = draw(st.sets(st.sampled_from(sorted(fields))))
    data = "{" + ", ".join(f'"{k}": {fields[k]}' for k in sorted(chosen)) + "}"
    data = draw(st.sampled_from([data, _nested(draw(st.integers(1, 200_000))), "null", "[]"]))
    code = draw(st.sampled_from(["0", "1", '"0"', "401", "null", "500", '"x"']))
    return f'{{"code": {code}, "message": "ok", "data": {data}}}'


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    status=st.integers(100, 599) | st.sampled_from([200, 200, 200, 500]),
    body=st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | _envelopes().map(str.encode)
    | st.integers(1, 200_000).map(lambda d: _nested(d).encode()),
)
def test_any_answer_gives_a_snapshot_or_a_documented_error(
    status: int, body: bytes, fake_sleep: FakeSleep
) -> None:
    """Whatever status and body come back, query returns or raises a NanoBananaError only.

    A snapshot returned is always about the task asked for, and its cost is usable.
    """
    script = Script(httpx.Response(status, content=body))
    with make_client(script, fake_sleep) as client:
        try:
            snap = client.query("ta1")
        except NanoBananaError:
            return
    assert snap.task_id == "ta1"
    assert snap.consumed is None or (snap.consumed.is_finite() and not snap.consumed.is_signed())
    assert all(isinstance(image, str) and image for image in snap.images)


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    status=st.sampled_from([200, 200, 201, 400, 401, 500, 502]),
    body=_envelopes().map(str.encode)
    | st.integers(1, 200_000).map(lambda d: _nested(d).encode())
    | st.binary(max_size=100),
)
def test_any_submit_answer_gives_a_task_id_or_a_documented_error(
    status: int, body: bytes, fake_sleep: FakeSleep
) -> None:
    """Whatever a submit gets back, it returns a task id or raises a NanoBananaError, once."""
    script = Script(httpx.Response(status, content=body))
    with make_client(script, fake_sleep) as client:
        try:
            task_id = client.submit("a cat")
        except NanoBananaError:
            pass
        else:
            assert isinstance(task_id, str) and task_id.strip() == task_id != ""
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "consumed", ['"1e30"', '"1e309"', "1e28", "1" + "0" * 28, '"1e27"', "NaN", "Infinity"]
)
def test_query_with_an_unusable_cost_still_gives_the_result(
    consumed: str, fake_sleep: FakeSleep
) -> None:
    """H1: a success whose `consumed` cannot be used is still a success, with an unknown cost."""
    body = (
        '{"code": 0, "message": "ok", "data": {"task_id": "ta1", "status": "success", '
        f'"consumed": {consumed}, "result": [{{"image": "https://cdn.example/a.png"}}]}}}}'
    )
    script = Script(httpx.Response(200, content=body.encode()))
    with make_client(script, fake_sleep) as client:
        snap = client.query("ta1")
    assert snap.status is TaskStatus.SUCCESS and snap.consumed is None
    assert snap.images == ("https://cdn.example/a.png",)


def test_deeply_nested_answers_are_documented_errors(fake_sleep: FakeSleep) -> None:
    """H16: JSON nested 100,000 deep (200 KB) is an unreadable answer, never RecursionError.

    From a submit that is "outcome unknown" after one send (it may have been charged).
    """
    deep = _nested(100_000).encode()
    envelope = b'{"code": 0, "data": ' + deep + b"}"
    for answer in (httpx.Response(200, content=deep), httpx.Response(200, content=envelope)):
        script = Script(answer, ok({"task_id": "never"}))
        with (
            make_client(script, fake_sleep) as client,
            pytest.raises(SubmitOutcomeUnknownError, match="may have been charged"),
        ):
            client.submit("a cat")
        assert len(script.requests) == 1
        with make_client(Script(answer), fake_sleep) as client, pytest.raises(ProtocolError):
            client.query("ta1")
    for status, error in ((500, SubmitOutcomeUnknownError), (400, BadRequestError)):
        with (
            make_client(Script(httpx.Response(status, content=deep)), fake_sleep) as client,
            pytest.raises(error),
        ):
            client.submit("a cat")


def test_a_query_answer_about_another_task_is_refused(fake_sleep: FakeSleep) -> None:
    """H17: an answer naming a different task id is never taken as this task's result."""
    other = {"task_id": "ta-other", "status": "success", "result": [{"image": "https://x/a"}]}
    script = Script(ok(other))
    with make_client(script, fake_sleep) as client, pytest.raises(ProtocolError) as info:
        client.query("ta1")
    assert "ta-other" in str(info.value) and "ta1" in str(info.value)
    # The same id written as a number, or with spaces around it, is the same task.
    for same in (" ta1 ", 123):
        asked = "123" if same == 123 else "ta1"
        script = Script(ok({"task_id": same, "status": "pending"}))
        with make_client(script, fake_sleep) as client:
            assert client.query(asked).task_id == asked


@pytest.mark.parametrize(
    "envelope",
    [
        {"code": 1, "message": "failed", "data": {"task_id": "ta-charged"}},
        {"code": 500, "message": "internal", "data": {"task_id": "ta-charged"}},
        {"code": 401, "message": "odd", "task_id": "ta-charged"},
    ],
)
def test_submit_refusal_that_names_a_task_is_outcome_unknown(
    envelope: dict[str, Any], fake_sleep: FakeSleep
) -> None:
    """H17: a 200 whose code is not 0 but that names a task id may have been charged.

    It is SubmitOutcomeUnknownError carrying that task id, and it is never re-sent.
    """
    script = Script(httpx.Response(200, json=envelope), ok({"task_id": "never"}))
    with (
        make_client(script, fake_sleep) as client,
        pytest.raises(SubmitOutcomeUnknownError, match="may have been charged") as info,
    ):
        client.submit("a cat")
    assert info.value.task_id == "ta-charged"
    assert len(script.requests) == 1 and fake_sleep.calls == []


@pytest.mark.parametrize(
    "field",
    [
        {"prompt": "a cat \ud800 on a mat"},
        {"prompt": "a cat", "model": "google/gempix2\udfff"},
        {"prompt": "a cat", "images": ["https://cdn.example/\ud83d.png"]},
        {"prompt": "a cat", "callback_url": "https://hook.example/\udc00"},
    ],
)
def test_lone_surrogates_are_refused_before_sending(
    field: dict[str, Any], fake_sleep: FakeSleep
) -> None:
    """H16: text that cannot be sent as UTF-8 is a ValidationError that says what to do."""
    options = dict(field)
    prompt = options.pop("prompt")
    script = Script(ok({"task_id": "x"}))
    with (
        make_client(script, fake_sleep) as client,
        pytest.raises(ValidationError, match="surrogate") as info,
    ):
        client.submit(prompt, **options)
    assert "remove" in str(info.value) or "replace" in str(info.value)
    assert script.requests == []


# -- download -------------------------------------------------------------------------


def test_download_never_sends_the_key(fake_sleep: FakeSleep, sentinel_key: str) -> None:
    """R3: image requests carry no Authorization header, even after a redirect."""
    image = png_bytes()
    script = Script(
        httpx.Response(302, headers={"Location": "https://cdn2.example/final.png"}),
        httpx.Response(200, content=image, headers={"Content-Type": "image/png"}),
    )
    with make_client(script, fake_sleep, sentinel_key) as client:
        assert client.download("https://cdn.example/a.png") == (image, "image/png")
    assert [str(r.url) for r in script.requests] == [
        "https://cdn.example/a.png",
        "https://cdn2.example/final.png",
    ]
    assert all("authorization" not in r.headers for r in script.requests)


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example/a.png",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://127.0.0.1/a.png",
        "https://10.0.0.5/a.png",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/a.png",
        "https://localhost/a.png",
    ],
)
def test_download_refuses_unsafe_urls_before_connecting(url: str, fake_sleep: FakeSleep) -> None:
    """R4: non-https and local or private addresses are refused without a request."""
    script = Script(httpx.Response(200, content=png_bytes()))
    with make_client(script, fake_sleep) as client, pytest.raises(ProtocolError, match="refusing"):
        client.download(url)
    assert script.requests == []


def test_download_redirect_to_a_private_address_is_refused(fake_sleep: FakeSleep) -> None:
    """Each redirect hop is checked again (no SSRF through a redirect)."""
    script = Script(httpx.Response(302, headers={"Location": "https://192.168.1.1/x.png"}))
    with make_client(script, fake_sleep) as client, pytest.raises(ProtocolError, match="refusing"):
        client.download("https://cdn.example/a.png")
    assert len(script.requests) == 1


@pytest.mark.parametrize("status", [403, 404, 410])
def test_expired_url_is_not_retried(status: int, fake_sleep: FakeSleep) -> None:
    """R1: an expired result URL fails at once with a clear message."""
    script = Script(httpx.Response(status))
    with make_client(script, fake_sleep) as client, pytest.raises(NotFoundError, match="expired"):
        client.download("https://cdn.example/a.png")
    assert len(script.requests) == 1


def test_truncated_download_is_retried(fake_sleep: FakeSleep) -> None:
    """R2: a body cut short is retried, and the complete image is returned."""
    image = png_bytes()
    script = Script(httpx.RemoteProtocolError, httpx.Response(200, content=image))
    with make_client(script, fake_sleep) as client:
        assert client.download("https://cdn.example/a.png")[0] == image
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    "body", [b"<html><script>alert(1)</script></html>", b"<svg onload=alert(1)/>", b""]
)
def test_non_images_are_refused(body: bytes, fake_sleep: FakeSleep) -> None:
    """R6: HTML, SVG or empty bodies are never accepted as images."""
    script = Script(httpx.Response(200, content=body, headers={"Content-Type": "image/png"}))
    with (
        make_client(script, fake_sleep) as client,
        pytest.raises(ProtocolError, match="did not return"),
    ):
        client.download("https://cdn.example/a.png")


def test_download_size_cap(fake_sleep: FakeSleep) -> None:
    """R5: an image larger than the cap is refused while streaming."""
    script = Script(httpx.Response(200, content=b"\x89PNG\r\n\x1a\n" + b"0" * 2000))
    client = Client("dk-x", transport=httpx.MockTransport(script), sleep=fake_sleep)
    client.settings = client.settings.replace(max_download_bytes=1000)
    with client, pytest.raises(ProtocolError, match="larger than 1000"):
        client.download("https://cdn.example/a.png")


def test_data_uri_results_are_decoded_locally(fake_sleep: FakeSleep) -> None:
    """A data-URI result is decoded without any request."""
    import base64

    image = png_bytes()
    script = Script(httpx.Response(500))
    with make_client(script, fake_sleep) as client:
        uri = "data:image/png;base64," + base64.b64encode(image).decode()
        assert client.download(uri) == (image, "image/png")
        with pytest.raises(ProtocolError, match="unusable"):
            client.download("data:image/svg+xml;base64,PHN2Zy8+")
    assert script.requests == []


def test_closed_client_refuses_work(fake_sleep: FakeSleep) -> None:
    """Using a closed client is a programming error (RuntimeError), not an API error."""
    client = make_client(Script(ok({"task_id": "x"})), fake_sleep)
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.query("x")


# -- async ----------------------------------------------------------------------------


def test_async_client_shares_the_policy(fake_sleep: FakeSleep) -> None:
    """The async client retries and maps errors exactly like the blocking one."""
    script = Script(httpx.ConnectError, ok({"task_id": "ta1"}))
    unknown = Script(httpx.ReadTimeout)
    query = Script(httpx.Response(503), ok({"task_id": "ta1", "status": "success", "result": []}))

    async def run() -> None:
        async with AsyncClient(
            "dk-x", transport=httpx.MockTransport(script), sleep=fake_sleep.asleep
        ) as c:
            assert await c.submit("a cat") == "ta1"
        async with AsyncClient(
            "dk-x", transport=httpx.MockTransport(unknown), sleep=fake_sleep.asleep
        ) as c:
            with pytest.raises(SubmitOutcomeUnknownError):
                await c.submit("a cat")
        async with AsyncClient(
            "dk-x", transport=httpx.MockTransport(query), sleep=fake_sleep.asleep
        ) as c:
            assert (await c.query("ta1")).status is TaskStatus.SUCCESS

    asyncio.run(run())
    assert (len(script.requests), len(unknown.requests), len(query.requests)) == (2, 1, 2)
    assert len(fake_sleep.calls) == 2


def test_missing_key_is_reported_before_sending(fake_sleep: FakeSleep) -> None:
    """With no key configured, a call says where to put one and sends nothing."""
    from nanobanana_jupyter import MissingAPIKeyError

    script = Script(ok({"task_id": "x"}))
    with (
        Client(transport=httpx.MockTransport(script), sleep=fake_sleep) as client,
        pytest.raises(MissingAPIKeyError),
    ):
        client.submit("a cat")
    assert script.requests == []


# -- local addresses at the connection (H9) ---------------------------------------------


@pytest.mark.parametrize(
    "host", ["2130706433", "127.1", "0x7f000001", "017700000001", "0177.0.0.1", "127.0.0.01"]
)
@pytest.mark.parametrize("allow_local", [False, True])
def test_non_canonical_ipv4_hosts_are_refused_outright(
    host: str, allow_local: bool, fake_sleep: FakeSleep
) -> None:
    """H9: decimal, octal, hex and shortened IPv4 forms are refused, whatever the setting."""
    script = Script(httpx.Response(200, content=png_bytes()))
    settings = Settings.resolve(api_key="dk-test", environ={}).replace(allow_local_urls=allow_local)
    client = Client(settings=settings, transport=httpx.MockTransport(script), sleep=fake_sleep)
    with client, pytest.raises(ProtocolError, match="canonical"):
        client.download(f"https://{host}/a.png")
    assert script.requests == []


class RecordingBackend(httpcore.MockBackend):
    """A network backend that records where it was asked to connect, and answers nothing."""

    def __init__(self) -> None:
        super().__init__([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
        self.connected: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.connected.append((host, port))
        return super().connect_tcp(host, port, *args, **kwargs)


class AsyncRecordingBackend(httpcore.AsyncMockBackend):
    def __init__(self) -> None:
        super().__init__([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
        self.connected: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.connected.append((host, port))
        return await super().connect_tcp(host, port, *args, **kwargs)


LOCAL_ANSWERS = [
    ["127.0.0.1"],
    ["169.254.169.254"],
    ["93.184.216.34", "10.0.0.7"],  # one bad address among good ones is enough
    ["::1"],
    ["::ffff:127.0.0.1"],
    ["2002:7f00:1::"],  # 6to4 around 127.0.0.1
    ["64:ff9b::a9fe:a9fe"],  # NAT64 around 169.254.169.254
]


@pytest.mark.parametrize("answer", LOCAL_ANSWERS)
def test_a_name_resolving_to_a_local_address_is_never_connected_to(answer: list[str]) -> None:
    """H9: every address the name resolves to is checked; one local one refuses the connect."""
    inner = RecordingBackend()
    backend = download_guard.GuardedSyncBackend(inner, resolve=lambda host, port: answer)
    with pytest.raises(ProtocolError, match="refusing"):
        backend.connect_tcp("images.example.com", 443)
    assert inner.connected == []


@pytest.mark.parametrize("answer", LOCAL_ANSWERS)
def test_the_async_backend_refuses_the_same(answer: list[str]) -> None:
    """H9: the asyncio client's backend checks every resolved address too."""
    inner = AsyncRecordingBackend()
    backend = download_guard.GuardedAsyncBackend(inner, resolve=lambda host, port: answer)
    with pytest.raises(ProtocolError, match="refusing"):
        asyncio.run(backend.connect_tcp("images.example.com", 443))
    assert inner.connected == []


def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    """H9: one lookup per connection, and the connect uses its checked IP (no DNS rebinding)."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    inner = RecordingBackend()
    backend = download_guard.GuardedSyncBackend(inner, resolve=rebinding)
    backend.connect_tcp("images.example.com", 443)
    assert inner.connected == [("93.184.216.34", 443)] and lookups == ["images.example.com"]
    async_inner = AsyncRecordingBackend()
    async_answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    async_backend = download_guard.GuardedAsyncBackend(
        async_inner, resolve=lambda host, port: next(async_answers)
    )
    asyncio.run(async_backend.connect_tcp("images.example.com", 443))
    assert async_inner.connected == [("93.184.216.34", 443)]


def test_a_redirect_to_a_non_canonical_ipv4_host_is_refused(fake_sleep: FakeSleep) -> None:
    """H9: every redirect hop gets the same host checks as the first URL."""
    script = Script(httpx.Response(302, headers={"Location": "https://0x7f000001/x.png"}))
    with make_client(script, fake_sleep) as client, pytest.raises(ProtocolError, match="canonical"):
        client.download("https://cdn.example/a.png")
    assert len(script.requests) == 1


# -- streaming downloads (H13) -------------------------------------------------------------


class Chunks(httpx.AsyncByteStream):
    """A body that arrives in chunks and may break after some of them."""

    def __init__(self, chunks: list[bytes], *, break_after: int | None = None) -> None:
        self.chunks, self.break_after = chunks, break_after

    async def __aiter__(self) -> Any:
        for i, chunk in enumerate(self.chunks):
            if self.break_after is not None and i == self.break_after:
                raise httpx.ReadError("connection reset")
            yield chunk


def test_download_to_streams_into_the_sink_and_a_retry_starts_it_again(
    fake_sleep: FakeSleep,
) -> None:
    """A download broken mid-body is retried; the sink holds the whole image once."""
    data = png_bytes() * 1  # a real PNG, split below
    parts = [data[:20], data[20:40], data[40:]]
    answers = [Chunks(parts, break_after=2), Chunks(parts)]

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=answers.pop(0))

    async def main() -> tuple[str, bytes]:
        sink = io.BytesIO()
        async with AsyncClient(
            "dk-x", transport=httpx.MockTransport(handler), sleep=fake_sleep.asleep
        ) as client:
            media = await client.download_to("https://cdn.example/a.png", sink)
        return media, sink.getvalue()

    media, body = asyncio.run(main())
    assert media == "image/png" and body == data
    assert answers == [] and len(fake_sleep.calls) == 1


def test_download_to_refuses_a_body_over_the_cap_while_streaming(fake_sleep: FakeSleep) -> None:
    """R5: more than max_download_bytes stops the stream; no declared length needed."""
    settings = Settings.resolve(api_key="dk-x", environ={}).replace(max_download_bytes=100)
    head = png_bytes()[:16]

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks([head] + [b"\0" * 50] * 100))

    async def main() -> int:
        sink = io.BytesIO()
        async with AsyncClient(
            settings=settings, transport=httpx.MockTransport(handler), sleep=fake_sleep.asleep
        ) as client:
            with pytest.raises(ProtocolError, match="larger than 100 bytes"):
                await client.download_to("https://cdn.example/a.png", sink)
        return len(sink.getvalue())

    assert asyncio.run(main()) <= 100
