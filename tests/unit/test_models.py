"""API records: statuses, snapshots parsed liberally, data URIs, request validation."""

from __future__ import annotations

import base64
import io
import json
import warnings
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from nanobanana_jupyter import (
    GenerationRequest,
    ProtocolError,
    TaskSnapshot,
    TaskStatus,
    UnknownModelWarning,
    ValidationError,
)
from nanobanana_jupyter._wire.models import MAX_PROMPT_CHARS, parse_data_uri, sniff_image_type


def _png(size: tuple[int, int] = (4, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(raw: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(raw).decode()}"


# -- statuses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        ("pending", False),
        ("submitted", False),
        ("in_progress", False),
        ("success", True),
        ("failed", True),
        ("waiting_to_send", False),
        ("submitting", False),
        ("submit_unknown", True),
        ("not_sent", True),
        ("timed_out", True),
        ("abandoned", True),
        ("unavailable", True),
        ("unrecognized", False),
    ],
)
def test_terminal_states(status: str, terminal: bool) -> None:
    """Exactly the final states (API and local) are terminal."""
    assert TaskStatus(status).is_terminal is terminal


@pytest.mark.parametrize("raw", ["queued", "", None, 123, {"a": 1}, ["success"], "SUCCESSFUL"])
def test_unknown_status_is_unrecognized_and_not_finished(raw: object) -> None:
    """A status string the client does not know never ends a task."""
    status = TaskStatus.from_api(raw)
    assert status is TaskStatus.UNRECOGNIZED
    assert not status.is_terminal and status.is_active


def test_api_status_matching_is_forgiving_about_case_and_dashes() -> None:
    """`In-Progress` and `SUCCESS` are read as the documented statuses."""
    assert TaskStatus.from_api("In-Progress") is TaskStatus.IN_PROGRESS
    assert TaskStatus.from_api(" SUCCESS ") is TaskStatus.SUCCESS


# -- snapshots ------------------------------------------------------------------------

DOC_QUERY = {
    "task_id": "ta123",
    "status": "success",
    "result": [{"image": "https://cdn.example/a.png"}, {"image": _data_uri(_png())}],
    "consumed": "0.500000",
    "status_reason": {"message": None},
    "created_at": "2026-11-22T03:00:00Z",
}


def test_documented_query_answer_parses() -> None:
    """The documented success answer gives status, images, cost and no reason."""
    snap = TaskSnapshot.from_data(DOC_QUERY)
    assert snap.task_id == "ta123"
    assert snap.status is TaskStatus.SUCCESS
    assert snap.images[0] == "https://cdn.example/a.png"
    assert snap.images[1].startswith("data:image/png;base64,")
    assert snap.consumed == Decimal("0.5")
    assert snap.reason is None


def test_callback_payload_parses_like_a_query() -> None:
    """The webhook payload has the same fields at the top level and parses the same way."""
    payload = {
        "result": None,
        "status": "failed",
        "task_id": "ta9",
        "consumed": 0,
        "status_reason": {"message": "content policy"},
    }
    snap = TaskSnapshot.from_data(payload)
    assert (snap.status, snap.reason, snap.results) == (TaskStatus.FAILED, "content policy", ())


@pytest.mark.parametrize("consumed", ["0.5", 0.5, "0.500000", 1, " 2 "])
def test_consumed_as_string_or_number(consumed: object) -> None:
    """`consumed` arrives as a decimal string or a number and is read as a Decimal."""
    snap = TaskSnapshot.from_data({"task_id": "t", "status": "success", "consumed": consumed})
    assert snap.consumed is not None and snap.consumed > 0


@pytest.mark.parametrize("consumed", ["abc", None, -1, "nan", "inf", True, [1]])
def test_odd_consumed_is_none(consumed: object) -> None:
    """An unreadable or impossible cost is recorded as unknown, not as an error."""
    snap = TaskSnapshot.from_data({"task_id": "t", "status": "pending", "consumed": consumed})
    assert snap.consumed is None


