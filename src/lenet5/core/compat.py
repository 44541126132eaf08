"""The module paths of the release before lenet5 became layered subpackages, still loadable
for one release, each with a one-line warning naming the new path.

Two things name them and must keep working: a user's option file (`_target_:
lenet5.pooling.TrainableSubsampling`, or the `_target_`s stored in a run's config.yaml that
`resume=` re-instantiates), and a model logged by that release, pickled with its classes'
module paths (`lenet5.network.LeNet5`). An old path resolves to a stand-in module whose
attributes are looked up, on first use, in the modules that hold them now.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

# old module (under lenet5.) -> the modules its names live in now, searched in order.
MOVED = {
    "activation": ("model.activation",),
    "pooling": ("model.pooling",),
    "connectivity": ("model.connectivity",),
    "head": ("model.head",),
    "loss": ("model.loss",),
    "init": ("model.init",),
    "modern": ("model.norm", "model.dropout"),
    "network": ("model.network",),
    "blocks": ("model.slots", "core.configs"),
    "sources": ("data.sources", "core.errors"),
    "torchvision_data": ("data.datasets",),
    "pixels": ("data.pixels",),
    "augment": ("data.augment",),
    "module": ("training.module",),
    "sdlm": ("training.sdlm",),
    "faults": ("training.callbacks",),
    "pictures": ("training.pictures",),
    "train": ("training.build", "cli.train"),
    "config": (
        "core.paths",
        "core.errors",
        "core.configs",
        "training.chunks",
        "training.validate",
    ),
    "store": ("tracking.stores", "core.paths", "core.errors"),
    "tracking": ("tracking.runs", "tracking.runinfo", "study.design"),
    "liveness": ("tracking.liveness",),
    "runinfo": ("tracking.runinfo",),
    "views": ("tracking.views",),
    "resume": ("tracking.resume",),
    "sweep": ("cli.sweep", "tracking.parent", "study.overrides", "core.errors"),
    "results": ("cli.record",),
    "predict": ("cli.predict", "cli.record"),
    "report.store": ("report.reading",),
    "report.nuisance": ("study.nuisance",),
    "report.cli": ("report.command",),
}
# Names that stayed in a package whose module moved beneath it: lenet5.data was a module.
MOVED_NAMES = {
    "data": {"DigitsDataModule": "data.datamodule", "TensorBatches": "data.datamodule"},
}


class OldPath(FutureWarning):
    """An old lenet5 module path was used; shown by default (a FutureWarning), once each."""


_warned: set[str] = set()


def warn(old: str, new: str) -> None:
    if old not in _warned:
        _warned.add(old)
        warnings.warn(
            f"{old} has moved to {new}; the old path works for this release only",
            OldPath,
            stacklevel=3,
        )


class _Moved(types.ModuleType):
    """Stands in for an old module: each attribute from the module that now holds it."""

    def __init__(self, name: str, homes: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved: see {', '.join('lenet5.' + h for h in homes)}.")
        self.__homes = [f"lenet5.{h}" for h in homes]

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        for home in self.__homes:
            module = importlib.import_module(home)
            if hasattr(module, attr):
                if len(self.__homes) == 1:
                    warn(self.__name__, home)
                else:
                    warn(f"{self.__name__}.{attr}", f"{home}.{attr}")
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers only for the old paths (after every other finder has found nothing)."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix("lenet5.")
        if fullname.startswith("lenet5.") and old in MOVED:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return _Moved(spec.name, MOVED[spec.name.removeprefix("lenet5.")])

    def exec_module(self, module):
        pass


def install() -> None:
    """Let the old paths import (idempotent). Called by `lenet5/__init__.py`: an old path
    can be met wherever lenet5 is imported, in a worker unpickling a model as well."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())


def moved_name(package: str, attr: str):
    """`package.attr` for a name that moved into a module of `package` (PEP 562 hook)."""
    home = MOVED_NAMES.get(package.removeprefix("lenet5."), {}).get(attr)
    if home is None:
        raise AttributeError(f"module {package!r} has no attribute {attr!r}")
    module = importlib.import_module(f"lenet5.{home}")
    warn(f"{package}.{attr}", f"{module.__name__}.{attr}")
    return getattr(module, attr)
