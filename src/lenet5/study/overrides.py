"""A sweep's command line as Hydra expands it: which keys it sets, how many jobs it makes,
and the identity a relaunch of the same sweep shares."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf


def sweep_key(cfg: DictConfig) -> str:
    """Identity of a sweep: its study, its command-line overrides and its sweep values."""
    params = OmegaConf.to_container(cfg.hydra.sweeper.get("params") or OmegaConf.create())
    key = [cfg.mlflow.experiment_name, cfg.study.name, sorted(cfg.hydra.overrides.task), params]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def overrides_of(cfg: DictConfig) -> dict[str, tuple[Any, bool]]:
    """Each key the command line or the study's sweep (`hydra.sweeper.params`) sets -> (the
    override that counts, set on the command line?): the command line wins, as in Hydra."""
    params = cfg.hydra.sweeper.get("params") or {}
    task = list(cfg.hydra.overrides.task)
    args = [*task, *(f"{k}={v}" for k, v in params.items())]
    out: dict[str, tuple[Any, bool]] = {}
    for i, override in enumerate(OverridesParser.create().parse_overrides(args)):
        out.setdefault(override.get_key_element(), (override, i < len(task)))
    return out


def count_jobs(cfg: DictConfig) -> int:
    """Jobs in the sweep: the product of the sweep values of every override."""
    total = 1
    for override, _ in overrides_of(cfg).values():
        if override.is_sweep_override():
            total *= len(list(override.sweep_string_iterator()))
    return total