@pytest.mark.parametrize(
    "raw",
    [
        '"1e30"',
        '"1e309"',
        "1e28",
        "1e309",
        '"1e27"',
        "1" + "0" * 28,
        '"' + "9" * 29 + '"',
        "NaN",
        "Infinity",
        "-Infinity",
        '"-1e-9"',
        '"1e999999999"',
        '"' + "1" * 5000 + '"',
        "1" + "0" * 4000,
    ],
)
def test_unusable_consumed_becomes_none_and_keeps_the_snapshot(raw: str) -> None:
    """H1: a huge, infinite or impossible `consumed` (string or JSON number) is unknown cost."""
    data = json.loads(f'{{"task_id": "t", "status": "success", "consumed": {raw}}}')
    snap = TaskSnapshot.from_data(data, task_id="t")
    assert snap.consumed is None
    assert snap.status is TaskStatus.SUCCESS


@pytest.mark.parametrize("raw", ['"-0"', "-0", "-0.0", '"-0.000000"', '"0E-8"', '"0e+5"'])
def test_a_zero_cost_is_zero_never_minus_zero(raw: str) -> None:
    """H17: every way of writing zero reads as 0 (never -0, never 0E-8)."""
    data = json.loads(f'{{"task_id": "t", "status": "success", "consumed": {raw}}}')
    consumed = TaskSnapshot.from_data(data).consumed
    assert consumed == 0 and str(consumed) == "0"


@given(st.decimals(allow_nan=True, allow_infinity=True) | st.integers() | st.floats())
def test_normalize_credits_and_parse_never_raise(value: object) -> None:
    """H1: any number at all gives a usable cost or None, and normalising never raises."""
    from nanobanana_jupyter._wire.credits import normalize_credits

    consumed = TaskSnapshot.from_data({"task_id": "t", "consumed": value}).consumed
    assert consumed is None or (consumed.is_finite() and consumed >= 0)
    if consumed is not None:
        assert not consumed.is_signed()
    if isinstance(value, Decimal):
        normalize_credits(value)


def test_text_entries_and_odd_result_entries() -> None:
    """Entries with text instead of an image are kept as text; junk entries are skipped."""
    snap = TaskSnapshot.from_data(
        {
            "task_id": "t",
            "status": "success",
            "result": [{"text": "I cannot draw that"}, 42, None, {"other": 1}, "https://x/y.png"],
            "unknown_field": {"nested": True},
        }
    )
    assert snap.texts == ("I cannot draw that",)
    assert snap.images == ("https://x/y.png",)


URL = "https://cdn.example/a.png"


@pytest.mark.parametrize(
    "result",
    [
        [{"image": URL}],
        {"image": URL},  # a single object (Wan models)
        {"big_image_url": URL},  # Midjourney
        [{"big_image_url": URL}],
        [{"image": None, "url": URL}],
        [{"image": "", "image_url": URL}],
        URL,  # a bare string
        [URL],
        {"images": [{"url": URL}]},
    ],
    ids=[
        "list",
        "object",
        "object-big",
        "list-big",
        "null-image-then-url",
        "empty-image-then-image_url",
        "bare-string",
        "list-of-strings",
        "object-with-images",
    ],
)
def test_h2_result_shapes_public_clients_report(result: object) -> None:
    """H2: every result shape public clients see for this service gives its image URL."""
    snap = TaskSnapshot.from_data({"task_id": "t", "status": "success", "result": result})
    assert snap.images == (URL,)
    assert snap.raw_result is None  # nothing to explain: the image is there


def test_h2_bare_data_uri_and_its_case_are_accepted() -> None:
    """H2: a bare data URI string is an image; its scheme's case does not matter."""
    uri = _data_uri(_png())
    snap = TaskSnapshot.from_data({"task_id": "t", "status": "success", "result": uri})
    assert snap.images == (uri,)
    shouting = "DATA:image/png" + uri[len("data:image/png") :]
    snap = TaskSnapshot.from_data({"task_id": "t", "status": "success", "result": [shouting]})
    assert snap.images == (uri,) and snap.results[0].is_data_uri


