"""The `augment` group: the paper's distortions on training batches only, seeded."""

import pytest
import torch
from hydra.utils import instantiate

from lenet5.cli.train import compose
from lenet5.data.augment import RandomSqueeze
from lenet5.data.datamodule import DigitsDataModule


def digits():
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(60, 28, 28, dtype=torch.uint8)
    images[:, 8:20, 10:18] = torch.randint(100, 256, (60, 12, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (60,), generator=g)
    return images[:40], labels[:40], images[40:], labels[40:]


def datamodule(augment_choice: str, seed: int = 0) -> DigitsDataModule:
    cfg = compose([f"augment={augment_choice}"])
    transform = instantiate(cfg.data.augment) if cfg.data.augment else None
    dm = DigitsDataModule(digits, val_size=8, batch_size=16, seed=seed, augment=transform)
    dm.setup()
    return dm


def train_images(dm) -> torch.Tensor:
    return torch.cat([x for x, _ in dm.train_dataloader()])


def test_none_is_the_identity():
    dm = datamodule("none")
    assert dm.augment is None
    images, _ = dm.splits["train"]
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0 * 100_003))
    scale, shift = dm.normalize
    expected = images[order].float() * scale + shift
    torch.testing.assert_close(train_images(dm), expected)


def test_paper_distortions_keep_shape_and_dtype_and_change_the_images():
    plain, distorted = train_images(datamodule("none")), train_images(datamodule("paper"))
    assert distorted.shape == plain.shape == (32, 1, 32, 32)
    assert distorted.dtype == plain.dtype == torch.float32
    changed = (distorted - plain).abs().flatten(1).amax(1) > 0.1
    # ~9 images in 10 are distorted (the paper's 540,000 distorted of 600,000), the rest
    # served as they are (32 images: 28.8 expected, binomial sd 1.7)...
    assert 24 <= changed.sum() < 32
    torch.testing.assert_close(distorted[~changed], plain[~changed])
    assert distorted.min() >= -0.1 - 1e-5  # ...within the paper's pixel range
    assert distorted.max() <= 1.175 + 1e-5
    # borders stay background: the digit moved by a few pixels, not off the field
    assert (distorted[..., :2, :] == -0.1).float().mean() > 0.95


def test_seeded_same_twice_and_different_per_seed_and_per_image():
    a, b = train_images(datamodule("paper", seed=1)), train_images(datamodule("paper", seed=1))
    c = train_images(datamodule("paper", seed=2))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # one distortion per image, not one per batch: two copies of a digit differ
    dm = datamodule("paper")
    img = dm.splits["train"][0][:1].float()
    out = dm.train_dataloader()._distort(img.expand(8, -1, -1, -1), start=0)
    assert len({round(o.sum().item(), 2) for o in out}) == 8


def test_the_global_rng_is_left_alone():
    dm = datamodule("paper")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_images(dm)
    assert torch.equal(torch.rand(3), expected)


def test_val_and_test_batches_are_not_distorted():
    plain, distorted = datamodule("none"), datamodule("paper")
    for split in ("val_dataloader", "test_dataloader"):
        (xa, _), (xb, _) = (
            next(iter(getattr(plain, split)())),
            next(iter(getattr(distorted, split)())),
        )
        torch.testing.assert_close(xa, xb)


@pytest.mark.parametrize("s", [0.8, 1.25])
def test_squeeze_compresses_one_axis_and_elongates_the_other(s):
    image = torch.zeros(1, 32, 32)
    image[:, 12:20, 12:20] = 255.0  # an 8x8 square
    out = RandomSqueeze((s, s))(image)  # a range of one value: s itself
    ink = out[0] > 127
    width, height = ink.any(0).sum().item(), ink.any(1).sum().item()
    assert width == pytest.approx(8 * s, abs=1)
    assert height == pytest.approx(8 / s, abs=1)
