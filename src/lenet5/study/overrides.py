"""A sweep's command line as Hydra expands it: which keys it sets, how many jobs it makes,
and the identity a relaunch of the same sweep shares."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def sweep_key(cfg: DictConfig) -> str:
    """Identity of a sweep: its study, its command-line overrides and its sweep values."""
    params = OmegaConf.to_container(cfg.hydra.sweeper.get("params") or OmegaConf.create())
    key = [cfg.mlflow.experiment_name, cfg.study.name, sorted(cfg.hydra.overrides.task), params]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def overrides_of(cfg: DictConfig) -> dict[str, tuple[Any, bool]]:
    """Each key the command line or the study's sweep (`hydra.sweeper.params`) sets -> (the
    override that counts, set on the command line?): the command line wins, as in Hydra."""
    params = cfg.hydra.sweeper.get("params") or {}
    parser = OverridesParser.create()
    task = parser.parse_overrides(list(cfg.hydra.overrides.task))
    swept = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    out: dict[str, tuple[Any, bool]] = {}
    for override in task:  # a key given twice: the later one counts, as in Hydra
        out[override.get_key_element()] = (override, True)
    for override in swept:
        out.setdefault(override.get_key_element(), (override, False))
    return out


# Where a sweeper that draws its trials keeps their number: Optuna's, Nevergrad's, Ax's.
TRIAL_BUDGETS = ("n_trials", "optim.budget", "ax_config.max_trials")


def count_jobs(cfg: DictConfig) -> int | None:
    """Jobs the sweep launches, None where that is not known before they run. Hydra's basic
    sweeper launches the product of every override's sweep values; a sweeper that draws its
    trials (Optuna, Nevergrad, Ax) launches its budget of them, whatever its ranges."""
    sweeper = cfg.hydra.sweeper
    if str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        total = 1
        for override, _ in overrides_of(cfg).values():
            if override.is_sweep_override():
                total *= len(list(override.sweep_string_iterator()))
        return total
    for key in TRIAL_BUDGETS:
        budget = OmegaConf.select(sweeper, key, default=None)
        if isinstance(budget, int) and budget > 0:
            return budget
    return None


def seed_sampler(cfg: DictConfig) -> int | None:
    """Seed a sweeper's sampler (Optuna's `hydra.sweeper.sampler.seed`) left unseeded from
    the sweep's identity, before the sweeper is made: the same command draws the same trials,
    so a relaunch of an interrupted search replays its finished trials (skipped, their
    recorded results handed back) and continues where it stopped instead of starting over.
    Returns the seed set, else None (no sampler, or one the user seeded)."""
    sampler = cfg.hydra.sweeper.get("sampler")
    if not isinstance(sampler, DictConfig) or "seed" not in sampler or sampler.seed is not None:
        return None
    seed = int(sweep_key(cfg), 16) % 2**31
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        sampler.seed = seed
    return seed
