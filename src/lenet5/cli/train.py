"""`lenet5-train`: compose the config, then train and test it in an MLflow run.

    lenet5-train model=paper model/pooling=max trainer.max_epochs=3
    lenet5-train -m model/activation=scaled_tanh,relu seed=0,1,2
    lenet5-train resume=<run id>

`run` and `compose` do the same from Python (notebooks, tests, benchmarks). Torch and
Lightning load with `lenet5.training.build`, once the config has passed its cheap checks.
This command owns the process while it runs: it sets the signal handlers (Ctrl-C and SIGTERM
end a run KILLED) and MLflow's http retry variables, and puts them back when it returns.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from lenet5.cli.record import best_val_acc, record, warm_up
from lenet5.core.configs import register_resolvers
from lenet5.core.errors import UserError
from lenet5.core.names import DEVICE, N_PARAMS, TEST_ERROR
from lenet5.core.paths import CONF_DIR, split_login
from lenet5.core.process import environ, exit_now, interrupts
from lenet5.core.stages import Laps
from lenet5.tracking import parent
from lenet5.tracking.resume import resume_config
from lenet5.tracking.runinfo import ROUND
from lenet5.tracking.runs import TrackedRun, refusals_recorded, tracked_run
from lenet5.tracking.stores import http_retries
from lenet5.training.validate import validate

log = logging.getLogger("lenet5")
URI_KEY = "mlflow.tracking_uri"
# Joblib's and submitit's workers import this module to unpickle the job function, and then
# resolve the job's config: conf/'s resolvers must be known there too.
register_resolvers()


@dataclass(frozen=True)
class Outcome:
    """A run's result: its test error, and its best validation accuracy as recorded
    (final/val_acc, rounded; None without a validation set)."""

    test_error: float
    val_acc: float | None = None

    @property
    def objective(self) -> float:
        """What a sweeper (Optuna) minimizes: the validation error, so that a search selects
        on validation and leaves the test set out of the choice; the test error only where
        the data has no validation set (data.val_size=0)."""
        return self.test_error if self.val_acc is None else 1.0 - self.val_acc


def execute(cfg: DictConfig, choices: dict, overrides: list[str]) -> Outcome:
    """What every entry point runs: `resume=`, or in a relaunched sweep skip a job that
    FINISHED (its recorded outcome) or continue one that was KILLED; else train."""
    into = Path(HydraConfig.get().runtime.output_dir) / "resumed_from"
    if cfg.resume:
        cfg = resume_config(cfg, overrides, into)
    else:
        earlier = parent.earlier_attempt(cfg, into)
        if earlier is not None and earlier.error is not None:
            return Outcome(earlier.error, earlier.val_acc)
        if earlier is not None:  # a KILLED job of this sweep: continue it, same run
            with open_dict(cfg):
                cfg.resume = earlier.resume
            cfg = resume_config(cfg, [], into)
    return train(cfg, choices=choices, overrides=overrides)


def train(cfg: DictConfig, choices: dict, overrides: list[str]) -> Outcome:
    """Train and test one configuration in its MLflow run."""
    clock = Laps(first="python+hydra")  # where the fixed seconds go, logged at the end
    with interrupts(), http_retries(cfg.mlflow), ExitStack() as scope:
        with refusals_recorded(cfg, choices):  # refused up front: before any run is opened
            validate(cfg)  # before torch and Lightning load: a bad value answers in a second
            clock.lap("config+torch")  # validate imports torch for the blocks' checks
            from lenet5.training import build  # torch and Lightning, once the config is valid

            clock.lap("lightning import")
            scope.enter_context(build.process_settings(cfg))
            datamodule, module = build.prepare(cfg)
            clock.lap("data")
            import mlflow  # noqa: F401  (timed apart from the store's own imports and checks)

            clock.lap("mlflow import")
        with tracked_run(cfg, choices, overrides) as run:
            clock.lap("store")
            if run.resume_from is None:
                run.client.log_metric(run.run_id, N_PARAMS, build.n_params(module))
            trainer = build.build_trainer(cfg, run.checkpoint_dir, logger=mlflow_logger(run))
            run.client.set_tag(run.run_id, DEVICE, build.device_name(trainer))
            # A table per job would bury a sweep's progress lines.
            verbose = parent.current() is None
            warm = []

            def before_test():
                clock.lap("lightning setup", at=module.train_started_at)
                clock.lap("train")
                # Beside the test: what recording needs no result for.
                warm.append(warm_up(cfg, run, datamodule, module))

            result = build.fit_and_test(
                trainer, module, datamodule, run.resume_from, verbose, before_test
            )
            clock.lap("test")
            # metrics, pictures, model
            record(run, cfg, trainer, module, datamodule, result, warm[0] if warm else None)
            clock.lap("record")
    clock.lap("end run")
    log.info(clock.line())
    log.info("test error %.4f (run %s)", result[TEST_ERROR], run.run_id)
    val_acc = best_val_acc(trainer)  # as final/val_acc records it: a replay hands back the same
    return Outcome(result[TEST_ERROR], None if val_acc is None else round(val_acc, ROUND))


def mlflow_logger(run: TrackedRun):
    """Lightning's MLflow logger, writing into `run`, which it leaves to `tracked_run` to end."""
    from pytorch_lightning.loggers import MLFlowLogger

    class RunLogger(MLFlowLogger):
        def finalize(self, status: str = "success") -> None:
            # Lightning finalizes its loggers when fit ends, before the test: MLFlowLogger
            # then marks the run FINISHED, and a process killed during the test left a
            # FINISHED run without a test error (seen in the chaos test), which a relaunch
            # skips. The run's end is tracked_run's, once everything is recorded.
            pass

    return RunLogger(
        tracking_uri=run.tracking_uri, experiment_name=run.experiment_name, run_id=run.run_id
    )


