"""The panel and the magic in a real JupyterLab 4 and Notebook 7, driven in headless Chromium.

Each test opens a fresh notebook whose first cell loads the extension and starts an in-kernel
sandbox, runs it with JupyterLab's own command, and then acts as a person would: types,
clicks, presses Ctrl+Enter, and waits (bounded) for what the page shows.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.browser.conftest import ARTIFACTS, NOTEBOOK, ROOT, SCREENSHOTS, JupyterServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEP = 30_000  # ms: generous per step, never unbounded


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def open_and_run_all(page: Any, url: str) -> Any:
    """Open a notebook, wait for an idle kernel, run every cell; return the notebook locator."""
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(
        """() => {
            const app = window.jupyterapp;
            const widget = app && app.shell && app.shell.currentWidget;
            const session = widget && widget.sessionContext && widget.sessionContext.session;
            return !!(session && session.kernel && session.kernel.status === 'idle');
        }""",
        timeout=60_000,
    )
    notebook = page.locator(NOTEBOOK)
    expect(notebook).to_have_count(1)
    # Not awaited: later cells may block on purpose while the test watches earlier ones.
    page.evaluate(
        "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }"
    )
    return notebook


def wait_loaded(page: Any, image: Any) -> None:
    """Wait until an <img> has really decoded (not just been inserted)."""
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=STEP
    )


def saved_outputs(path: Path, *, cell: int, having: str) -> list[dict[str, Any]]:
    """The outputs of one cell in the saved file, once one of them carries ``having``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            outputs = nbformat.reads(path.read_text(), as_version=4).cells[cell].outputs
        except (OSError, ValueError, KeyError, IndexError, AttributeError):
            outputs = []
        if any(having in output.get("data", {}) for output in outputs):
            return list(outputs)
        time.sleep(0.2)
    pytest.fail(f"{path.name} was not saved with {having} in cell {cell}")


