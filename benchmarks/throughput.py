"""Training throughput of `lenet5-train` against a bare PyTorch loop and the tutorial path.

    .venv/bin/python benchmarks/throughput.py [--updates 1280,150,50] [--repeats 3]
        [--batch-sizes 1,64,256] [--threads 1] [--parts throughput,startup,memory,process,paper]
        [--process-epochs 2] [--process-repeats 3]
        [--per-step] [--paper-updates 1280] [--device cpu|cuda] [--data-dir DIR]
        [--out-dir benchmarks/results]

Not part of the test suite. In one process, the same LeNet-5 (`model=modern`, plain SGD,
`--lr`, seed 0) trains on full MNIST for a fixed number of updates with

  (a) project:  `lenet5.cli.train.run([...])`, exactly what `lenet5-train` runs: Lightning,
                MLflow logging on (a temporary SQLite store), the progress bar on (its
                stream is sent to /dev/null), checkpointing as usual, `data.val_size=0`,
                `+trainer.max_steps=N`. Timed: from Lightning's `on_train_start` (before the
                first batch is fetched) to the `on_train_batch_end` of the last batch, by
                `bench.timing.StepTimer`, added through the config like any callback
                (`+callbacks.step_timer._target_=bench.timing.StepTimer ...`). Also recorded:
                the whole `trainer.fit` (on_fit_start -> on_fit_end: adds the epoch-end
                checkpoint save and teardown) and the whole `run()` (adds config, data load,
                MLflow run, the 10k test).
  (b) bare:     a plain loop over the datamodule's own preloaded, padded uint8 tensors:
                index, float, normalize, forward, loss, backward, step. The limit.
  (c) tutorial: `torchvision.datasets.MNIST(root, transform=Compose([Pad(2), ToTensor(),
                Normalize(...)]))` + `DataLoader(shuffle=True, num_workers=0)`.

(b) and (c) are timed from before the first batch is fetched to after the last update.
The methods run interleaved (a, b, c at each batch size, then the next repeat), so a
change in the machine's load hits all three alike; the table gives images/s per repeat,
the medians, and the paired ratios a/b and a/c (median over repeats).

The project serves chunks of samples per Lightning step (`lenet5.training.chunks.chunk_size`: 128 at
batch 1, ~1024 otherwise) and makes one update per batch inside each (manual optimization);
`trainer.global_step` and `max_steps=N` count updates, so all paths make the same N
updates. `--per-step` also times (a') the project with `data.chunk_size=<batch>`: one
update per Lightning step, Lightning's usual automatic optimization.

`--parts process` times whole processes, alternating: `lenet5-train model=modern data=mnist
data.batch_size=64 trainer.max_epochs=2` against a bare PyTorch loop doing the same work with
its own imports (`probes/bare_train.py`), and `python -c "import torch, pytorch_lightning,
mlflow, hydra"`; it reads the run's `timings:` line to show where its start-up (imports,
data, store, Lightning) and its record go (`bench/part_process.py`).
`--parts startup` times `lenet5-train`'s start-up in child processes; `--parts memory`
measures resident memory (RSS) of the datamodule and of a full-MNIST `lenet5-train`;
`--parts paper` times `--paper-updates` per-sample updates of `recipe=paper` (SDLM, batch 1)
through `lenet5.cli.train.run`: updates/s and the time of one pass.
Results: throughput.json and throughput.md in --out-dir (default benchmarks/results). The
parts live in benchmarks/bench/, the child-process probe in benchmarks/probes/.

`--device cuda` runs the throughput and paper parts on the GPU: (a) and the paper recipe with
`trainer.accelerator=gpu`, (b) over the uint8 tensors moved to the GPU once, (c) with each
batch moved by `.to(device)`; every clock is read after `torch.cuda.synchronize()`. Its
results go to throughput_gpu.json and throughput_gpu.md (the GPU, torch and CUDA named), so
the CPU results are never overwritten. `--device cpu` (the default) is the CPU benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import time
from pathlib import Path

# Run as a script, Python already puts this folder first on sys.path; made explicit because
# the in-process `lenet5.cli.train.run` calls instantiate `bench.timing.StepTimer` by name from
# the config, and that import must work however this file was started.
BENCH_DIR = str(Path(__file__).resolve().parent)
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

from bench.common import DEFAULT_DATA, RESULTS, load, machine, remove_scratch, versions  # noqa: E402
from bench.report import markdown  # noqa: E402

PARTS = ("memory", "startup", "process", "throughput", "paper")  # run in this order: memory first
DEFAULT_PARTS = {"cpu": "throughput,startup,memory,process", "cuda": "throughput,paper"}
GPU_PARTS = {"throughput", "paper"}  # startup, memory and process measure CPU processes


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", default="1280,150,50",
                   help="updates per run: one number, or one per batch size")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-sizes", default="1,64,256")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads, all paths (process part: 0 = torch's default)",
    )
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate, all paths")
    p.add_argument("--per-step", action="store_true",
                   help="also time the project with one update per Lightning step")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where every path trains; cuda writes throughput_gpu.json/.md")  # fmt: skip
    p.add_argument("--parts", default=None,
                   help="comma list of " + ",".join(PARTS) + "; default: "
                   + "; ".join(f"{d}: {v}" for d, v in DEFAULT_PARTS.items()))  # fmt: skip
    p.add_argument("--paper-updates", type=int, default=1280,
                   help="per-sample updates per run of the paper part")  # fmt: skip
    p.add_argument("--startup-repeats", type=int, default=3)
    p.add_argument("--process-epochs", type=int, default=2,
                   help="full-MNIST epochs of the process part's runs")  # fmt: skip
    p.add_argument("--process-repeats", type=int, default=3,
                   help="alternating pairs (project, bare) of the process part")  # fmt: skip
    p.add_argument("--out-dir", "--out", dest="out", type=Path, default=RESULTS,
                   help="where throughput.json/.md are read and written")  # fmt: skip
    p.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json")
    args = p.parse_args()
    args.batch_sizes = parse_ints(args.batch_sizes)
    args.updates = parse_ints(args.updates)
    if len(args.updates) == 1:
        args.updates *= len(args.batch_sizes)
    if len(args.updates) != len(args.batch_sizes):
        p.error(f"--updates: give one number or one per batch size ({args.batch_sizes})")
    args.parts = (args.parts or DEFAULT_PARTS[args.device]).split(",")
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        p.error(f"--parts: unknown {sorted(unknown)}; choose from {','.join(PARTS)}")
    if args.device == "cuda" and set(args.parts) - GPU_PARTS:
        p.error(f"--device cuda runs the parts {sorted(GPU_PARTS)} only (startup and memory "
                "measure CPU processes: run them with --device cpu)")  # fmt: skip
    return args


def run_part(name: str, args) -> dict:
    """One part (`bench.part_<name>.run`), with its command, date and load average (the
    machine may be shared)."""
    # Imported when run: the startup and memory parts need no torch in this process.
    part_module = importlib.import_module(f"bench.part_{name}")
    before = load()
    print(f"{name}: load average before {before}", flush=True)
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    try:
        part = part_module.run(args)
    finally:
        remove_scratch()
    python = "python3" if args.device == "cuda" else ".venv/bin/python"
    command = shlex.join([python, "benchmarks/throughput.py", *sys.argv[1:]])
    part.update(command=command, date_utc=date, load_before=before, load_after=load())
    return json.loads(json.dumps(part))  # int keys become strings, as when read back


def main() -> None:
    args = arguments()
    stem = "throughput_gpu" if args.device == "cuda" else "throughput"
    out_json, out_md = args.out / f"{stem}.json", args.out / f"{stem}.md"
    if args.render_only:
        out_md.write_text(markdown(json.loads(out_json.read_text())) + "\n")
        return
    if not (args.data_dir / "MNIST" / "raw").is_dir():
        sys.exit(f"no MNIST under {args.data_dir}/MNIST/raw: pass --data-dir")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"--device cuda: torch {torch.__version__} sees no CUDA GPU here")

    # Parts not run this time are kept from the last file, each with its own command.
    old = json.loads(out_json.read_text()) if out_json.is_file() else {}
    result = {
        "machine": machine(args.device),
        "versions": versions(args.device),
        "parts": old.get("parts", {}),
    }
    # Memory first: its children's peak RSS counts this process's peak too (see
    # bench.part_memory), and the throughput part loads torch and MNIST here.
    for name in PARTS:
        if name in args.parts:
            key = f"throughput_threads{args.threads}" if name == "throughput" else name
            result["parts"][key] = run_part(name, args)
    text = markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    out_md.write_text(text + "\n")
    print()
    print(text)


if __name__ == "__main__":
    main()