@pytest.mark.parametrize(
    "value",
    [
        "javascript:alert(1)",
        "ftp://cdn.example/a.png",
        "file:///etc/passwd",
        "data:text/html;base64,PHNjcmlwdD4=",
        "/relative/a.png",
        "https://",
        "   ",
        42,
        ["nested"],
    ],
)
def test_h2_only_http_or_data_image_values_become_images(value: object) -> None:
    """H2: a value that is no http(s) URL or data:image URI never becomes an image."""
    for result in ([{"image": value}], {"url": value}, [value], value):
        snap = TaskSnapshot.from_data({"task_id": "t", "status": "success", "result": result})
        assert snap.images == (), result


@pytest.mark.parametrize("result", [None, [], {}, [{"image": None}], "nope", [{"text": " "}]])
def test_h2_success_without_image_keeps_the_raw_result(result: object) -> None:
    """H2: a success that carries no image or text keeps the server's result as short text."""
    snap = TaskSnapshot.from_data({"task_id": "t", "status": "success", "result": result})
    assert snap.results == ()
    assert snap.raw_result == json.dumps(result, ensure_ascii=False)


def test_h2_raw_result_is_capped_and_key_free(sentinel_key: str) -> None:
    """H2: the raw result kept for the user is short and never holds a key."""
    result = [{"image": f"ftp://x/{sentinel_key}", "junk": "x" * 100_000}] * 50
    snap = TaskSnapshot.from_data({"task_id": "t", "status": "success", "result": result})
    assert snap.raw_result is not None and len(snap.raw_result) <= 500
    assert sentinel_key not in snap.raw_result and sentinel_key[3:20] not in snap.raw_result
    assert "dk-***" in snap.raw_result


def test_h2_raw_result_is_only_kept_for_a_success_without_image() -> None:
    """H2: answers that are not such a success keep no raw result (nothing to explain)."""
    for data in (
        {"task_id": "t", "status": "in_progress", "result": None},
        {"task_id": "t", "status": "failed", "result": None},
        {"task_id": "t", "status": "success", "result": [{"text": "in words"}]},
    ):
        assert TaskSnapshot.from_data(data).raw_result is None


def test_missing_task_id_falls_back_to_the_id_asked_for() -> None:
    """A query answer without task_id still belongs to the task that was queried."""
    assert TaskSnapshot.from_data({"status": "pending"}, task_id="ta1").task_id == "ta1"
    with pytest.raises(ProtocolError):
        TaskSnapshot.from_data({"status": "pending"})


def test_reason_is_redacted_when_the_server_echoes_a_key(sentinel_key: str) -> None:
    """A key echoed back in status_reason never reaches the snapshot."""
    snap = TaskSnapshot.from_data(
        {
            "task_id": "t",
            "status": "failed",
            "status_reason": {"message": f"bad key {sentinel_key}"},
        }
    )
    assert sentinel_key not in repr(snap)
    assert "dk-***" in (snap.reason or "")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["task_id", "status", "result", "consumed", "status_reason", "created_at", "id", "image"]
)


@given(st.dictionaries(field_names, json_values, max_size=8) | json_values)
def test_any_json_gives_a_snapshot_or_a_protocol_error(data: object) -> None:
    """Whatever JSON the server sends, parsing returns a snapshot or raises ProtocolError."""
    try:
        snap = TaskSnapshot.from_data(data)
    except ProtocolError:
        return
    assert isinstance(snap.status, TaskStatus)
    assert all(isinstance(i, str) for i in snap.images)
    assert all(i.lower().startswith(("https://", "http://", "data:image/")) for i in snap.images)
    json.dumps(snap.raw_status)
    assert snap.raw_result is None or len(snap.raw_result) <= 500


# -- data URIs ------------------------------------------------------------------------


