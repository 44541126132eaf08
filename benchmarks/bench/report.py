"""The Markdown of `throughput.json` (or `throughput_gpu.json`): one section per part present
(throughput per thread count, the paper recipe's pass, start-up, memory), so a file merged
from separate runs renders whole."""

from __future__ import annotations

from bench.common import DATASET_BYTES
from bench.part_process import YARDSTICKS

TARGETS = {  # device -> batch size -> (min a/b, min a/c)
    "cpu": {1: (0.90, None), 64: (0.95, 2.0), 256: (0.95, 2.8)},
    "cuda": {64: (0.95, None), 256: (0.95, 3.0)},
}


def fmt_ratio(value: float, target: float | None) -> str:
    if target is None:
        return f"{value:.2f}"
    return f"{value:.2f} ({'met' if value >= target else 'MISSED'}: >= {target})"


def part_header(part: dict) -> list[str]:
    return [
        f"Command: `{part['command']}`  ",
        f"Date (UTC): {part['date_utc']}; load average (1, 5, 15 min) before: "
        f"{part['load_before']}, after: {part['load_after']}",
        "",
    ]


def markdown(result: dict) -> str:
    m = result["machine"]
    gpu = m.get("gpu_info")
    title = "# Training throughput: `lenet5-train` vs a bare loop vs the tutorial path"
    lines = [
        title + (f", on {gpu['name']}" if gpu else ""),
        "",
        *(
            [
                f"GPU: **{gpu['name']}**, torch {gpu['torch']}, CUDA {gpu['cuda']} "
                f"(cuDNN {gpu['cudnn']}); every path trains on it.  "
            ]
            if gpu
            else []
        ),
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; {m['gpu']}. The "
        "machine may be shared: each part records the load average before and after it; "
        "compare ratios of paths run back to back rather than absolute speeds.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
    ]
    for key in sorted(k for k in result["parts"] if k.startswith("throughput")):
        lines += throughput_markdown(result["parts"][key])
    for key, render in (
        ("paper", paper_markdown),
        ("process", process_markdown),
        ("startup", startup_markdown),
        ("memory", memory_markdown),
    ):
        if key in result["parts"]:
            lines += render(result["parts"][key])
    return "\n".join(lines)


