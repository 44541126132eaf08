"""`hydra/launcher=cohort`: a sweep's jobs that differ only in what can be stacked train
together, in one process, as one stacked model; each is still its own job and MLflow run.

    lenet5-train -m hydra/launcher=cohort model=paper,modern seed=0,1,2 optimizer.lr=0.001,0.003

Each job's config is loaded as Hydra's basic launcher loads it, and runs through Hydra's
`run_job` (its own job folder, .hydra/ files, `lenet5-train`'s job function: skipping a
FINISHED job on relaunch, its MLflow run, its record). Jobs whose configs differ only in
`STACKED` keys (the seed, the optimizer and its schedule: each member keeps its own
optimizer) form a cohort of at most `max_members`; the others go to separate cohorts, one
line each saying which keys set them apart. A cohort's members run in threads that take
turns, their updates stacked (`lenet5.training.cohort`); each run is tagged
`lenet5.cohort=<id>`. Cohorts run `n_jobs` at a time, each in a process of its own
(`lenet5.cli.launcher.Pool`: a cohort killed outright loses only its members; 1: in this one),
or with `slurm` set (`hydra/launcher=cohort_slurm`) each cohort is one task of a Slurm array
(`lenet5.cli.slurm`: a task lost without its result loses only its members).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from lenet5.cli.launcher import INTERRUPTED, Pool, Unit, die_with_parent, nan_return, send
from lenet5.core.names import COHORT
from lenet5.core.process import interrupts
from lenet5.tracking.runs import member_tags

log = logging.getLogger("lenet5")
# Config keys in which a cohort's members may differ: each member seeds its own generators,
# keeps its own optimizer and schedule, and computes its own loss.
STACKED = ("seed", "optimizer", "scheduler")


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """A config tree as {dotted key: leaf} (lists kept whole)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: repr(node)}


def stacked_key(key: str) -> bool:
    return any(key == s or key.startswith(f"{s}.") for s in STACKED)


def signature(cfg: DictConfig) -> tuple[dict[str, Any], str | None]:
    """(what must be equal for jobs to stack, why this job runs alone or None). The config
    as written (interpolations unresolved: every job of a sweep has the same ones)."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    tree.pop("hydra", None)
    keys = {k: v for k, v in flat(tree).items() if not stacked_key(k)}
    alone = None
    if cfg.get("resume"):
        alone = f"resume={cfg.resume} continues one run"
    else:
        from lenet5.training.chunks import chunk_size  # torch: only once a sweep runs

        task = {k: v for k, v in cfg.items() if k != "hydra"}
        plain = OmegaConf.create(task)
        if chunk_size(plain) == plain.data.batch_size:
            alone = (
                f"data.chunk_size={plain.data.batch_size}: one update per Lightning step, made "
                "by Lightning itself, which a cohort does not stack"
            )
    return keys, alone


def group(configs: list[DictConfig], max_members: int) -> list[tuple[list[int], str]]:
    """The cohorts: (indexes into `configs`, a line saying what they stack or why alone)."""
    plans: list[tuple[list[int], str]] = []
    groups: list[tuple[dict, list[int]]] = []
    for i, cfg in enumerate(configs):
        keys, alone = signature(cfg)
        if alone is not None:
            plans.append(([i], f"runs alone: {alone}"))
            continue
        for keys_, members in groups:
            if keys_ == keys and len(members) < max_members:
                members.append(i)
                break
        else:
            groups.append((keys, [i]))
    first = groups[0][0] if groups else {}
    for keys, members in groups:
        differ = sorted(k for k in first.keys() | keys.keys() if first.get(k) != keys.get(k))
        apart = (
            f"; apart from the first cohort in {', '.join(differ[:6])}"
            + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
            if differ
            else ("" if keys is first else f"; max_members={max_members} splits it")
        )
        n = len(members)
        plans.append((members, f"{n} member{'s' if n > 1 else ''}{apart}"))
    plans.sort(key=lambda p: p[0][0])
    return plans


def spread(plans: list[tuple[list[int], str]], workers: int) -> list[tuple[list[int], str]]:
    """Cohorts split in halves, the largest first, until there are `workers` of them (or none
    can split): on a CPU each process trains on one core, and a core left idle costs more than
    a cohort's smaller stack gains (benchmarks/results/cohort_sweep.md)."""
    plans = list(plans)
    while len(plans) < workers:
        k = max(range(len(plans)), key=lambda i: len(plans[i][0]))
        members = plans[k][0]
        if len(members) < 2:  # every cohort one job (a job that runs alone is one too)
            break
        half = (len(members) + 1) // 2
        for part in (members[:half], members[half:]):
            n = len(part)
            plans.append((part, f"{n} member{'s' if n > 1 else ''}; split to use {workers} cores"))
        del plans[k]
    plans.sort(key=lambda p: p[0][0])
    return plans


