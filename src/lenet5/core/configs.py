"""Hydra and OmegaConf helpers shared by every layer: the resolvers conf/ uses, the `hydra`
node of a composition, names YAML misread, and the object a dotted path names."""

from __future__ import annotations

import importlib

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from lenet5.core.errors import ConfigError
from lenet5.core.paths import DEFAULT_TRACKING_URI, PROJECT_ROOT

RESOLVERS = {
    # `${project_root:}` anchors data and MLflow paths to the repo, not to a Hydra job's cwd.
    "project_root": lambda: str(PROJECT_ROOT),
    # mlflow.tracking_uri's default: the project's local store (lenet5.core.paths).
    "default_tracking_uri": lambda: DEFAULT_TRACKING_URI,
    # `${if_validating:${data.val_size},val/acc}`: a metric to monitor only where there is one.
    "if_validating": lambda n, metric: metric if n else None,
}


def register_resolvers() -> None:
    """Make conf/'s resolvers known to OmegaConf (idempotent); the commands call it before
    they compose or resolve a config."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def hydra_node(cfg: DictConfig | None) -> DictConfig | None:
    """The `hydra` node of the composition that made `cfg` (itself, or the registered one)."""
    if cfg is not None and "hydra" in cfg:
        return cfg.hydra
    return HydraConfig.get() if HydraConfig.initialized() else None


def locate(path: str):
    """The object a dotted path names; ImportError saying which part is not there (one line,
    where Hydra's `get_object` logs several)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and not module_name.startswith(e.name):
                raise ImportError(f"importing {module_name} failed: {e}") from e
            continue
        except Exception as e:  # the module exists but fails to import
            raise ImportError(f"importing {module_name} failed: {type(e).__name__}: {e}") from e
        for j, attr in enumerate(parts[i:], start=i):
            if not hasattr(obj, attr):
                raise ImportError(f"{'.'.join(parts[:j])} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module named {parts[0]!r}")


# Settings that are names, as MLflow shows them: the experiment, the study, and the tag names
# and levels a study compares (tag values themselves are option names, which Hydra keeps as
# text). null is study.name's default: not a study.
NAME_KEYS = ("mlflow.experiment_name", "study.name", "study.factors", "study.baseline")
NULL_MEANS_UNSET = ("study.name",)


def _typed(overrides: list[str]) -> dict[str, str]:
    """key -> the text typed after `=`, for each command-line override."""
    typed = {}
    for override in overrides:
        key, sep, text = override.partition("=")
        if sep and not key.startswith("~"):
            typed[key.lstrip("+")] = text
    return typed


def names_as_typed(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """Put back, as the text the user typed, a name that YAML read as something else.

    `mlflow.experiment_name=2026` reaches the config as the int 2026 (`nan` a float, `true` a
    bool, `null` None), and MLflow then fails on it far from the cause. A name given on the
    command line (`overrides`; by default the composition's own, `hydra.overrides.task`)
    becomes its text exactly as typed; a name set in a file, whose text is gone by then, is
    refused, naming the key and how to quote it. Returns `cfg`, changed in place.
    """
    if overrides is None:
        hc = hydra_node(cfg)
        overrides = list(hc.overrides.task) if hc is not None else []
    typed = _typed(overrides)

    def text_of(key: str, value: object) -> str | None:
        if isinstance(value, str) or (value is None and key in NULL_MEANS_UNSET):
            return None  # already text, or null where null means unset
        text = typed.get(key)
        if text is not None:
            return str(value) if text.startswith("${") else text  # an interpolation: its value
        kind = "null" if value is None else type(value).__name__
        raise ConfigError(
            f"{key}: YAML reads the name {value!r} as {kind}, not as text: quote it in the "
            f"file that sets it ('{value}'), or set it on the command line"
        )

    with read_write(cfg), open_dict(cfg):
        for key in NAME_KEYS:
            node = OmegaConf.select(cfg, key)
            if OmegaConf.is_dict(node) or OmegaConf.is_list(node):  # names inside: tag levels
                is_dict = OmegaConf.is_dict(node)
                for k, value in list(node.items() if is_dict else enumerate(node)):
                    if is_dict and not isinstance(k, str):
                        raise ConfigError(f"{key}: the tag name {k!r} is not text: quote it")
                    text = text_of(f"{key}.{k}" if is_dict else f"{key}[{k}]", value)
                    if text is not None:
                        node[k] = text
            elif (text := text_of(key, node)) is not None:
                OmegaConf.update(cfg, key, text)
    if not cfg.mlflow.experiment_name.strip():
        raise ConfigError("mlflow.experiment_name is empty: name the experiment, e.g. lenet5")
    return cfg