def save_screenshot(target: Any, name: str) -> Path:
    """Save a screenshot once layout has settled (two animation frames)."""
    target.evaluate(
        "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    target.screenshot(path=str(path))
    return path


# -- themes: every text of our outputs legible (WCAG contrast) ------------------------------

MIN_CONTRAST = 4.5  # WCAG 2 AA for body text
# For each element under ``root`` that carries text (a non-blank text node of its own, or a
# form control with a value), the contrast of its colour against what is really painted
# behind it: the ancestors' backgrounds composited from the page down (translucent ones
# included), each ancestor's ``opacity`` blended as its group is, any CSS colour syntax
# (rgb, color(), color-mix, oklab) resolved by painting it on a 1x1 canvas. Disabled
# controls are left out (WCAG exempts inactive components), as are elements not rendered.
CONTRAST = """root => {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 1;
    const ctx = canvas.getContext('2d', {willReadFrequently: true});
    const rgba = css => {
        ctx.clearRect(0, 0, 1, 1);
        ctx.fillStyle = '#000';
        ctx.fillStyle = css;
        ctx.fillRect(0, 0, 1, 1);
        const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data;
        return [r, g, b, a / 255];  // getImageData is not premultiplied
    };
    const over = (top, under) => top.slice(0, 3).map((c, i) => c * top[3] + under[i] * (1 - top[3]));
    const mix = (a, b, t) => a.map((c, i) => c * t + b[i] * (1 - t));
    // What the pixel under the text is, with or without the text, from the page down.
    const paint = (chain, text) => {
        const level = (i, under) => {
            const style = getComputedStyle(chain[i]);
            let inner = over(rgba(style.backgroundColor), under);
            if (i + 1 < chain.length) inner = level(i + 1, inner);
            else if (text) inner = over(text, inner);
            return mix(inner, under, parseFloat(style.opacity));
        };
        return level(0, [255, 255, 255]);
    };
    const luminance = rgb => {
        const [r, g, b] = rgb.map(c => {
            c = Math.min(255, Math.max(0, c)) / 255;
            return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const ratio = (a, b) => {
        const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
        return (hi + 0.05) / (lo + 0.05);
    };
    const hex = rgb => '#' + rgb.map(c => Math.round(Math.min(255, Math.max(0, c))).toString(16).padStart(2, '0')).join('');
    const controls = 'input, textarea, select';
    const results = [];
    for (const el of [root, ...root.querySelectorAll('*')]) {
        if (['SCRIPT', 'STYLE', 'OPTION'].includes(el.tagName)) continue;
        let text = '';
        if (el.matches(controls)) {
            if (el.type === 'checkbox' || el.type === 'radio' || el.type === 'file') continue;
            text = el.tagName === 'SELECT' ? (el.selectedOptions[0] || {}).text || '' : el.value;
        } else {
            text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.data).join('');
        }
        text = text.replace(/\\s+/g, ' ').trim();
        if (!text) continue;
        if (el.closest(':disabled, [aria-disabled="true"]')) continue;
        if (!el.getClientRects().length || !el.checkVisibility({visibilityProperty: true})) continue;
        const chain = [];
        for (let node = el; node; node = node.parentElement) chain.unshift(node);
        const background = paint(chain, null);
        const foreground = paint(chain, rgba(getComputedStyle(el).color));
        const name = el.tagName.toLowerCase() + [...el.classList].filter(c => c.startsWith('nanobanana') || c.startsWith('widget') || c.startsWith('jupyter')).map(c => '.' + c).join('');
        results.push({
            element: name, text: text.slice(0, 50), contrast: ratio(foreground, background),
            colour: getComputedStyle(el).color, seen: hex(foreground), on: hex(background),
        });
    }
    return results;
}"""


def assert_legible(region: Any, what: str, *, at_least: int = 1) -> str:
    """Every text in ``region`` reaches MIN_CONTRAST; a failure lists each offender.

    Returns how many texts were checked and the lowest contrast, for the test's log."""
    expect(region.first).to_be_visible(timeout=STEP)
    started = time.monotonic()
    # An output being redrawn (a card's display update) can be caught between its old and
    # new element, rendered nowhere: read again, bounded, until the texts are there.
    while True:
        checked: list[dict[str, Any]] = []
        for element in region.all():
            checked += element.evaluate(CONTRAST)
        if len(checked) >= at_least or time.monotonic() - started > STEP / 1000:
            break
        time.sleep(0.05)
    assert len(checked) >= at_least, f"{what}: only {len(checked)} texts found to check"
    offenders = [c for c in checked if c["contrast"] < MIN_CONTRAST]
    assert not offenders, (
        f"{what}: {len(offenders)} of {len(checked)} texts under {MIN_CONTRAST}:1 contrast:\n"
        + "\n".join(
            f"  {c['contrast']:.2f}:1 {c['element']} {c['text']!r}: {c['colour']} seen as "
            f"{c['seen']} on {c['on']}"
            for c in offenders
        )
    )
    lowest = min(c["contrast"] for c in checked)
    summary = f"{len(checked)} texts, lowest {lowest:.1f}:1, {time.monotonic() - started:.2f} s"
    print(f"legible: {what}: {summary}")  # shown with -s: what was checked, and its cost
    return summary


def drive_the_panel(page: Any, notebook: Any) -> Any:
    """Generate, use the result as a reference, generate again with Ctrl+Enter; return the panel."""
    panel = notebook.locator(".jp-OutputArea .nanobanana-panel").first
    expect(panel).to_be_visible(timeout=STEP)
    prompt = panel.locator(".nanobanana-prompt textarea")
    expect(prompt).to_be_visible(timeout=STEP)
    prompt.fill("A ripe banana on a blue plate, studio light")
    panel.locator("button.nanobanana-generate").click()

    items = panel.locator(".nanobanana-gallery .nanobanana-gallery-item")
    expect(items).to_have_count(1, timeout=STEP)
    wait_loaded(page, items.first.locator("img"))
    cards = panel.locator(".nanobanana-card")
    expect(cards.first.locator(".nanobanana-card-status")).to_have_text("success", timeout=STEP)

    items.first.locator("button.nanobanana-use-ref").click()
    expect(panel.locator(".nanobanana-refs .nanobanana-ref")).to_have_count(1, timeout=STEP)

    prompt.fill("The same banana, now wearing a tiny space helmet")
    prompt.press("Control+Enter")  # the prompt box's own shortcut, not the cell's
    expect(cards).to_have_count(2, timeout=STEP)
    expect(items).to_have_count(2, timeout=STEP)
    expect(panel.locator(".nanobanana-card-status").filter(has_text="success")).to_have_count(
        2, timeout=STEP
    )
    wait_loaded(page, items.first.locator("img"))
    expect(panel.locator(".nanobanana-panel-status")).to_contain_text(
        "Started 1 task", timeout=STEP
    )
    # Only two tasks ran: one click and one Ctrl+Enter, and the cell was not re-run.
    expect(cards).to_have_count(2)

    # The plain output below the panel (what a saved notebook keeps) has both images too.
    results = notebook.locator(".jp-OutputArea .nanobanana-panel-results img")
    expect(results).to_have_count(2, timeout=STEP)
    return panel


def test_lab_panel_generate_use_as_reference_and_generate_again(
    jupyter_server: JupyterServer, page: Any
) -> None:
    """In JupyterLab the panel generates, shows the image, uses it as a reference, and iterates."""
    name = jupyter_server.write_notebook("panel_lab.ipynb", ["%nanobanana panel"])
    notebook = open_and_run_all(page, jupyter_server.lab(name))
    panel = drive_the_panel(page, notebook)
    # Both tasks are in the store, newest first, on the history tab.
    tabs = panel.locator(".nanobanana-tabs .lm-TabBar-tab")
    tabs.filter(has_text="History").click()
    expect(panel.locator(".nanobanana-history tbody tr")).to_have_count(2, timeout=STEP)
    assert page.evaluate("() => document.body.dataset.jpThemeName") == "JupyterLab Light"
    assert_legible(panel, "light: the panel's history tab", at_least=20)
    save_screenshot(panel, "lab-panel-history.png")
    tabs.filter(has_text="Gallery").click()
    expect(panel.locator(".nanobanana-gallery-item").first).to_be_visible()
    for thumb in panel.locator(".nanobanana-gallery-item img").all():
        wait_loaded(page, thumb)
    assert_legible(panel, "light: the panel's gallery", at_least=20)
    shot = save_screenshot(panel, "lab-panel.png")
    if os.environ.get("UPDATE_SCREENSHOTS"):  # make screenshots: the README's image
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOTS / "panel.png")
    assert not [e for e in page.console_errors if "widget" in e.lower()], page.console_errors

    # Saved, the notebook reads without widget JavaScript: the panel says what it is, and
    # the plain output below it holds the images.
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    saved = saved_outputs(jupyter_server.root / name, cell=1, having="image/jpeg")
    assert saved[0]["data"]["text/plain"].startswith("NanoBanana panel (")
    assert "application/vnd.jupyter.widget-view+json" in saved[0]["data"]
    assert saved[1]["data"]["text/plain"].startswith("NanoBanana panel: 2 tasks, 2 images")
    assert saved[1]["data"]["text/html"].count("<img ") == 2