def cpu_cores() -> int:
    """The cores this process may run on (a Slurm allocation or `taskset` narrows them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class CohortLauncher(Launcher):
    """`max_members`: most members in one cohort (memory, and each member's copy of the
    data). `n_jobs`: cohorts at a time, each in its own process (1: in this process); `auto`:
    with a CUDA GPU 1 (one stacked model keeps it busy), else one per CPU core, the cohorts
    split until every core has one (`spread`), each process's torch threads its share.
    `stack`: auto (stack on a GPU, and on a CPU only per-sample updates), true, or false (the
    members take turns, each computing its own updates: their solo runs' exact arithmetic).
    `slurm`: None, or each cohort one task of a Slurm array, with these keys of
    `hydra/launcher=slurm` (partition, mem_gb, gpus_per_node, ..., lost_after_s)."""

    def __init__(
        self,
        max_members: int = 32,
        n_jobs: int | str = "auto",
        stack: bool | str = "auto",
        slurm: dict | None = None,
    ):
        if stack not in (True, False, "auto"):
            raise ValueError(f"hydra.launcher.stack={stack!r}: choose auto, true or false")
        if n_jobs != "auto" and not (isinstance(n_jobs, int) and n_jobs >= 1):
            raise ValueError(f"hydra.launcher.n_jobs={n_jobs!r}: choose auto or a number >= 1")
        self.max_members, self.n_jobs, self.stack = max_members, n_jobs, stack
        if OmegaConf.is_config(slurm):
            slurm = OmegaConf.to_container(slurm, resolve=True)
        self.slurm = slurm
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = idx
                cfg.hydra.job.num = idx
            configs.append(cfg)
        plans = group(configs, self.max_members)
        workers = self.n_jobs
        if workers == "auto":
            cores = 1 if self.slurm or _cuda() else min(cpu_cores(), len(configs))
            plans = spread(plans, cores)
            workers = min(cores, len(plans))
        at_once = "in Slurm tasks" if self.slurm else f"{workers} at a time"
        log.info("Launching %d jobs in %d cohorts, %s", len(configs), len(plans), at_once)
        work = []
        for members, why in plans:
            cohort_id = f"c{initial_job_idx + members[0]}"
            jobs = ", ".join(f"#{configs[i].hydra.job.num}" for i in members)
            log.info("\tcohort %s (%s): %s", cohort_id, jobs, why)
            for i in members:
                log.info("\t  #%s : %s", configs[i].hydra.job.num, _job_line(configs[i]))
            work.append((cohort_id, [configs[i] for i in members]))
        returns: list[JobReturn | None] = [None] * len(configs)
        context = (self.hydra_context, self.task_function, self.stack, Singleton.get_state())
        if self.slurm:  # each cohort one task of a Slurm array
            from lenet5.cli import slurm  # needs the [slurm] extra: only when asked for

            params = {"submitit_folder": f"{self.config.hydra.sweep.dir}/.submitit/%j"}
            params.update(self.slurm)
            lost_after_s = float(params.pop("lost_after_s", 30.0))
            payload = cloudpickle.dumps(context)
            ids, cohorts = [cid for cid, _ in work], [cfgs for _, cfgs in work]
            jobs = slurm.submit(params, _cohort_task, [payload] * len(work), ids, cohorts)
            numbered = [[_numbered(cfg) for cfg in cfgs] for _, cfgs in work]
            done = slurm.wait(jobs, numbered, lost_after_s)
        elif workers == 1:
            done = [self._run(cohort_id, cfgs) for cohort_id, cfgs in work]
        else:  # each cohort in a process of its own: a lost one costs only its members
            units = [
                Unit(k, (cohort_id, cfgs), tuple(_numbered(cfg) for cfg in cfgs))
                for k, (cohort_id, cfgs) in enumerate(work)
            ]
            results = Pool(workers, cloudpickle.dumps(context), _cohort).run(units)
            done = [results[k] for k in range(len(work))]
        for (members, _), rets in zip(plans, done, strict=True):
            for i, ret in zip(members, rets, strict=True):
                returns[i] = ret
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns

    def _run(self, cohort_id: str, cfgs: list[DictConfig]) -> list[JobReturn]:
        return run_cohort(cohort_id, cfgs, self.hydra_context, self.task_function, self.stack)


def _cuda() -> bool:
    import torch  # mostly loaded already: grouping the jobs imports it (`signature`)

    return torch.cuda.is_available()


def _numbered(cfg: DictConfig) -> tuple[int, tuple[str, ...]]:
    return int(cfg.hydra.job.num), tuple(cfg.hydra.overrides.task)


def _cohort(conn, payload: bytes, arg: tuple[str, list[DictConfig]]) -> None:
    """A cohort's process (`lenet5.cli.launcher.Pool`): run it, hand back its JobReturns.
    Ctrl-C or SIGTERM unwinds here (the process's main thread) and stops every member, each
    run KILLED with its checkpoint (`in_cohort`)."""
    die_with_parent()
    cohort_id, cfgs = arg
    # As the sweep's process logs (members log through `member_log`, Hydra's job logging off).
    configure_log(cfgs[0].hydra.hydra_logging, cfgs[0].hydra.verbose)
    with interrupts():
        try:
            rets = run_cohort(cohort_id, cfgs, *cloudpickle.loads(payload))
        except (KeyboardInterrupt, SystemExit):
            os._exit(INTERRUPTED)
        except Exception as e:  # as Hydra's launchers: the sweep stops with it
            rets = e
    send(conn, rets)


def _cohort_task(payload: bytes, cohort_id: str, cfgs: list[DictConfig]) -> list[JobReturn]:
    """A cohort as one Slurm task (`hydra.launcher.slurm`): run it, hand back its JobReturns.
    Stopped by the scheduler (scancel, its time limit: SIGTERM), every member's run ends
    KILLED with its checkpoint, and the task still hands back its jobs' returns (NaN, as a
    stopped solo job's): a stop leaving the task would write no result, and the sweep would
    count the task lost (`lenet5.cli.slurm`). A relaunch of the sweep continues the runs."""
    configure_log(cfgs[0].hydra.hydra_logging, cfgs[0].hydra.verbose)
    with interrupts():
        try:
            return run_cohort(cohort_id, cfgs, *cloudpickle.loads(payload))
        except (KeyboardInterrupt, SystemExit):
            log.warning("cohort %s stopped by the scheduler; its runs are KILLED", cohort_id)
            return [nan_return(cfg.hydra.overrides.task) for cfg in cfgs]


def _job_line(cfg: DictConfig) -> str:
    return " ".join(filter_overrides(list(cfg.hydra.overrides.task)))


def _solo(
    cfg: DictConfig, hydra_context: HydraContext, task_function, configure_logging: bool = True
) -> JobReturn:
    """One job as Hydra's basic launcher runs it (`configure_logging=False` in a cohort:
    Hydra's logging setup is process-wide, so each member logs through `member_log`)."""
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=cfg,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
        configure_logging=configure_logging,
    )


def _hydra_state() -> tuple:
    return HydraConfig.instance().cfg, os.getcwd()


def _set_hydra_state(state: tuple) -> None:
    HydraConfig.instance().cfg, cwd = state
    if os.getcwd() != cwd:  # hydra.job.chdir=true: each member in its own folder
        os.chdir(cwd)


def run_cohort(
    cohort_id: str,
    cfgs: list[DictConfig],
    hydra_context: HydraContext,
    task_function: TaskFunction,
    stack: bool | str = "auto",
    singleton_state: dict | None = None,
) -> list[JobReturn]:
    """Run one cohort's jobs (a single one as Hydra's basic launcher would); their returns."""
    if singleton_state is not None:  # a joblib worker: Hydra's state as the sweep's process had it
        setup_globals()
        Singleton.set_state(singleton_state)
    if len(cfgs) == 1:
        return [_solo(cfgs[0], hydra_context, task_function)]

    def job(cfg: DictConfig):
        def run() -> JobReturn:
            with member_log(cfg):
                return _solo(cfg, hydra_context, task_function, configure_logging=False)

        return run

    return in_cohort(cohort_id, [job(cfg) for cfg in cfgs], stack)


@contextmanager
def member_log(cfg: DictConfig) -> Iterator[None]:
    """What this thread logs, also written to the job's own log file, where Hydra's job
    logging would put it (<job folder>/<job name>.log)."""
    folder = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir")))
    folder = folder / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / f"{cfg.hydra.job.name}.log")
    fmt = OmegaConf.select(cfg, "hydra.job_logging.formatters.simple.format")
    handler.setFormatter(
        logging.Formatter(fmt or "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    )
    thread = threading.get_ident()
    handler.addFilter(lambda record: record.thread == thread)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def in_cohort(
    cohort_id: str, jobs: list[Callable[[], Any]], stack: bool | str = "auto"
) -> list[Any]:
    """Run `jobs` (each one run's whole job: its config, training, record) as the members of
    one cohort, each in its own thread, their runs tagged `lenet5.cohort=<cohort_id>`; their
    returns, in order. An exception a job raises is re-raised here once all have ended.

    Ctrl-C or SIGTERM (raised here, in the main thread) stops every member at its next chunk:
    each run ends KILLED with its last checkpoint; then SystemExit ends the sweep."""
    from lenet5.training.cohort import Cohort  # torch: once a cohort runs

    cohort = Cohort(len(jobs), contexts=[(_hydra_state, _set_hydra_state)], stack=stack)
    results: list[Any] = [None] * len(jobs)
    raised: list[BaseException | None] = [None] * len(jobs)
    ended = [threading.Event() for _ in jobs]

    def member(k: int) -> None:
        try:
            with cohort.seat(k), member_tags({COHORT: cohort_id}):
                results[k] = jobs[k]()
        except BaseException as e:  # handed to the launcher's thread
            raised[k] = e
        finally:
            ended[k].set()

    def wait() -> None:
        # Short waits on events, not Thread.join: a signal may reach a member's thread, and
        # Python runs its handler (KeyboardInterrupt) only in this one, between waits; and a
        # join that KeyboardInterrupt interrupts can mark a running thread as ended (3.11).
        for event in ended:
            while not event.wait(timeout=0.2):
                pass

    threads = [
        threading.Thread(target=member, args=(k,), name=f"lenet5-{cohort_id}-{k}", daemon=True)
        for k in range(len(jobs))
    ]
    for t in threads:
        t.start()
    try:
        wait()
    except KeyboardInterrupt as e:
        cohort.interrupt(f"interrupted (Ctrl-C or SIGTERM): {e}")
        wait()
        # As a solo job stops (Lightning turns Ctrl-C into SystemExit): the sweep ends, its
        # parent KILLED by the sweep's callback.
        raise SystemExit(
            f"lenet5: cohort {cohort_id} stopped ({e}): its runs are KILLED with their last "
            "checkpoints; relaunch the same command to continue them"
        ) from e
    for t in threads:
        t.join()
    log.info("cohort %s: %d rounds of stacked updates", cohort_id, cohort.rounds_stacked)
    for e in raised:
        if e is not None:
            raise e
    return results
