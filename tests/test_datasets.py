"""Data sets by config: torchvision's classes read tiny files written in each data set's real
on-disk format (tests/tiny_datasets.py); a new data set is one YAML file."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import tiny_datasets as tiny
import torch
from hydra.utils import instantiate

from lenet5.cli.train import compose, run
from lenet5.core.errors import ConfigError, DataError
from lenet5.data.datamodule import DigitsDataModule
from lenet5.data.sources import load_mnist, load_torchvision
from lenet5.training.validate import validate

WRITERS = {
    "fashion_mnist": lambda root: tiny.write_mnist_family(root, "FashionMNIST"),
    "kmnist": lambda root: tiny.write_mnist_family(root, "KMNIST"),
    "qmnist": tiny.write_qmnist,
    "cifar10": tiny.write_cifar10,
}


def datamodule(option: str, root: Path, *overrides: str) -> DigitsDataModule:
    cfg = compose([f"data={option}", *tiny.overrides(option, root), *overrides])
    validate(cfg)
    dm = instantiate(cfg.data, seed=0)
    dm.setup()
    return dm


@pytest.mark.parametrize("option", tiny.SHIPPED)
def test_each_shipped_data_set_reads_torchvisions_layout(option, tmp_path):
    _, train_y, test_x, test_y = WRITERS[option](tmp_path)
    dm = datamodule(option, tmp_path)
    channels = 3 if option == "cifar10" else 1
    assert dm.num_classes == 10
    x, y = dm.splits["test"]  # the test split keeps the files' order
    assert x.dtype == torch.uint8 and x.shape == (tiny.N_TEST, channels, 32, 32)
    assert y.tolist() == test_y.tolist()
    stored = torch.from_numpy(test_x).view(tiny.N_TEST, channels, *test_x.shape[-2:])
    pad = (32 - stored.shape[-1]) // 2  # 28x28 centred in 32x32, as the paper's digits
    assert torch.equal(x[:, :, pad : 32 - pad, pad : 32 - pad], stored)
    assert x[:, :, :pad].sum() == 0 and x[:, :, :, 32 - pad :].sum() == 0
    sizes = [len(dm.splits[s][1]) for s in ("train", "val")]
    assert sizes == [tiny.N_TRAIN - 10, 10]
    all_train = torch.cat([dm.splits["train"][1], dm.splits["val"][1]])
    assert sorted(all_train.tolist()) == sorted(train_y.tolist())
    batch, _ = next(iter(dm.train_dataloader()))
    assert batch.shape[1:] == (channels, 32, 32) and batch.dtype == torch.float32


def test_qmnist_takes_the_class_from_its_label_records(tmp_path):
    _, train_y, _, test_y = tiny.write_qmnist(tmp_path)
    _, y, _, ty = load_torchvision(
        str(tmp_path), "QMNIST", False, train={"what": "train"}, test={"what": "test"}
    )
    assert y.tolist() == train_y.tolist() and ty.tolist() == test_y.tolist()


def test_gzipped_files_alone_are_unpacked_as_torchvisions_download_would(tmp_path):
    tiny.write_mnist_family(tmp_path, "KMNIST", gz=True)
    raw = tmp_path / "KMNIST" / "raw"
    assert sorted(p.suffix for p in raw.iterdir()) == [".gz"] * 4
    train_x, _, _, _ = load_torchvision(str(tmp_path), "KMNIST", download=False)
    unpacked = raw / "train-images-idx3-ubyte"
    assert unpacked.read_bytes() == gzip.decompress(
        (raw / "train-images-idx3-ubyte.gz").read_bytes()
    )
    assert train_x.shape == (tiny.N_TRAIN, 1, 28, 28)
    # unpacked files alone (as in ../shared/datasets) read the same
    for archive in raw.glob("*.gz"):
        archive.unlink()
    assert torch.equal(load_torchvision(str(tmp_path), "KMNIST", download=False)[0], train_x)


def test_the_generic_reader_gives_mnist_exactly_as_the_mnist_reader(mnist_root):
    generic = load_torchvision(mnist_root, "MNIST", download=False)
    for a, b in zip(generic, load_mnist(mnist_root, download=False), strict=True):
        assert torch.equal(a.view(b.shape), b)


@pytest.mark.parametrize(
    ("dataset", "folder", "files"),
    [
        ("FashionMNIST", "FashionMNIST/raw", "train-images-idx3-ubyte, train-labels-idx1-ubyte"),
        ("QMNIST", "QMNIST/raw", "qmnist-train-images-idx3-ubyte, qmnist-train-labels-idx2-int"),
        ("CIFAR10", "cifar-10-batches-py", "data_batch_1, data_batch_2"),
    ],
)
def test_absent_data_offline_names_the_folder_and_the_files(dataset, folder, files, tmp_path):
    with pytest.raises(DataError) as err:
        load_torchvision(str(tmp_path / "nowhere"), dataset, download=False)
    message = str(err.value)
    assert f"not found or damaged under {tmp_path / 'nowhere' / folder}: expected " in message
    assert files in message
    assert "data.root=" in message and "data=mnist_subset" in message and "\n" not in message


def test_a_truncated_file_is_named_as_damaged(tmp_path):
    tiny.write_mnist_family(tmp_path, "FashionMNIST", gz=False)
    labels = tmp_path / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:4])  # a header cut short
    with pytest.raises(DataError, match=r"cannot read FashionMNIST \(train=True\) from .*raw"):
        load_torchvision(str(tmp_path), "FashionMNIST", download=False)


def test_a_misspelt_data_set_is_refused_by_name(tmp_path):
    with pytest.raises(
        ConfigError, match=r"data\.source\.dataset='FashionMnist' is not a class of"
    ):
        load_torchvision(str(tmp_path), "FashionMnist")


def test_a_shipped_data_set_trains_end_to_end(store, client, tmp_path):
    tiny.write_all(tmp_path / "data")
    quick = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    for option in ("fashion_mnist", "cifar10"):
        run([*quick, *store, f"data={option}", *tiny.overrides(option, tmp_path / "data")])
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    by_data = {r.data.tags["data"]: r for r in runs}
    assert {d: r.info.status for d, r in by_data.items()} == {
        "fashion_mnist": "FINISHED",
        "cifar10": "FINISHED",
    }
    # C1 sees 3 maps on RGB input: 2 x 6 x 25 more weights than on grey
    assert by_data["cifar10"].data.metrics["n_params"] == 60_000 + 300
    assert by_data["fashion_mnist"].data.metrics["n_params"] == 60_000


EMNIST_FILE = """# EMNIST balanced: 47 classes of handwritten digits and letters, MNIST's format.
_target_: lenet5.data.datamodule.DigitsDataModule
source:
  _target_: lenet5.data.sources.load_torchvision
  _partial_: true
  dataset: EMNIST
  options: {split: balanced}
  download: false
