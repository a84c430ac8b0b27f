"""Write the notebooks in notebooks/ from the cells below (kept here so diffs stay readable).

    python scripts/make_notebooks.py            # write every notebook that changed
    python scripts/make_notebooks.py --check    # exit 1 if a committed notebook is out of date

Each notebook is a list of ``(kind, source)`` pairs: ``"md"`` for Markdown, ``"code"`` for
code, ``"parameters"`` for the code cell tagged ``parameters`` that papermill replaces
(``papermill in.ipynb out.ipynb -p NAME VALUE``). Notebooks are written without outputs and
with stable cell ids, so regenerating an unchanged notebook rewrites nothing. The
quickstart's cells live in ``scripts/make_quickstart.py`` (``make_quickstart.CELLS``); this
script writes it too.

Every notebook must run headless against the sandbox (``tests/notebooks`` executes each one
with nbclient and ``NANOBANANA_WAIT=1``; ``papermill_batch.ipynb`` with the papermill command
and without it), so cells that need a result wait for it explicitly.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

Cells = list[tuple[str, str]]

KEY_NOTE = """**API key.** Put `NANOBANANA_API_KEY=dk-...` in the environment or in a `.env` file
next to this notebook (never in a cell: it would be saved with the notebook).
No key? Uncomment `%nanobanana sandbox` below to run everything offline against a local
server that draws placeholder images (see `offline_sandbox.ipynb`)."""

SANDBOX_LINE = "# %nanobanana sandbox   # uncomment to work offline, without a key"

PANEL_TOUR: Cells = [
    (
        "md",
        """# Panel tour

`%nanobanana panel` opens an interactive panel over the same session as the magic: write a
prompt, pick a model, reference images and options, press Generate, watch the task cards, and
compare results in a gallery. This notebook opens one, says what each part does, drives it from
code (what a click does), and shows what a saved notebook keeps.

The panel needs a live kernel and ipywidgets (JupyterLab 4, Notebook 7, VS Code). Nothing
else depends on it: the `%%nanobanana` magic and the Python API do the same work without
widgets.""",
    ),
    ("code", "%load_ext nanobanana_jupyter"),
    ("md", KEY_NOTE),
    ("code", SANDBOX_LINE),
    (
        "md",
        """## A reference image to start from

The panel can use earlier results as reference images. Make one with the magic; `--wait`
blocks until it is done, because the next cells use it.""",
    ),
    (
        "code",
        "%%nanobanana --wait --aspect-ratio 1:1 -o seed\nA lighthouse made of bananas on a rocky coast, golden hour",
    ),
    (
        "md",
        """## Open the panel

`%nanobanana panel` and `Panel()` are the same; keeping the object lets later cells drive it.""",
    ),
    (
        "code",
        """from nanobanana_jupyter import Panel

panel = Panel()  # or: %nanobanana panel
panel""",
    ),
    (
        "md",
        """## What each part does

| part | what it does |
|---|---|
| header | the title, a *sandbox* badge when the session is offline, and what this panel has cost so far |
| prompt box | what to draw or how to edit the references; **Ctrl/Cmd+Enter** generates |
| Model | a known model id, or any other id (sent with a warning) |
| Aspect, Size, Images | aspect ratio, size tier (Pro models), and 1–4 samples; *default* leaves the choice to the service |
| Generate | starts the tasks and returns at once; a double click starts one batch, not two |
| URL + Add URL, Upload | reference images (up to 4): an http(s) URL, or files from your computer |
| references row | the chosen references, with a thumbnail and a button to remove each |
| status line | what just happened, or what went wrong, in one line |
| task cards | one per task: status, elapsed time, cost; **Cancel** (stops polling; the API has no cancel, so the service may still charge), **Resume**, **Retry** |
| Gallery tab | every image of this session; click one for a larger view, then **Use as reference** |
| History tab | every task in the data directory, newest first, paged from the store, with the total cost |

Right **below** the panel there is a plain output that fills with the images as they arrive.
It is what a saved notebook shows (see the end).""",
    ),
    (
        "md",
        """## Drive it from code

Every part is an attribute, so a cell can do what a click does. Here: use the image made
above as a reference, write a prompt, ask for two samples, and press Generate.
`panel.generate()` returns the tasks at once; the cards update while they run.""",
    ),
    (
        "code",
        """panel.add_reference(seed, label="seed")  # a task, a path, a PIL image, bytes or a URL