def test_lab_magic_card_turns_into_the_image_while_another_cell_runs(
    jupyter_server: JupyterServer, page: Any
) -> None:
    """A %%nanobanana card updates to its image while the next cell is still sleeping."""
    plan = (
        "from nanobanana_jupyter import get_default_session\n"
        "from nanobanana_jupyter.sandbox import TaskPlan\n"
        "# 10 API seconds at the sandbox's 0.2 time scale: the task takes about 2 s.\n"
        "get_default_session()._res.sandbox.plan(TaskPlan(duration=10))"
    )
    magic = "%%nanobanana --aspect-ratio 1:1\nA banana wearing sunglasses, on a beach"
    sleeper = "import time\ntime.sleep(4)"
    name = jupyter_server.write_notebook("magic_lab.ipynb", [plan, magic, sleeper])
    notebook = open_and_run_all(page, jupyter_server.lab(name))
    cells = notebook.locator(".jp-Cell")
    card = cells.nth(2).locator(".jp-OutputArea .nanobanana-card")
    expect(card).to_be_visible(timeout=STEP)
    sleeping = cells.nth(3).locator(".jp-InputPrompt")
    expect(sleeping).to_contain_text("*", timeout=STEP)

    seen: list[str] = []
    image_while_sleeping = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = card.locator(".nanobanana-status").first.inner_text(timeout=STEP)
        if not seen or seen[-1] != status:
            seen.append(status)
            if len(seen) == 1:  # the first status seen: the card is still running
                assert_legible(card, "light: the running magic card", at_least=3)
        if card.locator("img").count():
            image_while_sleeping = "*" in sleeping.inner_text(timeout=STEP)
            cells.nth(3).scroll_into_view_if_needed()
            save_screenshot(page, "lab-magic-live.png")
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the card never showed an image; statuses seen: {seen}")
    assert seen[0] in ("waiting to send", "submitting", "queued", "generating"), seen
    assert image_while_sleeping, f"the image came after the sleeping cell ended; seen {seen}"
    wait_loaded(page, card.locator("img").first)
    expect(card.locator(".nanobanana-status").first).to_have_text("success")
    assert_legible(card, "light: the finished magic card", at_least=3)
    # The sleeping cell ends later, and the image stays in the first cell's output.
    expect(sleeping).not_to_contain_text("*", timeout=STEP)
    expect(cells.nth(3).locator(".nanobanana-card")).to_have_count(0)
    expect(card.locator("img")).to_have_count(1)


