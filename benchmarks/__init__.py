"""Benchmarks: the project against the baselines, side by side, in one run (issue 6).

``python -m benchmarks.run`` (or ``make bench``) runs every comparison against a sandbox with
a compressed clock, prints one markdown table and writes ``benchmarks/results.md`` and
``benchmarks/results.json``. One module per comparison:

* :mod:`benchmarks.bench_polling`: the session's scheduler against fixed-interval pollers and
  webhook mode;
* :mod:`benchmarks.bench_scale`: 10,000 tasks through one session (client CPU, memory, losses);
* :mod:`benchmarks.bench_kernel`: a real kernel's round trip with 1,000 tasks in flight;
* :mod:`benchmarks.bench_notebook`: bytes a displayed image adds to a saved notebook;
* :mod:`benchmarks.bench_import`: import and ``%load_ext`` cost, and the cost of a preview.

Timings are meant to be compared as ratios inside one run; absolute times vary by machine.
"""
