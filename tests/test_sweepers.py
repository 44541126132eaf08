"""Hydra's other sweepers: Optuna (the `optuna` extra) draws its trials from ranges, and the
sweep's parent run counts what it launches, ends FINISHED when every trial did, and its view
and report show the searched keys. Run in this process through `lenet5-train`'s own entry
point, with the real plugin (`test_sweep.multirun`)."""

import json

import pytest
from test_sweep import multirun, parent_and_children, sweep_client  # noqa: F401 (fixtures)

from lenet5.report import main as report

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e '.[optuna]'")

# One trial at a time: the basic launcher runs them in this process.
OPTUNA = ["hydra/sweeper=optuna", "hydra.sweeper.n_jobs=1"]


def test_optuna_searches_a_range_and_every_trial_is_a_counted_child(
    multirun,  # noqa: F811
    sweep_client,  # noqa: F811
    tmp_path,
    capsys,
):
    message, output = multirun(
        *OPTUNA, "hydra.sweeper.n_trials=3", "optimizer.lr=interval(1e-4,1e-2)"
    )
    assert message is None, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["lenet5.expected_runs"] == "3"  # the trial budget, not a grid
    assert json.loads(parent.data.tags["lenet5.searched"]) == ["optimizer.lr"]
    assert parent.data.metrics["children_finished"] == 3
    lrs = [float(c.data.params["optimizer.lr"]) for c in children]
    assert len(set(lrs)) == 3 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    assert {c.info.status for c in children} == {"FINISHED"}
    assert "sweep adhoc-" in output and "3/3 finished" in output
    # The saved view has the searched key as a column and as an axis of its parallel chart.
    exp = sweep_client.get_experiment(parent.info.experiment_id)
    (view,) = [v for k, v in exp.tags.items() if k.startswith("mlflow.sharedViewState.")]
    state = json.loads(json.loads(view)["state"])
    assert "params.`optimizer.lr`" in state["selectedColumns"]
    charts = {c["type"]: c for c in state["compareRunCharts"]}
    assert charts["PARALLEL"]["selectedParams"] == ["optimizer.lr"]
    # What Optuna minimized: each trial's validation error, never its test error.
    val_errors = {c.info.run_id: 1.0 - c.data.metrics["final/val_acc"] for c in children}
    assert f"Best value: {min(val_errors.values())}" in output
    # The report lists the trials by validation error, best first, with their test errors,
    # and names the best setting.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    capsys.readouterr()
    assert report(["--tracking-uri", uri, "--no-log", "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert "Trials by validation error, best first (optimizer.lr searched):" in text
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    by_id = {c.info.run_id: c for c in children}
    assert {r[5] for r in rows} == set(by_id)
    ranked = [val_errors[r[5]] for r in rows]
    assert ranked == sorted(ranked) and [f"{100 * e:.2f}" for e in ranked] == [r[3] for r in rows]
    tests = [f"{100 * by_id[r[5]].data.metrics['test/error']:.2f}" for r in rows]
    assert tests == [r[4] for r in rows]
    assert [r[2] for r in rows] == [by_id[r[5]].data.params["optimizer.lr"] for r in rows]
    best = f"best on validation: optimizer.lr={rows[0][2]} (run {rows[0][5]}, validation error"
    assert best in text


def test_more_optuna_trials_than_choices_are_all_counted(multirun, sweep_client):  # noqa: F811
    # 4 trials drawn from 2 learning rates: some repeat, and each trial is a run that counts.
    message, output = multirun(
        *OPTUNA, "hydra.sweeper.n_trials=4", "optimizer.lr=choice(0.001,0.003)"
    )
    assert message is None, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["lenet5.expected_runs"] == "4"
    assert len(children) == 4 and parent.data.metrics["children_finished"] == 4
    assert {c.data.params["optimizer.lr"] for c in children} <= {"0.001", "0.003"}


def test_a_nuisance_grid_is_refused_for_a_searched_range(multirun, sweep_client):  # noqa: F811
    message, _ = multirun(
        "experiment=one_at_a_time_tuned",
        *OPTUNA,
        "hydra.sweeper.n_trials=2",
        "optimizer.lr=interval(1e-4,1e-2)",
    )
    assert message is not None
    assert (
        "study.nuisance tunes optimizer.lr over a grid, but the sweep searches it as a range"
        in message
    )
    exp = sweep_client.get_experiment_by_name("lenet5")  # refused before any run was made
    assert exp is None or not sweep_client.search_runs([exp.experiment_id])


@pytest.mark.slow  # a search, then its relaunch
def test_a_relaunched_optuna_search_continues_instead_of_starting_over(
    multirun,  # noqa: F811
    sweep_client,  # noqa: F811
):
    search = [*OPTUNA, "hydra.sweeper.n_trials=3", "optimizer.lr=tag(log,interval(1e-4,1e-2))"]
    message, output = multirun(*search)
    assert message is None, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    drawn = {c.info.run_id: c.data.params["optimizer.lr"] for c in children}
    # As if the search had been stopped during its last trial: the parent and that trial
    # end KILLED (the trial keeps its checkpoints).
    last = max(children, key=lambda c: c.info.start_time)
    sweep_client.set_terminated(last.info.run_id, "KILLED")
    sweep_client.set_terminated(parent.info.run_id, "KILLED")
    message, output = multirun(*search)
    assert message is None, output[-3000:]
    # The same command seeds the sampler the same way: the two finished trials are drawn
    # again and skipped, the killed one continues in its own run.
    assert output.count("skipping: run") == 2
    assert f"continuing run {last.info.run_id} from its last checkpoint" in output
    parent2, children2 = parent_and_children(sweep_client)
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    assert {c.info.run_id: c.data.params["optimizer.lr"] for c in children2} == drawn
    assert {c.info.status for c in children2} == {"FINISHED"}