def test_png_data_uri_decodes() -> None:
    """A valid PNG data URI gives the bytes and their type."""
    raw = _png()
    assert parse_data_uri(_data_uri(raw), max_bytes=10**6) == (raw, "image/png")


def test_declared_type_yields_to_the_bytes() -> None:
    """A JPEG labelled as PNG is reported as what it really is."""
    buf = io.BytesIO()
    Image.new("RGB", (3, 3)).save(buf, format="JPEG")
    assert parse_data_uri(_data_uri(buf.getvalue()), max_bytes=10**6)[1] == "image/jpeg"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=", "raster"),
        ("data:text/html;base64,PHNjcmlwdD4=", "not an image"),
        ("data:image/png;base64,!!!notbase64", "base64"),
        ("data:image/png,rawbytes", "base64"),
        ("data:image/png;base64," + base64.b64encode(b"<html>").decode(), "not a PNG"),
        ("https://example.com/x.png", "not a data URI"),
    ],
)
def test_bad_data_uris_are_refused_with_a_reason(uri: str, message: str) -> None:
    """SVG, HTML, bad base64 and non-image bytes are refused with a clear message."""
    with pytest.raises(ValueError, match=message):
        parse_data_uri(uri, max_bytes=10**6)


def test_oversized_data_uri_is_refused_before_decoding() -> None:
    """The size cap applies to the encoded length, before any decoding work."""
    huge = "data:image/png;base64," + "A" * 4_000_000
    with pytest.raises(ValueError, match="larger"):
        parse_data_uri(huge, max_bytes=1_000_000)


@given(
    st.text(max_size=200)
    | st.binary(max_size=200).map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode())
)
def test_data_uri_parser_raises_only_value_error(uri: str) -> None:
    """Fuzzed input either decodes to a raster image or raises ValueError."""
    try:
        raw, media = parse_data_uri(uri, max_bytes=10_000)
    except ValueError:
        return
    assert sniff_image_type(raw) == media


# -- requests -------------------------------------------------------------------------


def test_valid_request_payload() -> None:
    """A validated request sends only the fields that are set."""
    req = GenerationRequest(prompt="a cat", aspect_ratio="16:9", image_size="2k").validated()
    assert req.to_payload() == {
        "model": "google/gempix2",
        "prompt": "a cat",
        "aspect_ratio": "16:9",
        "image_size": "2K",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"prompt": "x", "images": ("https://a/1",) * 5}, "at most 4"),
        ({"prompt": "x", "images": ("ftp://a/1",)}, "neither an http"),
        ({"prompt": "x", "images": ("/tmp/cat.png",)}, "neither an http"),
        ({"prompt": "x", "aspect_ratio": "7:3"}, "aspect ratio"),
        ({"prompt": "x", "image_size": "8K"}, "image size"),
        ({"prompt": "x", "callback_url": "javascript:alert(1)"}, "callback URL"),
        ({"prompt": "x", "model": ""}, "model is empty"),
    ],
)
def test_invalid_requests_say_what_to_fix(kwargs: dict[str, object], message: str) -> None:
    """Each mistake is refused before sending, with a message naming it."""
    with pytest.raises(ValidationError, match=message):
        GenerationRequest(**kwargs).validated()  # type: ignore[arg-type]


