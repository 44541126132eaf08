"""Process-wide state a command sets for as long as it runs, and puts back: signal handlers
and environment variables; and how a command's process ends. Library code never sets
either; the commands (`lenet5.cli`) do, through these scopes."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import NoReturn

_stopped_by: str | None = None  # the signal that arrived inside `interrupts()`, if one did


def _stop(name: str) -> KeyboardInterrupt:
    """The interrupt a stop by signal `name` raises: Ctrl-C says nothing more (the command
    prints "stopped by Ctrl-C"); SIGTERM says its name."""
    return KeyboardInterrupt() if name == "SIGINT" else KeyboardInterrupt(f"signal {name}")


def _interrupt(signum, frame):
    global _stopped_by
    _stopped_by = signal.Signals(signum).name
    raise _stop(_stopped_by)


def stopped_by() -> str | None:
    """The signal (SIGINT, SIGTERM) that arrived inside `interrupts()`, else None. Library code
    can be caught mid-way by the KeyboardInterrupt it raises and turn it into an error of its
    own (OmegaConf does, building a config); this tells that a stop, not a fault, ended it."""
    return _stopped_by


def release_frames(error: BaseException) -> None:
    """Drop the local variables of the finished frames that `error`, and every exception it
    chains, passed through. A stop raised inside a read of the SQLite store keeps that read's
    cursor alive in those frames, and with it SQLite's shared lock: every write to the store,
    this process's own end of its run included, would wait for it and fail as "database is
    locked" (seen in the chaos test, tests/test_isolation.py). Frames still running are kept."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        todo += [e.__cause__, e.__context__]


def _dropped(hook, unraisable) -> None:
    """`sys.unraisablehook` inside `interrupts()`. A stop that lands in a finaliser or in a
    weakref callback the garbage collector runs (seen in the chaos test: SQLAlchemy's) is
    dropped by Python there, with an "Exception ignored" traceback, and the work went on. The
    signal is sent again, a moment later, to land in the code that runs next."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _stopped_by is not None:
        again = threading.Timer(0.01, os.kill, (os.getpid(), signal.Signals[_stopped_by]))
        again.daemon = True
        again.start()
        return
    hook(unraisable)


@contextmanager
def interrupts() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM (a scheduler's or `kill`'s stop) both unwind like Ctrl-C
    while inside, so a run ends KILLED with its last checkpoint; the handlers found are put
    back on leaving. An error that leaves after a stop arrived leaves as KeyboardInterrupt:
    the stop is what ended the work, whatever it became on the way (`stopped_by`).

    SIGINT gets Python's own handler even where the process started with it ignored (what a
    non-interactive shell does to a command started with `&`).
    """
    if threading.current_thread() is not threading.main_thread():
        # A cohort's member runs in a thread; only the main thread may set handlers, and the
        # launcher there stops the members (lenet5.training.cohort.Cohort.interrupt).
        yield
        return
    global _stopped_by
    _stopped_by = None
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    unraisable = sys.unraisablehook
    sys.unraisablehook = partial(_dropped, unraisable)
    try:
        yield
    except Exception as e:
        if _stopped_by is None:
            raise
        # The stop, turned into another error where it landed: still a stop (its run KILLED,
        # the command's one line), with what it became kept as the cause.
        raise _stop(_stopped_by) from e
    finally:
        _stopped_by = None  # the stop is handled: later errors in this process are errors
        sys.unraisablehook = unraisable
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


def exit_now(code: int = 0) -> NoReturn:
    """End the process with `code` as Python would, less the interpreter's teardown.

    Python's exit waits for the threads that are not daemons (`threading._shutdown`, which
    first tells thread pools to wind down), runs the `atexit` functions (logging's flush and
    close among them), then frees every module and object: with torch, Lightning, MLflow and
    Hydra loaded that last part takes 1.4-2 s on a CPU core (docs/benchmarks.md) and writes
    nothing. This does the first two as Python does them (the same private calls), flushes
    the standard streams and leaves. Commands call it once their work is recorded, from the
    main thread; never library code."""
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # closed, or a pipe whose reader left
            stream.flush()
    os._exit(code)
