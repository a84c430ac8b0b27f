"""Result images: the CDN origin, expiry, data URIs, sizes, determinism and references."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from nanobanana_jupyter.sandbox import Sandbox, TaskPlan

pytestmark = pytest.mark.integration

SUBMIT = "/api/image/gen"
QUERY = "/api/task/query"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(time_scale=0.01, duration=1.0, max_side=256) as sandbox:
        yield sandbox


def api(sb: Sandbox) -> httpx.Client:
    return httpx.Client(
        base_url=sb.url, headers={"Authorization": f"Bearer {sb.api_key}"}, timeout=5
    )


def run_task(sb: Sandbox, **body: Any) -> dict[str, Any]:
    """Submit, wait for the end, and return the final query data."""
    body.setdefault("prompt", "a lighthouse at dusk")
    body.setdefault("model", "google/gempix2")
    with api(sb) as client:
        task_id = client.post(SUBMIT, json=body).json()["data"]["task_id"]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data: dict[str, Any] = client.get(QUERY, params={"task_id": task_id}).json()["data"]
            if data["status"] in ("success", "failed"):
                return data
            time.sleep(0.005)
    raise AssertionError("task did not finish")


def fetch(image: str) -> bytes:
    """The bytes behind a result entry: a download for URLs, a decode for data URIs."""
    if image.startswith("data:"):
        header, _, payload = image.partition(",")
        assert header == "data:image/png;base64"
        return base64.b64decode(payload)
    response = httpx.get(image)
    assert response.status_code == 200
    return response.content


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def test_result_urls_point_at_a_separate_cdn_origin(sb: Sandbox) -> None:
    """Result URLs are on the CDN origin, not the API's, under /cdn/."""
    url = run_task(sb)["result"][0]["image"]
    assert url.startswith(f"{sb.cdn_url}/cdn/")
    assert sb.cdn_url != sb.url
    assert url.endswith(".png")