def test_unknown_model_is_only_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """A model id the client does not know is sent anyway, with a one-line warning (the
    category's filters apply: pytest's "error" here would raise it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("default", UnknownModelWarning)
        req = GenerationRequest(prompt="x", model="acme/new-model").validated()
    assert req.model == "acme/new-model"
    (record,) = caplog.records
    assert record.getMessage().startswith("nanobanana: unknown model 'acme/new-model'; sending")


def test_fingerprint_depends_on_what_changes_the_image() -> None:
    """Same request, same fingerprint; prompt, model, refs or options change it; callback does not."""
    base = GenerationRequest(prompt="a cat", images=("https://a/1.png",))
    assert (
        base.fingerprint()
        == GenerationRequest(prompt="a cat", images=("https://a/1.png",)).fingerprint()
    )
    assert (
        base.fingerprint()
        == GenerationRequest(
            prompt="a cat", images=("https://a/1.png",), callback_url="https://hook/x"
        ).fingerprint()
    )
    for other in (
        GenerationRequest(prompt="a dog", images=("https://a/1.png",)),
        GenerationRequest(prompt="a cat", images=("https://a/2.png",)),
        GenerationRequest(prompt="a cat", images=("https://a/1.png",), aspect_ratio="1:1"),
        GenerationRequest(prompt="a cat", model="google/nano-banana", images=("https://a/1.png",)),
    ):
        assert other.fingerprint() != base.fingerprint()


def test_variants_of_one_request_have_distinct_stable_fingerprints() -> None:
    """Samples 0..3 of one prompt differ from each other but are the same on every re-run."""
    req = GenerationRequest(prompt="a cat")
    prints = [req.fingerprint(i) for i in range(4)]
    assert len(set(prints)) == 4
    assert prints == [req.fingerprint(i) for i in range(4)]
    assert prints[0] == req.fingerprint()


@pytest.mark.parametrize(
    ("raw", "shown"), [("0.500000", "0.5"), ("2.000000", "2"), ("100", "100"), (1.25, "1.25")]
)
def test_consumed_is_normalised(raw: object, shown: str) -> None:
    """Costs read as the server sends them are kept without trailing zeros or exponents."""
    snap = TaskSnapshot.from_data({"task_id": "t", "status": "success", "consumed": raw})
    assert str(snap.consumed) == shown


def test_a_validated_request_is_not_validated_or_warned_about_again() -> None:
    """validated() of what validated() returned is the same request, with no second check
    (pytest turns the unknown-model warning into an error: a second check would raise); a
    copy changed with dataclasses.replace is checked again; a receiver's callback URL keeps
    the mark, and is itself checked."""
    import dataclasses

    from nanobanana_jupyter._wire.models import with_callback_url

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        checked = GenerationRequest(prompt="a cat", model="not/a-model").validated()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownModelWarning)
        assert checked.validated() is checked
        moved = with_callback_url(checked, "http://127.0.0.1:9/hook/x")
        assert moved.callback_url == "http://127.0.0.1:9/hook/x"
        assert moved.validated() is moved
        changed = dataclasses.replace(checked, prompt="")
        with pytest.raises(ValidationError, match="empty"):
            changed.validated()
    with pytest.raises(ValidationError, match="callback URL"):
        with_callback_url(checked, "ftp://example.test/hook")


def test_with_prompt_checks_only_the_new_prompt_of_a_validated_request() -> None:
    """with_prompt on a validated request checks the prompt alone (the unknown-model warning,
    an error here, is not raised again) and hands back a validated copy; every prompt
    mistake is still caught; on a request never validated, everything is checked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        checked = GenerationRequest(
            prompt="a cat", model="not/a-model", aspect_ratio="16:9", image_size="2k"
        ).validated()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownModelWarning)
        other = checked.with_prompt("a dog")
        assert other.validated() is other
    assert (other.prompt, other.model, other.aspect_ratio, other.image_size) == (
        "a dog",
        "not/a-model",
        "16:9",
        "2K",
    )
    assert checked.prompt == "a cat"  # the template is left as it was
    assert other.fingerprint() != checked.fingerprint()
    assert (
        other.fingerprint()
        == GenerationRequest(
            prompt="a dog", model="not/a-model", aspect_ratio="16:9", image_size="2K"
        ).fingerprint()
    )
    for bad, match in [
        ("", "empty"),
        ("   ", "empty"),
        ("a \udc31", "surrogate"),
        ("x" * (MAX_PROMPT_CHARS + 1), "characters"),
    ]:
        with pytest.raises(ValidationError, match=match):
            checked.with_prompt(bad)
    raw = GenerationRequest(prompt="a cat", aspect_ratio="5:9")
    with pytest.raises(ValidationError, match="aspect ratio"):
        raw.with_prompt("a dog")
