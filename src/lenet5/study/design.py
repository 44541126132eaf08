"""The design choices as a study names them: each Hydra config group's choice becomes an
MLflow tag (and a short param) that the UI groups by and `lenet5-report` compares."""

from lenet5.core.names import SEED

# Hydra choice names -> MLflow tag names (the design choices the UI groups and filters by).
CHOICE_TAGS = {
    "model": "preset",
    "model/activation": "activation",
    "model/pooling": "pooling",
    "model/connectivity": "connectivity",
    "model/head": "head",
    "model/loss": "loss",
    "model/init": "init",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "data": "data",
    "augment": "augment",
    "recipe": "recipe",
    "model/norm": "norm",
    "model/dropout": "dropout",
}


def tags_for(choices: dict[str, str | None], seed: int) -> dict[str, str]:
    """A run's design-choice tags (`activation=relu`, ...) and its seed, from Hydra's
    runtime choices."""
    tags = {tag: str(choices[group]) for group, tag in CHOICE_TAGS.items() if group in choices}
    tags[SEED] = str(seed)
    return tags