panel.prompt_box.value = "The same lighthouse in a snowstorm, at night, beam lit"
panel.aspect_box.value = "1:1"
panel.count_box.value = 2
tasks = panel.generate()
print(panel.references, [task.status.value for task in tasks])""",
    ),
    (
        "md",
        """In a live notebook you would watch the cards. A script, or a notebook run headless,
waits for the tasks instead:""",
    ),
    (
        "code",
        """for task in tasks:
    task.wait(timeout=300)
for task in tasks:
    print(task.id, task.status.value, task.cost, "credits", task.path)""",
    ),
    (
        "md",
        """To iterate on one of them, click it in the gallery and press **Use as reference**.
From code, `use_as_reference` takes the image's path (`panel.gallery_paths` lists them):""",
    ),
    (
        "code",
        """panel.remove_reference(0)
panel.use_as_reference(tasks[0].path)
panel.references""",
    ),
    (
        "md",
        """## What a saved notebook keeps

Jupyter saves a widget as a line of text and, by default, no widget state: reopened without
the kernel, on GitHub or in nbconvert HTML, the panel itself cannot be shown. Its images are
not lost: the output right below the panel is an ordinary output (a contact sheet as a JPEG,
an HTML gallery with the file paths, and a text list of them), kept up to date as images
arrive, and saved like any other output. The full-size files stay on disk.

`panel.results_bundle()` is that output; it can be shown anywhere:""",
    ),
    (
        "code",
        """from IPython.display import display

data, metadata = panel.results_bundle()
display(data, metadata=metadata, raw=True)""",
    ),
    ("md", "And this is the text a saved notebook keeps in place of the widget:"),
    ("code", "print(repr(panel))"),
    (
        "md",
        """The History tab shows the same store as `%nanobanana history` and
`session.history.to_pandas()`: every task, across kernel restarts, with its cost.""",
    ),
    ("code", "%nanobanana history"),
    (
        "md",
        """`panel.close()` stops the panel following the session and closes its widgets; the
tasks, images and history stay.""",
    ),
    ("code", "panel.close()"),
]