def test_notebook7_panel_generate_use_as_reference_and_generate_again(
    jupyter_server: JupyterServer, page: Any
) -> None:
    """In Notebook 7 the same panel flow works: generate, reference, Ctrl+Enter, two images."""
    name = jupyter_server.write_notebook(
        "panel_nb7.ipynb", ["from nanobanana_jupyter._views.panel import Panel\nPanel()"]
    )
    notebook = open_and_run_all(page, jupyter_server.notebook7(name))
    panel = drive_the_panel(page, notebook)
    save_screenshot(panel, "notebook7-panel.png")
    assert not [e for e in page.console_errors if "widget" in e.lower()], page.console_errors


# What a history cell reports of its layout: its white-space, how many line boxes its text
# takes (distinct tops of the text's client rects) and its line height.
CELL_LAYOUT = """cell => {
    const range = document.createRange();
    range.selectNodeContents(cell);
    const rects = [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0);
    const style = getComputedStyle(cell);
    return {
        text: cell.textContent,
        whiteSpace: style.whiteSpace,
        lines: new Set(rects.map(r => Math.round(r.top))).size,
        textHeight: rects.length ? Math.max(...rects.map(r => r.bottom)) - Math.min(...rects.map(r => r.top)) : 0,
        lineHeight: parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.2,
    };
}"""