def test_cdn_serves_png_without_auth_and_records_headers(sb: Sandbox) -> None:
    """The CDN needs no key, answers image/png, and the ledger keeps each request's headers."""
    url = run_task(sb)["result"][0]["image"]
    response = httpx.get(url, headers={"X-Probe": "42"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    png(response.content)
    (record,) = sb.ledger.cdn_requests
    assert record.headers["x-probe"] == "42"
    assert "authorization" not in record.headers
    assert not record.authorized
    assert record.status == 200


def test_cdn_records_a_leaked_authorization_header(sb: Sandbox) -> None:
    """A client that sends its key to the CDN is caught by the ledger (the check can fail)."""
    url = run_task(sb)["result"][0]["image"]
    httpx.get(url, headers={"Authorization": f"Bearer {sb.api_key}"})
    assert sb.ledger.cdn_requests[0].headers["authorization"] == f"Bearer {sb.api_key}"
    assert sb.ledger.cdn_requests[0].authorized


def test_repeated_downloads_return_identical_bytes(sb: Sandbox) -> None:
    """The same URL serves the same bytes every time."""
    url = run_task(sb)["result"][0]["image"]
    assert fetch(url) == fetch(url)


def test_urls_expire_after_url_ttl() -> None:
    """After url_ttl (scaled) the CDN answers 410 Gone; unknown tokens answer 404."""
    with Sandbox(time_scale=0.01, duration=1.0, url_ttl=40.0, max_side=64) as sb:
        data = run_task(sb)
        url = data["result"][0]["image"]
        assert httpx.get(url).status_code == 200
        time.sleep(0.45)
        assert httpx.get(url).status_code == 410
        assert httpx.get(f"{sb.cdn_url}/cdn/nothing-here.png").status_code == 404
        assert httpx.get(f"{sb.cdn_url}/elsewhere").status_code == 404


def test_data_uri_mode_embeds_pngs() -> None:
    """In data_uri mode results are data:image/png;base64 URIs of decodable PNGs."""
    with Sandbox(time_scale=0.01, duration=1.0, result_mode="data_uri", max_side=64) as sb:
        image = run_task(sb)["result"][0]["image"]
        assert image.startswith("data:image/png;base64,")
        assert png(fetch(image)).size == (64, 64)
        assert sb.ledger.cdn_requests == []


def test_mixed_mode_alternates_urls_and_data_uris() -> None:
    """Mixed mode gives both kinds within one multi-image result."""
    with Sandbox(time_scale=0.01, duration=1.0, result_mode="mixed", max_side=64) as sb:
        sb.plan(TaskPlan(images=4))
        images = [entry["image"] for entry in run_task(sb)["result"]]
        kinds = [i.startswith("data:") for i in images]
        assert kinds.count(True) == 2
        assert kinds[0] != kinds[1]
        assert all(png(fetch(i)) for i in images)


def test_plan_result_mode_overrides_the_sandbox_mode(sb: Sandbox) -> None:
    """A plan's result_mode applies to its task only."""
    sb.plan(TaskPlan(result_mode="data_uri"))
    assert run_task(sb)["result"][0]["image"].startswith("data:")
    assert run_task(sb)["result"][0]["image"].startswith("http://")


@pytest.mark.parametrize(
    ("options", "body", "size"),
    [
        ({"max_side": 256}, {"aspect_ratio": "16:9"}, (256, 144)),
        ({"max_side": 256}, {"aspect_ratio": "9:16", "image_size": "4K"}, (144, 256)),
        ({"max_side": 4096}, {"aspect_ratio": "1:1", "image_size": "1K"}, (1024, 1024)),
        ({"image_side": 96}, {"aspect_ratio": "3:2", "image_size": "2K"}, (96, 64)),
        ({"max_side": 128}, {}, (128, 128)),
    ],
)
def test_image_dimensions_follow_ratio_size_and_caps(
    options: dict[str, Any], body: dict[str, Any], size: tuple[int, int]
) -> None:
    """Pixel size comes from aspect_ratio and image_size, capped by max_side or image_side."""
    with Sandbox(time_scale=0.01, duration=1.0, **options) as sb:
        image = png(fetch(run_task(sb, **body)["result"][0]["image"]))
        assert image.size == size


def test_same_prompt_same_bytes_other_prompt_other_bytes(sb: Sandbox) -> None:
    """Drawing depends on prompt and model; a repeat of one request is another sample.

    (That a fresh sandbox draws the same first picture again is checked below.)
    """
    first = fetch(run_task(sb, prompt="a red fox")["result"][0]["image"])
    repeat = fetch(run_task(sb, prompt="a red fox")["result"][0]["image"])
    other = fetch(run_task(sb, prompt="a blue fox")["result"][0]["image"])
    other_model = fetch(run_task(sb, prompt="a red fox", model="x/y")["result"][0]["image"])
    assert len({first, repeat, other, other_model}) == 4


def test_sizes_capped_to_the_same_side_still_draw_different_pictures() -> None:
    """1K and 2K of one prompt, both capped by max_side, are different pictures (as the real
    service's are): the history joins a child to its parent by the image's bytes."""
    with Sandbox(time_scale=0.01, duration=1.0, max_side=256) as capped:
        one_k = fetch(run_task(capped, prompt="a red fox", image_size="1K")["result"][0]["image"])
        two_k = fetch(run_task(capped, prompt="a red fox", image_size="2K")["result"][0]["image"])
        assert png(one_k).size == png(two_k).size
        assert one_k != two_k


def test_images_of_one_task_differ(sb: Sandbox) -> None:
    """Several images of one task are different pictures."""
    sb.plan(TaskPlan(images=2))
    a, b = (fetch(e["image"]) for e in run_task(sb)["result"])
    assert a != b


def _data_uri(color: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_data_uri_reference_is_composited(sb: Sandbox) -> None:
    """A data-URI reference changes the picture, and a different reference changes it again."""
    square = {"aspect_ratio": "1:1"}
    plain = png(fetch(run_task(sb, **square)["result"][0]["image"]))
    red = png(fetch(run_task(sb, images=[_data_uri("red")], **square)["result"][0]["image"]))
    blue = png(fetch(run_task(sb, images=[_data_uri("blue")], **square)["result"][0]["image"]))
    assert plain.size == red.size == blue.size == (256, 256)
    assert plain.tobytes() != red.tobytes()
    assert red.tobytes() != blue.tobytes()
    # The red reference is visible somewhere in the picture.
    assert (255, 0, 0) in {c for _, c in red.convert("RGB").getcolors(1 << 20) or []}


def test_auto_aspect_follows_the_first_reference(sb: Sandbox) -> None:
    """With aspect_ratio auto, the picture takes the first reference's shape."""
    image = png(fetch(run_task(sb, images=[_data_uri("red")])["result"][0]["image"]))
    assert image.size == (256, 192)  # 40x30 scaled to a 256 long side


def test_foreign_url_reference_becomes_a_placeholder_without_fetching(sb: Sandbox) -> None:
    """A reference on another host is drawn as a placeholder; the sandbox stays offline."""
    plain = fetch(run_task(sb)["result"][0]["image"])
    # Port 9 on loopback: if the sandbox tried to fetch it, the attempt would fail or hang.
    tile = fetch(run_task(sb, images=["http://127.0.0.1:9/photo.png"])["result"][0]["image"])
    assert plain != tile


def test_reference_on_the_own_cdn_is_resolved_locally(sb: Sandbox) -> None:
    """A reference to one of this sandbox's result URLs is composited from the real image."""
    source_url = run_task(sb, prompt="source")["result"][0]["image"]
    source = fetch(source_url)
    sb.ledger.reset()
    via_cdn = fetch(run_task(sb, images=[source_url])["result"][0]["image"])
    as_data = "data:image/png;base64," + base64.b64encode(source).decode()
    via_data = fetch(run_task(sb, images=[as_data])["result"][0]["image"])
    assert via_cdn == via_data
    # Resolved in process: only the final download reached the CDN, not a fetch of the ref.
    assert len(sb.ledger.cdn_requests) == 2


def test_unreadable_data_uri_reference_is_tolerated(sb: Sandbox) -> None:
    """A reference that does not decode becomes a placeholder tile, not a failed task."""
    data = run_task(sb, images=["data:image/png;base64,bm90IGFuIGltYWdl"])
    assert data["status"] == "success"
    png(fetch(data["result"][0]["image"]))


def test_repeated_request_draws_a_different_sample_each_time() -> None:
    """Several tasks with one prompt (samples) get different pictures; the first is unchanged."""

    def run(count: int) -> list[bytes]:
        out = []
        with Sandbox(time_scale=0.001, max_side=64, result_mode="data_uri") as sb:
            headers = {"Authorization": f"Bearer {sb.api_key}"}
            ids = [
                httpx.post(
                    f"{sb.url}/api/image/gen",
                    json={"model": "m/x", "prompt": "same"},
                    headers=headers,
                ).json()["data"]["task_id"]
                for _ in range(count)
            ]
            for task_id in ids:
                for _ in range(200):
                    data = httpx.get(
                        f"{sb.url}/api/task/query", params={"task_id": task_id}, headers=headers
                    ).json()["data"]
                    if data["status"] == "success":
                        out.append(data["result"][0]["image"].encode())
                        break
                    time.sleep(0.01)
        return out

    first_run, second_run = run(3), run(1)
    assert len(set(first_run)) == 3
    assert first_run[0] == second_run[0]