def throughput_markdown(tp: dict) -> list[str]:
    device = tp.get("device", "cpu")  # cpu results from before --device have no key
    on = " on the GPU" if device == "cuda" else ""
    lines = [
        f"## Images/s{on} (torch threads: {tp['torch_threads']}; model=modern, SGD "
        f"lr={tp['lr']}; updates per run: "
        + ", ".join(f"batch {bs}: {n}" for bs, n in tp["updates"].items())
        + ")",
        "",
        *part_header(tp),
        "(a) project = `lenet5.cli.train.run(overrides)` timed from `on_train_start` to the "
        "last `on_train_batch_end` (by `bench.timing.StepTimer`, added through the config: "
        "the `+callbacks.step_timer` overrides); (b) bare loop over the same preloaded uint8 tensors; "
        "(c) torchvision MNIST + Pad/ToTensor/Normalize + DataLoader(num_workers=0). "
        "Ratios are the medians of the per-repeat ratios (a, b, c of one repeat ran back "
        "to back).",
        "",
        *(
            [
                "On the GPU: (a) with `trainer.accelerator=gpu` (its datamodule keeps the "
                "uint8 tensors on the device); (b) the uint8 tensors moved to the GPU once, "
                "before timing, batches gathered by a device index and normalized there; (c) "
                "each batch `.to(device)`. Every clock is read after "
                "`torch.cuda.synchronize()`. CPU-s: the host process's CPU time.",
                "",
            ]
            if device == "cuda"
            else []
        ),
        "Project overrides: `" + " ".join(tp["project_overrides"]) + "`",
        "",
    ]
    n_rep = len(next(iter(tp["runs"].values()))["project"])
    head = "| batch | path | " + " | ".join(f"rep {i + 1}" for i in range(n_rep))
    lines += [head + " | median | median per CPU-s |", "|---" * (n_rep + 4) + "|"]
    for bs, by_method in tp["runs"].items():
        for m in by_method:
            vals = [f"{r['images_per_s']:.0f}" for r in by_method[m]]
            med = tp["summary"][bs]["median_images_per_s"][m]
            cpu = tp["summary"][bs]["median_images_per_cpu_s"][m]
            lines.append(f"| {bs} | {m} | " + " | ".join(vals) + f" | {med:.0f} | {cpu:.0f} |")
    lines += [
        "",
        "Ratios (wall time; the targets apply to these). CPU-time ratios divide images per "
        "CPU-second of the process (all paths at the same thread count): with one thread, "
        "less sensitive to the other load; with two on a loaded machine, spin-waiting "
        "threads make both measures erratic.",
        "",
        "| batch | a/b | a/c | a/b per repeat | a/c per repeat | CPU a/b | CPU a/c | "
        "(a) whole fit images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for bs, s in tp["summary"].items():
        tb, tc = TARGETS[device].get(int(bs), (None, None))
        lines.append(
            f"| {bs} | {fmt_ratio(s['a_over_b'], tb)} | {fmt_ratio(s['a_over_c'], tc)} | "
            + ", ".join(f"{x:.2f}" for x in s["a_over_b_per_repeat"])
            + " | "
            + ", ".join(f"{x:.2f}" for x in s["a_over_c_per_repeat"])
            + f" | {s['cpu_a_over_b']:.2f} | {s['cpu_a_over_c']:.2f}"
            + f" | {s['median_fit_images_per_s']:.0f} |"
        )
    lines += [
        "",
        "(a) serves C samples per Lightning step (the default `data.chunk_size`) and makes one "
        "update per batch inside it. project_per_step (a') = the same run with "
        "`data.chunk_size=<batch>`: one update per Lightning step, Lightning's automatic "
        "optimization (what gradient clipping needs), so its per-step cost (logging, "
        "progress bar, loop hooks) is paid once per update.",
        "",
        "| batch | C | a'/b | a'/b per repeat | a'/c | CPU a'/b |",
        "|---|---|---|---|---|---|",
    ]
    for bs, s in tp["summary"].items():
        if "per_step_over_b" not in s:
            lines.append(f"| {bs} | {s.get('chunk_size', '?')} | - | - | - | - |")
            continue
        lines.append(
            f"| {bs} | {s['chunk_size']} | {s['per_step_over_b']:.2f} | "
            + ", ".join(f"{x:.2f}" for x in s["per_step_over_b_per_repeat"])
            + f" | {s['per_step_over_c']:.2f} | {s['cpu_per_step_over_b']:.2f} |"
        )
    lines.append("")
    return lines


def paper_markdown(pp: dict) -> list[str]:
    med, device = pp["median"], pp["device"]
    return [
        f"## The paper recipe's per-sample pass ({'GPU' if device == 'cuda' else 'CPU'}; "
        f"torch threads: {pp['threads']}; {pp['updates']} updates per run)",
        "",
        *part_header(pp),
        "`lenet5.cli.train.run` with `" + " ".join(pp["overrides"]) + "`: SDLM, one update per "
        "sample, 128 samples per Lightning step. Updates/s from the first training step's "
        "start to the last step's end (the StepTimer); before the first step: from "
        "`on_train_start` (SDLM's curvature estimate on 500 samples, the first chunk); pass = "
        "60,000 updates at that rate plus the time before the first step.",
        "",
        "| repeat | updates/s | updates per CPU-s | before first step s | pass s | load before |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['repeat'] + 1} | {r['updates_per_s']:.0f} | {r['updates_per_cpu_s']:.0f} | "
            f"{r['before_first_step_seconds']:.2f} | {r['pass_seconds']:.0f} | "
            f"{r['load_before'][0]} |"
            for r in pp["runs"]
        ),
        f"| median | **{med['updates_per_s']:.0f}** | {med['updates_per_cpu_s']:.0f} | "
        f"{med['before_first_step_seconds']:.2f} | **{med['pass_seconds']:.0f}** | |",
        "",
    ]


