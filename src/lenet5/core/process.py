"""Process-wide state a command sets for as long as it runs, and puts back: signal handlers
and environment variables. Library code never sets either; the commands (`lenet5.cli`) do,
through these scopes."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextmanager
def interrupts() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM (a scheduler's or `kill`'s stop) both unwind like Ctrl-C
    while inside, so a run ends KILLED with its last checkpoint; the handlers found are put
    back on leaving.

    SIGINT gets Python's own handler even where the process started with it ignored (what a
    non-interactive shell does to a command started with `&`).
    """
    if threading.current_thread() is not threading.main_thread():
        # A cohort's member runs in a thread; only the main thread may set handlers, and the
        # launcher there stops the members (lenet5.training.cohort.Cohort.interrupt).
        yield
        return
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def environ(values: dict[str, str | None]) -> Iterator[None]:
    """The environment variables `values` set while inside (None: left as they are), the
    previous values (or absence) put back on leaving. Processes started inside inherit them."""
    changed = {k: v for k, v in values.items() if v is not None}
    before = {k: os.environ.get(k) for k in changed}
    os.environ.update(changed)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
