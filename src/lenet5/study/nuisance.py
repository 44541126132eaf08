"""A study's nuisance grid: declared in the study file, expanded by the sweep, tagged on runs.

A study file declares, beside its factors, the nuisance hyperparameters that are tuned
separately for each arm (Google's Deep Learning Tuning Playbook: scientific, nuisance and
fixed hyperparameters):

    study:
      nuisance: {optimizer.lr: [3e-4, 1e-3, 3e-3]}
    hydra:
      sweeper:
        params:
          optimizer.lr: 3e-4,1e-3,3e-3

`study.nuisance` is what the report reads; the sweep expands `hydra.sweeper.params` as any
other key. `check_grid` (the sweep callback, before any job) refuses a grid that the sweep
does not expand as declared; a subset from the command line (`optimizer.lr=1e-3,3e-3`)
scales the study down. Each run is tagged `lenet5.nuisance`: its own values, JSON.
"""

from __future__ import annotations

import json

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from lenet5.core.errors import SweepFailed
from lenet5.core.names import NUISANCE
from lenet5.study.overrides import overrides_of


def _norm(value) -> str:
    """One spelling per value: 3e-4, 0.0003 and '3e-4' are the same setting."""
    if isinstance(value, bool):
        return str(value).lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return repr(int(number)) if number.is_integer() and "." not in str(value) else repr(number)


def grid(cfg: DictConfig) -> dict[str, list[str]]:
    """key -> declared values (normalized), from `study.nuisance`; {} when there is none."""
    node = cfg.get("study", {}).get("nuisance") or {}
    if isinstance(node, (list, ListConfig)):  # keys only: values from the sweep
        return {str(k): [] for k in node}
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    out = {}
    for key, values in plain.items():
        values = values if isinstance(values, list) else [values]
        out[str(key)] = [_norm(v) for v in values]
    return out


def _swept(cfg: DictConfig) -> dict[str, tuple[list[str] | None, bool]]:
    """key -> (its sweep values, None for a searched range; set on the command line?), the
    command line winning."""
    out: dict[str, tuple[list[str] | None, bool]] = {}
    for key, (override, typed) in overrides_of(cfg).items():
        if override.is_interval_sweep():
            values = None  # a range a sweeper searches: no values to list
        elif override.is_sweep_override():
            values = [_norm(v) for v in override.sweep_string_iterator()]
        else:
            values = [_norm(override.get_value_element_as_str())]
        out[key] = (values, typed)
    return out


def check_grid(cfg: DictConfig) -> None:
    """Refuse (SweepFailed, exit 1, before any job) a nuisance grid the sweep does not expand
    as declared: a key not swept, a value outside the grid, or (in the study file itself) a
    grid value left out. A key `study.nuisance` names must be a config key."""
    declared = grid(cfg)
    if not declared:
        return
    swept = _swept(cfg)
    for key, values in declared.items():
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            raise SweepFailed(f"lenet5: study.nuisance names {key!r}, which is no config key")
        spelled = ",".join(values) or "V1,V2,..."
        if key not in swept:
            raise SweepFailed(
                f"lenet5: study.nuisance declares {key}: [{', '.join(values)}] but the sweep "
                f"does not expand {key}: add `{key}: {spelled}` under hydra.sweeper.params"
            )
        got, from_command_line = swept[key]
        if got is None:
            raise SweepFailed(
                f"lenet5: study.nuisance tunes {key} over a grid, but the sweep searches it "
                f"as a range: list its values instead, {key}={spelled} (a sweeper such as "
                "Optuna searches ranges in a sweep without a nuisance grid)"
            )
        if not values:
            continue
        outside = [v for v in got if v not in values]
        left_out = [v for v in values if v not in got]
        if outside or (left_out and not from_command_line):
            raise SweepFailed(
                f"lenet5: study.nuisance declares {key}: [{', '.join(values)}] but the sweep "
                f"expands {key}={','.join(got)}; make hydra.sweeper.params say `{key}: "
                f"{spelled}` (a subset on the command line scales the study down)"
            )


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """The run's own nuisance values as the tag `lenet5.nuisance` (JSON); {} without a grid."""
    keys = grid(cfg)
    if not keys:
        return {}
    values = {k: _norm(_value(cfg, k)) for k in keys}
    return {NUISANCE: json.dumps(values, sort_keys=True)}


def _value(cfg: DictConfig, key: str):
    """The run's value of `key`; for a config group (`optimizer`), the option's name."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, DictConfig):
        try:
            return HydraConfig.get().runtime.choices.get(key, "?")
        except ValueError:  # outside Hydra
            return "?"
    return value


def short(setting: str | None) -> str:
    """`lr=0.001` for the tag {"optimizer.lr": "0.001"}: the last part of each key."""
    if not setting:
        return "-"
    values = json.loads(setting)
    return ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items())