def test_lab_sandbox_panel_badge_pretend_credits_and_the_history_table(
    jupyter_server: JupyterServer, page: Any
) -> None:
    """A sandbox panel says so and says pretend credits in its header as on its cards; its
    history table has a whole, selectable id, a thumbnail per row, and one-line costs and dates."""
    from nanobanana_jupyter._display.html import HISTORY_COLUMNS

    seed = (
        "import nanobanana_jupyter\n"
        "from nanobanana_jupyter import get_default_session\n"
        "first = get_default_session().generate('A lemon on a windowsill').wait(60)\n"
        "print('PACKAGE', nanobanana_jupyter.__file__)\n"
        "print('SEEDED', first.status.value, first.task_id)"
    )
    name = jupyter_server.write_notebook("panel_sandbox.ipynb", [seed, "%nanobanana panel"])
    notebook = open_and_run_all(page, jupyter_server.lab(name))
    seeded = notebook.locator(".jp-Cell").nth(1).locator(".jp-OutputArea")
    expect(seeded).to_contain_text("SEEDED success ta", timeout=STEP)
    seeded_id = seeded.inner_text().split("SEEDED success ", 1)[1].split()[0]
    # The kernel runs this checkout's package (not another environment's).
    package = seeded.inner_text().split("PACKAGE ", 1)[1].split()[0]
    assert Path(package).resolve().is_relative_to(ROOT), package

    panel = notebook.locator(".jp-OutputArea .nanobanana-panel").first
    expect(panel).to_be_visible(timeout=STEP)
    badge = panel.locator(".nanobanana-sandbox-badge")
    expect(badge).to_be_visible()
    expect(badge).to_contain_text("sandbox")
    expect(badge).to_contain_text("pretend credits, nothing is sent to defapi.org")
    box = badge.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 10, box

    panel.locator(".nanobanana-prompt textarea").fill("A ripe banana on a blue plate")
    panel.locator("button.nanobanana-generate").click()
    card = panel.locator(".nanobanana-card").first
    expect(card.locator(".nanobanana-card-status")).to_have_text("success", timeout=STEP)
    expect(card.locator(".nanobanana-card-cost")).to_contain_text("pretend credit")
    cost_line = panel.locator(".nanobanana-cost")
    expect(cost_line).to_contain_text("this panel: 1 task, 0.5 pretend credits", timeout=STEP)
    expect(cost_line).to_contain_text("all: 2 tasks, 1 pretend credit")
    assert "no credits" not in panel.inner_text()

    panel.locator(".nanobanana-tabs .lm-TabBar-tab").filter(has_text="History").click()
    table = panel.locator(".nanobanana-history table")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(2, timeout=STEP)
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert headers == list(HISTORY_COLUMNS), headers
    column = {name: i + 1 for i, name in enumerate(HISTORY_COLUMNS)}

    # The id column holds the whole id; one click selects all of it (to copy).
    ids = table.locator(f"tbody td:nth-child({column['id']}) code.nanobanana-id")
    expect(ids).to_have_count(2)
    assert [i.get_attribute("title") for i in ids.all()] == ids.all_text_contents()
    seeded_cell = ids.filter(has_text=seeded_id)
    expect(seeded_cell).to_have_count(1)
    seeded_cell.click()
    assert page.evaluate("() => window.getSelection().toString()") == seeded_id

    # A thumbnail per row, decoded.
    for row in rows.all():
        thumb = row.locator(f"td:nth-child({column['images']}) img")
        expect(thumb).to_have_count(1)
        wait_loaded(page, thumb)

    # Costs and dates on one line each.
    for name in ("cost", "time", "duration"):
        for cell in table.locator(f"tbody td:nth-child({column[name]})").all():
            layout = cell.evaluate(CELL_LAYOUT)
            assert layout["whiteSpace"] == "nowrap", (name, layout)
            assert layout["lines"] == 1, (name, layout)
            assert layout["textHeight"] < 1.5 * layout["lineHeight"], (name, layout)
    for cell in table.locator(f"tbody td:nth-child({column['images']})").all():
        assert cell.evaluate(CELL_LAYOUT)["whiteSpace"] == "nowrap"  # the thumbnail and its count
    # A wrapped prompt takes lines of text's height, not the widgets' 28 px line height.
    prompt = table.locator(f"tbody td:nth-child({column['prompt']})").first.evaluate(CELL_LAYOUT)
    assert prompt["lineHeight"] < 24, prompt
    costs = table.locator(f"tbody td:nth-child({column['cost']})").all_inner_texts()
    assert costs == ["0.5 pretend credits"] * 2, costs
    save_screenshot(panel, "lab-panel-sandbox-history.png")
    assert not [e for e in page.console_errors if "widget" in e.lower()], page.console_errors


