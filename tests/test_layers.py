"""The layers as a user meets them: the report's command starts without torch, importing the
package changes no process state, and a command puts back what it set."""

import os
import signal
import subprocess
import sys
import time

import pytest

# Every module of the package, and what each command imports.
MODULES = [
    "lenet5",
    "lenet5.core.paths",
    "lenet5.study.nuisance",
    "lenet5.tracking.runs",
    "lenet5.tracking.parent",
    "lenet5.report.command",
    "lenet5.cli.predict",
    "lenet5.cli.train",
    "lenet5.cli.sweep",
]


def _imported(module: str) -> dict:
    """Which heavy libraries importing `module` loads, and how long it takes, in a fresh
    interpreter."""
    code = (
        "import sys, time, json\n"
        "t = time.perf_counter()\n"
        f"import {module}\n"
        "t = time.perf_counter() - t\n"
        "heavy = ['torch', 'pytorch_lightning', 'torchvision', 'mlflow', 'matplotlib']\n"
        "print(json.dumps({'s': t, 'loaded': [m for m in heavy if m in sys.modules]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    return json.loads(out.stdout.splitlines()[-1])


def test_the_report_command_loads_neither_torch_nor_lightning():
    got = _imported("lenet5.report.command")
    assert got["loaded"] == [], got  # MLflow and matplotlib too: each loads where it is used
    # About a second to start, where loading torch and Lightning alone takes several.
    assert got["s"] < 5, got


@pytest.mark.parametrize("module", ["lenet5.cli.train", "lenet5.cli.sweep", "lenet5.tracking.runs"])
def test_the_train_command_loads_torch_only_once_the_config_is_valid(module):
    assert _imported(module)["loaded"] == []


def test_importing_the_package_sets_no_signal_handler_nor_environment_variable():
    code = (
        "import os, signal, sys\n"
        "before = (dict(os.environ), signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))\n"
        f"import {', '.join(MODULES)}\n"
        "after = (dict(os.environ), signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))\n"
        "print(before == after)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True", out.stderr


def test_a_run_puts_back_the_handlers_and_variables_it_set(quick, store, monkeypatch):
    """lenet5-train's run sets SIGINT/SIGTERM handlers (a stop ends the run KILLED) and
    MLflow's retry variables while it runs; afterwards the process has its own again."""
    from lenet5.cli.train import run

    def mine(signum, frame):
        pass

    signal.signal(signal.SIGTERM, mine)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    seen = {}

    import lenet5.cli.train as cli

    record = cli.record

    def spy(run_, *args):  # inside the run: the command's handlers and variables
        seen["term"] = signal.getsignal(signal.SIGTERM)
        seen["retries"] = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        seen["timeout"] = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT")
        return record(run_, *args)

    monkeypatch.setattr(cli, "record", spy)
    run([*quick, *store, "mlflow.http_retries=3", "mlflow.http_timeout_s=11"])
    assert seen["term"] is not mine and seen["retries"] == "3" and seen["timeout"] == "11"
    assert signal.getsignal(signal.SIGTERM) is mine
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_the_layers_contracts_hold():
    """`lint-imports` (pyproject's contracts) as CI runs it, in about a second."""
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    if not os.path.exists(lint):
        pytest.skip("lint-imports is not installed (pip install -e '.[dev]')")
    t = time.perf_counter()
    out = subprocess.run([lint], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "7 kept, 0 broken" in out.stdout
    assert time.perf_counter() - t < 30
