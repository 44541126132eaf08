"""The images: where they come from (`sources`, `datasets`), how they are fitted to the
network (`pixels`), distorted (`augment`) and served as preloaded tensors (`datamodule`)."""

from lenet5.core.compat import moved_name


def __getattr__(attr: str):
    # lenet5.data.DigitsDataModule: the module lenet5.data of the previous release.
    return moved_name(__name__, attr)