def test_lab_panel_compare_mode_shows_a_grid_of_decoded_previews(
    jupyter_server: JupyterServer, page: Any
) -> None:
    """Compare on, two aspect ratios picked, Generate: the panel shows the grid's table with
    both cells' images decoded, their costs and the total; the cells are not task cards."""
    name = jupyter_server.write_notebook("panel_compare.ipynb", ["%nanobanana panel"])
    notebook = open_and_run_all(page, jupyter_server.lab(name))
    panel = notebook.locator(".jp-OutputArea .nanobanana-panel").first
    expect(panel).to_be_visible(timeout=STEP)
    options = panel.locator(".nanobanana-compare-options")
    expect(options).to_be_hidden()
    panel.locator("button.nanobanana-compare-toggle").click()
    expect(options).to_be_visible(timeout=STEP)
    for aspect in ("1:1", "16:9"):
        chip = options.locator("button.nanobanana-compare-chip").filter(
            has_text=re.compile(rf"^{re.escape(aspect)}$")
        )
        expect(chip).to_have_count(1)
        chip.click()
        expect(chip).to_have_class(re.compile(r"\bmod-active\b"), timeout=STEP)
    panel.locator(".nanobanana-prompt textarea").fill("A ripe banana on a blue plate")
    panel.locator("button.nanobanana-generate").click()

    expect(panel.locator(".nanobanana-panel-status")).to_contain_text(
        "Started a grid of 2 cells: 2 sent.", timeout=STEP
    )
    table = panel.locator(".nanobanana-compare-grid table")
    expect(table).to_have_count(1, timeout=STEP)
    heads = [h.strip() for h in table.locator("tbody th").all_inner_texts()]
    assert heads == ["1:1", "16:9"], heads  # one axis: the aspect ratios label the rows
    images = table.locator("td img")
    expect(images).to_have_count(2, timeout=STEP)
    for image in images.all():
        wait_loaded(page, image)
    shapes = [image.evaluate("i => i.naturalWidth / i.naturalHeight") for image in images.all()]
    assert abs(shapes[0] - 1) < 0.05 and abs(shapes[1] - 16 / 9) < 0.05, shapes
    expect(table.locator("td").filter(has_text="0.5 pretend credits")).to_have_count(2)
    total = panel.locator(".nanobanana-compare-grid .nanobanana-grid-total")
    expect(total).to_have_text("total 1 pretend credit", timeout=STEP)
    expect(panel.locator(".nanobanana-card")).to_have_count(0)
    # A cell opens in the gallery's larger view.
    expect(panel.locator(".nanobanana-compare-cell select")).to_have_value(re.compile(r"\S"))
    panel.locator("button.nanobanana-compare-view").click()
    detail = panel.locator("img.nanobanana-detail-image")
    expect(detail).to_be_visible(timeout=STEP)
    wait_loaded(page, detail)
    assert_legible(panel.locator(".nanobanana-compare-grid"), "light: the compare grid", at_least=4)
    save_screenshot(panel, "lab-panel-compare.png")


def stored_annotations(data_dir: Path) -> tuple[list[int | None], list[str]]:
    """The ratings and tags in a notebook's store, read by this process (SQLite, WAL)."""
    import sqlite3

    (path,) = data_dir.rglob("history.sqlite3")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        ratings = [r for (r,) in conn.execute("SELECT rating FROM annotations")]
        tags = [t for (t,) in conn.execute("SELECT tag FROM tags ORDER BY tag")]
    finally:
        conn.close()
    return ratings, tags


def wait_stored(data_dir: Path, want: tuple[list[int | None], list[str]]) -> None:
    deadline = time.monotonic() + 20
    seen = None
    while time.monotonic() < deadline:
        seen = stored_annotations(data_dir)
        if seen == want:
            return
        time.sleep(0.1)
    pytest.fail(f"the store holds {seen}, not {want}")