BATCH_EXPLORATION: Cells = [
    (
        "md",
        """# Batch exploration: a grid of prompts

Build prompts from a pandas DataFrame (every subject in every style), generate them all with
one `session.map` call, get the history back as a DataFrame joined to the grid, and compare the
results side by side in one small contact sheet.

Needs pandas: `pip install 'nanobanana-jupyter[pandas]'`.""",
    ),
    ("code", "%load_ext nanobanana_jupyter"),
    ("md", KEY_NOTE),
    ("code", SANDBOX_LINE),
    ("md", "## The grid"),
    (
        "code",
        """import pandas as pd

subjects = ["a lighthouse", "a red fox", "a teapot"]
styles = ["watercolor", "pixel art", "blueprint drawing"]
grid = pd.MultiIndex.from_product([subjects, styles], names=["subject", "style"]).to_frame(
    index=False
)
grid["prompt"] = grid["subject"] + ", " + grid["style"] + ", centered, plain background"
grid""",
    ),
    (
        "md",
        """## Generate them all

`session.map` starts one task per prompt with the same options, at most `concurrency` submits
at a time, and returns the tasks at once. It checks every prompt before sending anything, so
a bad one costs nothing. The default session is the magic's: same key, same history.

Re-running this cell does not pay again: each identical request reuses its earlier result
(`force=True` generates anew).""",
    ),
    (
        "code",
        """from nanobanana_jupyter import get_default_session

session = get_default_session()
tasks = session.map(grid["prompt"], aspect_ratio="1:1", concurrency=4)
grid["local_id"] = [task.local_id for task in tasks]
len(tasks)""",
    ),
    (
        "md",
        """The tasks run in the background; other cells can run meanwhile. Here the next steps
need the results, so wait:""",
    ),
    (
        "code",
        """for task in tasks:
    task.wait(timeout=300)
pd.Series([task.status.value for task in tasks]).value_counts()""",
    ),
    (
        "md",
        """## The history as a DataFrame, joined to the grid

`session.history.to_pandas()` has one row per task of the data directory (this notebook's,
and any other's sharing it), with status, cost (`consumed`), duration and the saved files
(`paths`). `local_id` links each row to the grid.""",
    ),
    (
        "code",
        """history = session.history.to_pandas()
columns = ["local_id", "task_id", "status", "consumed", "duration", "paths"]
results = grid.merge(history[columns], on="local_id", how="left")
results[["subject", "style", "status", "consumed", "duration"]]""",
    ),
    ("md", "Numbers side by side: seconds per image, by subject and style."),
    (
        "code",
        """print(f"{results['consumed'].sum():g} credits for {len(results)} images")
results.pivot(index="subject", columns="style", values="duration").round(1)""",
    ),
    (
        "md",
        """## Images side by side

A contact sheet: one row per subject, one column per style. It is built with Pillow from the
small previews the session keeps next to each image, and shown as one small JPEG, so the
notebook grows by a few tens of kilobytes, not by nine full-size images. The full-size files
stay on disk (the `paths` column).""",
    ),
    (
        "code",
        """import io

from IPython.display import Image as ShowImage
from PIL import Image, ImageDraw, ImageFont

TILE, LABEL = 160, 20
FONT = ImageFont.load_default(size=13)


def contact_sheet(frame, rows, cols, images, tile=TILE):
    \"\"\"One JPEG with a tile per (row, column) of ``frame``, labelled by column and row.\"\"\"
    row_keys = list(dict.fromkeys(frame[rows]))
    col_keys = list(dict.fromkeys(frame[cols]))
    sheet = Image.new(
        "RGB", (len(col_keys) * tile, LABEL + len(row_keys) * (LABEL + tile)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for c, key in enumerate(col_keys):
        draw.text((c * tile + 4, 3), str(key), fill="black", font=FONT)
    for r, key in enumerate(row_keys):
        draw.text((4, LABEL + r * (LABEL + tile) + 3), str(key), fill="dimgray", font=FONT)
    for row, col, path in zip(frame[rows], frame[cols], images, strict=True):
        if path is None:
            continue  # failed: leave the tile blank
        with Image.open(path) as picture:
            picture.thumbnail((tile, tile))
            x = col_keys.index(col) * tile + (tile - picture.width) // 2
            y = LABEL + row_keys.index(row) * (LABEL + tile) + LABEL + (tile - picture.height) // 2
            sheet.paste(picture.convert("RGB"), (x, y))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


# The previews (about 512 px) are enough for tiles; fall back to the full-size file.
previews = [
    (task.images[0].thumb_path or task.images[0].path) if task.images else None for task in tasks
]
sheet = contact_sheet(results, "subject", "style", previews)
print(f"contact sheet: {len(sheet) // 1024} KiB")
ShowImage(data=sheet, format="jpeg")""",
    ),
    (
        "md",
        """## Pick one and go on

Select a result by its grid position. `%nanobanana status` shows its card, with the image
(IPython fills `{chosen}` on a magic's line from your variables), and the same id works as a reference: `--ref @<task id>` in the magic, or `images=[task]`
in Python (see `editing_chain.ipynb`).""",
    ),
    (
        "code",
        """choice = results.set_index(["subject", "style"]).loc[("a red fox", "pixel art")]
chosen = choice["task_id"]
print(chosen, choice["paths"][0])""",
    ),
    ("code", "%nanobanana status {chosen}"),
]

