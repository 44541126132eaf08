"""Where a run's fixed seconds go (`lenet5.core.stages`): the lap clock, its log line and
the reader benchmarks/throughput.py uses; and the record's warm-up beside the test."""

import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from lenet5.core.stages import LINE, Laps, parse, process_age


def test_laps_add_up_and_their_line_reads_back():
    clock = Laps()
    time.sleep(0.05)
    clock.lap("a")
    start = time.perf_counter()
    time.sleep(0.05)
    clock.lap("b", at=start)  # ends b at `start`: the sleep goes to the next lap
    clock.lap("c")
    clock.lap("a")  # a name given twice adds up
    assert list(clock.spent) == ["a", "b", "c"]
    assert clock.spent["a"] >= 0.05 and clock.spent["b"] < 0.02 <= clock.spent["c"]
    line = clock.line()
    assert line.startswith(LINE)
    log = f"[2026-12-04 12:00:00,000][lenet5][INFO] - {line}\nother text\n"
    assert parse(log) == {k: round(v, 2) for k, v in clock.spent.items()}
    assert clock.total(["a", "c", "absent"]) == pytest.approx(clock.spent["a"] + clock.spent["c"])


def test_a_lap_ends_no_earlier_than_the_one_before_and_no_later_than_now():
    clock = Laps()
    clock.lap("a")
    clock.lap("b", at=clock.last - 10)  # a stamp from before the last lap counts as zero
    clock.lap("c", at=time.perf_counter() + 10)  # from the future: now
    assert clock.spent["b"] == 0 and 0 <= clock.spent["c"] < 1


def test_parse_reads_the_last_line_and_nothing_from_text_without_one():
    text = f"{LINE}x 1.00 s\n{LINE}x 2.50 s, start-up part 0.25 s\n"
    assert parse(text) == {"x": 2.5, "start-up part": 0.25}
    assert parse("no timings here") == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_process_age_counts_from_the_process_start():
    code = (
        "import time; time.sleep(0.5); from lenet5.core.stages import process_age as a; print(a())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 0.5 <= float(out.stdout) < 30
    clock = Laps(first="before")
    assert clock.spent["before"] == pytest.approx(process_age(), abs=0.05)


def test_record_warm_up_primes_what_log_model_scans_and_is_skipped_when_nothing_is_recorded():
    from lenet5.cli.record import warm_up

    off = OmegaConf.create({"mlflow": {"pictures": False, "log_model": False}})
    assert warm_up(off) is None
    warm = warm_up(OmegaConf.create({"mlflow": {"pictures": True, "log_model": True}}))
    warm.thread.join(timeout=120)
    assert not warm.thread.is_alive() and warm.wait() == {
        "_load_pictures": None,
        "_load_model_logging": None,
    }
    from mlflow.utils import requirements_utils

    assert "torch" in requirements_utils._PACKAGES_TO_MODULES  # MLflow's map, built once
    assert "matplotlib.backends.backend_agg" in sys.modules


def test_exit_now_ends_as_python_would_less_the_teardown(tmp_path):
    """`exit_now` (how `lenet5-train` and `lenet5-report` end): the exit status given, what
    was printed (buffered, to a pipe), a thread that is not a daemon waited for, an idle
    thread pool wound down (its workers wait for work until told: `lenet5-report` hung
    when they were joined without being told), the atexit functions run; then no more (a
    finalizer that Python's teardown would run is not)."""
    script = f"""
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from lenet5.core.process import exit_now
out = Path({str(tmp_path)!r})
def late():
    time.sleep(0.3)
    (out / "thread").write_text("ended")
threading.Thread(target=late).start()
pool = ThreadPoolExecutor(2)
pool.submit(time.sleep, 0.01).result()
atexit.register(lambda: (out / "atexit").write_text("ran"))
class Teardown:
    def __del__(self):
        (out / "teardown").write_text("ran")
kept = Teardown()
print("printed", end="")
exit_now(3)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "printed"
    assert (tmp_path / "thread").read_text() == "ended"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists()
    # Without exit_now, Python's teardown runs the finalizer: the check above can fail.
    plain = script.replace("exit_now(3)", "sys.exit(3)")
    assert subprocess.run([sys.executable, "-c", plain], timeout=60).returncode == 3
    assert (tmp_path / "teardown").read_text() == "ran"
