"""Where a run's fixed seconds go: a lap clock whose stages `lenet5-train` logs in one line
per run (`timings: python+hydra 2.10 s, config 0.05 s, ...`), so a slower start-up or
record shows by name, in the log and in benchmarks/throughput.py's table, which reads it.
"""

from __future__ import annotations

import os
import time

LINE = "timings: "  # the log line's prefix; `parse` reads what follows it


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc/self/stat against the boot clock, to
    1/100 s), None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (starttime, clock ticks after boot) counts from after the command name,
            # which may hold spaces: split after its closing parenthesis.
            fields = f.read().rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Laps:
    """Seconds per named stage, each lap from the end of the one before (the first from the
    clock's start); `first` names the time the process spent before the clock started."""

    def __init__(self, first: str | None = None):
        self.spent: dict[str, float] = {}
        self.last = time.perf_counter()
        age = process_age() if first else None
        if first and age is not None:
            self.spent[first] = age

    def lap(self, name: str, at: float | None = None) -> None:
        """End the stage `name` now (or at the perf_counter time `at`, between the last lap
        and now); a name given twice adds up."""
        now = time.perf_counter() if at is None else min(max(at, self.last), time.perf_counter())
        self.spent[name] = self.spent.get(name, 0.0) + now - self.last
        self.last = now

    def total(self, names) -> float:
        return sum(self.spent.get(n, 0.0) for n in names)

    def line(self) -> str:
        return LINE + ", ".join(f"{k} {v:.2f} s" for k, v in self.spent.items())


def parse(text: str) -> dict[str, float]:
    """The stages of the last `timings:` line in `text` (a run's log), {} where none."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if LINE in line:
            found = {}
            for part in line.split(LINE, 1)[1].split(", "):
                name, _, seconds = part.rstrip().rpartition(" ")[0].rpartition(" ")
                try:
                    found[name] = float(seconds)
                except ValueError:
                    continue
    return found
