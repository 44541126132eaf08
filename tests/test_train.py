"""A training run leaves a complete, truthful record in the MLflow store."""

import shutil
import sys
from pathlib import Path

import pytest
import torch

from lenet5.cli.train import run
from lenet5.model.head import digit_bitmaps

DESIGN_TAGS = ("activation", "pooling", "connectivity", "head", "init", "optimizer", "data")


def only_run(client, experiment="test"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


def artifact_paths(client, run_id, path=None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_run_is_recorded_with_params_tags_metrics_and_artifacts(quick, store, client, tmp_path):
    error = run([*quick, *store, "seed=3", "mlflow.pictures=true"])
    rec = only_run(client)
    assert rec.info.status == "FINISHED"
    # The preset, the design choices the command line set, the seed.
    assert rec.info.run_name == "paper\u00b7data=mnist_subset\u00b7s3"
    tags = rec.data.tags
    assert {t: tags[t] for t in DESIGN_TAGS} == {
        "activation": "scaled_tanh",
        "pooling": "subsampling",
        "connectivity": "sparse",
        "head": "rbf",
        "init": "paper",
        "optimizer": "adam",
        "data": "mnist_subset",
    }
    params = rec.data.params
    assert params["optimizer.lr"] == "0.001"
    assert params["model.pooling._target_"] == "lenet5.model.pooling.TrainableSubsampling"
    assert params["seed"] == "3" and params["trainer.max_epochs"] == "1"
    assert params["mlflow.tracking_uri"] == f"sqlite:///{tmp_path}/mlflow.db"  # resolved
    m = rec.data.metrics
    assert m["n_params"] == 60_000
    for key in ("train/loss", "val/loss", "val/acc", "test/acc", "test/error"):
        assert key in m
    assert m["test/error"] == pytest.approx(1 - m["test/acc"]) == pytest.approx(error)
    class_acc = [m[f"test_class/acc_{k}"] for k in range(10)]
    assert all(0 <= a <= 1 for a in class_acc)
    assert min(class_acc) <= m["test/acc"] <= max(class_acc)
    assert {
        "config.yaml",
        "overrides.yaml",
        "checkpoints/best.ckpt",
        "pictures/rbf_prototypes.png",  # the RBF head's fixed 7x12 bitmaps
        "pictures/confusion_matrix.png",
    } <= artifact_paths(client, rec.info.run_id)
    overrides = Path(rec.info.artifact_uri.removeprefix("file://"), "overrides.yaml").read_text()
    assert "seed=3" in overrides


def test_every_run_records_its_test_predictions_and_its_training_flops(quick, new_store, tmp_path):
    """predictions/test.csv: every test digit in order, its true and predicted class, right
    or not (their mean is the test accuracy); FLOPs per sample from torch's counter, between
    2x and 4x the forward pass's multiply-adds counted by hand, times the 1,024 samples of
    the run's one step. The paper's sparse C3 is computed as a dense kernel: same cost as
    full C3."""
    import csv

    from mlflow.tracking import MlflowClient

    records = {}
    for name, extra in (("paper", []), ("full", ["model/connectivity=full"])):
        store = new_store(tmp_path / name)
        error = run([*quick, *store, *extra])
        client = MlflowClient(tracking_uri=store[0].split("=", 1)[1])
        rec = only_run(client)
        local = client.download_artifacts(rec.info.run_id, "predictions/test.csv", str(tmp_path))
        with open(local) as f:
            rows = list(csv.DictReader(f))
        records[name] = rec.data.metrics
        assert [int(r["index"]) for r in rows] == list(range(1_000))  # the subset's test digits
        assert {int(r["target"]) for r in rows} == set(range(10))
        assert all(r["correct"] == str(int(r["target"] == r["predicted"])) for r in rows)
        right = sum(int(r["correct"]) for r in rows) / len(rows)
        assert right == pytest.approx(1 - error, abs=1e-6)
    per = records["paper"]["flops_per_sample"]
    # Forward multiply-adds x 2: C1 28x28x6x25, C3 10x10x16x150 (dense), C5 120x400, F6 84x120.
    forward = 2 * (28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 120 * 400 + 84 * 120)
    assert 2 * forward < per < 4 * forward
    assert records["paper"]["final/train_flops"] == per * 1_024
    assert records["full"]["flops_per_sample"] == per


def test_run_carries_what_the_ui_shows(quick, store, client, caplog):
    """Short params per design choice, final metrics once at step 0 (rounded), MLflow's own
    context tags, a dirty-tree flag, dataset inputs, a description, a colour, the pictures
    and a logged model that predicts; the log says where the run's seconds went."""
    import numpy as np

    from lenet5.core.stages import parse

    extras = ["mlflow.pictures=true", "mlflow.log_model=true"]  # whatever `quick` says
    with caplog.at_level("INFO", logger="lenet5"):
        error = run([*quick, *store, "model=modern", "model/pooling=avg", "seed=1", *extras])
    stages = parse(caplog.text)
    assert list(stages) == [
        "python+hydra",
        "config+torch",
        "lightning import",
        "data",
        "mlflow import",
        "store",
        "lightning setup",
        "train",
        "test",
        "record",
        "end run",
    ]
    assert all(v >= 0 for v in stages.values()) and stages["train"] > 0
    assert "recorded: warm-up wait" in caplog.text and "pictures" in caplog.text
    rec = only_run(client)
    assert rec.info.run_name == "modern\u00b7data=mnist_subset\u00b7pool=avg\u00b7s1"
    params, tags, run_id = rec.data.params, rec.data.tags, rec.info.run_id
    assert {k: params[k] for k in ("preset", "activation", "pooling", "head", "seed")} == {
        "preset": "modern",
        "activation": "relu",
        "pooling": "avg",
        "head": "softmax",
        "seed": "1",
    }
    for key, value in (("final/test_error", error), ("final/test_acc", 1 - error)):
        (point,) = client.get_metric_history(run_id, key)
        assert point.step == 0 and point.value == pytest.approx(value, abs=1e-6)
        assert point.value == round(point.value, 6)
    (val,) = client.get_metric_history(run_id, "final/val_acc")
    assert 0 < val.value <= 1 and val.step == 0
    assert not any(k.startswith("test/acc_class") for k in rec.data.metrics)
    # Context: MLflow's own tags (user, entry point, the checkout's commit), and ours.
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] == sys.argv[0]  # the entry point (pytest's, or xdist's -c)
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert tags["lenet5.git_dirty"] in ("true", "false")
    assert tags["mlflow.runColor"] == "#29335c"
    note = tags["mlflow.note.content"]
    assert note.startswith("LeNet-5 (modern preset): relu activation, avg pooling")
    assert "seed 1" in note and "\n" not in note.split(".")[0]
    contexts = {i.tags[0].value: i.dataset for i in rec.inputs.dataset_inputs if i.tags}
    assert set(contexts) == {"training", "validation", "test"}
    assert all(d.name == "mnist_subset" and len(d.digest) == 8 for d in contexts.values())
    assert '"features_shape": [1000, 1, 32, 32]' in contexts["test"].profile
    pictures = {f.path for f in client.list_artifacts(run_id, "pictures")}
    assert pictures == {
        f"pictures/{n}.png"
        for n in ("confusion_matrix", "misclassified", "learning_curves", "c1_filters")
    }
    # The logged model: the test's weights, a signature, loads and predicts a batch of 3.
    import mlflow.pyfunc

    mlflow.set_tracking_uri(client.tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert model.metadata.signature is not None
    assert model.predict(np.zeros((3, 1, 32, 32), np.float32)).shape == (3, 10)


def test_rbf_centres_unchanged_by_training(quick, store, client):
    run([*quick, *store, "optimizer.lr=0.01"])
    rec = only_run(client)
    ckpt = Path(rec.info.artifact_uri.removeprefix("file://"), "checkpoints/best.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(state["model.head.centres"], digit_bitmaps())
    assert not any(k.startswith("model.head.") and k != "model.head.centres" for k in state)


def test_exception_ends_the_run_failed_with_its_reason(quick, store, client):
    # A Trainer argument Lightning refuses: raised after the run was opened.
    with pytest.raises(Exception, match="limit_train_batches"):
        run([*quick, *store, "++trainer.limit_train_batches=-1"])
    rec = only_run(client)
    assert rec.info.status == "FAILED"
    assert "limit_train_batches" in rec.data.tags["failure_reason"]


def test_gradient_clipping_trains_one_batch_per_step(quick, store, client):
    # Lightning clips only under automatic optimization: the default chunks give way to it.
    run([*quick, *store, "+trainer.gradient_clip_val=0.5", "+trainer.max_steps=5"])
    rec = only_run(client)
    assert rec.info.status == "FINISHED"
    assert rec.data.params["trainer.gradient_clip_val"] == "0.5"
    history = client.get_metric_history(rec.info.run_id, "train/loss")
    assert max(m.step for m in history) <= 4  # logged per Lightning step = per update here


def test_new_activation_by_config_file_alone(quick, store, client, tmp_path):
    extra = tmp_path / "extra_conf"
    (extra / "model/activation").mkdir(parents=True)
    (extra / "model/activation/gelu.yaml").write_text("_target_: torch.nn.GELU\n_partial_: true\n")
    run([*quick, *store, f"hydra.searchpath=[file://{extra}]", "model/activation=gelu"])
    rec = only_run(client)
    assert rec.info.status == "FINISHED"
    assert rec.data.tags["activation"] == "gelu"
    assert rec.data.params["model.activation._target_"] == "torch.nn.GELU"


@pytest.mark.slow
def test_cli_runs_and_records(quick, tmp_path, lenet5_train):
    """The shell command itself, on a store it creates: the one smoke test of the entry point
    as installed (the sweeps' subprocesses in tests/test_sweep.py are the others)."""
    uri = f"sqlite:///{tmp_path}/cli.db"
    proc = lenet5_train(
        *quick,
        "model=modern",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_root={tmp_path}/art",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    rec = only_run(MlflowClient(uri), "lenet5")
    assert rec.info.status == "FINISHED" and rec.data.tags["head"] == "softmax"
    assert rec.data.metrics["n_params"] == 61_706  # modern LeNet-5: full C3 + linear head
    if shutil.which("srun"):  # Slurm installed (CI installs it): no hint to launch with srun
        assert "srun" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
def test_system_metrics_when_asked(quick, store, client):
    """mlflow.system_metrics=true: MLflow's CPU and memory charts of the run (psutil, which
    the dev extra installs), sampled every 2 s while a run of a few seconds trains."""
    pytest.importorskip("psutil", reason="psutil: pip install -e .[system] (.ci/run installs it)")
    whole = "++trainer.limit_train_batches=1.0"  # whole epochs: a run of a few seconds
    run([*quick, *store, "trainer.max_epochs=8", "mlflow.system_metrics=true", whole])
    rec = only_run(client)
    assert rec.info.status == "FINISHED"
    cpu = client.get_metric_history(rec.info.run_id, "system/cpu_utilization_percentage")
    memory = client.get_metric_history(rec.info.run_id, "system/system_memory_usage_megabytes")
    assert cpu and memory and all(0 <= m.value <= 100 * 64 for m in cpu)
    assert all(m.value > 0 for m in memory)
