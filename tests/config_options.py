"""Every option of every config group, for the tests that try each one (on CPU and GPU)."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import tiny_datasets

from lenet5.core.paths import CONF_DIR, EXPERIMENTS_DIR


def all_options() -> list[tuple[str, str]]:
    """(group, option) for every option file of every group under conf/, studies included."""
    options = [
        (str(path.parent.relative_to(CONF_DIR)), path.stem)
        for path in CONF_DIR.rglob("*.yaml")
        if path.parent != CONF_DIR
    ]
    options += [("experiment", path.stem) for path in EXPERIMENTS_DIR.glob("*.yaml")]
    return sorted(set(options))


@functools.cache
def tiny_root() -> Path:
    """Tiny copies of the shipped data sets that need files (tests/tiny_datasets.py), written
    once per process, on first use, and removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="lenet5-tiny-data-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return tiny_datasets.write_all(root)


class Companions(dict):
    """Overrides an option needs to train: losses pair with a head; a data set that needs
    files reads a tiny copy of them (MNIST itself: $LENET5_DATA_DIR, as the GPU check sets);
    everything else composes onto the default config as it is."""

    def get(self, key, default=None):
        group, option = key
        if group == "data" and option in tiny_datasets.SHIPPED:
            return tiny_datasets.overrides(option, tiny_root())
        return super().get(key, default)


COMPANIONS = Companions(
    {
        ("model/loss", "cross_entropy"): ["model/head=softmax"],
        ("model/loss", "mle"): ["model/head=rbf"],
        ("model/loss", "map"): ["model/head=rbf"],
    }
)
