"""torchvision's image-classification data sets as preloaded uint8 tensors, by class name.

torchvision's classes differ in where their files live and how they hold their images (a
uint8 tensor (N, H, W) for the MNIST family, a NumPy array (N, H, W, 3) for CIFAR, (N, 3, H, W)
for SVHN, (N, 8) label records for QMNIST); each also serves one sample at a time through
`__getitem__`, the same way for all. `to_tensors` takes the arrays directly where the class
holds them (one copy, no per-image work), after checking a few samples against what
`__getitem__` serves; any other class is read one sample at a time. Nothing here is specific
to one data set: a new torchvision data set is one YAML file under conf/data/.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lenet5.core.configs import locate  # quiet: Hydra's get_object logs an error first
from lenet5.core.errors import ConfigError, DataError

# torchvision is imported in the functions that read its data sets: the shipped
# subset, the first command and most tests, need none of it.


def dataset_class(name: str) -> type:
    """`name`: a class of torchvision.datasets (FashionMNIST) or a dotted path to one."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name, None)
    if cls is None and "." in name:
        try:
            cls = locate(name)
        except ImportError:
            cls = None
    if not isinstance(cls, type):
        raise ConfigError(
            f"data.source.dataset={name!r} is not a class of torchvision.datasets (e.g. "
            "FashionMNIST, KMNIST, QMNIST, EMNIST, CIFAR10, SVHN, USPS) nor the dotted path of "
            "one: check its spelling"
        )
    return cls


def _resource_names(cls: type) -> list[str]:
    """The file names of an MNIST-family class's own `resources` (list, or QMNIST's dict)."""
    resources = cls.__dict__.get("resources")  # EMNIST inherits MNIST's list: not its files
    if resources is None:
        return []
    if isinstance(resources, dict):
        resources = [r for key in ("train", "test") for r in resources.get(key, [])]
    return [os.path.basename(url) for url, _ in resources]


def expected_files(cls: type, root: Path) -> tuple[Path, list[str]]:
    """Where `cls` looks for its files under `root` (torchvision's layout) and, where the
    class says, their names."""
    if isinstance(getattr(cls, "raw_folder", None), property):  # MNIST family: root/Name/raw
        return root / cls.__name__ / "raw", [os.path.splitext(n)[0] for n in _resource_names(cls)]
    if hasattr(cls, "base_folder") and hasattr(cls, "train_list"):  # CIFAR
        files = [name for name, _ in [*cls.train_list, *cls.test_list]]
        meta = getattr(cls, "meta", {}).get("filename")
        return root / cls.base_folder, files + ([meta] if meta else [])
    if isinstance(getattr(cls, "split_list", None), dict):  # SVHN, USPS: files in root
        return root, [entry[1] for entry in cls.split_list.values()]
    return root, []


def extract_archives(cls: type, folder: Path) -> None:
    """Unpack the .gz/.xz archives that torchvision downloads into an MNIST-family raw folder
    when only the archive is there (fetched by hand), as its own download would."""
    from torchvision.datasets.utils import extract_archive

    for archive in _resource_names(cls):
        unpacked = folder / os.path.splitext(archive)[0]
        if (folder / archive).is_file() and not unpacked.exists():
            extract_archive(str(folder / archive), str(folder))


def to_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, C, H, W), labels int64 (N,)) of a torchvision data set whose
    transform is PILToTensor."""
    arrays = _held_arrays(dataset)
    if arrays is not None and _serves_the_same(dataset, *arrays):
        return arrays
    return _sample_by_sample(dataset)


def _held_arrays(dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The images and labels the class holds in memory, in (N, C, H, W) layout, or None."""
    data = getattr(dataset, "data", None)
    labels = getattr(dataset, "targets", getattr(dataset, "labels", None))
    if data is None or labels is None:
        return None
    try:
        x, y = torch.as_tensor(data), torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        return None
    if x.dtype != torch.uint8 or len(x) != len(y) or x.dim() not in (3, 4) or y.dim() > 2:
        return None
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (N, H, W, C), as CIFAR holds it
        x = x.permute(0, 3, 1, 2)
    if y.dim() == 2:  # QMNIST's records: the class first, then writer and index information
        y = y[:, 0]
    return x.contiguous(), y.long()


def _serves_the_same(dataset, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether the held arrays, as read, are what `__getitem__` serves (first, middle, last)."""
    for i in sorted({0, len(y) // 2, len(y) - 1}) if len(y) else []:
        image, label = dataset[i]
        if not (
            isinstance(image, torch.Tensor)
            and image.shape == x[i].shape
            and torch.equal(image, x[i])
            and _label(label) == int(y[i])
        ):
            return False
    return True


def _label(label) -> int | None:
    try:
        return int(label)
    except (TypeError, ValueError):
        return None


def _sample_by_sample(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        if _label(label) is None:
            raise DataError(
                f"{type(dataset).__name__} serves labels like {label!r}, not class numbers: "
                "it is not an image-classification data set"
            )
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{type(dataset).__name__} has images of different sizes ({tuple(images[0].shape)}"
                f" and {tuple(image.shape)}, sample {i}): data sets of one image size only"
            )
        images.append(image)
        labels.append(_label(label))
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)
