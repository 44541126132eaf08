"""`lenet5-report`: which design choices of a sweep matter, read from the MLflow store.

A sweep is one parent run (tag `lenet5.role=sweep`) whose children each train one job; the
report compares each factor's levels by test error (see `stats`). It only reads the store,
except for logging the report files as artifacts of the parent run, so it is safe to run
while the sweep is still writing.

    reading  the MLflow store: find a sweep, read it into a `SweepInfo` of `Run` records
    stats    the statistics, pure: `Run` records in, `Row` records and `Counts` out
    render   text, Markdown, CSV and PNG from a `SweepInfo` and its rows
    command  argparse and `main(argv) -> int`, the `lenet5-report` entry point

A study with a nuisance grid (`study.nuisance`, runs tagged `lenet5.nuisance`) is reported
with each arm at its own best setting, selected on validation:

    nuisance      the grid: checked against the sweep (its callback), tagged on each run
    tuning        per-arm selection; tuned, fixed-setting, main-effect, interaction tables
    inference     contrasts paired by seed (else Welch), Holm within a table, verdicts;
                  the intervals of the plain report (`stats`) too
    render_tuned  text, Markdown, CSV of those tables
    figure_tuned  test error tuned and fixed, learning curves per arm
"""

from lenet5.report.command import cli, main
from lenet5.report.reading import (
    ReportError,
    SweepInfo,
    collect,
    find_sweep,
    open_experiment,
    retry,
)
from lenet5.report.render import render_markdown, render_text, write_chart, write_csv
from lenet5.report.stats import Counts, Row, Run, counts, mean_ci_half, summarize, welch_ci

__all__ = [
    "Counts",
    "ReportError",
    "Row",
    "Run",
    "SweepInfo",
    "cli",
    "collect",
    "counts",
    "find_sweep",
    "main",
    "mean_ci_half",
    "open_experiment",
    "render_markdown",
    "render_text",
    "retry",
    "summarize",
    "welch_ci",
    "write_chart",
    "write_csv",
]