def test_lab_panel_rates_and_tags_a_gallery_image_and_searches_the_history(
    jupyter_server: JupyterServer, page: Any
) -> None:
    """A click on a gallery image's fourth star rates its task 4 in the store; key 2 in the
    larger view rates it 2 (the cell stays a code cell); a typed tag becomes a chip; the
    history's search box narrows the table, its rating filter too, and Clear shows all."""
    seed = (
        "from nanobanana_jupyter import get_default_session\n"
        "s = get_default_session()\n"
        "for p in ('A lemon on a windowsill', 'A ripe banana on a blue plate'):\n"
        "    print('SEEDED', s.generate(p).wait(60).status.value)"
    )
    name = jupyter_server.write_notebook("panel_curate.ipynb", [seed, "%nanobanana panel"])
    data_dir = jupyter_server.root / "data-panel_curate"
    notebook = open_and_run_all(page, jupyter_server.lab(name))
    expect(notebook.locator(".jp-Cell").nth(1).locator(".jp-OutputArea")).to_contain_text(
        "SEEDED success\nSEEDED success", timeout=STEP
    )
    panel = notebook.locator(".jp-OutputArea .nanobanana-panel").first
    items = panel.locator(".nanobanana-gallery .nanobanana-gallery-item")
    expect(items).to_have_count(2, timeout=STEP)
    lemon = items.filter(has_text="A lemon")
    stars = lemon.locator("button.nanobanana-star")
    expect(stars).to_have_count(5)
    expect(stars.first).to_have_text("☆")

    stars.nth(3).click()
    expect(stars.nth(3)).to_have_text("★", timeout=STEP)
    expect(stars.nth(4)).to_have_text("☆")
    wait_stored(data_dir, ([4], []))

    # The larger view: its own stars follow, and key 2 rates it (JupyterLab keeps its
    # command-mode shortcut "2", make a heading, to itself).
    lemon.locator("button.nanobanana-view").click()
    detail = panel.locator(".nanobanana-detail")
    expect(detail).to_be_visible(timeout=STEP)
    detail_stars = detail.locator("button.nanobanana-star")
    expect(detail_stars.nth(3)).to_have_text("★", timeout=STEP)
    expect(detail.locator(".nanobanana-keys")).to_be_focused(timeout=STEP)
    page.keyboard.press("2")
    expect(stars.nth(2)).to_have_text("☆", timeout=STEP)
    expect(stars.nth(1)).to_have_text("★")
    expect(detail_stars.nth(2)).to_have_text("☆")
    wait_stored(data_dir, ([2], []))
    expect(notebook.locator(".jp-MarkdownCell")).to_have_count(0)
    expect(notebook.locator(".jp-CodeCell")).to_have_count(3)

    # A tag typed and Enter: a chip, in the store.
    tag_input = lemon.locator(".nanobanana-tag-input input")
    tag_input.fill("Citrus")
    tag_input.press("Enter")
    expect(lemon.locator("button.nanobanana-tag-chip")).to_have_text(["citrus ×"], timeout=STEP)
    expect(tag_input).to_have_value("")
    wait_stored(data_dir, ([2], ["citrus"]))
    assert_legible(panel, "light: rated and tagged gallery", at_least=20)
    save_screenshot(panel, "lab-panel-rating.png")

    # The history tab: search box, then the rating filter, then Clear.
    panel.locator(".nanobanana-tabs .lm-TabBar-tab").filter(has_text="History").click()
    rows = panel.locator(".nanobanana-history table tbody tr")
    expect(rows).to_have_count(2, timeout=STEP)
    search = panel.locator(".nanobanana-search-text input")
    search.fill("banana")
    search.press("Enter")
    expect(rows).to_have_count(1, timeout=STEP)
    expect(rows.first).to_contain_text("A ripe banana")
    expect(panel.locator(".nanobanana-page")).to_contain_text("1 match")
    search.fill("lem")  # a word's start is enough
    search.press("Enter")
    expect(rows.first).to_contain_text("A lemon", timeout=STEP)
    expect(rows).to_have_count(1)
    search.fill("")
    search.press("Enter")
    expect(rows).to_have_count(2, timeout=STEP)
    panel.locator(".nanobanana-search-rating select").select_option(label="rated")
    expect(rows).to_have_count(1, timeout=STEP)
    expect(rows.first).to_contain_text("A lemon")
    save_screenshot(panel, "lab-panel-search.png")
    panel.locator("button.nanobanana-search-clear").click()
    expect(rows).to_have_count(2, timeout=STEP)
    expect(panel.locator(".nanobanana-page")).to_have_text("page 1 of 1")
    assert not [e for e in page.console_errors if "widget" in e.lower()], page.console_errors


