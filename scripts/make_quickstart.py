"""The cells of notebooks/quickstart.ipynb (kept here so diffs stay readable).

``python scripts/make_notebooks.py`` (``make docs``) writes the notebook from them, with the
other notebooks.
"""

from __future__ import annotations

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """# nanobanana-jupyter: quickstart

Generate images with **Nano Banana** (defapi.org) from a notebook, without blocking it.
Each `%%nanobanana` cell returns at once; its output updates in place as the image arrives,
while you keep running other cells. Images are saved on disk, the history survives kernel
restarts, and re-running a cell reuses the finished image instead of paying again.""",
    ),
    ("code", "%load_ext nanobanana_jupyter"),
    (
        "md",
        """**API key.** Put `NANOBANANA_API_KEY=dk-...` in the environment or in a `.env` file
next to this notebook (never in a cell: it would be saved with the notebook).
No key? Run `%nanobanana sandbox` to try everything offline against a local fake server.""",
    ),
    (
        "code",
        "# %nanobanana sandbox   # uncomment to work offline, without a key\n%nanobanana config",
    ),
    (
        "md",
        """## One image

Options go on the first line, the prompt in the cell body. `-o cat` keeps the task in a
variable.""",
    ),
    (
        "code",
        "%%nanobanana --aspect-ratio 16:9 -o cat\nA cat in a banana costume, studio light, 35mm photo",
    ),
    (
        "md",
        """The cell above returned at once. `cat` is a task handle: `cat.wait()` blocks until it is
done (interruptible), `await cat` works too, and `cat.image` is a PIL image.""",
    ),
    (
        "code",
        "cat.wait()\nprint(cat.status, cat.cost)  # the cost as a Decimal (pretend in a sandbox)\n"
        "print(cat.path)",
    ),
    ("md", "## Several samples, and a result as the reference of the next one"),
    (
        "code",
        "%%nanobanana -n 2 --aspect-ratio 1:1 -o fruit\nA still life of bananas and lemons, watercolor",
    ),
    (
        "code",
        "%%nanobanana --ref @last --aspect-ratio 1:1 -o night\nThe same still life at night, neon light",
    ),
    (
        "md",
        """`--ref` takes URLs, file paths, PIL images or tasks held in variables, `@last`, or
`@<task id>`; up to four. `--expand` fills `{name}` in the prompt from your variables.""",
    ),
    ("code", "subject = 'a banana-shaped spaceship'"),
    (
        "code",
        "%%nanobanana --expand --aspect-ratio 21:9\n{subject} over a desert at dawn, cinematic",
    ),
    (
        "md",
        """## The same from Python

`%nanobanana session` hands out the session the magic uses (the same history, the same
sandbox or key).""",
    ),
    (
        "code",
        """session = %nanobanana session
tasks = session.map(['a red apple', 'a green pear', 'a yellow lemon'], aspect_ratio='1:1')
for task in tasks:
    task.wait()
tasks[0]""",
    ),
    (
        "md",
        """## Re-running is free

Ask for exactly the same thing again (a re-run cell, the same cell after a restart): the
finished task comes back at once, and its card says *reused, no new charge*.""",
    ),
    (
        "code",
        """again = session.generate('a red apple', aspect_ratio='1:1')
print(again.reused, again is tasks[0] or again.id == tasks[0].id)
again""",
    ),
    (
        "md",
        """The session keeps what it paid apart from what it was handed back (pretend credits
here: this is the sandbox).""",
    ),
    ("code", "session.credits"),
    (
        "md",
        """## Short ids

Wherever an id is taken (`session.get`, `%nanobanana status`, `--ref @...`), the first
characters of it are enough while they name one task. The card shows the whole id; one
click selects it.""",
    ),
    (
        "code",
        """prefix = cat.id[:8]
print(prefix, '->', session.get(prefix).prompt)""",
    ),
    ("md", "## History and cost\n\nEvery task is kept, with its cost, across kernel restarts."),
    (
        "code",
        """frame = session.history.to_pandas()
frame[['task_id', 'status', 'prompt', 'consumed', 'duration']]""",
    ),
    ("code", "%nanobanana history"),
    (
        "md",
        """After a kernel restart, `%nanobanana resume` picks up tasks that were still running.
`%nanobanana wait` blocks until every open task has ended (handy at the end of a notebook
run headless).""",
    ),
    ("code", "%nanobanana wait"),
]
