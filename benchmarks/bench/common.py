"""What every benchmark part shares: where things are, the machine and versions a result
was measured on, scratch folders, resident memory, and timed child processes."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1]  # benchmarks/: holds the `bench` package
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
PROBES = BENCH_DIR / "probes"
VENV_BIN = Path(sys.executable).parent
PYTHON, TRAIN = str(VENV_BIN / "python"), str(VENV_BIN / "lenet5-train")
DEFAULT_DATA = Path(os.environ.get("LENET5_DATA_DIR", ROOT.parent / "shared" / "datasets"))
DATASET_BYTES = (60_000 + 10_000) * 32 * 32  # the padded uint8 images: 71.7 MB
TIMER = "bench.timing.StepTimer"  # the callback that times a run from the inside

TEMP_DIRS: list[Path] = []  # MLflow stores, checkpoints, timer files: removed after each part


def scratch(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    TEMP_DIRS.append(path)
    return path


def remove_scratch() -> None:
    while TEMP_DIRS:
        shutil.rmtree(TEMP_DIRS.pop(), ignore_errors=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def gpu() -> dict:
    """The CUDA device this process trains on, and the CUDA that torch was built with."""
    import torch

    return {
        "name": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "count": torch.cuda.device_count(),
    }


def machine(device: str = "cpu") -> dict:
    """The machine; with device="cuda" also its GPU (imports torch: not for the memory part)."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    out = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "platform": platform.platform(),
        "gpu": "no GPU used (none was lent to the task that ran this)",
    }
    if device == "cuda":
        info = gpu()
        out["gpu"] = f"GPU: {info['name']} (torch {info['torch']}, CUDA {info['cuda']})"
        out["gpu_info"] = info
    return out


SAME_PACKAGE = {"mlflow": "mlflow-skinny"}  # where only the skinny build is installed


def versions(device: str = "cpu") -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "pytorch-lightning", "mlflow", "hydra-core"):
        out[dist] = None
        for name in filter(None, (dist, SAME_PACKAGE.get(dist))):
            with contextlib.suppress(metadata.PackageNotFoundError):
                out[dist] = metadata.version(name)
                break
    if device == "cuda":
        import torch

        out["cuda"] = torch.version.cuda
    return out


def accelerator_overrides(device: str) -> list[str]:
    """The `lenet5-train` overrides that put a run on `device`. `trainer.accelerator` is
    `auto` by default, which takes a GPU where torch sees one: on such a machine a cpu run
    names the CPU (on a machine without one, nothing is added: the runs of the CPU results)."""
    if device == "cuda":
        return ["trainer.accelerator=gpu"]
    import torch

    return ["trainer.accelerator=cpu"] if torch.cuda.is_available() else []


def synchronize(device) -> None:
    """Wait for the kernels queued on a CUDA device (before reading a clock); a no-op on the
    CPU, whose work is done when the call returns."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def rss_mb() -> float:
    """Resident memory of this process now, MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_env() -> dict[str, str]:
    """The environment for a child that must import `bench` (a probe script, or a
    `lenet5-train` whose config names `bench.timing.StepTimer`): benchmarks/ on PYTHONPATH."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), path]))}


def store_overrides(store: Path) -> list[str]:
    """A child `lenet5-train`'s MLflow store and Hydra run folder, inside a scratch folder,
    so a benchmark neither writes into nor is slowed by the project's own mlruns/."""
    return [
        f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
        f"mlflow.artifact_root={store}/artifacts",
        f"hydra.run.dir={store}/hydra",
    ]


def timer_overrides(out: Path) -> list[str]:
    """The `lenet5-train` overrides that add a StepTimer writing its stamps to `out`."""
    return [f"+callbacks.step_timer._target_={TIMER}", f"+callbacks.step_timer.out={out}"]


def read_timer(out: Path) -> dict:
    """What the StepTimer of a finished run wrote to `out`."""
    if not out.is_file():
        raise RuntimeError(f"no StepTimer output at {out}: was callbacks.step_timer added?")
    return json.loads(out.read_text())


def failed(cmd: list[str], stderr: str) -> RuntimeError:
    return RuntimeError(f"{shlex.join(cmd)} failed:\n{stderr[-3000:]}")


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, start time.time()) of a child process; raises if it fails."""
    start = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise failed(cmd, proc.stderr)
    return wall, start


def child_peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB of this one child, wall seconds), from os.wait4's rusage: unlike
    RUSAGE_CHILDREN it is this child's own peak, not the largest of all children so far."""
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        proc = subprocess.Popen(cmd, stdout=null, stderr=subprocess.PIPE, cwd=ROOT)
        stderr = proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise failed(cmd, stderr)
    return usage.ru_maxrss / 1024, time.perf_counter() - t0
