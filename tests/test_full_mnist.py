"""Real-data checks on the full MNIST (skipped where ../shared/datasets or LENET5_DATA_DIR is absent)."""

import pytest

from lenet5.cli.train import run


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["modern", "paper"])
def test_preset_reaches_98_percent_in_3_epochs(preset, mnist_root, store, client):
    error = run(
        [
            f"model={preset}",
            "data=mnist",
            f"data.root={mnist_root}",
            "trainer.max_epochs=3",
            "trainer.enable_progress_bar=false",
            *store,
        ]
    )
    rec = client.search_runs([client.get_experiment_by_name("test").experiment_id])[0]
    assert rec.info.status == "FINISHED"
    assert rec.data.metrics["test/error"] == pytest.approx(error)
    assert 1 - error >= 0.98, f"{preset}: test accuracy {1 - error:.4f} after 3 epochs"