root: %s
val_size: 10
batch_size: 64
eval_batch_size: 1000
normalize: paper
size: 32
channels: 1
num_classes: null  # all of the data's
split_seed: 0
"""


def emnist_option(tmp_path: Path) -> list[str]:
    """A data set the project does not ship, as one YAML file outside the repo."""
    # as torchvision leaves EMNIST: its gzip.zip unpacked, the .gz files removed
    tiny.write_mnist_family(
        tmp_path / "data", "EMNIST", gz=False, prefix="emnist-balanced-", classes=47
    )
    (tmp_path / "conf/data").mkdir(parents=True)
    (tmp_path / "conf/data/emnist.yaml").write_text(EMNIST_FILE % (tmp_path / "data"))
    return [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "data=emnist"]


def test_a_new_data_set_is_one_yaml_file_and_its_classes_follow_the_data(store, client, tmp_path):
    option = emnist_option(tmp_path)
    quick = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    run([*quick, *store, *option, "model=modern"])
    (rec,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert rec.info.status == "FINISHED" and rec.data.tags["data"] == "emnist"
    # 47 classes, from the data: the head's 37 units more than for 10, 85 parameters each
    assert rec.data.metrics["n_params"] == 61_706 + 37 * 85


def test_the_rbf_heads_ten_bitmaps_are_checked_against_the_datas_classes(store, client, tmp_path):
    with pytest.raises(ConfigError, match="cannot serve 47 classes: use model/head=softmax"):
        run(["trainer.max_epochs=1", *store, *emnist_option(tmp_path), "model=paper"])
    assert client.get_experiment_by_name("test") is None  # no run opened, nor its experiment


def digits(labels: list[int], channels: int | None = None, side: int = 28):
    x = torch.from_numpy(tiny.images_of(np.array(labels), side=side, channels=channels))
    return (x.permute(0, 3, 1, 2) if channels else x), torch.tensor(labels)


def test_more_classes_than_the_data_has_is_refused():
    source = lambda: (*digits(list(range(10)) * 2), *digits(list(range(10))))  # noqa: E731
    dm = DigitsDataModule(source, val_size=2, num_classes=12)
    with pytest.raises(DataError, match=r"data.num_classes=12, but the data's labels are 0..9"):
        dm.setup()


def test_rgb_turns_grey_and_larger_images_are_resized():
    source = lambda: (*digits([0, 1] * 8, 3, 48), *digits([0, 1], 3, 48))  # noqa: E731
    dm = DigitsDataModule(source, val_size=2, channels=1, fit="resize", num_classes=None)
    dm.setup()
    x, _ = dm.splits["test"]
    assert x.shape == (2, 1, 32, 32) and dm.num_classes == 2
    with pytest.raises(DataError, match=r"data\.size=32 is smaller than the 48x48 images"):
        DigitsDataModule(source, val_size=2, channels=3, num_classes=None).setup()


def test_normalization_is_computed_for_the_data():
    ink_on_white = lambda: tuple(  # noqa: E731
        255 - t if t.dtype == torch.uint8 else t for t in (*digits([0, 1] * 8), *digits([0, 1]))
    )
    dm = DigitsDataModule(ink_on_white, val_size=2, normalize="paper", num_classes=2)
    dm.setup()
    assert dm.normalize == pytest.approx((-1.275 / 255, 1.175))  # white -> -0.1, black -> 1.175
    rgb = lambda: (*digits([0, 1] * 8, 3, 32), *digits([0, 1], 3, 32))  # noqa: E731
    dm = DigitsDataModule(
        rgb, val_size=0, channels=3, normalize="standard", batch_size=16, num_classes=2
    )
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