EDITING_CHAIN: Cells = [
    (
        "md",
        """# An editing chain

Each step edits the previous result: the image goes back to the model as a reference image,
with a new instruction. In the magic that is `--ref @last` (or `--ref <variable>`,
`--ref @<task id>`); in Python, `images=[task]`. The history's `references` column records
what each step was given.""",
    ),
    ("code", "%load_ext nanobanana_jupyter"),
    ("md", KEY_NOTE),
    ("code", SANDBOX_LINE),
    (
        "md",
        """## Step 1: a starting image

`--wait` makes the cell block until the image is there. A chain needs it: the next step
edits this result, so it must exist first.""",
    ),
    (
        "code",
        "%%nanobanana --wait --aspect-ratio 1:1 -o cabin\nA small wooden cabin in a pine forest, morning light, wide shot",
    ),
    (
        "md",
        """## Step 2: `--ref @last`

`@last` is the last task of this kernel's session (if it is still running, the cell waits for
it): right after step 1 that is the cabin. Before this kernel has made or reused any task, it
falls back to the newest success in the history. `--ref cabin` (a variable holding a task) or
`--ref @<task id>` name a result exactly.""",
    ),
    (
        "code",
        "%%nanobanana --wait --ref @last --aspect-ratio 1:1 -o winter\nThe same cabin in deep snow; keep the composition and the camera angle",
    ),
    (
        "md",
        """## Steps 3 and 4: from Python

`images=[task]` sends the task's image from the local store (downscaled to at most 1536 px),
not its result URL, which may have expired. `generate` returns at once; `.wait()` returns the
same task once it has ended.""",
    ),
    (
        "code",
        """from nanobanana_jupyter import get_default_session

session = get_default_session()
night = session.generate(
    "The same snowy cabin at night, warm light in the windows", images=[winter], aspect_ratio="1:1"
).wait(timeout=300)
aurora = session.generate(
    "Add a green aurora in the sky above the cabin", images=[night], aspect_ratio="1:1"
).wait(timeout=300)
aurora""",
    ),
    (
        "md",
        """## Step 5: a result URL as the reference

While it is fresh, a result URL is the lightest reference: the service fetches it, nothing is
uploaded. Result URLs expire (hours on the real service), so use them for quick iterations and
the task itself otherwise. A result delivered inline (as data) has no URL.""",
    ),
    (
        "code",
        """url = aurora.record.result_urls[0] if aurora.record.result_urls else None
postcard = session.generate(
    "Turn it into a vintage postcard with a white border",
    images=[url or aurora],
    aspect_ratio="1:1",
).wait(timeout=300)
print(postcard.status.value, postcard.path)""",
    ),
    (
        "md",
        """## The chain, side by side

One strip built from the small previews kept on disk, shown as a small JPEG.""",
    ),
    (
        "code",
        """import io

from IPython.display import Image as ShowImage
from PIL import Image

chain = [cabin, winter, night, aurora, postcard]
TILE = 160
strip = Image.new("RGB", (TILE * len(chain), TILE), "white")
for i, task in enumerate(chain):
    if not task.images:
        continue
    with Image.open(task.images[0].thumb_path or task.images[0].path) as picture:
        picture.thumbnail((TILE, TILE))
        strip.paste(picture.convert("RGB"), (i * TILE, 0))
buffer = io.BytesIO()
strip.save(buffer, format="JPEG", quality=80)
ShowImage(data=buffer.getvalue(), format="jpeg")""",
    ),
    (
        "md",
        """## The lineage, from the history

The history keeps each reference image by the hash of the image it was made from (for an
earlier task, its stored result), and a URL reference as given: so each step knows its parent.
`task.parents` and `task.children` follow those links, and `session.history.lineage(task)`
shows the whole edit tree, each step's prompt compared word by word with its parent's: the
postcard, made from a result URL, is joined to the task whose answer carried that URL.""",
    ),
    (
        "code",
        """print("winter was made from:", [t.prompt for t in winter.parents])
print("made from the cabin:", [t.prompt for t in cabin.children])
session.history.lineage(postcard)""",
    ),
    (
        "code",
        """history = session.history.to_pandas().set_index("local_id")
steps = history.loc[[task.local_id for task in chain]].reset_index()
made_by = {
    url: task_id
    for task_id, urls in zip(steps["task_id"], steps["result_urls"], strict=True)
    for url in urls
}


def describe(reference):
    \"\"\"Name a reference: the task whose result URL it is, else the image's hash.\"\"\"
    if reference in made_by:
        return f"result URL of {made_by[reference]}"
    if reference.startswith("sha256:"):
        return f"image {reference[:19]}…"
    return reference


steps["given"] = steps["references"].map(
    lambda refs: ", ".join(map(describe, refs)) or "(text only)"
)
steps.index = range(1, len(steps) + 1)
steps[["task_id", "prompt", "given"]]""",
    ),
    (
        "md",
        """## Running the chain again

A reference is converted the same way every time (same image, same bytes), so a step that
names its reference (`images=[task]`, `--ref cabin`, `--ref @<task id>`) is the same request on
a re-run and reuses its earlier result instead of paying again. Change one step's prompt and
that step, and every step after it, is new: their references changed.

`@last` is looked up when the cell runs, among this kernel's own tasks first. On a second
Run All, step 1 reuses the cabin, so `@last` in step 2 is the cabin again and the whole chain
is reused: nothing is paid twice.""",
    ),
    (
        "code",
        """total = sum((task.cost or 0) for task in chain)
print(f"{len(chain)} steps, {total} credits")""",
    ),
]

