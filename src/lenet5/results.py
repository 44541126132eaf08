"""What a run records once it is tested: its final metrics (once, at step 0), the data as
dataset inputs, its pictures and its best model, each switchable in `mlflow` of the config
(`mlflow.pictures`, `mlflow.log_model`)."""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig

log = logging.getLogger("lenet5")


def best_val_acc(trainer) -> float | None:
    """The best validation accuracy: the checkpoint's monitored score where it is val/acc,
    else the last one logged (None without validation)."""
    best = trainer.checkpoint_callback
    if best is not None and best.monitor == "val/acc" and best.best_model_score is not None:
        return float(best.best_model_score)
    value = trainer.callback_metrics.get("val/acc")
    return None if value is None else float(value)


def record(run, cfg: DictConfig, trainer, module, datamodule, result: dict) -> dict[str, float]:
    """Log what the UI shows of a tested run; returns the seconds each part took."""
    from lenet5 import runinfo

    spent: dict[str, float] = {}
    t = time.perf_counter()
    info = run.client.get_run(run.run_id)
    runinfo.log_final(run.client, run.run_id, result, best_val_acc(trainer))
    if run.resume_from is None:  # a resumed run has them already
        source = cfg.data.get("root") or cfg.data.get("source", {}).get("_target_") or "lenet5"
        data = info.data.tags.get("data", "data")
        runinfo.log_datasets(run.client, run.run_id, datamodule, data, str(source))
    spent["final+datasets"] = time.perf_counter() - t
    if cfg.mlflow.get("pictures", True):
        from lenet5 import pictures

        t = time.perf_counter()
        pictures.log_pictures(run.client, run.run_id, module, info.info.run_name)
        spent["pictures"] = time.perf_counter() - t
    if cfg.mlflow.get("log_model", True):
        from lenet5 import predict

        t = time.perf_counter()
        predict.log_model(run, module.model, datamodule)
        spent["model"] = time.perf_counter() - t
    log.info("recorded: %s", ", ".join(f"{k} {v:.2f} s" for k, v in spent.items()))
    return spent
