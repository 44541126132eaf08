"""Cohorts (`hydra/launcher=cohort`) against the same runs one after another, on the CPU.

    .venv/bin/python benchmarks/cohort.py [--members 10] [--repeats 2] [--threads 1]
        [--parts batch64,per_sample] [--updates64 208] [--updates1 1280]
        [--data mnist|subset] [--data-dir DIR] [--stack auto|true] [--fresh]
        [--out-dir benchmarks/results]

Not part of the test suite. K runs that differ only in the seed (seeds 0..K-1) train, in one
process, (a) one after another (`lenet5.cli.train.run`, what the basic launcher runs) and
(b) as one cohort (`lenet5.cli.cohort.in_cohort`, what `hydra/launcher=cohort` runs: the
members' updates stacked by vmap). Each run makes a fixed number of updates
(`+trainer.max_steps`, no validation) and is timed from the inside by `bench.timing.StepTimer`:

- one after another: the sum over runs of (first training step -> last training step's end);
- cohort, stacked: from the last member's first training step (the first stacked round waits
  for every member) to the first member's last training step's end (the last round computed
  every member's updates); where the members took whole turns instead (stack=auto on a CPU
  at batch 64), the sum as above.

Member-samples/s = K x updates x batch / those seconds (so per-run set-up, the test and the
record are left out of both). `run_s` is the whole wall of the K runs, set-up and records
included. Parts: `batch64` (model=paper, Adam, batch 64) and `per_sample` (recipe=paper: SDLM,
one update per digit, the paper's schedule). The modes alternate (a, b, a, b, ...) so the
machine's load hits both alike. `--stack` is the launcher's `hydra.launcher.stack` (auto: on a
CPU only per-sample updates are stacked). Results: cohort.json and cohort.md in --out-dir; a
part measured by an earlier command stays there (with its command) unless `--fresh`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `bench` package

from bench.common import (
    DEFAULT_DATA,
    RESULTS,
    load,
    machine,
    read_timer,
    remove_scratch,
    scratch,
    timer_overrides,
    versions,
)
from bench.loops import quiet, quiet_process

PARTS = {
    # part: (batch, overrides)
    "batch64": (64, ["model=paper", "optimizer=adam"]),
    "per_sample": (1, ["recipe=paper"]),
}


def overrides(args, part: str, seed: int, store: Path, updates: int) -> list[str]:
    batch, extra = PARTS[part]
    data = (
        ["data=mnist", f"data.root={args.data_dir}"]
        if args.data == "mnist"
        else ["data=mnist_subset"]
    )
    return [
        *data,
        *extra,
        f"data.batch_size={batch}",
        "data.val_size=0",
        "data.source.test_size=1000" if args.data == "subset" else "data.eval_batch_size=1000",
        f"+trainer.max_steps={updates}",
        "trainer.max_epochs=100",
        f"threads={args.threads}",
        f"seed={seed}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "mlflow.pictures=false",
        "mlflow.log_model=false",
        f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
        f"mlflow.artifact_root={store}/artifacts",
        "mlflow.experiment_name=cohort_bench",
        f"hydra.run.dir={store}/hydra",
        *timer_overrides(store / f"timer{seed}.json"),
    ]


def run_mode(args, part: str, mode: str, store: Path) -> dict:
    from lenet5.cli.cohort import in_cohort
    from lenet5.cli.train import run

    batch, _ = PARTS[part]
    updates = args.updates64 if batch > 1 else args.updates1
    cmds = [overrides(args, part, s, store, updates) for s in range(args.members)]
    t0 = time.perf_counter()
    with quiet():
        if mode == "cohort":
            errors = in_cohort("bench", [lambda c=c: run(c) for c in cmds], stack=args.stack)
        else:
            errors = [run(c) for c in cmds]
    wall = time.perf_counter() - t0
    stamps = [read_timer(store / f"timer{s}.json") for s in range(args.members)]
    for t in stamps:
        if t["updates"] != updates:
            raise RuntimeError(f"{mode} made {t['updates']} updates, expected {updates}")
    firsts = [t["first_step"]["perf"] for t in stamps]
    lasts = [t["last_batch_end"]["perf"] for t in stamps]
    if mode == "cohort" and max(firsts) < min(lasts):  # in step: stacked rounds
        seconds = min(lasts) - max(firsts)
    else:  # one after another (or members taking whole turns: stack=auto at batch 64)
        seconds = sum(b - a for a, b in zip(firsts, lasts, strict=True))
    samples = args.members * updates * batch
    return {
        "seconds": seconds,
        "member_samples_per_s": samples / seconds,
        "member_updates_per_s": args.members * updates / seconds,
        "run_s": wall,
        "test_errors": errors,
    }


def render(result: dict) -> str:
    a = result["args"]
    lines = [
        "# Cohorts vs one run after another (CPU)",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
        f"{result['machine']['gpu']}. Shared with other work: compare the ratios of modes run "
        "back to back, not absolute speeds.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
        f"Command: `{result['command']}`  ",
        f"Date (UTC): {result['date']}; load average before: {result['load_before']}, after: "
        f"{result['load_after']}",
        "",
        f"{a['members']} runs (seeds 0..{a['members'] - 1}), torch threads {a['threads']}, data "
        f"{a['data']}; `seconds`: training only (see benchmarks/cohort.py), `run s`: the K "
        "whole runs (set-up, test, record).",
        "",
        "| part | mode | repeat | seconds | member-samples/s | member-updates/s | run s |",
        "|---|---|---|---|---|---|---|",
    ]
    for part, modes in result["parts"].items():
        for mode, reps in modes.items():
            for i, r in enumerate(reps, 1):
                lines.append(
                    f"| {part} | {mode} | {i} | {r['seconds']:.2f} | "
                    f"{r['member_samples_per_s']:,.0f} | {r['member_updates_per_s']:,.0f} | "
                    f"{r['run_s']:.1f} |"
                )
    lines += [
        "",
        "| part | speed-up of the cohort, training (median of paired ratios) | speed-up, whole runs |",
    ]
    lines.append("|---|---|---|")
    for part, ratio in result["ratios"].items():
        lines.append(f"| {part} | {ratio['training']:.2f}x | {ratio['run_s']:.2f}x |")
    same = result.get("same_test_errors")
    lines += ["", f"Members' test errors equal to their runs one after another: {same}", ""]
    lines += [f"{note}  " for note in result.get("notes", [])]
    for key, when in result.get("earlier", {}).items():
        lines.append(
            f"Part {key}: measured by `{when['command']}` on {when['date']} (load {when['load']})."
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parts", default="batch64,per_sample")
    p.add_argument("--updates64", type=int, default=208)
    p.add_argument("--updates1", type=int, default=1280)
    p.add_argument("--data", choices=("mnist", "subset"), default="mnist")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--stack", choices=("auto", "true"), default="auto")
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--fresh", action="store_true", help="drop the parts already in cohort.json")
    p.add_argument("--render-only", action="store_true", help="rewrite cohort.md from the json")
    args = p.parse_args()
    if args.render_only:
        out = Path(args.out_dir)
        (out / "cohort.md").write_text(render(json.loads((out / "cohort.json").read_text())))
        return
    args.stack = args.stack == "true" or "auto"
    quiet_process(args.threads)
    result = {
        "command": shlex.join(["python", "benchmarks/cohort.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "args": vars(args),
        "load_before": load(),
        "parts": {},
        "ratios": {},
    }
    same = True
    out = Path(args.out_dir)
    earlier = out / "cohort.json"
    if earlier.is_file() and not args.fresh:  # parts measured by other commands, kept
        old = json.loads(earlier.read_text())
        result["earlier"] = {
            key: {"command": old["command"], "date": old["date"], "load": old["load_before"]}
            for key in old["parts"]
        } | old.get("earlier", {})
        for key in ("parts", "ratios"):
            result[key].update(old[key])
    for part in args.parts.split(","):
        key = f"{part} (stack={'true' if args.stack is True else 'auto'})"
        reps: dict[str, list] = {"one_after_another": [], "cohort": []}
        for _ in range(args.repeats):
            for mode in reps:
                store = scratch(f"cohort-{part}-{mode}-")
                # the store's schema first: its creation is no run's cost
                from mlflow.tracking import MlflowClient

                MlflowClient(f"sqlite:///{store}/mlflow.db").search_experiments()
                reps[mode].append(run_mode(args, part, mode, store))
                print(part, mode, {k: v for k, v in reps[mode][-1].items() if k != "test_errors"})
                remove_scratch()
        pairs = list(zip(reps["cohort"], reps["one_after_another"], strict=True))
        result["parts"][key] = reps
        result.get("earlier", {}).pop(key, None)
        result["ratios"][key] = {
            "training": statistics.median(o["seconds"] / c["seconds"] for c, o in pairs),
            "run_s": statistics.median(o["run_s"] / c["run_s"] for c, o in pairs),
        }
        for c, o in pairs:
            same = (
                same
                and max(abs(x - y) for x, y in zip(c["test_errors"], o["test_errors"], strict=True))
                <= 0.003
            )
    result["same_test_errors"] = "yes (within 0.003)" if same else "NO"
    result["load_after"] = load()
    out.mkdir(parents=True, exist_ok=True)
    (out / "cohort.json").write_text(json.dumps(result, indent=1))
    (out / "cohort.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
