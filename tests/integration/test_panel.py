"""The ipywidgets panel against a real sandbox: set traits, click buttons, watch the engine update it.

The panel's tests that need no server (references, history paging, closing) and the tests of
its parts are in tests/unit/test_panel.py.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nanobanana_jupyter import PollPolicy, Session, Settings, TaskRecord, TaskStatus
from nanobanana_jupyter._core.events import TaskEvent
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._views.panel import Panel, notebook_slot
from nanobanana_jupyter._views.panel.composer import DEBOUNCE_SECONDS
from nanobanana_jupyter._views.panel.showing import CARD_INTERVAL
from nanobanana_jupyter.sandbox import Sandbox, TaskPlan
from tests.helpers.gallery_page import GalleryPage

SCALE = 0.01
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds (never waits forever)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")


def make_session(sb: Sandbox, data_dir: Path, **settings: Any) -> Session:
    resolved = Settings.resolve(
        api_key=settings.pop("api_key", sb.api_key),
        base_url=sb.url,
        data_dir=data_dir,
        environ={},
        colab=lambda name: None,
        allow_local_urls=True,  # the sandbox's images come from 127.0.0.1
        **settings,
    )
    return Session(settings=resolved, poll_policy=PollPolicy().scaled(SCALE))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(time_scale=SCALE, max_side=256) as server:
        yield server
        assert server.ledger.double_charges() == []


@pytest.fixture
def session(sandbox: Sandbox, tmp_path: Path) -> Iterator[Session]:
    with make_session(sandbox, tmp_path / "data") as s:
        yield s


@pytest.fixture
def make_panel() -> Iterator[Callable[..., Panel]]:
    made: list[Panel] = []

    def build(session: Session, **kwargs: Any) -> Panel:
        panel = Panel(session=session, **kwargs)
        made.append(panel)
        return panel

    yield build
    for panel in made:
        settle(panel.tasks)
        panel.close()


def settle(tasks: list[Any]) -> None:
    """Wait until no submit is in flight: closing a session mid-submit leaks its socket."""
    for task in tasks:
        wait_for(lambda t=task: t.done() or t.task_id is not None, what="the submit to answer")


@pytest.fixture
def panel(session: Session, make_panel: Callable[..., Panel]) -> Panel:
    return make_panel(session)


def card_of(panel: Panel, index: int = 0) -> Any:
    return panel.cards.card_of(panel.tasks[index].local_id)


def png_bytes(colour: tuple[int, int, int] = (200, 40, 40), side: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, format="PNG")
    return out.getvalue()


def generate(panel: Panel, prompt: str, **traits: Any) -> list[Any]:
    panel.prompt_box.value = prompt
    for name, value in traits.items():
        getattr(panel, name).value = value
    panel.composer.last_submit = -1e9  # each test step is a deliberate click, not a double click
    return panel.generate()


# -- generating ------------------------------------------------------------------------------


def test_click_generate_shows_a_card_that_turns_into_the_image(
    panel: Panel, sandbox: Sandbox
) -> None:
    """A click starts one task; its card ends with status, cost, time and image; the gallery has it."""
    panel.prompt_box.value = "a cat in a banana costume"
    panel.generate_button.click()
    assert len(panel.tasks) == 1
    wait_for(lambda: panel.gallery_paths, what="the gallery image")
    card = card_of(panel)
    wait_for(lambda: card.status.value == "success", what="the card's final status")
    assert card.cost.value == "0.5 pretend credits"  # a sandbox, reached by URL
    assert card.elapsed.value.endswith("s")
    assert card.image.value[:2] == b"\xff\xd8" and card.image.layout.display == ""
    assert card.cancel.layout.display == "none" and card.retry.layout.display == "none"
    assert panel.gallery_paths == panel.tasks[0].paths
    assert Path(panel.gallery_paths[0]).is_file()
    assert sandbox.ledger.submits_received == 1


def test_a_double_click_starts_one_batch(
    panel: Panel, session: Session, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second click within a second of the first does not even ask the session."""
    calls: list[str] = []
    original = session.generate

    def counting(prompt: str, **kwargs: Any) -> Any:
        calls.append(prompt)
        return original(prompt, **kwargs)

    monkeypatch.setattr(session, "generate", counting)
    panel.prompt_box.value = "double click"
    panel.generate_button.click()
    panel.prompt_box.value = "a different prompt, still too soon"
    panel.generate_button.click()
    assert calls == ["double click"] and len(panel.tasks) == 1
    panel.tasks[0].wait(20)
    assert sandbox.ledger.submits_received == 1
    panel.composer.last_submit -= DEBOUNCE_SECONDS  # a second later
    panel.generate_button.click()
    assert calls == ["double click", "a different prompt, still too soon"]
    panel.tasks[0].wait(20)