def compose(overrides: list[str] = ()) -> DictConfig:
    """The config `lenet5-train OVERRIDES...` would run, for notebooks and tests.

    Keeps the `hydra` node (runtime choices, overrides) and registers it, as `@hydra.main`
    does, so `train` sees the same state as from the shell.
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):  # where @hydra.main would run it (made when something is written)
        cfg.hydra.runtime.output_dir = str(Path(cfg.hydra.run.dir).absolute())
    HydraConfig.instance().set_config(cfg)
    return cfg


def run(overrides: list[str] = ()) -> float:
    """Train one configuration given as command-line overrides; returns the test error."""
    cfg = compose(overrides)
    hc = cfg.hydra
    choices, task = dict(hc.runtime.choices), list(hc.overrides.task)
    with open_dict(cfg):
        del cfg["hydra"]
    return execute(cfg, choices, task).test_error


# Launcher and sweeper options whose Hydra plugin comes with an optional extra: the plugin,
# the extra. Without it Hydra answers that the option's own defaults cannot be found, naming
# no fix.
PLUGINS = {
    ("hydra/launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "cohort_slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
}


def check_plugins(argv: list[str]) -> None:
    """Refuse, in one line naming the extra to install, a launcher or sweeper whose plugin is
    absent."""
    for arg in argv:
        key, _, value = arg.partition("=")
        plugin = PLUGINS.get((key.lstrip("+~"), value))
        if plugin is None:
            continue
        module, extra = plugin
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UserError(
                f"{key.lstrip('+~')}={value} needs Hydra's plugin {module}, which this Python "
                f"({sys.executable}) cannot import ({e}); install it with: "
                f"pip install -e '.[{extra}]' (from the lenet5 checkout)"
            ) from None


def logins_moved(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """A login written into the tracking URI, on the command line or in $MLFLOW_TRACKING_URI
    (http://user:secret@host), taken out of it and handed to MLflow in its own variables
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD: Hydra's output folder, the messages
    and the run's records then never see the password. (argv without it, the variables.)"""
    moved: dict[str, str] = {}

    def without_login(uri: str) -> str:
        plain, user, password = split_login(uri)
        if user is not None:
            moved["MLFLOW_TRACKING_USERNAME"] = user
        if password is not None:
            moved["MLFLOW_TRACKING_PASSWORD"] = password
        return plain

    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        out.append(f"{key}={without_login(value)}" if eq and key.lstrip("+~") == URI_KEY else arg)
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    plain = without_login(env_uri) if env_uri else env_uri
    if plain != env_uri:
        moved["MLFLOW_TRACKING_URI"] = plain
    return out, moved


def main() -> float:
    """`lenet5-train`: Hydra's command line (`lenet5-train --help`), after checking that the
    launcher asked for is installed, with a login in the tracking URI moved to MLflow's
    variables (for this command, and the jobs it starts, which inherit them)."""
    argv, moved = logins_moved(sys.argv[1:])
    try:
        check_plugins(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    given = sys.argv[:]
    with environ(moved):
        sys.argv[1:] = argv  # what Hydra parses and writes to its output folder
        try:
            return hydra_main()
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (lenet5.core.process.interrupts)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            # What was running ended its run KILLED with its last checkpoint, and said so:
            # one line, not a traceback through Hydra's internals.
            print(
                f"lenet5-train: stopped by {str(e).removeprefix('signal ') or 'Ctrl-C'}; its runs "
                "ended KILLED with their last checkpoint: run the same command again to continue "
                "a sweep, `lenet5-train resume=<run id>` a single run",
                file=sys.stderr,
            )
            raise SystemExit(130) from None
        finally:
            sys.argv[:] = given


def cli() -> None:
    """The `lenet5-train` command: `main`, then the process ends once its work is recorded,
    without the interpreter's teardown (`exit_now`: 1.4-2 s of a short run's wall here). An
    error or a stop leaves as Python's exit does."""
    main()
    exit_now(0)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """One job; returns what a sweeper minimizes (`Outcome.objective`), NaN for a failed job."""
    hc = HydraConfig.get()
    try:
        return execute(cfg, dict(hc.runtime.choices), list(hc.overrides.task)).objective
    except Exception as e:
        if hc.mode != RunMode.MULTIRUN:
            if isinstance(e, UserError) and os.environ.get("HYDRA_FULL_ERROR") != "1":
                # One line, not a traceback: the message says what, where and the fix.
                print(f"error: {e}", file=sys.stderr)
                raise SystemExit(2) from None
            raise
        # In a sweep one failed job must not stop the others: its run is already FAILED
        # with the reason, and the sweep's end reports it and exits non-zero.
        log.exception("job %s failed; the sweep goes on", hc.job.num)
        return float("nan")
    except (KeyboardInterrupt, SystemExit):
        if hc.mode == RunMode.MULTIRUN and os.environ.get("SUBMITIT_EXECUTOR"):
            # A scheduler's task stopped (scancel, its time limit): its run is KILLED with its
            # checkpoint. Returning lets submitit record the task as done: a stop leaving the
            # task would write no result, and the sweep would count the task lost
            # (lenet5.cli.slurm). A relaunch of the sweep continues the run.
            log.warning("job %s stopped by the scheduler; its run is KILLED", hc.job.num)
            return float("nan")
        raise
