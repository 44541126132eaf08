"""Whole sweeps, as a user types them: `hydra/launcher=cohort` against the launcher it replaces.

    .venv/bin/python benchmarks/cohort_sweep.py [--grids paper4,tuned] [--repeats 1]
        [--paper-epochs 20] [--out-dir benchmarks/results]

Not part of the test suite. Each grid is launched as a `lenet5-train -m` subprocess in each of
its two modes, alternately (a, b, a, b when repeated), each into a fresh MLflow store; the
wall of the whole command is timed, and every child run must end FINISHED.

- paper4: `recipe=paper data=mnist_subset seed=0,1,2,3` (per-sample SDLM updates, the paper's
  schedule; `--paper-epochs` passes of the 3,500 training digits), Hydra's basic launcher vs
  `hydra/launcher=cohort` (its defaults: on 2 CPU cores, n_jobs=auto makes two cohorts of 2,
  one process per core, each cohort's per-sample updates stacked). Issue 23's check: the
  cohort in at most 0.7x the basic launcher's wall. Also timed, for reference: the joblib
  launcher with one process per core and no stacking (what the cores alone give).
- tuned: `experiment=one_at_a_time_tuned data=mnist_subset trainer.max_epochs=1` (45 runs in 5
  arms), the joblib launcher the study names (2 jobs, 1 thread each) vs the cohort launcher
  (5 cohorts of 9, 2 at a time). At batch 64 on a CPU the members take turns unstacked
  (`stack=auto`): what is saved is a process, its imports and data per run.

Results: cohort_sweep.json and cohort_sweep.md in --out-dir (a grid not run this time is kept
from the last file, with its command and date).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `bench` package

from bench.common import RESULTS, ROOT, load, machine, remove_scratch, scratch, versions
from sweep import train_command

GRIDS = {  # grid: (overrides, runs, {mode: overrides}, the mode the cohort is compared with)
    "paper4": (
        ["recipe=paper", "data=mnist_subset", "seed=0,1,2,3"],
        4,
        {
            "basic": [],
            "cohort": ["hydra/launcher=cohort"],
            "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1"],
        },
        "basic",
    ),
    "tuned": (
        ["experiment=one_at_a_time_tuned", "data=mnist_subset", "trainer.max_epochs=1"],
        45,
        {
            "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1"],
            "cohort": ["hydra/launcher=cohort", "hydra.launcher.n_jobs=2"],
        },
        "joblib",
    ),
}
TARGET = {"paper4": 0.7}  # cohort wall / the other's, issue 23


def sweep(overrides: list[str], runs: int) -> dict:
    from mlflow.tracking import MlflowClient

    store = scratch("lenet5-cohort-sweep-")
    cmd = [
        *train_command(),
        "-m",
        *overrides,
        "trainer.enable_progress_bar=false",
        f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
        f"mlflow.artifact_root={store}/artifacts",
        f"hydra.sweep.dir={store}/multirun",
    ]
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = client.get_experiment_by_name("lenet5")
    kids = [
        r
        for r in client.search_runs([exp.experiment_id], max_results=1000)
        if r.data.tags.get("lenet5.role") != "sweep"
    ]
    finished = [r for r in kids if r.info.status == "FINISHED"]
    if len(finished) != runs:
        raise RuntimeError(f"{len(finished)} of {runs} runs FINISHED: {shlex.join(cmd)}")
    errors = {r.data.tags.get("lenet5.config_hash"): r.data.metrics["test/error"] for r in finished}
    remove_scratch()
    return {
        "wall_s": round(wall, 2),
        "test_errors": errors,
        "load_before": before,
        "load_after": load(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def ratios(reps: dict[str, list[dict]], mode: str) -> list[float]:
    """The cohort's wall over `mode`'s, per repeat."""
    pairs = zip(reps["cohort"], reps[mode], strict=True)
    return [c["wall_s"] / o["wall_s"] for c, o in pairs]


def markdown(result: dict) -> str:
    lines = [
        "# Whole sweeps: the cohort launcher against the launcher it replaces (CPU)",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
        f"{result['machine']['gpu']}. Shared with other work: compare the modes of one "
        "repeat (run back to back), not absolute walls.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
        "| grid | overrides | runs | mode | repeat | wall s | load before -> after |",
        "|---|---|---|---|---|---|---|",
    ]
    for grid, g in result["grids"].items():
        for mode, reps in g["modes"].items():
            for i, r in enumerate(reps, 1):
                lines.append(
                    f"| {grid} | `{' '.join(g['overrides'])}` | {g['runs']} | {mode} "
                    f"(`{' '.join(GRIDS[grid][2][mode]) or 'basic launcher'}`) | {i} | "
                    f"{r['wall_s']:.1f} | {r['load_before'][0]} -> {r['load_after'][0]} |"
                )
    lines += [
        "",
        "| grid | cohort wall / other (median of repeats) | target | same test errors "
        "| cohort wall / the reference modes |",
        "|---|---|---|---|---|",
    ]
    for grid, g in result["grids"].items():
        target = TARGET.get(grid)
        verdict = (
            "-" if target is None else f"<= {target}: {'met' if g['ratio'] <= target else 'MISSED'}"
        )
        refs = ", ".join(f"{m} {r:.2f}" for m, r in g.get("reference_ratios", {}).items())
        lines.append(
            f"| {grid} | {g['ratio']:.2f} | {verdict} | {g['same_test_errors']} | {refs or '-'} |"
        )
    lines.append("")
    for grid, g in result["grids"].items():
        lines.append(f"Grid {grid}: `{g['command']}` on {g['date_utc']}.  ")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grids", default="paper4,tuned")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--paper-epochs", type=int, default=20, help="paper4's passes (the recipe's 20)")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args()
    out_json = args.out_dir / "cohort_sweep.json"
    old = json.loads(out_json.read_text()) if out_json.is_file() else {}
    result = {"machine": machine(), "versions": versions(), "grids": old.get("grids", {})}
    command = shlex.join([".venv/bin/python", "benchmarks/cohort_sweep.py", *sys.argv[1:]])
    for grid in args.grids.split(","):
        overrides, runs, modes, other = GRIDS[grid]
        if grid == "paper4":
            overrides = [*overrides, f"trainer.max_epochs={args.paper_epochs}"]
        reps: dict[str, list[dict]] = {m: [] for m in modes}
        for rep in range(args.repeats):
            for mode, extra in modes.items():
                r = sweep([*overrides, *extra], runs)
                reps[mode].append(r)
                print(f"{grid} {mode} repeat {rep + 1}: {r['wall_s']:.1f} s", flush=True)

        same = all(
            max(abs(c["test_errors"][k] - o["test_errors"][k]) for k in o["test_errors"]) <= 0.003
            for c, o in zip(reps["cohort"], reps[other], strict=True)
        )
        result["grids"][grid] = {
            "overrides": overrides,
            "runs": runs,
            "modes": reps,
            "ratio": statistics.median(ratios(reps, other)),
            "reference_ratios": {
                m: statistics.median(ratios(reps, m)) for m in modes if m not in ("cohort", other)
            },
            "same_test_errors": "yes, within 0.003" if same else "NO: differ by more than 0.003",
            "command": command,
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.out_dir / "cohort_sweep.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