def test_lab_dark_theme_cards_panel_history_and_grid_stay_legible(
    dark_jupyter_server: JupyterServer, page: Any
) -> None:
    """In JupyterLab Dark every text of a magic card (running, then finished), a grid,
    ``%nanobanana history`` and the panel (status line, gallery, rated stars, history table)
    has at least 4.5:1 contrast on what is painted behind it. (The light theme's check rides
    along in the tests above, on the same outputs, at no extra notebook.)"""
    server = dark_jupyter_server
    plan = (
        "from nanobanana_jupyter import get_default_session\n"
        "from nanobanana_jupyter.sandbox import TaskPlan\n"
        "# The card's task runs about 3 s (15 API seconds at the sandbox's 0.2 time scale).\n"
        "get_default_session()._res.sandbox.plan(TaskPlan(duration=15))"
    )
    magic = "%%nanobanana --aspect-ratio 1:1\nA banana wearing sunglasses, on a beach"
    grid = "%nanobanana --grid aspect_ratio=1:1,16:9 --wait A lemon on a windowsill"
    name = server.write_notebook(
        "theme_dark.ipynb", [plan, magic, grid, "%nanobanana history", "%nanobanana panel"]
    )
    notebook = open_and_run_all(page, server.lab(name))
    assert page.evaluate("() => document.body.dataset.jpThemeName") == "JupyterLab Dark"
    assert page.evaluate("() => document.body.dataset.jpThemeLight") == "false"
    cells = notebook.locator(".jp-Cell")
    outputs = lambda i: cells.nth(i).locator(".jp-OutputArea-output")  # noqa: E731

    card = cells.nth(2).locator(".nanobanana-card")
    expect(card).to_be_visible(timeout=STEP)
    status = card.locator(".nanobanana-status").first
    running = re.compile("waiting to send|submitting|queued|generating")
    expect(status).to_have_text(running)
    assert_legible(outputs(2), "dark: the running card", at_least=3)
    assert running.fullmatch(status.inner_text()), "the card finished before it was checked"
    expect(status).to_have_text("success", timeout=STEP)
    wait_loaded(page, card.locator("img").first)
    assert_legible(outputs(2), "dark: the finished card", at_least=3)

    grid_images = cells.nth(3).locator(".jp-OutputArea-output table img")
    expect(grid_images).to_have_count(2, timeout=STEP)
    assert_legible(outputs(3), "dark: the grid", at_least=4)
    expect(cells.nth(4).locator(".nanobanana-history tbody tr").first).to_be_visible(timeout=STEP)
    assert_legible(outputs(4), "dark: %nanobanana history", at_least=8)

    panel = cells.nth(5).locator(".nanobanana-panel").first
    expect(panel).to_be_visible(timeout=STEP)
    panel.locator(".nanobanana-prompt textarea").fill("A ripe banana on a blue plate")
    panel.locator("button.nanobanana-generate").click()
    items = panel.locator(".nanobanana-gallery .nanobanana-gallery-item")
    expect(items.first).to_be_visible(timeout=STEP)
    expect(panel.locator(".nanobanana-card-status").first).to_have_text("success", timeout=STEP)
    expect(panel.locator(".nanobanana-panel-status")).to_contain_text("Started 1 task")
    for thumb in items.locator("img").all():
        wait_loaded(page, thumb)
    assert_legible(outputs(5), "dark: the panel's gallery", at_least=10)
    shot = save_screenshot(panel, "lab-panel-dark.png")
    if os.environ.get("UPDATE_SCREENSHOTS"):  # make screenshots
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOTS / "dark.png")
    # Rated, the task's stars show in the history table too.
    stars = items.first.locator("button.nanobanana-star")
    stars.nth(3).click()
    expect(stars.nth(3)).to_have_text("★", timeout=STEP)
    panel.locator(".nanobanana-tabs .lm-TabBar-tab").filter(has_text="History").click()
    # (A rating does not redraw the history table by itself; Refresh reads the store again.)
    panel.locator("button.nanobanana-refresh").click()
    expect(panel.locator(".nanobanana-history .nanobanana-rating")).to_have_count(1, timeout=STEP)
    assert_legible(panel.locator(".nanobanana-history"), "dark: the panel's history", at_least=8)