OFFLINE_SANDBOX: Cells = [
    (
        "md",
        """# Offline: the sandbox

**What it is.** A real HTTP server on 127.0.0.1 that speaks the same API as defapi.org:
submits, task queries whose status moves over time, the documented error bodies, result
images served from a second origin (like a CDN) with URLs that expire. It draws images with
Pillow, deterministic from the prompt, with the reference images composited in. The client
cannot tell it from the real service, which is why the demo and the tests use it.

**What it is not.** Not the model: its images are placeholders (shapes and the prompt's
words), not generated art. No network, no key, no credits: the costs it reports (0.5 credits a
task) are pretend. Its clock can run faster than real time.""",
    ),
    ("code", "%load_ext nanobanana_jupyter"),
    (
        "md",
        """## `%nanobanana sandbox`

Switches this kernel's default session (the magic, the panel, `get_default_session()`) to a
sandbox started for it, and says so loudly. Its history is kept in `<data dir>/sandbox`, apart
from real tasks. Restart the kernel to leave sandbox mode.""",
    ),
    ("code", "%nanobanana sandbox"),
    (
        "code",
        "%%nanobanana --aspect-ratio 16:9 -o lighthouse\nA lighthouse made of bananas, stormy sea",
    ),
    (
        "code",
        """lighthouse.wait(timeout=120)
print(lighthouse.status.value, lighthouse.cost, "credits (pretend)", lighthouse.path)""",
    ),
    (
        "md",
        """## `Session.sandbox()` from Python

A session with its own sandbox server, stopped when the session closes: for scripts, tests
and experiments. `time_scale` sets real seconds per API second (0.05 runs the clock 20 times
faster).""",
    ),
    (
        "code",
        """from IPython.display import display

from nanobanana_jupyter import Session

with Session.sandbox(time_scale=0.05) as offline:
    print(offline)
    fruit = offline.map(["a red apple", "a green pear"], aspect_ratio="1:1")
    for task in fruit:
        task.wait(timeout=120)
    print([task.status.value for task in fruit])
    display(fruit[0])""",
    ),
    (
        "md",
        """## Faults: rehearse what goes wrong

`%nanobanana sandbox` and `Session.sandbox()` keep their server to themselves. To script
failures, start a `Sandbox` yourself and point a `Session` at it:

- `sandbox.plan(TaskPlan(...))` decides how the next task ends: failed with a reason, stuck,
  invisible for a while, no image, text only;
- `sandbox.faults.add(endpoint, Fault....)` makes the next request to `"submit"`, `"query"` or
  `"cdn"` misbehave: 429 or 503 with Retry-After, a 500 HTML page, a connection reset after
  the task was accepted, malformed JSON, an expired image URL, and more;
- `sandbox.ledger` records what the server received and charged.

The rehearsal session keeps its history in a temporary directory, away from yours.""",
    ),
    (
        "code",
        """import tempfile

from nanobanana_jupyter import PollPolicy, Settings
from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan

lab = Sandbox(time_scale=0.05).start()
settings = Settings.resolve(
    api_key=lab.api_key,
    base_url=lab.url,
    data_dir=tempfile.mkdtemp(prefix="nanobanana-rehearsal-"),
    allow_local_urls=True,  # the sandbox serves its images from 127.0.0.1
)
rehearsal = Session(
    settings=settings,
    poll_policy=PollPolicy().scaled(0.05),  # poll on the sandbox's faster clock
)
lab""",
    ),
    (
        "md",
        """### A task that fails

The service ends it as `failed` with a reason; `task.error` has it, and `task.result()` would
raise `TaskFailedError`. `wait()` never raises for the outcome: it returns the task.""",
    ),
    (
        "code",
        """lab.plan(TaskPlan(outcome="failed", reason="The prompt was refused (a rehearsal)."))
refused = rehearsal.generate("A banana that will not be drawn").wait(timeout=60)
print(refused.status.value, "-", refused.error)
refused""",
    ),
    (
        "md",
        """### A submit whose answer is lost

The server creates and charges the task, then the connection breaks before the answer. The
client cannot know whether the task exists, and a second submit would be paid twice, so it
does not send it again: the task ends `submit_unknown`, and says what to check.""",
    ),
    (
        "code",
        """lab.faults.add("submit", Fault.RESET_AFTER_ACCEPT)
lost = rehearsal.generate("A banana lost in transit").wait(timeout=60)
print(lost.status.value)
print(lost.error)
print("submits received by the server:", lab.ledger.submits_received)""",
    ),
    (
        "md",
        """### Rate limited

A 429 with a short Retry-After means nothing was created, so the client waits and sends the
submit again.""",
    ),
    (
        "code",
        """lab.faults.add("submit", Fault.RATE_LIMIT)
patient = rehearsal.generate("A patient banana").wait(timeout=60)
print(patient.status.value)
patient""",
    ),
    (
        "md",
        """### An expired image URL

The task succeeds, but its image URL answers 410 Gone: the task ends `unavailable`, with the
reason. `task.resume()` queries the task again and fetches its images; nothing is submitted
again. (Here the fault hit one request only, so the second fetch works.)""",
    ),
    (
        "code",
        """lab.faults.add("cdn", Fault.EXPIRED)
postcard = rehearsal.generate("A banana postcard").wait(timeout=60)
print("first:", postcard.status.value, "-", postcard.error)
postcard.resume()
postcard.wait(timeout=60)
print("after resume():", postcard.status.value)
postcard""",
    ),
    (
        "md",
        """### What the server saw

The rate-limited submission reached the server twice (refused with 429, then accepted), and
every task was charged once: no submission was paid twice, whatever went wrong. (The failed
task was charged too: submitting costs credits, whatever the outcome; each task's `cost` says
what it was charged.)""",
    ),
    (
        "code",
        """ledger = lab.ledger
print("submits received:", ledger.submits_received)
print("tasks created and charged:", len(ledger.charges))
print("submissions that reached the server twice:", len(ledger.duplicate_submits()))
print("submissions charged twice:", ledger.double_charges() or "none")
rehearsal.close()
lab.stop()""",
    ),
    (
        "md",
        """## Outside a notebook

- `python -m nanobanana_jupyter.sandbox --port 8765 --accept-any-key` runs the sandbox in a
  terminal; point anything at it with `NANOBANANA_BASE_URL=http://127.0.0.1:8765`,
  `NANOBANANA_API_KEY=dk-anything` and `NANOBANANA_ALLOW_LOCAL_URLS=1` (its images come from
  127.0.0.1, which sessions refuse unless told).
- `nanobanana --sandbox generate "a banana lighthouse"` generates from the terminal, offline.
- `make demo` runs `quickstart.ipynb` against a sandbox and writes an HTML copy.""",
    ),
]