def test_generate_is_disabled_while_submitting(panel: Panel, session: Session) -> None:
    """While the session is being asked, the button is disabled and a second request is ignored."""
    seen: list[tuple[bool, list[Any]]] = []
    original = session.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((panel.generate_button.disabled, panel.generate()))
        return original(*args, **kwargs)

    session.generate = spy  # type: ignore[method-assign]
    try:
        generate(panel, "spy on me")
    finally:
        del session.generate
    panel.tasks[0].wait(20)
    assert seen == [(True, [])]
    assert panel.generate_button.disabled is False
    assert panel.generate_button.description == "Generate"


def test_count_starts_that_many_variants_with_the_chosen_options(panel: Panel) -> None:
    """Images=3 starts three distinct tasks carrying the aspect ratio and size chosen."""
    tasks = generate(panel, "three foxes", count_box=3, aspect_box="16:9", size_box="2K")
    assert len(tasks) == 3 and len({t.local_id for t in tasks}) == 3
    assert {t.record.aspect_ratio for t in tasks} == {"16:9"}
    assert {t.record.image_size for t in tasks} == {"2K"}
    assert len({t.record.fingerprint for t in tasks}) == 3
    assert len(panel.cards_box.children) == 3
    for task in tasks:
        task.wait(20)


def test_free_text_model_is_sent_as_typed_and_noted(panel: Panel) -> None:
    """A model id outside the known list is sent as given; the panel says so (no warning escapes)."""
    (task,) = generate(panel, "custom model", model_box="acme/banana-9000")
    assert task.model == "acme/banana-9000"
    assert "not a known id" in panel.status_text
    task.wait(20)


def test_an_identical_request_is_shown_again_not_paid_again(panel: Panel, sandbox: Sandbox) -> None:
    """Generating the same request again reuses the finished task, says so, and costs nothing."""
    (first,) = generate(panel, "same again")
    first.wait(20)
    (again,) = generate(panel, "same again")
    assert again is first and panel.tasks == [first]
    assert "already running or done" in panel.status_text
    assert "Started" not in panel.status_text
    assert sandbox.ledger.submits_received == 1
    assert repr(panel).startswith("NanoBanana panel (1 task, 0.5 pretend credits")


def test_a_text_answer_shows_in_the_card(panel: Panel, sandbox: Sandbox) -> None:
    """When the model answers in words, the card shows the reply as text."""
    sandbox.plan(TaskPlan(text_only=True))
    (task,) = generate(panel, "describe <yourself>")
    task.wait(20)
    card = card_of(panel)
    wait_for(lambda: "Model reply" in card.error.value, what="the reply")
    assert card.error.layout.display == ""


def test_ctrl_enter_message_from_the_prompt_box_generates(panel: Panel) -> None:
    """The prompt box's Ctrl/Cmd+Enter message starts a generation like the button."""
    pytest.importorskip("anywidget")
    assert panel.has_shortcut
    panel.prompt_box.value = "keyboard banana"
    panel.prompt_box._handle_custom_msg({"event": "submit"}, [])
    assert [t.prompt for t in panel.tasks] == ["keyboard banana"]
    panel.prompt_box._handle_custom_msg({"event": "something else"}, [])
    assert len(panel.tasks) == 1
    panel.tasks[0].wait(20)


def test_an_empty_prompt_is_refused_in_the_panel(panel: Panel, sandbox: Sandbox) -> None:
    """Generate with no prompt sends nothing and says why in the status line."""
    assert generate(panel, "   ") == []
    assert "prompt" in panel.status_text.lower()
    assert sandbox.ledger.submits_received == 0


def test_a_validation_error_shows_in_the_panel(panel: Panel, sandbox: Sandbox) -> None:
    """A request the session refuses shows its message in the panel and raises nothing."""
    assert generate(panel, "x" * 20_001) == []
    assert "20001 characters" in panel.status_text
    assert "<" not in panel.status_html.value.replace("<div", "").replace("</div>", "")
    assert sandbox.ledger.submits_received == 0


