"""lenet5-predict: digit images and IDX files in, class and probabilities out."""

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lenet5.cli.predict import PredictError, main, read_idx, read_image, to_mnist

PREDICT = shutil.which("lenet5-predict", path=str(Path(sys.executable).parent))


def idx_bytes(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return b"\0\0\x08\x03" + np.array([n, h, w], ">u4").tobytes() + images.tobytes()


def test_idx_files_plain_and_gzipped(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), images)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), images)
    (tmp_path / "short").write_bytes(idx_bytes(images)[:-10])
    with pytest.raises(PredictError, match=r"IDX header says \(2, 28, 28\)"):
        read_idx(tmp_path / "short")


def test_hand_drawn_image_becomes_an_mnist_digit(tmp_path):
    from PIL import Image

    # Dark ink on white, 300x200, off centre: a thick vertical bar.
    canvas = np.full((300, 200), 255, np.uint8)
    canvas[40:200, 20:60] = 0
    Image.fromarray(canvas).save(tmp_path / "bar.jpg")
    digit = to_mnist(read_image(tmp_path / "bar.jpg"))
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    rows, cols = np.nonzero(digit > 128)
    assert rows.max() - rows.min() + 1 == pytest.approx(20, abs=1)  # fits the 20x20 box
    assert abs(rows.mean() - 13.5) < 1.5 and abs(cols.mean() - 13.5) < 1.5  # centred
    assert digit[0, 0] == 0  # ink bright, background dark, as in MNIST


def test_a_file_that_is_not_an_image_is_refused_by_name(tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not a picture")
    code = main([str(tmp_path / "notes.png"), "--run", "0" * 32])
    assert code == 2
    err = capsys.readouterr().err
    assert "notes.png is not an image lenet5-predict can read (PNG, JPEG)" in err
    assert main([str(tmp_path / "absent.png"), "--run", "x"]) == 2
    assert "absent.png: no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_predicts_real_mnist_test_digits_from_png_files(
    quick, new_store, tmp_path, mnist_root, capsys
):
    """A run's logged model, used from the shell on PNG files of MNIST's own test digits,
    gives the same classes as the same digits in an IDX file, and mostly the right ones."""
    from PIL import Image

    from lenet5.cli.train import run

    store = new_store(tmp_path)
    whole = "++trainer.limit_train_batches=1.0"  # whole epochs: a model that reads digits
    run([*quick, *store, "model=modern", "trainer.max_epochs=3", "mlflow.log_model=true", whole])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (rec,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    raw = Path(mnist_root, "MNIST/raw")
    digits = read_idx(raw / "t10k-images-idx3-ubyte")[:20]
    labels = np.frombuffer((raw / "t10k-labels-idx1-ubyte").read_bytes()[8:], np.uint8)[:20]
    files = []
    for i, d in enumerate(digits):
        files.append(tmp_path / f"digit{i}.png")
        Image.fromarray(d).save(files[-1])
    (tmp_path / "not_an_image.png").write_bytes(b"\x89PNG broken")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run(
        [PREDICT, *map(str, files), "--run", rec.info.run_id, "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 20
    predicted = [int(line.split(": ")[1].split()[0]) for line in lines]
    probs = [float(line.split("(p=")[1].split(")")[0]) for line in lines]
    assert all(0.1 <= p <= 1 for p in probs)
    assert sum(p == y for p, y in zip(predicted, labels, strict=True)) >= 18
    # The same digits through the IDX reader: the same classes.
    (tmp_path / "t-idx3-ubyte").write_bytes(idx_bytes(digits))
    capsys.readouterr()  # what training printed
    assert (
        main([str(tmp_path / "t-idx3-ubyte"), "--run", rec.info.run_id, "--tracking-uri", uri]) == 0
    )
    from_idx = [
        int(line.split(": ")[1].split()[0]) for line in capsys.readouterr().out.splitlines()
    ]
    assert from_idx == predicted
    # The same model registered (what lenet5-report --register does), used by its name.
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.register_model(f"runs:/{rec.info.run_id}/model", "digits")
    files_arg = [str(f) for f in files[:3]]
    assert main([*files_arg, "--model", "digits", "--tracking-uri", uri]) == 0
    by_name = [int(line.split(": ")[1].split()[0]) for line in capsys.readouterr().out.splitlines()]
    assert by_name == predicted[:3]
    bad = subprocess.run(
        [
            PREDICT,
            str(tmp_path / "not_an_image.png"),
            "--run",
            rec.info.run_id,
            "--tracking-uri",
            uri,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "not_an_image.png is not an image" in bad.stderr