COMPARE_AND_CURATE: Cells = [
    (
        "md",
        """# Compare and curate

Explore many variants without overspending, keep the good ones, follow an edit chain, and
share the result:

1. a **budget** and the account's **balance**;
2. **compare grids**: the cartesian product of prompts, models, aspect ratios or sizes, as one
   table of previews (a re-run pays only for new cells);
3. **ratings, tags and notes**, kept in the history, and **search** over it;
4. **lineage**: a task made from an earlier result is its child; the edit tree with each
   step's prompt diffed from its parent's;
5. **provenance** in every saved file, read back and re-run;
6. **export** of a selection as a folder that opens offline.""",
    ),
    ("code", "%load_ext nanobanana_jupyter"),
    ("md", KEY_NOTE),
    ("code", SANDBOX_LINE),
    (
        "md",
        """## Balance and a budget

`%nanobanana balance` asks the service for the account's credits. A budget caps what this
session spends plus what it has in flight: a request that would pass it is refused before
anything is sent (`BudgetExceededError`). A model's cost is learnt from what its tasks were
charged: until one has been, a budget lets one task of it run at a time, so a first single
image tells the price before the grids. In a sandbox all of it is pretend credits.""",
    ),
    (
        "code",
        """s = %nanobanana session
s.budget = 8
%nanobanana balance""",
    ),
    (
        "code",
        """%%nanobanana --wait -o opening
A lighthouse on a cliff at dusk, charcoal sketch""",
    ),
    ("code", "s.budget_status"),
    (
        "md",
        """## A compare grid in the magic

`--grid NAME=v1,v2` makes an axis; prompts separated by a line of `---` are the rows. The cell
shows one table that fills in while the tasks run; `--wait` blocks until every cell is done.""",
    ),
    (
        "code",
        """%%nanobanana --grid aspect_ratio=1:1,16:9 --wait -o first_grid
A lighthouse on a cliff at dusk, oil painting
---
A lighthouse on a cliff at dusk, paper cut-out""",
    ),
    (
        "md",
        """## A grid from Python, and as a table

`session.grid(...)` takes the same axes as keyword arguments; `fill=` expands a prompt template
over the `{name}` fields. `to_pandas()` gives one row per cell: the axes, then the task's
columns.""",
    ),
    (
        "code",
        """grid = s.grid(
    prompt="A {animal} reading a map, watercolour",
    fill={"animal": ["fox", "heron"]},
    image_size=["1K", "2K"],
).wait(timeout=300)
grid.to_pandas()[["animal", "image_size", "status", "consumed", "task_id"]]""",
    ),
    ("code", "grid"),
    (
        "md",
        """Run the grid cell again: every cell comes back reused, with no new charge; the session's
credits say what was spent and what was reused.""",
    ),
    (
        "code",
        """again = s.grid(
    prompt="A {animal} reading a map, watercolour",
    fill={"animal": ["fox", "heron"]},
    image_size=["1K", "2K"],
).wait(timeout=300)
print(s.credits)""",
    ),
    (
        "md",
        """## Rate, tag, note, search

Ratings (0 to 5), tags and notes are kept in the history: they survive a restart and another
kernel on the same data directory sees them. `history.search(...)` finds tasks by words of
their prompt, tags, model, status, rating and time, from an index.""",
    ),
    (
        "code",
        """fox_1k, fox_2k, heron_1k, heron_2k = grid.tasks
fox_2k.rate(5).tag("keep", "poster")
fox_2k.note = "the map reads well at 2K"
heron_1k.rate(3).tag("keep")
fox_1k.rate(1)
[(t.prompt, t.rating, t.tags) for t in (fox_1k, fox_2k, heron_1k, heron_2k)]""",
    ),
    (
        "code",
        """found = s.history.search("map", tags=["keep"], rating=(3, None))
[(r.prompt, r.image_size) for r in found]""",
    ),
    (
        "code",
        """s.history.to_pandas()[["prompt", "image_size", "rating", "tags", "note"]].dropna(subset=["rating"])""",
    ),
    (
        "md",
        """## Lineage: an edit chain and its tree

A task made with an earlier result as a reference records that parent by the image's content
hash. `task.parents` and `task.children` follow the links; `history.lineage(task)` shows the
whole edit tree, each step's prompt compared word by word with its parent's.""",
    ),
    (
        "code",
        """folded = s.generate("The fox's map, folded into a paper boat", images=[fox_2k]).wait(timeout=300)
sailing = s.generate("The paper boat sailing on a puddle", images=[folded]).wait(timeout=300)
print([t.prompt for t in sailing.parents], [t.prompt for t in fox_2k.children])
s.history.lineage(sailing)""",
    ),
    (
        "md",
        """## Provenance in every saved file

`task.save(path)` writes a copy that carries its recipe in the file's metadata (PNG text chunk,
JPEG or WebP XMP) with unchanged pixels. `read_provenance` reads it back from the file alone;
`session.generate_like(path)` runs the recipe again (here: handed back, nothing paid).""",
    ),
    (
        "code",
        """from nanobanana_jupyter import read_provenance

(saved,) = fox_2k.save("picked/", overwrite=True)
recipe = read_provenance(saved)
print(saved.name, "|", recipe.prompt, "|", recipe.model, recipe.image_size)
print("re-run:", s.generate_like(saved).wait(timeout=300).reused)""",
    ),
    (
        "md",
        """## Export to share

`history.export(folder, tasks)` writes a self-contained folder: `index.html`, a contact sheet
that opens offline from the file (prompts, models, costs, ratings, tags, links along the
lineage), the images, each carrying its recipe, and `history.csv`. `format="zip"` makes one
zip of the same files. `nanobanana export` and `%nanobanana export` do the same.""",
    ),
    (
        "code",
        """shared = s.history.export("shared", list(found) + [folded, sailing], overwrite=True)
print(sorted(p.name for p in shared.iterdir()))
print(len(list((shared / "images").iterdir())), "images, each with its recipe:",
      read_provenance(next((shared / "images").iterdir())).prompt)""",
    ),
    (
        "md",
        """## When the budget says no

What was spent plus what is in flight may never pass the budget. A batch is checked whole:
either it fits, or nothing of it is sent.""",
    ),
    (
        "code",
        """from nanobanana_jupyter import BudgetExceededError

try:
    s.map([f"a lighthouse, variation {i}" for i in range(20)])
except BudgetExceededError as exc:
    print(exc.message)
s.budget_status""",
    ),
]

