"""What a run records once it is tested: its final metrics (once, at step 0), the data as
dataset inputs, its training cost in FLOPs, its per-example test predictions, its pictures
and its best network as an MLflow model (`lenet5-predict` reads it); pictures and model are
switchable in `mlflow` of the config (`mlflow.pictures`, `mlflow.log_model`)."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from lenet5.core.names import FINAL_TRAIN_FLOPS, FLOPS_PER_SAMPLE, MODEL_NAME, VAL_ACC
from lenet5.tracking import runinfo

log = logging.getLogger("lenet5")
# MLflow, torch and matplotlib are imported where a run is recorded: lenet5-train imports
# this module before it has checked the config, which must answer before they load.


def best_val_acc(trainer) -> float | None:
    """The best validation accuracy: the checkpoint's monitored score where it is val/acc,
    else the last one logged (None without validation)."""
    best = trainer.checkpoint_callback
    if best is not None and best.monitor == VAL_ACC and best.best_model_score is not None:
        return float(best.best_model_score)
    value = trainer.callback_metrics.get(VAL_ACC)
    return None if value is None else float(value)


class WarmUp:
    """The part of recording that needs no result of the run, started in a thread beside the
    run's test (`warm_up`): loading matplotlib and MLflow's model flavour, MLflow's map of
    installed packages, which `log_model` scans to check the requirements given (~0.3-1 s: it
    reads every installed distribution's file list), and the data's dataset inputs (their
    digests hash the images). `record` waits for it; the work is the same, no longer after
    the test."""

    def __init__(self, work: list[Callable[[], object]]):
        self.results: dict[str, object] = {}
        self.thread = threading.Thread(
            target=self._run, args=(work,), name="lenet5-record-warm-up", daemon=True
        )
        self.thread.start()

    def _run(self, work) -> None:
        for step in work:
            try:
                self.results[step.__name__] = step()
            except Exception:  # the same work is done again, and fails loudly, where needed
                log.debug("record warm-up: %s failed", step.__name__, exc_info=True)

    def wait(self) -> dict[str, object]:
        self.thread.join()
        return self.results


def data_source(cfg: DictConfig) -> str:
    return str(cfg.data.get("root") or cfg.data.get("source", {}).get("_target_") or "lenet5")


def warm_up(cfg: DictConfig, run=None, datamodule=None, module=None) -> WarmUp | None:
    """Start the `WarmUp` of what `cfg` records (with `run`, `datamodule` and the fitted
    `module`: its dataset inputs, for a run not resumed, and its learning curves too); None
    where nothing recorded needs it."""
    work = []
    # The store is read in the calling thread; the thread only computes and draws.
    info = run.client.get_run(run.run_id) if run is not None else None
    if info is not None and datamodule is not None and run.resume_from is None:
        data = info.data.tags.get("data", "data")

        def datasets():
            return runinfo.dataset_inputs(datamodule, data, data_source(cfg))

        work.append(datasets)
    if cfg.mlflow.get("pictures", True):
        work.append(_load_pictures)
        if info is not None and module is not None:
            histories = metric_histories(run.client, run.run_id)

            def pictures():  # the learning curves, drawn while the test runs
                from lenet5.training.pictures import draw_fitted

                folder = tempfile.TemporaryDirectory(prefix="lenet5-pictures-")
                draw_fitted(Path(folder.name), module, histories, info.info.run_name)
                return folder  # removed when record has logged it (or at exit)

            work.append(pictures)
    if cfg.mlflow.get("log_model", True):
        work.append(_load_model_logging)
    return WarmUp(work) if work else None


def _load_pictures() -> None:
    import io

    from matplotlib.figure import Figure

    from lenet5.training import pictures  # noqa: F401

    fig = Figure(figsize=(1, 1))  # a first text drawn loads the font: done here, once
    fig.text(0.5, 0.5, "0")
    fig.savefig(io.BytesIO(), format="png", dpi=10)


def _load_model_logging() -> None:
    import mlflow.models.utils
    import mlflow.pytorch  # noqa: F401
    from mlflow.models import infer_signature  # noqa: F401
    from mlflow.utils import requirements_utils

    # MLflow's own lazily built map (private; where a release renames it, log_model builds it).
    prime = getattr(requirements_utils, "_init_packages_to_modules_map", None)
    if prime is not None and getattr(requirements_utils, "_PACKAGES_TO_MODULES", 0) is None:
        prime()


def record(
    run,
    cfg: DictConfig,
    trainer,
    module,
    datamodule,
    result: dict,
    warm: WarmUp | None = None,
) -> dict[str, float]:
    """Log what the UI shows of a tested run (once `warm`, started by `warm_up`, has
    finished); returns the seconds each part took."""
    spent: dict[str, float] = {}
    t = time.perf_counter()
    ready = {}
    if warm is not None:
        ready = warm.wait()
        spent["warm-up wait"] = time.perf_counter() - t
        t = time.perf_counter()
    info = run.client.get_run(run.run_id)
    runinfo.log_final(run.client, run.run_id, result, best_val_acc(trainer))
    if run.resume_from is None:  # a resumed run has them already
        data = info.data.tags.get("data", "data")
        inputs = ready.get("datasets")  # None: made here
        runinfo.log_datasets(run.client, run.run_id, datamodule, data, data_source(cfg), inputs)
    spent["final+datasets"] = time.perf_counter() - t
    t = time.perf_counter()
    log_cost(run.client, run.run_id, module, datamodule)
    log_predictions(run.client, run.run_id, module)
    spent["cost+predictions"] = time.perf_counter() - t
    if cfg.mlflow.get("pictures", True):
        t = time.perf_counter()
        log_pictures(run.client, run.run_id, module, info.info.run_name, ready.get("pictures"))
        spent["pictures"] = time.perf_counter() - t
    if cfg.mlflow.get("log_model", True):
        t = time.perf_counter()
        log_model(run, module.model, datamodule)
        spent["model"] = time.perf_counter() - t
    log.info("recorded: %s", ", ".join(f"{k} {v:.2f} s" for k, v in spent.items()))
    return spent


def log_cost(client, run_id: str, module, datamodule) -> tuple[int, int]:
    """The training cost as metrics: FLOPs per sample (torch's counter, on 2 test images)
    and times the samples trained on. Returns both."""
    from mlflow.entities import Metric

    from lenet5.training.flops import flops_per_sample

    device = next(module.model.parameters()).device
    x, y = _test_batch(datamodule)
    per = flops_per_sample(module.model, module.loss, x.to(device), y.to(device))
    total = per * module.samples_trained
    now = int(time.time() * 1000)
    metrics = [Metric(FLOPS_PER_SAMPLE, per, now, 0), Metric(FINAL_TRAIN_FLOPS, total, now, 0)]
    client.log_batch(run_id, metrics=metrics)
    return per, total


def log_predictions(client, run_id: str, module) -> str:
    """Every test example's true and predicted class, in the test set's order, as
    predictions/test.csv (index,target,predicted,correct): the per-example evidence."""
    import torch

    predicted, target = torch.cat(module.predicted), torch.cat(module.targets)
    rows = zip(target.tolist(), predicted.tolist(), strict=True)
    lines = ["index,target,predicted,correct"]
    lines += [f"{i},{t},{p},{int(t == p)}" for i, (t, p) in enumerate(rows)]
    client.log_text(run_id, "\n".join(lines) + "\n", "predictions/test.csv")
    return "predictions/test.csv"


def metric_histories(client, run_id: str) -> dict[str, list]:
    from lenet5.training.pictures import CURVES

    return {k: client.get_metric_history(run_id, k) for pair in CURVES for k in pair}


def log_pictures(client, run_id: str, module, name: str, fitted=None) -> list[str]:
    """Draw and log the pictures of a tested module; returns their artifact paths. `fitted`:
    a temporary folder holding the pictures the fit alone decides, drawn beforehand."""
    # matplotlib and torch: loaded where pictures are asked for (mlflow.pictures).
    from lenet5.training import pictures

    with fitted or tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = pictures.draw_tested(folder, module, name)
        if fitted is None:
            files += pictures.draw_fitted(folder, module, metric_histories(client, run_id), name)
        else:
            files += [f for f in folder.iterdir() if f not in files]
        client.log_artifacts(run_id, tmp, "pictures")
    return [f"pictures/{f.name}" for f in files]


def _test_batch(datamodule, rows: int = 2):
    """The first `rows` test images as the network sees them (normalized) and their labels."""
    x, y = next(iter(datamodule.test_dataloader()))
    return x[:rows], y[:rows]


def _example(datamodule, rows: int = 2) -> np.ndarray:
    """`rows` test images as the network sees them (normalized, float32)."""
    return _test_batch(datamodule, rows)[0].detach().cpu().float().numpy()


def preprocessing(datamodule) -> dict:
    """How raw images become the network's input, kept in the model's metadata."""
    scale, shift = (
        np.asarray(v.cpu() if hasattr(v, "cpu") else v, float) for v in datamodule.normalize
    )
    return {
        "size": int(datamodule.size),
        "fit": str(datamodule.fit),
        "channels": int(datamodule.channels),
        "scale": scale.tolist(),
        "shift": shift.tolist(),
        "num_classes": int(datamodule.num_classes),
    }


def log_model(run, model, datamodule, registered_model_name: str | None = None) -> str:
    """Log `model` (the best checkpoint's weights, as the test used them) as the MLflow model
    `model` of the run: a signature, an input example of 2 rows, explicit requirements
    (inferring them costs ~10 s)."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    model = model.cpu().eval()
    example = _example(datamodule)
    with torch.no_grad():
        scores = model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(run.tracking_uri)
    # Pickled, not torch.export's pt2: ~0.1 s a run in a warm process against ~1 s (and 0.9
    # against ~2 s cold); loading it needs the lenet5 package, which lenet5-predict is. The
    # warning about pickle's trust (a model from one's own store) is said here once instead.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    # A fluent run around the call (log_model links the model to the active run); leaving it
    # marks the run FINISHED, which tracked_run then confirms or overrides.
    with mlflow.start_run(run_id=run.run_id):
        info = mlflow.pytorch.log_model(
            model,
            name=MODEL_NAME,
            signature=infer_signature(example, scores),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
            metadata={"lenet5": preprocessing(datamodule)},
            serialization_format="pickle",
            registered_model_name=registered_model_name,
        )
    return info.model_uri
