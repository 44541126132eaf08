"""The network's slots: what each config group that names a block must name, in which forms.

An option file names its block by `_target_`, in whichever form a Hydra user writes:
- a class: `_target_: torch.nn.GELU`, with or without arguments (`negative_slope: 0.1`);
- the same with `_partial_: true`;
- a factory: a function that returns the block, with or without arguments of its own.
The network builds a layer per use (an activation after each of C1, C3, C5, F6, two pools,
a norm per conv), so every form is turned into one thing, `factory(node, slot)`: a callable
that takes the slot's own arguments (`in_features=84`, `channels=6`, ...) on top of the
file's, builds the block and checks that it is one (Hydra alone would build the class once,
and the network would then call that module as if it made modules).

`check` refuses, before torch trains anything or any MLflow run opens, a `_target_` that
cannot be imported or that is not what its slot takes, naming the option file, the target and
what the slot expects. A factory's result can only be checked once it is called: the network
is built before any run opens, so a wrong one is refused there, with the same message.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lenet5.core.configs import hydra_node, locate
from lenet5.core.errors import ConfigError


@dataclass(frozen=True)
class Slot:
    """A place in the network (or its training) that a config group fills."""

    group: str  # the config group, e.g. "model/activation"; its node is model.activation
    expects: str  # what the slot takes, for the messages
    module: bool = True  # builds a torch.nn.Module (init: a function applied to the network)
    optional: bool = False  # null leaves the layer out (norm, dropout)

    @property
    def key(self) -> str:
        return self.group.replace("/", ".")


# torch is imported where a target is checked or built: validation refuses a bad value
# before torch loads (lenet5.training.validate).
_MODULE = "a torch.nn.Module class or a function that returns a Module"
SLOTS = {
    slot.group: slot
    for slot in (
        Slot("model/activation", f"{_MODULE}, built with no arguments (e.g. torch.nn.GELU)"),
        Slot(
            "model/pooling",
            f"{_MODULE}, built with channels= and activation= where it takes them "
            "(e.g. torch.nn.MaxPool2d with kernel_size: 2)",
        ),
        Slot(
            "model/connectivity",
            f"{_MODULE}, built with in_channels=, out_channels=, kernel_size= "
            "(e.g. torch.nn.Conv2d)",
        ),
        Slot(
            "model/head",
            f"{_MODULE}, built with in_features=, out_features= (e.g. torch.nn.Linear)",
        ),
        Slot(
            "model/norm",
            f"{_MODULE}, built with num_features= (or num_channels=) for 4-D conv maps and "
            "for F6's 2-D output (e.g. lenet5.model.norm.BatchNorm), or null for none",
            optional=True,
        ),
        Slot(
            "model/dropout",
            f"{_MODULE}, built with no arguments (e.g. lenet5.model.dropout.Dropout with p: 0.5), "
            "or null for none",
            optional=True,
        ),
        Slot(
            "model/loss", f"{_MODULE}, called on (scores, targets) (e.g. torch.nn.CrossEntropyLoss)"
        ),
        Slot(
            "model/init",
            "a function that takes the network and initializes it (e.g. lenet5.model.init.paper_uniform)",
            module=False,
        ),
    )
}


# The network's blocks, by their key in `model` (the slots a LeNet5 is built from).
LAYERS = ("activation", "pooling", "connectivity", "head", "norm", "dropout")


def where(group: str, cfg: DictConfig | None = None) -> str:
    """`group=option (the option file)`, and the command-line overrides that changed its
    node: where to look for what an error names."""
    hc = hydra_node(cfg)
    if hc is None:
        return group
    option = hc.runtime.choices.get(group)
    text = f"{group}={option}"
    for source in hc.runtime.config_sources if option else ():
        path = Path(source.path, group, f"{option}.yaml")
        if source.schema == "file" and path.is_file():
            text += f" ({path})"
            break
    key = group.replace("/", ".")
    touched = [o for o in hc.overrides.task if o.lstrip("+~").startswith(f"{key}.")]
    return text + (f", overridden by {' '.join(touched)}" if touched else "")


def _refuse(slot: Slot, target: object, problem: str, cfg: DictConfig | None) -> ConfigError:
    return ConfigError(
        f"{where(slot.group, cfg)}: _target_ {target} {problem}; {slot.group} takes {slot.expects}"
    )


def resolve(slot: Slot, node: object, cfg: DictConfig | None = None):
    """The class or function that `node` (the slot's config) names, or None where an optional
    slot is null; ConfigError, naming the option file, for one the slot cannot take."""
    if node is None and slot.optional:
        return None
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if target is None:
        raise _refuse(slot, None, "is missing (the node has no _target_)", cfg)
    try:
        obj = locate(str(target))
    except ImportError as e:
        raise _refuse(slot, target, f"cannot be imported ({e})", cfg) from e
    if inspect.isclass(obj):
        from torch import nn

        if slot.module and not issubclass(obj, nn.Module):
            raise _refuse(slot, target, "is a class but not a torch.nn.Module", cfg)
    elif not callable(obj):
        raise _refuse(slot, target, f"is a {type(obj).__name__}, not a class or function", cfg)
    return obj


def check(cfg: DictConfig) -> dict[str, object]:
    """Every slot's target resolved (group -> class or function), or ConfigError."""
    return {
        group: resolve(slot, OmegaConf.select(cfg, slot.key), cfg) for group, slot in SLOTS.items()
    }


class Factory:
    """A slot's block builder: the file's arguments, plus the slot's, then the check that
    what came out is a Module. Its signature is the target's, so the network can tell which
    optional arguments (a pool's `channels`, a norm's `num_features`) it takes."""

    def __init__(self, make, slot: Slot, target: str, where: str):
        self.make, self.slot, self.target, self.where = make, slot, target, where
        # no readable signature: offered arguments all go in (`accepted`)
        with contextlib.suppress(TypeError, ValueError):
            self.__signature__ = inspect.signature(make)

    def __call__(self, *args, **kwargs):
        from torch import nn

        try:
            block = self.make(*args, **kwargs)
        except ConfigError:
            raise
        except Exception as e:  # a constructor's own refusal, or arguments it does not take
            given = ", ".join(
                [*map(_short, args), *(f"{k}={_short(v)}" for k, v in kwargs.items())]
            )
            raise ConfigError(
                f"{self.where}: _target_ {self.target} failed to build with ({given}): "
                f"{type(e).__name__}: {e}; {self.slot.group} takes {self.slot.expects}"
            ) from e
        if self.slot.module and not isinstance(block, nn.Module):
            raise ConfigError(
                f"{self.where}: _target_ {self.target} returned a {type(block).__name__}, not a "
                f"torch.nn.Module; {self.slot.group} takes {self.slot.expects}"
            )
        return block

    def __repr__(self) -> str:
        return f"Factory({self.target} for {self.slot.group})"


def _short(value: object) -> str:
    from torch import nn

    return f"<{type(value).__name__}>" if isinstance(value, nn.Module) else repr(value)


def factory(node: DictConfig | None, group: str) -> Factory | None:
    """The builder for `group`'s block from its config `node`, whatever the form of its option
    file (None where an optional slot is null). Hydra's `_partial_=True` turns a class, a
    partial and a factory alike into "call me with the slot's arguments"; nested `_target_`s
    are built as usual."""
    slot = SLOTS[group]
    if resolve(slot, node) is None:
        return None
    from hydra.utils import instantiate

    return Factory(instantiate(node, _partial_=True), slot, node._target_, where(group))


def accepted(make, **offered) -> dict:
    """The offered keyword arguments that `make` takes (all where it takes **kwargs or its
    signature cannot be read)."""
    try:
        params = inspect.signature(make).parameters.values()
    except (TypeError, ValueError):
        return offered
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return offered
    names = {p.name for p in params}
    return {k: v for k, v in offered.items() if k in names}
