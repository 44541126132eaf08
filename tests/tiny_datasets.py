"""Tiny data sets in each shipped data set's real on-disk format, where torchvision looks for
them under a root, for the tests that read them through torchvision's own classes.

- MNIST family (FashionMNIST, KMNIST, EMNIST): IDX files (magic 0x0803 images, 0x0801
  labels), gzipped as the mirrors serve them, under <root>/<Name>/raw/;
- QMNIST: IDX images and its int32 (N, 8) label records (magic 0x0C02; the class first), .gz;
- CIFAR-10: the pickled batches data_batch_1..5, test_batch and batches.meta under
  <root>/cifar-10-batches-py/. torchvision checks each file's MD5 against the real ones, so
  `TinyCIFAR10`, torchvision's CIFAR10 with the tiny files' checksums (nothing else changed),
  reads them: `data.source.dataset=tiny_datasets.TinyCIFAR10`.

Every image carries its class as a bright square whose place depends on the class. Each
writer returns what it wrote, (train images, train labels, test images, test labels), the
images (N, H, W) or (N, 3, H, W), for a test to check each pixel and label that comes back.
"""

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10

N_TRAIN, N_TEST = 60, 20
# The shipped options that read these (data=<option>), and the overrides that point them here.
SHIPPED = ("fashion_mnist", "kmnist", "qmnist", "cifar10")


def labels_of(n: int, classes: int = 10, offset: int = 0) -> np.ndarray:
    return (np.arange(n) + offset) % classes


def images_of(labels: np.ndarray, side: int = 28, channels: int | None = None) -> np.ndarray:
    """uint8 images (N, side, side) or (N, side, side, channels): faint noise and a bright 4x4
    square at a place given by the class."""
    g = np.random.default_rng(len(labels) + side)
    shape = (len(labels), side, side) + ((channels,) if channels else ())
    images = g.integers(0, 40, shape, dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = 2 + 4 * (int(label) % 5), 2 + 8 * (int(label) // 5 % 3)
        images[i, row : row + 4, col : col + 4] = 250
    return images


def idx(array: np.ndarray) -> bytes:
    """The IDX encoding: 2 zero bytes, a type code, the dimension count, the dimensions as
    big-endian int32, then the data big-endian."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(folder: Path, name: str, data: bytes, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if gz:
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
    else:
        (folder / name).write_bytes(data)


def write_mnist_family(root: Path, name: str, gz: bool = True, prefix: str = "", classes=10):
    """<root>/<name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (`prefix` for
    EMNIST's emnist-<split>-{train,test}-... names)."""
    raw = root / name / "raw"
    splits = {"train": N_TRAIN, "test" if prefix else "t10k": N_TEST}
    out = []
    for split, n in splits.items():
        labels = labels_of(n, classes, offset=3 if n == N_TEST else 0)
        images = images_of(labels)
        write(raw, f"{prefix}{split}-images-idx3-ubyte", idx(images), gz)
        write(raw, f"{prefix}{split}-labels-idx1-ubyte", idx(labels.astype(np.uint8)), gz)
        out += [images, labels]
    return tuple(out)


def write_qmnist(root: Path, gz: bool = True):
    raw = root / "QMNIST" / "raw"
    out = []
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        labels = labels_of(n, offset=3 if split == "test" else 0)
        records = np.zeros((n, 8), dtype=np.int32)  # class, NIST series, writer, index, ...
        records[:, 0], records[:, 2], records[:, 5] = labels, 100 + np.arange(n), np.arange(n)
        images = images_of(labels)
        write(raw, f"qmnist-{split}-images-idx3-ubyte", idx(images), gz)
        write(raw, f"qmnist-{split}-labels-idx2-int", idx(records), gz)
        out += [images, labels]
    return tuple(out)


class TinyCIFAR10(CIFAR10):
    """torchvision's CIFAR10, checking the tiny files' MD5s (set by `write_cifar10`)."""


def write_cifar10(root: Path):
    """<root>/cifar-10-batches-py/, as in the real tar: 5 training batches, one test batch, the
    meta file; each batch a pickled dict with 'data' (N, 3072: R, G, B planes of 32x32 rows)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = labels_of(N_TRAIN)
    test = labels_of(N_TEST, offset=3)
    per_batch = N_TRAIN // 5
    batches = {f"data_batch_{b + 1}": train[b * per_batch : (b + 1) * per_batch] for b in range(5)}
    batches["test_batch"] = test
    sums, images = {}, {}
    for name, labels in batches.items():
        images[name] = images_of(labels, side=32, channels=3).transpose(0, 3, 1, 2)  # R, G, B
        rows = images[name].reshape(len(labels), 3072)
        entry = {"batch_label": name, "labels": labels.tolist(), "data": rows}
        entry["filenames"] = [f"{name}_{i}.png" for i in range(len(labels))]
        sums[name] = _dump(folder / name, entry)
    meta = {"label_names": [f"class{k}" for k in range(10)], "num_cases_per_batch": per_batch}
    meta_md5 = _dump(folder / "batches.meta", meta)
    TinyCIFAR10.train_list = [
        [f"data_batch_{b + 1}", sums[f"data_batch_{b + 1}"]] for b in range(5)
    ]
    TinyCIFAR10.test_list = [["test_batch", sums["test_batch"]]]
    TinyCIFAR10.meta = {**CIFAR10.meta, "md5": meta_md5}
    train_x = np.concatenate([images[f"data_batch_{b + 1}"] for b in range(5)])
    return train_x, train, images["test_batch"], test


def _dump(path: Path, obj) -> str:
    data = pickle.dumps(obj, protocol=2)
    path.write_bytes(data)
    return hashlib.md5(data).hexdigest()


def write_all(root: Path) -> Path:
    """Every shipped data set, tiny, under `root`; returns root."""
    write_mnist_family(root, "FashionMNIST")
    write_mnist_family(root, "KMNIST")
    write_qmnist(root)
    write_cifar10(root)
    return root


def overrides(option: str, root: Path) -> list[str]:
    """What points data=<option> at the tiny copy under `root`."""
    extra = ["data.source.dataset=tiny_datasets.TinyCIFAR10"] if option == "cifar10" else []
    return [f"data.root={root}", "data.val_size=10", "data.source.download=false", *extra]
