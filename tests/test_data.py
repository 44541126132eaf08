"""Data loading: shapes, normalization, splits, and clear errors when data is missing or bad."""

from pathlib import Path

import pytest
import torch

from lenet5.core.errors import DataError
from lenet5.data.datamodule import DigitsDataModule
from lenet5.data.sources import load_mnist, load_mnist_subset


def subset_module(**kw) -> DigitsDataModule:
    dm = DigitsDataModule(load_mnist_subset, val_size=500, **kw)
    dm.setup()
    return dm


def test_subset_splits_are_disjoint_deterministic_and_padded():
    dm = subset_module()
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    x = dm.splits["train"][0]
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 32, 32)
    assert x[:, :, :2].max() == 0 and x[:, :, :, -2:].max() == 0  # 2px blank border
    again = subset_module()
    assert torch.equal(again.splits["val"][1], dm.splits["val"][1])
    rows = lambda s: {tuple(r.flatten().tolist()) for r in dm.splits[s][0][:200]}  # noqa: E731
    assert not rows("train") & rows("test")


def test_paper_normalization_maps_background_and_ink():
    dm = subset_module(normalize="paper", batch_size=4096)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.min().item() == pytest.approx(-0.1)
    assert x.max().item() == pytest.approx(1.175)
    std = subset_module(normalize="standard", batch_size=4096)
    xs, _ = next(iter(std.train_dataloader()))
    assert abs(xs.mean().item()) < 0.2 and 0.8 < xs.std().item() < 1.2


def test_batches_cover_the_epoch_and_reshuffle_per_epoch():
    dm = subset_module(batch_size=64, chunk_size=64)
    loader = dm.train_dataloader()
    ys = torch.cat([y for _, y in loader])
    assert len(loader) == 55 and len(ys) == 3500
    chunks = subset_module(batch_size=64, chunk_size=1024).train_dataloader()  # 16 batches
    assert [len(y) for _, y in chunks] == [1024, 1024, 1024, 428]
    assert torch.equal(ys.sort().values, dm.splits["train"][1].sort().values)
    epoch = [0]
    loader.epoch = lambda: epoch[0]
    first = next(iter(loader))[1]
    assert torch.equal(first, next(iter(loader))[1])  # same epoch, same order
    epoch[0] = 1
    assert not torch.equal(first, next(iter(loader))[1])


def test_fewer_classes_and_rgb_shaped_input():
    dm = subset_module(num_classes=2, channels=3, batch_size=16, chunk_size=16)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and set(y.tolist()) <= {0, 1}


def test_absent_data_offline_names_the_path_and_the_ways_out(tmp_path):
    with pytest.raises(DataError) as err:
        load_mnist(str(tmp_path / "nowhere"), download=False)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    assert "data.root=" in msg and "data=mnist_subset" in msg


def test_truncated_idx_file_is_named(tmp_path, mnist_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in Path(mnist_root, "MNIST", "raw").iterdir():
        (raw / f.name).symlink_to(f)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    good = Path(mnist_root, "MNIST", "raw", "t10k-labels-idx1-ubyte").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(good[:5000])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is corrupt or truncated"):
        load_mnist(str(tmp_path), download=False)


def test_full_mnist_loads(mnist_root):
    train_x, _, test_x, test_y = load_mnist(mnist_root, download=False)
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert torch.bincount(test_y).tolist()[:2] == [980, 1135]


def test_the_paper_map_is_the_one_every_earlier_run_used():
    assert subset_module(normalize="paper").normalize == (1.275 / 255.0, -0.1)


def test_standard_normalization_computed_on_mnist_is_the_familiar_one(mnist_root):
    from lenet5.data.pixels import normalization

    train_x, _, _, _ = load_mnist(mnist_root, download=False)
    scale, shift = normalization("standard", train_x.unsqueeze(1))
    mean, std = -shift / scale / 255, 1 / (scale * 255)  # in 0..1 units
    assert (round(mean, 4), round(std, 4)) == (0.1307, 0.3081)