PAPERMILL_BATCH: Cells = [
    (
        "md",
        """# A batch run with papermill

A parameterised notebook: [papermill](https://papermill.readthedocs.io) runs it headless,
with new values for the cell tagged `parameters`, and saves the executed copy.

```bash
papermill notebooks/papermill_batch.ipynb out.ipynb -p prompt "A red fox in the snow" -p n 3
```

Every image is saved three ways: in the data directory's history (as with any task), as a
copy carrying its recipe in `out_dir` (with a `summary.json` listing them), and as a small
preview in `out.ipynb`. A task that does not succeed makes the run fail, after the others
are saved, so papermill's exit code tells a batch script.""",
    ),
    (
        "parameters",
        """# Parameters: papermill replaces these (-p NAME VALUE); the defaults run as they are.
prompt: str = "A lighthouse made of bananas on a rocky coast, golden hour"
n: int = 2  # samples: distinct tasks, one image each (1 to 4)
aspect_ratio: str = "1:1"  # auto, 1:1, 16:9, 9:16, 4:3, ...
out_dir: str = "batch_out"  # copies of the images, with their recipe, and summary.json
sandbox: bool = False  # True: a local sandbox draws the images (offline, no key, pretend credits)""",
    ),
    ("code", "%load_ext nanobanana_jupyter"),
    (
        "md",
        """**API key.** Set `NANOBANANA_API_KEY` in the environment papermill runs in, or put it
in a `.env` file in papermill's working directory (`--cwd`); never pass it as a parameter,
which papermill writes into the output notebook. Without a key, `-p sandbox True`.""",
    ),
    (
        "code",
        """if sandbox:
    %nanobanana sandbox""",
    ),
    (
        "md",
        """## Generate, and wait

A headless run keeps only what a cell shows before it ends, so this cell waits (`--wait`)
until every image is there. `--expand` fills `{prompt}` from the parameter; the options'
`{n}` and `{aspect_ratio}` are filled by IPython. A re-run with the same parameters and data
directory reuses the results instead of paying again.""",
    ),
    (
        "code",
        """%%nanobanana --wait --expand -n {n} --aspect-ratio {aspect_ratio} -o batch
{prompt}""",
    ),
    ("md", "## Save the images and a summary to `out_dir`"),
    (
        "code",
        """import json
from pathlib import Path

from nanobanana_jupyter import Task

tasks = [batch] if isinstance(batch, Task) else list(batch)
folder = Path(out_dir)
folder.mkdir(parents=True, exist_ok=True)
summary = []
for task in tasks:
    files = task.save(folder, overwrite=True) if task.status.value == "success" else []
    summary.append(
        {
            "task_id": task.id,
            "status": task.status.value,
            "prompt": task.prompt,
            "cost": None if task.cost is None else str(task.cost),
            "files": [str(path) for path in files],
        }
    )
    print(task.id, task.status.value, task.cost, "credits", *[path.name for path in files])
(folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")""",
    ),
    (
        "code",
        """failed = [entry for entry in summary if entry["status"] != "success"]
if failed:
    raise RuntimeError(
        f"{len(failed)} of {len(summary)} tasks did not succeed: "
        + ", ".join(f"{entry['task_id']} ({entry['status']})" for entry in failed)
    )
print(f"{len(summary)} images in {folder.resolve()}")""",
    ),
]


