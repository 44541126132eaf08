"""The images as preloaded uint8 tensors, batched by indexing (`lenet5.data.sources` reads them).

The images are loaded once, padded (or, with `fit: resize`, resized) to `size` x `size` (the
paper centres the 28x28 digits in a 32x32 field, sec. III-A), turned grey or kept RGB as
`channels` says, and kept as uint8; each batch is gathered by index and normalized on the
fly, by an affine map computed once for the data (`normalization`). This avoids the per-sample PIL transforms of the usual
`Dataset` + `DataLoader` path, which halve throughput for a network this small.

Training data is served as *chunks* of `chunk_size` samples: one Lightning step per chunk,
and the module makes one update per `batch_size` samples inside it (per sample for the
paper's batch_size=1), so Lightning's per-step cost (~1.5 ms on a CPU core: logging, progress
bar, loop hooks) is paid once per chunk, not once per update. How large a chunk is, is
decided once, by `lenet5.training.chunks.chunk_size` (~1024 samples by default, 128 per-sample
updates): with one update per Lightning step, a batch-64 run was 0.69x as fast as a bare
PyTorch loop, with chunks 0.97x (benchmarks/results/throughput.md).

The paper's distortions (sec. III-B, fig. 7: random planar affine transforms) are an `augment`
transform applied to each training image separately, seeded per chunk from the run's seed.

On a GPU the tensors move to the device once, when the trainer sets the datamodule up:
batches are then gathered, normalized and distorted there, with no host-to-device copy per
step. On the CPU nothing moves.
"""

import math
from collections.abc import Callable, Iterator

import pytorch_lightning as pl
import torch

from lenet5.core.errors import DataError
from lenet5.data.pixels import FITS, NORMALIZATIONS, fitted, grey_or_rgb, normalization
from lenet5.data.sources import Splits


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
            order = torch.randperm(n, generator=g).to(self.images.device)  # one copy per pass
        else:
            order = torch.arange(n, device=self.images.device)
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
    """Train / val / test splits of an image source, as preloaded tensors.

    `source` returns (train images, train labels, test images, test labels) as uint8
    (N, H, W) or (N, C, H, W) and int64, read from `root` where given (`data.root`); the
    validation set is carved from the training images with a fixed `split_seed`, the test set
    is the source's own. `num_classes`: the first that many classes (None: all of the data's,
    known once it is loaded). `fit`: `pad` centres smaller images in the `size` x `size` field
    (the paper's way), `resize` scales them to it.

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
        num_classes: int | None = 10,
        split_seed: int = 0,
        seed: int = 0,
        chunk_size: int | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        fit: str = "pad",
    ):
        super().__init__()
        for key, value, valid in (("normalize", normalize, NORMALIZATIONS), ("fit", fit, FITS)):
            if value not in valid:
                raise ValueError(f"data.{key}={value!r}: choose one of {', '.join(valid)}")
        # Samples per training step; more than batch_size means several updates per step.
        chunk_size = chunk_size or batch_size
        if chunk_size % batch_size:
            raise ValueError(
                f"data.chunk_size={chunk_size} must be a multiple of data.batch_size={batch_size}"
            )
        self.source, self.root, self.val_size = source, root, val_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.chunk_size, self.augment = chunk_size, augment
        self.normalization, self.fit = normalize, fit
        self.normalize: tuple | None = None  # (scale, shift), computed for the data by setup()
        self.size, self.channels, self.num_classes = size, channels, num_classes
        self.split_seed, self.seed = split_seed, seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _classes(self, train_y: torch.Tensor, test_y: torch.Tensor) -> None:
        """Settle `num_classes` against the data's labels 0..K-1: all K where it is None."""
        if min(int(train_y.min()), int(test_y.min())) < 0:
            raise DataError("the data has negative labels: labels must be classes 0..K-1")
        found = max(int(train_y.max()), int(test_y.max())) + 1
        if self.num_classes is None:
            self.num_classes = found
        elif self.num_classes > found:
            raise DataError(
                f"data.num_classes={self.num_classes}, but the data's labels are 0..{found - 1} "
                f"({found} classes): set data.num_classes=null (all of them) or at most {found} "
                "(the first ones)"
            )

    def _prepare(self, images: torch.Tensor, labels: torch.Tensor, train: bool = False):
        keep = labels < self.num_classes  # fewer classes keeps the classes 0..num_classes-1
        if not bool(keep.all()):  # no copy when every image is kept: a 47 MB peak for MNIST
            images, labels = images[keep], labels[keep]
        images = grey_or_rgb(images if images.dim() == 4 else images.unsqueeze(1), self.channels)
        if train:  # computed on the training images as stored, before padding
            self.normalize = normalization(self.normalization, images)
        return fitted(images, self.size, self.fit).contiguous(), labels.contiguous()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:  # loaded once, shared by fit and test
            self._load()
        # On a GPU the uint8 images live there (72 MB for MNIST at 32x32): batches are gathered,
        # normalized and distorted on the device, with no host-to-device copy per step.
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is not None and self.splits["train"][0].device != device:
            self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}
            self.normalize = tuple(
                v.to(device) if isinstance(v, torch.Tensor) else v for v in self.normalize
            )

    def _load(self) -> None:
        splits = self.source() if self.root is None else self.source(root=self.root)
        train_x, train_y, test_x, test_y = splits
        self._classes(train_y, test_y)
        train_x, train_y = self._prepare(train_x, train_y, train=True)
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
        idx = torch.randperm(len(labels), generator=g)[:n].to(labels.device)
        x = images[idx].float().mul_(self.normalize[0]).add_(self.normalize[1])
        return x.expand(-1, self.channels, -1, -1), labels[idx]

    def val_dataloader(self) -> TensorBatches | list:
        return self._batches("val", self.eval_batch_size) if self.val_size else []

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size)