def process_markdown(pr: dict) -> list[str]:
    """Whole processes (bench.part_process): the ratio, and where the fixed seconds go."""
    med, st, tg = pr["median_wall_seconds"], pr["median_stages"], pr["targets"]
    over, record = pr["first_step_over_imports"], st["record"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    ratio = pr["median_ratio"]
    yards = [k for k in YARDSTICKS if k in pr["wall_seconds"]]
    imports_line = []
    if "imports_over_bare_s" in pr:
        imports_line = [
            f"Imports alone: imports_store - bare_imports = {pr['imports_over_bare_s']:.2f} s, "
            f"{pr['imports_over_bare_fraction']:.2f} of the bare loop's wall, against the 0.20 "
            f"that the {tg['ratio']}x target leaves for every fixed second. The project adds "
            f"{med['project'] - med['bare']:.2f} s in all: less than its imports, by ending "
            "without Python's teardown (`exit_now`), which the bare loop pays. "
            f"Start-up {pr['first_step_over_imports_store']:+.2f} s against imports_store.",
            "",
        ]
    return [
        f"## Whole process: `lenet5-train`, {pr['epochs']} full-MNIST epochs, vs a bare loop",
        "",
        *part_header(pr),
        f"Project: `{pr['commands']['project']}`  ",
        f"Bare: `{pr['commands']['bare']}`  ",
        *(f"Yardstick {k}: `{pr['commands'][k]}`  " for k in YARDSTICKS if k in pr["commands"]),
        "",
        "| repeat | project s | bare s | project / bare | " + " | ".join(yards) + " |",
        "|---|---|---|---|" + "---|" * len(yards),
        *(
            f"| {i + 1} | {p:.2f} | {b:.2f} | {p / b:.2f} | "
            + " | ".join(f"{m:.2f}" for m in ms)
            + " |"
            for i, (p, b, *ms) in enumerate(
                zip(*(pr["wall_seconds"][k] for k in ("project", "bare", *yards)), strict=True)
            )
        ),
        f"| **median** | {med['project']:.2f} | {med['bare']:.2f} | **{ratio:.2f}** "
        f"({verdict(ratio <= tg['ratio'])}: <= {tg['ratio']}) | "
        + " | ".join(f"{med[k]:.2f}" for k in yards)
        + " |",
        "",
        *imports_line,
        "Where the project's run spends its time (medians of its `timings:` log line, "
        "`lenet5.core.stages`; imports = python+hydra (interpreter, Hydra, compose), "
        "config+torch, Lightning's and MLflow's imports):",
        "",
        "| stage | median s |",
        "|---|---|",
        *(f"| {k} | {v:.2f} |" for k, v in st.items()),
        "",
        f"Start-up to the first training step {st['to first step']:.2f} s: "
        f"{over:+.2f} s against the stack's imports alone "
        f"({verdict(over <= tg['first_step_over_imports_s'])}: <= "
        f"{tg['first_step_over_imports_s']} s); inside the run, beyond its own imports (data, "
        f"store, Lightning) {st.get('beyond imports', float('nan')):.2f} s. "
        f"Record after the test {record:.2f} s "
        f"({verdict(record < tg['record_s'])}: < {tg['record_s']} s). The first run, into a "
        f"fresh store, {pr['cold_store_project_seconds']:.2f} s (not in the medians).",
        "",
    ]


def startup_markdown(su: dict) -> list[str]:
    pm = su["probe_median"]
    return [
        "## Start-up of `lenet5-train`",
        "",
        *part_header(su),
        "| what | median wall s |",
        "|---|---|",
        *(f"| `{k}` | {v:.2f} |" for k, v in su["median_wall_seconds"].items()),
        f"| 1-step subset run, first into a fresh SQLite store | "
        f"{su['cold_store_run_seconds']:.2f} |",
        "",
        "Probe (the same 1-step `lenet5-train` run with `bench.timing.StepTimer` added "
        "through the config, stamping wall-clock times): process start -> `fit` starts "
        f"{pm['to_fit_start']:.2f} s, -> first training step {pm['to_first_step']:.2f} s "
        f"(**start-up**); after training ends (test, artifacts, exit) "
        f"{pm['after_train_end']:.2f} s; total {pm['wall']:.2f} s.",
        "",
        # results recorded before the probe was a plain lenet5-train command lack it
        *([f"Probe: `{su['probe_command']}`", ""] if "probe_command" in su else []),
    ]


def memory_markdown(me: dict) -> list[str]:
    s0, s5 = me["datamodule_setup"]["0"], me["datamodule_setup"]["5000"]
    steady = me["setup_resident_cost_mb"] / me["dataset_uint8_mb"]
    peak = me["setup_peak_cost_mb"] / me["dataset_uint8_mb"]
    return [
        "## Memory",
        "",
        *part_header(me),
        f"Dataset as padded uint8: {me['dataset_uint8_mb']:.1f} MiB "
        f"({DATASET_BYTES / 1e6:.1f} MB).",
        "",
        "| measure | val_size=0 | val_size=5000 |",
        "|---|---|---|",
        f"| tensors held by the datamodule, MiB | {s0['tensor_bytes_held_mb']:.1f} | "
        f"{s5['tensor_bytes_held_mb']:.1f} |",
        f"| RSS growth over `setup()`, MiB | "
        f"{s0['rss_after_setup_mb'] - s0['rss_before_setup_mb']:.1f} | "
        f"{s5['rss_after_setup_mb'] - s5['rss_before_setup_mb']:.1f} |",
        f"| peak RSS growth over `setup()`, MiB | "
        f"{s0['peak_after_setup_mb'] - s0['peak_before_setup_mb']:.1f} | "
        f"{s5['peak_after_setup_mb'] - s5['peak_before_setup_mb']:.1f} |",
        f"| RSS before `setup()` (imports), MiB | {s0['rss_before_setup_mb']:.0f} | "
        f"{s5['rss_before_setup_mb']:.0f} |",
        "",
        f"Peak RSS (`ru_maxrss` from `os.wait4`) of a `lenet5-train` child: full MNIST "
        f"{me['lenet5_train_full_mnist']['peak_rss_mb']:.0f} MiB, the 5,000-digit subset "
        f"{me['lenet5_train_subset']['peak_rss_mb']:.0f} MiB (same model, 20 steps, the "
        "test at the end).  ",
        f"Full: `{me['lenet5_train_full_mnist']['cmd']}`",
        "",
        f"In-memory dataset (default val_size=5000): resident cost {steady:.2f}x its uint8 "
        f"size ({'met' if steady <= 2 else 'MISSED'}: target <= 2x); transient peak during "
        f"`setup()` {peak:.2f}x.",
        "",
    ]