def _load_quickstart_cells() -> Cells:
    """The quickstart's cells, from scripts/make_quickstart.py (their source of truth)."""
    path = Path(__file__).resolve().with_name("make_quickstart.py")
    spec = importlib.util.spec_from_file_location("make_quickstart", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cells: Cells = module.CELLS
    return cells


def notebooks() -> dict[str, Cells]:
    """Every generated notebook: file name -> cells."""
    return {
        "quickstart.ipynb": _load_quickstart_cells(),
        "panel_tour.ipynb": PANEL_TOUR,
        "batch_exploration.ipynb": BATCH_EXPLORATION,
        "editing_chain.ipynb": EDITING_CHAIN,
        "offline_sandbox.ipynb": OFFLINE_SANDBOX,
        "compare_and_curate.ipynb": COMPARE_AND_CURATE,
        "papermill_batch.ipynb": PAPERMILL_BATCH,
    }


def build(name: str, cells: Cells) -> nbformat.NotebookNode:
    """A notebook without outputs, with cell ids derived from its name (stable across runs)."""
    stem = name.removesuffix(".ipynb").replace("_", "-")
    nb_cells = []
    for index, (kind, source) in enumerate(cells):
        if kind not in ("md", "code", "parameters"):
            raise ValueError(f"{name}: cell {index} has unknown kind {kind!r}")
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        if kind == "parameters":
            cell.metadata["tags"] = ["parameters"]  # what papermill replaces
        cell["id"] = f"{stem}-{index:02d}"
        nb_cells.append(cell)
    nb = new_notebook(cells=nb_cells)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


def same_content(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> bool:
    """True when two notebooks have the same cells (kind, source, outputs), ids aside."""

    def key(nb: nbformat.NotebookNode) -> list[tuple[str, str, object]]:
        return [
            (cell.cell_type, cell.source, cell.metadata, cell.get("outputs", []))
            for cell in nb.cells
        ]

    return key(a) == key(b) and a.metadata == b.metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only report notebooks that are out of date"
    )
    parser.add_argument("--out", type=Path, default=NOTEBOOKS, help="directory to write into")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in notebooks().items():
        path: Path = args.out / name
        nb = build(name, cells)
        if path.exists() and same_content(nbformat.read(path, as_version=4), nb):
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, path)
            print(f"wrote {path}")
    if args.check and stale:
        for path in stale:
            print(f"out of date: {path} (run python scripts/make_notebooks.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