def test_callbacks_from_another_thread_return_at_once(panel: Panel) -> None:
    """A click handled on a non-main thread (a kernel subshell) starts the task and returns fast."""
    panel.prompt_box.value = "from a subshell"
    took: list[float] = []

    def click() -> None:
        start = time.monotonic()
        panel.generate_button.click()
        took.append(time.monotonic() - start)

    thread = threading.Thread(target=click, name="subshell-test")
    thread.start()
    thread.join(10)
    assert took and took[0] < 1.0
    assert len(panel.tasks) == 1
    wait_for(lambda: panel.gallery_paths, what="the image")


# -- task cards ------------------------------------------------------------------------------


def test_a_failed_card_shows_the_escaped_reason_and_retry_sends_again(
    panel: Panel, sandbox: Sandbox
) -> None:
    """A failed task shows the server's reason as text and a Retry that generates again (forced)."""
    sandbox.plan(TaskPlan(outcome="failed", reason="no <script>alert(1)</script> bananas"))
    (task,) = generate(panel, "will fail")
    card = card_of(panel)
    wait_for(lambda: card.status.value == "failed", what="the failed status")
    assert "&lt;script&gt;" in card.error.value and "<script>" not in card.error.value
    assert card.error.layout.display == "" and card.retry.layout.display == ""
    card.retry.click()
    assert len(panel.tasks) == 2
    retried = panel.tasks[0]
    assert retried.local_id != task.local_id and retried.prompt == "will fail"
    wait_for(lambda: retried.status is TaskStatus.SUCCESS, what="the retried task")
    assert sandbox.ledger.submits_received == 2


def test_cancel_then_resume_a_running_task(panel: Panel, sandbox: Sandbox) -> None:
    """Cancel marks a running task abandoned; Resume polls it again."""
    sandbox.plan(TaskPlan(stuck=True))
    (task,) = generate(panel, "stuck forever")
    card = card_of(panel)
    wait_for(lambda: task.task_id is not None, what="the task id")
    assert card.cancel.layout.display == ""
    card.cancel.click()
    wait_for(lambda: card.status.value == "abandoned", what="abandoned")
    assert card.resume.layout.display == "" and card.cancel.layout.display == "none"
    card.resume.click()
    wait_for(lambda: not task.done(), what="the task to run again")
    wait_for(lambda: card.status.value in ("queued", "generating"), what="the card to follow")
    assert card.cancel.layout.display == ""


def test_progress_updates_are_throttled_and_coalesced(panel: Panel, sandbox: Sandbox) -> None:
    """A burst of engine changes applies to a card at most about four times a second."""
    sandbox.plan(TaskPlan(stuck=True))
    (task,) = generate(panel, "busy task")
    card = card_of(panel)
    wait_for(lambda: task.task_id is not None, what="the task id")
    applied: list[float] = []
    original = card.apply

    def counting(now: float) -> None:
        applied.append(now)
        original(now)

    card.apply = counting
    start = time.monotonic()
    while time.monotonic() - start < 0.5:
        panel._on_change(TaskEvent(task, task.record))
    wait_for(lambda: not panel.cards.pending, timeout=5, what="the pending change to be applied")
    assert 1 <= len(applied) <= 4, applied
    gaps = [b - a for a, b in itertools.pairwise(applied)]
    assert all(gap >= CARD_INTERVAL * 0.9 for gap in gaps), gaps


def test_background_updates_wait_for_the_panel_lock(panel: Panel, sandbox: Sandbox) -> None:
    """Engine-side updates set traits only under the panel's one lock."""
    sandbox.plan(TaskPlan(stuck=True))
    (task,) = generate(panel, "locked")
    card = card_of(panel)
    done = threading.Event()
    with panel.context.lock:
        card.status.value = "marker"
        card.applied_at = 0.0  # due for an update at once
        thread = threading.Thread(
            target=lambda: (panel._on_change(TaskEvent(task, task.record)), done.set())
        )
        thread.start()
        assert not done.wait(0.3)
        assert card.status.value == "marker"  # nothing was written while the lock was held
    assert done.wait(5)
    thread.join(5)
    assert card.status.value != "marker"


def test_elapsed_time_ticks_while_running(panel: Panel, sandbox: Sandbox) -> None:
    """A running card's elapsed time is refreshed about once a second with no engine event."""
    sandbox.plan(TaskPlan(stuck=True))
    (task,) = generate(panel, "slow clock")
    card = card_of(panel)
    wait_for(lambda: task.task_id is not None, what="the task id")
    first = card.elapsed.value
    wait_for(lambda: card.elapsed.value != first, timeout=5, what="the elapsed time to move")


