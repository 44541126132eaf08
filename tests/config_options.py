"""Every option of every config group, for the tests that try each one (on CPU and GPU)."""

from lenet5.config import CONF_DIR, EXPERIMENTS_DIR


def all_options() -> list[tuple[str, str]]:
    """(group, option) for every option file of every group under conf/, studies included."""
    options = [
        (str(path.parent.relative_to(CONF_DIR)), path.stem)
        for path in CONF_DIR.rglob("*.yaml")
        if path.parent != CONF_DIR
    ]
    options += [("experiment", path.stem) for path in EXPERIMENTS_DIR.glob("*.yaml")]
    return sorted(set(options))


# Losses pair with a head; everything else composes onto the default config as it is.
COMPANIONS = {
    ("model/loss", "cross_entropy"): ["model/head=softmax"],
    ("model/loss", "mle"): ["model/head=rbf"],
    ("model/loss", "map"): ["model/head=rbf"],
}
