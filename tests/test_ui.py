"""What the MLflow UI is given: saved views, links, run names and colours, the report's chart.

No training and no browser (tests/test_browser.py opens the UI for real): the records are
written into a temporary store and read back.
"""

import json

import pytest

from lenet5.core import names
from lenet5.report import render
from lenet5.report.reading import SweepInfo
from lenet5.report.stats import Counts, Row
from lenet5.study.design import CHOICE_TAGS
from lenet5.tracking import runinfo, views

TAGS = {"preset": "paper", "activation": "scaled_tanh", "pooling": "max", "seed": "1"}
BASELINE = {"activation": "scaled_tanh", "pooling": "subsampling"}


def test_run_names_say_how_a_run_differs_from_its_baseline():
    name = runinfo.run_name
    assert name(TAGS, BASELINE, [], CHOICE_TAGS) == "pool=max\u00b7s1"
    assert name({**TAGS, "pooling": "subsampling"}, BASELINE, [], CHOICE_TAGS) == "paper\u00b7s1"
    assert name({**TAGS, "preset": "modern"}, {"preset": "paper"}, [], CHOICE_TAGS) == (
        "modern\u00b7s1"
    )
    # Alone (no study): the preset, then the choices the command line set.
    overrides = ["model/pooling=max", "optimizer.lr=0.1", "seed=1", "+model/activation=relu"]
    assert name({**TAGS, "activation": "relu"}, {}, overrides, CHOICE_TAGS) == (
        "paper\u00b7pool=max\u00b7act=relu\u00b7s1"
    )


def test_a_colour_per_preset():
    assert runinfo.colour("paper") != runinfo.colour("modern")
    assert runinfo.colour("my_preset") == runinfo.colour("my_preset")
    assert runinfo.colour("my_preset").startswith("#")


def test_every_link_opens_the_classic_runs_view(monkeypatch):
    monkeypatch.delenv(names.UI_ENV, raising=False)
    local = views.ui_base("sqlite:///x/mlflow.db")
    assert local == "http://127.0.0.1:5000"
    assert views.ui_base("http://host:8080/") == "http://host:8080"
    monkeypatch.setenv(names.UI_ENV, "http://ui:1234/")
    assert views.ui_base("sqlite:///x") == "http://ui:1234"
    for link in (
        views.runs_link(local, "3"),
        views.runs_link(local, "3", "k", charts=True),
        views.run_link(local, "3", "abc"),
    ):
        assert "?workflowType=machine_learning" in link
    assert views.runs_link(local, "3", "k", charts=True).endswith(
        "?workflowType=machine_learning&viewStateShareKey=k&compareRunsMode=CHART"
    )


def test_saved_view_is_the_uis_experiment_tag_and_selects_the_trials(tmp_path, empty_store):
    import shutil

    from mlflow.tracking import MlflowClient

    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp, tags={"lenet5.sweep_id": "s1", "lenet5.role": "sweep"})
    trials = [
        client.create_run(exp, tags={"lenet5.sweep_id": "s1", "lenet5.role": "trial", **t})
        for t in ({"pooling": "max", "seed": "0"}, {"pooling": "subsampling", "seed": "1"})
    ]
    other = client.create_run(exp, tags={"lenet5.sweep_id": "s2", "lenet5.role": "trial"})
    for r in (*trials, other):
        client.set_terminated(r.info.run_id)
    key = views.write_view(client, exp, "s1", "study", ["pooling"], trials[1].info.run_id)
    record = json.loads(client.get_experiment(exp).tags[views.TAG_PREFIX + key])
    assert record["name"] == "study: s1" and record["createdAt"] > 0
    state = json.loads(record["state"])
    found = client.search_runs([exp], state["searchFilter"])
    assert {r.info.run_id for r in found} == {r.info.run_id for r in trials}
    assert parent.info.run_id not in {r.info.run_id for r in found}
    assert state["runsHiddenMode"] == "SHOW_ALL"
    assert [c["type"] for c in state["compareRunCharts"]] == ["BAR", "PARALLEL", "DIFFERENCE"]
    assert {c["runsCountToCompare"] for c in state["compareRunCharts"]} == {100}
    assert state["selectedColumns"][:2] == ["params.`pooling`", "params.`seed`"]
    assert len(json.dumps(record)) < 20_000  # the store's limit on a tag value
    # The baseline trial of the difference chart: FINISHED, the baseline's levels, lowest seed.
    assert views.baseline_run(client, exp, "s1", {"pooling": "subsampling"}) == (
        trials[1].info.run_id
    )
    assert views.baseline_run(client, exp, "s1", {"pooling": "avg"}) is None


def _info(factors):
    return SweepInfo(
        study="gelu_vs_tanh_with_a_long_name",
        sweep_id="gelu_vs_tanh_with_a_long_name-20261127-120000-12345",
        parent_run_id="p",
        parent_status="FINISHED",
        experiment="lenet5",
        tracking_uri="sqlite:///x",
        factors=factors,
        baseline={f: "a" for f in factors},
        children=[],
        counts=Counts(4, 0, 0, 0, 4),
    )


@pytest.mark.parametrize("n_factors", [1, 4, 7])
def test_report_chart_fits_its_title_and_clips_at_zero(tmp_path, n_factors):
    factors = [f"factor{i}" for i in range(n_factors)]
    rows = [
        Row("simple", f, level, level == "a", 3, mean, 0.2, 0.9, None, None, None)
        for f in factors
        for level, mean in (("a", 0.3), ("b", 1.2))
    ]
    fig = render.write_chart(tmp_path / "c.png", _info(factors), rows)
    assert (tmp_path / "c.png").stat().st_size > 5_000
    width = fig.bbox.width
    title = fig._suptitle.get_window_extent()  # as drawn by savefig
    assert title.x0 >= 0 and title.x1 <= width  # not cut off at either edge
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(shown) == n_factors
    for ax in shown:
        assert ax.get_ylim()[0] == 0
        for bars in ax.collections:  # the error bars: none reaches below 0%
            assert min(seg[:, 1].min() for seg in bars.get_segments()) >= 0