# -- references ------------------------------------------------------------------------------


def test_use_a_gallery_image_as_reference_and_generate_with_it(panel: Panel) -> None:
    """ "Use as reference" on a gallery image adds it, and the next task carries it."""
    (first,) = generate(panel, "a red apple")
    wait_for(lambda: panel.gallery_paths, what="the first image")
    item = panel.gallery.items[0]
    page = GalleryPage(panel)
    page.click(item, "use")
    assert len(panel.references) == 1 and len(panel.refs_box.children) == 1
    page.click(item, "use")
    assert len(panel.references) == 1 and "already" in panel.status_text
    (second,) = generate(panel, "the apple, in blue")
    assert len(second.record.references) == 1
    assert second.record.references[0].startswith("sha256:")
    # By the source image's own hash: the history joins the two (the panel's lineage).
    assert [t.local_id for t in second.parents] == [first.local_id]
    wait_for(lambda: len(panel.gallery_paths) == 2, what="the second image")
    assert first.status is TaskStatus.SUCCESS


def test_branch_from_here_starts_an_edit_of_that_image(panel: Panel, session: Session) -> None:
    """ "Branch" on a gallery image puts its prompt in the box and makes it the only reference:
    the next task is its child in the history's lineage."""
    (first,) = generate(panel, "a red apple")
    (other,) = generate(panel, "a green pear")
    wait_for(lambda: len(panel.gallery_paths) == 2, what="both images")
    apple, pear = sorted(panel.gallery.items, key=lambda item: item.prompt != "a red apple")
    panel.gallery._use(pear)  # a reference chosen earlier: branching starts from one image only
    assert len(panel.references) == 1
    GalleryPage(panel).click(apple, "branch")
    assert panel.prompt_box.value == "a red apple"
    assert len(panel.references) == 1 and "edit the prompt" in panel.status_text
    panel.prompt_box.value = "a red apple, bitten"
    panel.composer.last_submit = -1e9
    (child,) = panel.generate()
    assert [t.local_id for t in child.parents] == [first.local_id]
    assert [t.local_id for t in first.children] == [child.local_id]
    assert other.children == []


# -- gallery and history ---------------------------------------------------------------------


def test_view_shows_a_larger_preview_and_the_full_path(
    tmp_path: Path, make_panel: Callable[..., Panel]
) -> None:
    """View opens the larger view: a 1024-side preview made off the callback, and the file path."""
    with (
        Sandbox(time_scale=SCALE, max_side=900) as big,
        make_session(big, tmp_path / "big") as session,
    ):
        panel = make_panel(session)
        generate(panel, "a large <b>pear</b>")
        wait_for(lambda: panel.gallery_paths, what="the image")
        item = panel.gallery.items[0]
        GalleryPage(panel).click(item, "view")
        assert panel.detail_box.layout.display == ""
        assert item.image.path in panel.detail_path.value
        assert "&lt;b&gt;pear&lt;/b&gt;" in panel.detail_path.value

        def side() -> int:
            with Image.open(io.BytesIO(panel.detail_image.value)) as img:
                return max(img.size)

        wait_for(lambda: side() == 900, timeout=10, what="the larger preview")
        panel.detail_box.children[2].children[0].click()  # use as reference
        assert len(panel.references) == 1
        detail_buttons = {b.description: b for b in panel.detail_box.children[2].children}
        detail_buttons["Close"].click()
        assert panel.detail_box.layout.display == "none"


def test_an_opened_panel_shows_the_newest_results_of_the_history(
    session: Session, make_panel: Callable[..., Panel]
) -> None:
    """A new panel's gallery starts with the newest images already in the store."""
    tasks = session.map(["one", "two"])
    for task in tasks:
        task.wait(20)
    panel = make_panel(session)
    assert panel.gallery_paths == [tasks[1].path, tasks[0].path]
    assert panel.gallery_empty.layout.display == "none"


def test_the_gallery_is_one_widget_however_many_images_it_shows(
    session: Session, make_panel: Callable[..., Panel]
) -> None:
    """A panel over 1 stored image and one over 12 make as many widgets: the gallery draws
    its items in the page (12 items of ipywidgets were some 750 widgets, 170 ms to open)."""
    from ipywidgets.widgets import widget as ipywidget

    def widgets_made(build: Callable[[], Panel]) -> tuple[int, Panel]:
        before = len(ipywidget._instances)
        panel = build()
        return len(ipywidget._instances) - before, panel

    session.generate("the first").wait(20)
    one, first = widgets_made(lambda: make_panel(session))
    assert len(first.gallery.items) == 1
    first.close()
    for task in session.map([f"image {i}" for i in range(11)]):
        task.wait(20)
    twelve, second = widgets_made(lambda: make_panel(session))
    assert len(second.gallery.items) == 12
    assert twelve == one, (one, twelve)
    page = GalleryPage(second)
    assert [e["caption"] for e in second.gallery_box.items][:2] == ["image 10", "image 9"]
    # The thumbnails cross once, as bytes, when the page asks: not in the items.
    assert all(
        set(e) == {"key", "caption", "tooltip", "branch_tip", "curating"} for e in page.view.items
    )
    keys = [item.key for item in second.gallery.items]
    sent = page.thumbs([*keys, "no such key", 7])
    assert sent == {item.key: item.thumb for item in second.gallery.items}
    assert all(thumb[:3] == b"\xff\xd8\xff" for thumb in sent.values())  # JPEG


def test_new_images_thumbnails_go_with_them_once_a_page_shows_the_gallery(panel: Panel) -> None:
    """Before any page asked, nothing is pushed (it would be lost); after, a new image's
    thumbnail is sent as it arrives (a page's ask would wait behind a running cell)."""
    sends: list[tuple[dict[str, Any], list[bytes]]] = []
    panel.gallery_box.send = lambda content, buffers=None: sends.append((content, buffers or []))
    generate(panel, "a plum")
    wait_for(lambda: len(panel.gallery_paths) == 1, what="the first image")
    assert sends == []
    GalleryPage(panel).send({"event": "thumbs", "keys": []})  # a page drew the gallery
    generate(panel, "a fig")
    wait_for(lambda: len(panel.gallery_paths) == 2, what="the second image")
    fig = panel.gallery.items[0]
    assert [(content["keys"], buffers) for content, buffers in sends] == [([fig.key], [fig.thumb])]


def test_the_pages_messages_that_are_no_click_of_an_item_change_nothing(panel: Panel) -> None:
    """Unknown keys, events, ratings and shapes from the page are ignored, and nothing fails
    (a failure would be logged: GalleryPage.send fails the test on one); a click sent the
    way the page sends it, through the widget, does what it says."""
    (task,) = generate(panel, "a quince")
    wait_for(lambda: panel.gallery_paths, what="the image")
    page = GalleryPage(panel)
    status = panel.status_text
    for content in (
        "view",
        ["view"],
        {"event": "view"},
        {"event": "view", "key": "no such key"},
        {"event": "explode", "key": panel.gallery.items[0].key},
        {"event": "rate", "key": panel.gallery.items[0].key, "rating": 9},
        {"event": "rate", "key": panel.gallery.items[0].key, "rating": True},
        {"event": "rate", "key": panel.gallery.items[0].key, "rating": "3"},
        {"event": "tag", "key": panel.gallery.items[0].key, "text": ["a"]},
        {"event": "untag", "key": panel.gallery.items[0].key},
        {"event": "thumbs", "keys": "all"},
        {"event": "thumbs"},
    ):
        page.send(content)
    assert panel.detail_box.layout.display == "none"
    assert task.rating is None and task.tags == [] and len(panel.references) == 0
    assert panel.status_text == status
    panel.gallery_box._handle_custom_msg({"event": "view", "key": panel.gallery.items[0].key}, [])
    assert panel.detail_box.layout.display == ""


def test_images_from_the_magic_also_reach_the_gallery(panel: Panel, session: Session) -> None:
    """A task of the same session started elsewhere shows in the gallery when it ends."""
    task = session.generate("from the magic")
    wait_for(lambda: panel.gallery_paths == [task.path] and task.path, what="the image")
    assert panel.tasks == []


def _seed(store_path: Path, n: int) -> None:
    now = time.time() - n
    records = [
        TaskRecord(
            local_id=uuid.uuid4().hex,
            status=TaskStatus.SUCCESS,
            prompt=f"seeded prompt {i}",
            model="google/gempix2",
            fingerprint=uuid.uuid4().hex,
            created_at=now + i,
            updated_at=now + i,
            task_id=f"ta{i:08d}",
            submitted_at=now + i,
            finished_at=now + i + 5,
            consumed=Decimal("0.5"),
        )
        for i in range(n)
    ]
    with Store(store_path) as store:
        store.insert_many(records)


def test_history_of_50000_rows_stays_fast(
    sandbox: Sandbox, tmp_path: Path, make_panel: Callable[..., Panel]
) -> None:
    """Opening the panel over 50,000 stored tasks and flipping a page takes well under 2 s."""
    _seed(tmp_path / "big" / "history.sqlite3", 50_000)
    with make_session(sandbox, tmp_path / "big") as session:
        start = time.perf_counter()
        panel = make_panel(session)
        panel.older_button.click()
        took = time.perf_counter() - start
        assert "seeded prompt 49979" in panel.history_html.value
        assert "50,000" in panel.page_label.value or "2,500" in panel.page_label.value
        assert took < 2.0, f"took {took:.2f} s"


def test_the_cost_line_follows_finished_tasks(panel: Panel) -> None:
    """The panel's running cost and the store's total update after tasks end."""
    for prompt in ("cost one", "cost two"):
        generate(panel, prompt)
    for task in panel.tasks:
        task.wait(20)
    wait_for(
        lambda: "2 tasks, 1 pretend credit" in panel.cost_label.value, timeout=10, what="the cost"
    )
    assert "all: 2 tasks, 1 pretend credit" in panel.cost_label.value


# -- saved notebooks, safety, lifetime -------------------------------------------------------


def test_mimebundle_keeps_the_widget_view_and_says_what_it_is(panel: Panel) -> None:
    """The panel's text/plain names it and where its images are; the widget-view key stays."""
    bundle = panel._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.model_id
    assert data["text/plain"].startswith("NanoBanana panel (0 tasks, 0 credits")
    assert "output below" in data["text/plain"]
    (task,) = generate(panel, "for the repr")
    task.wait(20)
    assert repr(panel).startswith("NanoBanana panel (1 task, 0.5 pretend credits")


def test_display_creates_a_plain_slot_that_background_updates_with_images(
    panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Displaying adds one display-id slot; the engine updates it with images, never display()s."""
    shown: list[tuple[dict[str, Any], str | None, str]] = []
    updated: list[tuple[dict[str, Any], str, str]] = []

    def fake_display(data: dict[str, Any], **kwargs: Any) -> None:
        shown.append((data, kwargs.get("display_id"), threading.current_thread().name))

    def fake_update(data: dict[str, Any], **kwargs: Any) -> None:
        updated.append((data, kwargs["display_id"], threading.current_thread().name))

    monkeypatch.setattr(notebook_slot, "display", fake_display)
    monkeypatch.setattr(notebook_slot, "update_display", fake_update)
    panel._ipython_display_()
    assert len(shown) == 2
    assert "application/vnd.jupyter.widget-view+json" in shown[0][0]
    slot = shown[1][1]
    assert slot and "no images yet" in shown[1][0]["text/plain"]
    generate(panel, "a <i>saved</i> banana")
    wait_for(lambda: any("image/jpeg" in u[0] for u in updated), what="the slot update")
    data, display_id, thread = next(u for u in updated if "image/jpeg" in u[0])
    assert display_id == slot and thread != "MainThread"
    assert "&lt;i&gt;saved&lt;/i&gt;" in data["text/html"] and "<i>" not in data["text/html"]
    assert panel.tasks[0].path in data["text/plain"]
    assert data["image/jpeg"] and "data:image/jpeg;base64," in data["text/html"]
    assert len(shown) == 2  # nothing was displayed from the background


def test_the_api_key_is_in_no_widget_state(
    tmp_path: Path, sentinel_key: str, make_panel: Callable[..., Panel]
) -> None:
    """No synced trait of any panel widget holds the API key."""
    with (
        Sandbox(time_scale=SCALE, max_side=128, api_key=sentinel_key) as server,
        make_session(server, tmp_path / "k", api_key=sentinel_key) as session,
    ):
        panel = make_panel(session)
        (task,) = generate(panel, "keep the secret")
        task.wait(20)
        wait_for(lambda: panel.gallery_paths, what="the image")
        states = [w.get_state() for w in [panel, *panel.context.owned]]
        dumped = json.dumps(states, default=lambda v: repr(v))
        assert sentinel_key not in dumped and sentinel_key[3:] not in dumped
        assert sentinel_key not in repr(panel)
