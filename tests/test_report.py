"""`lenet5-report` reads a sweep back from MLflow and reports the right numbers.

No training: sweeps are written straight into a temporary SQLite store with MlflowClient,
one experiment per test (creating a store costs ~3 s, so the store is shared).
"""

import csv
import itertools
import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lenet5.report import Counts, Run, counts, main, retry, summarize

FACTORS = ["activation", "pooling", "connectivity", "head"]
BASELINE = {
    "activation": "scaled_tanh",
    "pooling": "subsampling",
    "connectivity": "sparse",
    "head": "rbf",
}
FLIPPED = {"activation": "relu", "pooling": "max", "connectivity": "full", "head": "softmax"}
# Effect of each flipped level on the test error (fraction), to make the contrasts visible.
EFFECT = {"relu": -0.004, "max": -0.002, "full": 0.001, "softmax": -0.006}


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture(scope="module")
def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture
def exp(client, tmp_path, request):
    """A fresh experiment for each test, with its artifacts in tmp_path."""
    name = request.node.name
    client.create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
    return name


_clock = itertools.count(1_700_000_000_000, 1000)  # strictly increasing start times


def make_sweep(client, exp, sweep_id, study, jobs, expected=None, parent_status="FINISHED"):
    """A parent run and one child per job: (levels dict, seed, error or None, status)."""
    exp_id = client.get_experiment_by_name(exp).experiment_id
    parent = client.create_run(
        exp_id,
        start_time=next(_clock),
        run_name=f"sweep-{sweep_id}",
        tags={
            "lenet5.role": "sweep",
            "lenet5.sweep_id": sweep_id,
            "lenet5.study": study,
            "lenet5.factors": json.dumps(FACTORS),
            "lenet5.baseline": json.dumps(BASELINE),
            "lenet5.expected_runs": str(expected if expected is not None else len(jobs)),
        },
    )
    pid = parent.info.run_id
    for levels, seed, error, status in jobs:
        tags = {
            "mlflow.parentRunId": pid,
            "lenet5.sweep_id": sweep_id,
            "lenet5.study": study,
            **levels,
            "seed": str(seed),
        }
        if status == "FAILED":
            tags["failure_reason"] = "RuntimeError: boom"
        name = "-".join(levels[f] for f in FACTORS) + f"-s{seed}"
        child = client.create_run(exp_id, start_time=next(_clock), run_name=name, tags=tags)
        if error is not None:
            client.log_metric(child.info.run_id, "test/error", error)
            client.log_metric(child.info.run_id, "test/acc", 1 - error)
        if status != "RUNNING":
            client.set_terminated(child.info.run_id, status)
    if parent_status != "RUNNING":
        client.set_terminated(pid, parent_status)
    return pid


def error_of(levels, seed):
    return 0.012 + sum(EFFECT.get(v, 0) for v in levels.values()) + 0.0007 * ((seed * 7) % 3 - 1)


def one_at_a_time_jobs(seeds=(0, 1, 2)):
    configs = [dict(BASELINE)] + [{**BASELINE, f: FLIPPED[f]} for f in FACTORS]
    return [
        (c, s, error_of(c, s) + 0.0001 * i, "FINISHED")
        for i, c in enumerate(configs)
        for s in seeds
    ]


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def report(uri, exp, out, *extra) -> int:
    return main(["--tracking-uri", uri, "--experiment", exp, "--out", str(out), *extra])


def test_numbers_equal_an_independent_recomputation(client, uri, exp, tmp_path, capsys):
    make_sweep(client, exp, "oat-1", "one_at_a_time", one_at_a_time_jobs())
    assert report(uri, exp, tmp_path / "out") == 0
    rows = read_csv(tmp_path / "out/report.csv")

    # Read the runs back from MLflow and recompute with numpy/scipy.
    runs = client.search_runs([client.get_experiment_by_name(exp).experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]

    def errors(factor, level):
        return np.array(
            [
                100 * r.data.metrics["test/error"]
                for r in children
                if r.data.tags[factor] == level
                and all(r.data.tags[g] == BASELINE[g] for g in FACTORS if g != factor)
            ]
        )

    for row in rows:
        assert row["section"] == "simple"
        a, b = errors(row["factor"], row["level"]), errors(row["factor"], BASELINE[row["factor"]])
        assert int(row["n"]) == len(a) == 3
        assert float(row["mean_error_pct"]) == pytest.approx(a.mean(), rel=1e-5)
        assert float(row["std_error_pct"]) == pytest.approx(a.std(ddof=1), rel=1e-5)
        half = stats.t.ppf(0.975, len(a) - 1) * stats.sem(a)
        assert float(row["mean_ci95_half_pct"]) == pytest.approx(half, rel=1e-5)
        assert float(row["diff_pct"]) == pytest.approx(a.mean() - b.mean(), rel=1e-5, abs=1e-9)
        if row["is_baseline"] == "1":
            assert row["level"] == BASELINE[row["factor"]]
            assert row["diff_ci95_low_pct"] == row["diff_ci95_high_pct"] == ""
        else:
            ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
            assert float(row["diff_ci95_low_pct"]) == pytest.approx(ci.low, rel=1e-5)
            assert float(row["diff_ci95_high_pct"]) == pytest.approx(ci.high, rel=1e-5)


def test_one_at_a_time_contrasts(client, uri, exp, tmp_path, capsys):
    make_sweep(client, exp, "oat-2", "one_at_a_time", one_at_a_time_jobs())
    assert report(uri, exp, tmp_path) == 0
    rows = read_csv(tmp_path / "report.csv")
    # One section, each factor: baseline + its flipped level, 3 seeds each.
    assert {(r["section"], r["factor"], r["level"]) for r in rows} == {
        ("simple", f, lvl) for f in FACTORS for lvl in (BASELINE[f], FLIPPED[f])
    }
    assert all(r["n"] == "3" for r in rows)
    for f in FACTORS:
        (flip,) = [r for r in rows if r["factor"] == f and r["level"] == FLIPPED[f]]
        # Seed noise is the same on both sides, so the contrast is the effect (+ the offsets).
        i = FACTORS.index(f) + 1
        assert float(flip["diff_pct"]) == pytest.approx(100 * (EFFECT[FLIPPED[f]] + 0.0001 * i))
    # Sorted by mean within a factor: the better level first.
    act = [r for r in rows if r["factor"] == "activation"]
    assert [r["level"] for r in act] == ["relu", "scaled_tanh"]
    text = capsys.readouterr().out
    assert "Main effects" not in text
    assert "scaled_tanh (baseline)" in text
    assert "runs: 15 finished / 0 failed / 0 killed / 0 running / 15 expected" in text


def test_factorial_design_gets_main_effects(client, uri, exp, tmp_path):
    jobs = []
    for act, pool in itertools.product(["scaled_tanh", "relu"], ["subsampling", "max"]):
        levels = {**BASELINE, "activation": act, "pooling": pool}
        jobs += [(levels, s, error_of(levels, s), "FINISHED") for s in (0, 1)]
    make_sweep(client, exp, "fact-1", "factorial", jobs)
    assert report(uri, exp, tmp_path) == 0
    rows = read_csv(tmp_path / "report.csv")
    main_rows = {(r["factor"], r["level"]): r for r in rows if r["section"] == "main"}
    simple = {(r["factor"], r["level"]): r for r in rows if r["section"] == "simple"}
    # Main effect: marginal over pooling, 2 pooling levels x 2 seeds.
    assert main_rows["activation", "relu"]["n"] == "4"
    relu = [j[2] for j in jobs if j[0]["activation"] == "relu"]
    assert float(main_rows["activation", "relu"]["mean_error_pct"]) == pytest.approx(
        100 * np.mean(relu)
    )
    # Simple effect: pooling held at its baseline, 2 seeds.
    assert simple["activation", "relu"]["n"] == "2"
    # Factors the study never varied have only their baseline level.
    assert main_rows["head", "rbf"]["n"] == "8" and simple["head", "rbf"]["n"] == "2"
    assert "## Main effects" in (tmp_path / "report.md").read_text()


def test_failed_excluded_and_listed_running_and_missing_reported(
    client, uri, exp, tmp_path, capsys
):
    jobs = one_at_a_time_jobs()
    relu = {**BASELINE, "activation": "relu"}
    jobs[3] = (relu, 0, 0.9, "FAILED")  # a logged error of a failed run must not count
    jobs[4] = (relu, 1, None, "RUNNING")
    pid = make_sweep(
        client, exp, "oat-3", "one_at_a_time", jobs, expected=17, parent_status="RUNNING"
    )
    assert report(uri, exp, tmp_path) == 0
    text = capsys.readouterr().out
    assert "runs: 13 finished / 1 failed / 0 killed / 1 running / 17 expected" in text
    assert "3 runs still missing (1 running, 2 not started)" in text
    assert "relu-subsampling-sparse-rbf-s0 [FAILED]: RuntimeError: boom" in text
    rows = read_csv(tmp_path / "report.csv")
    (row,) = [r for r in rows if r["level"] == "relu"]
    assert row["n"] == "1" and float(row["mean_error_pct"]) < 5
    assert row["std_error_pct"] == row["diff_ci95_low_pct"] == ""  # n < 2: no spread, no CI
    assert "n/a" in text
    assert client.get_run(pid).info.status == "RUNNING"  # reporting does not end the sweep


def test_files_written_and_logged_to_parent_without_changing_it(client, uri, exp, tmp_path):
    pid = make_sweep(client, exp, "oat-4", "one_at_a_time", one_at_a_time_jobs())
    before = client.get_run(pid)
    out = tmp_path / "out"
    assert report(uri, exp, out) == 0
    for name in ("report.md", "report.csv", "report.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_csv(out / "report.csv")
    assert len(rows) == 8 and all(r["sweep_id"] == "oat-4" for r in rows)
    logged = {f.path for f in client.list_artifacts(pid, "report")}
    assert logged == {"report/report.md", "report/report.csv", "report/report.png"}
    after = client.get_run(pid)
    assert after.info.status == before.info.status == "FINISHED"
    assert after.info.end_time == before.info.end_time
    assert after.data.tags == before.data.tags and after.data.metrics == before.data.metrics


def test_html_is_one_self_contained_file_logged_with_the_others(client, uri, exp, tmp_path):
    """--html: the tables, the figure as a data URI (the same PNG), links only into the
    MLflow UI, the study's recorded config; nothing else referenced, logged to the parent."""
    import base64
    import re

    pid = make_sweep(client, exp, "oat-html", "one_at_a_time", one_at_a_time_jobs())
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    (recorded / "overrides.yaml").write_text("- data=mnist_subset\n- seed=0,1,2\n")
    client.log_artifact(pid, str(recorded / "overrides.yaml"))
    out = tmp_path / "out"
    assert report(uri, exp, out, "--sweep-id", "oat-html", "--html") == 0
    page = (out / "report.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(refs) == 3 and "<script" not in page and "<link" not in page
    assert refs[0].startswith("data:image/png;base64,")
    assert base64.b64decode(refs[0].split(",", 1)[1]) == (out / "report.png").read_bytes()
    exp_id = client.get_experiment_by_name(exp).experiment_id
    assert refs[1].startswith(f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?")
    assert refs[2].startswith(f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{pid}?")
    markdown = (out / "report.md").read_text()
    assert page.count("<table>") == markdown.count("\n| --- ") > 0
    assert "<h3>overrides.yaml</h3>" in page and "- seed=0,1,2" in page
    logged = {f.path for f in client.list_artifacts(pid, "report")}
    assert "report/report.html" in logged


def test_study_picks_latest_sweep_and_unknown_id_exits_2(client, uri, exp, tmp_path, capsys):
    jobs = one_at_a_time_jobs(seeds=(0,))
    make_sweep(client, exp, "old", "one_at_a_time", jobs)
    make_sweep(client, exp, "new", "one_at_a_time", jobs)
    make_sweep(client, exp, "other", "factorial", jobs)  # latest overall, other study
    assert report(uri, exp, tmp_path, "--study", "one_at_a_time", "--no-log") == 0
    assert "sweep id: new" in capsys.readouterr().out
    assert report(uri, exp, tmp_path, "--no-log") == 0
    assert "sweep id: other" in capsys.readouterr().out

    assert report(uri, exp, tmp_path, "--sweep-id", "nope") == 2
    err = capsys.readouterr().err
    assert "sweep id 'nope'" in err and f"experiment {exp!r}" in err
    assert "old (study one_at_a_time" in err and "other (study factorial" in err
    assert report(uri, "no-such-experiment", tmp_path) == 2
    assert "no experiment 'no-such-experiment'" in capsys.readouterr().err


def test_missing_store_is_not_created(tmp_path, capsys):
    db = tmp_path / "absent.db"
    assert main(["--tracking-uri", f"sqlite:///{db}"]) == 2
    assert "no MLflow store" in capsys.readouterr().err and not db.exists()


def test_watch_follows_until_the_sweep_ends(client, uri, exp, tmp_path, monkeypatch, capsys):
    pid = make_sweep(
        client, exp, "w", "one_at_a_time", one_at_a_time_jobs(), parent_status="RUNNING"
    )
    # Instead of waiting, the "sleep" ends the sweep as the sweep itself would.
    monkeypatch.setattr("lenet5.report.reading.time.sleep", lambda s: client.set_terminated(pid))
    assert report(uri, exp, tmp_path, "--watch", "5", "--no-log") == 0
    out = capsys.readouterr().out
    assert "(RUNNING)" in out and "(FINISHED)" in out and "parent run: " in out


def run(status, error, **levels):
    """A child run at the baseline but for `levels`."""
    return Run("id", "name", status, {**BASELINE, **levels}, error)


def test_summarize_pure():
    runs = (
        [run("FINISHED", e) for e in (0.01, 0.02)]
        + [run("FINISHED", e, head="softmax") for e in (0.03, 0.05)]
        + [run("KILLED", 0.5, head="softmax")]
        + [run("FINISHED", None, head="euclid")]  # no error logged: its level has n = 0
    )
    rows = summarize(runs, FACTORS, BASELINE)
    head = [r for r in rows if r.factor == "head"]
    assert [r.level for r in head] == ["rbf", "softmax", "euclid"]
    assert head[1].mean == pytest.approx(4.0) and head[1].diff == pytest.approx(2.5)
    assert head[0].is_baseline and head[0].diff == 0.0
    assert head[2].n == 0 and head[2].mean is head[2].diff is None
    assert all(r.section == "simple" for r in rows)


def test_counts_derive_what_is_missing():
    statuses = ["FINISHED"] * 3 + ["FAILED", "KILLED", "RUNNING", "SCHEDULED"]
    children = [run(s, None) for s in statuses]
    assert counts(children, 10) == Counts(finished=3, failed=1, killed=1, running=2, expected=10)
    assert counts(children, 10).not_started == 3 and counts(children, 10).missing == 5
    # More runs than expected: none "not started", never a negative count.
    assert counts(children, 5).not_started == 0 and counts(children, 5).missing == 2
    # Without an expected count only the running ones are known to be missing.
    assert counts(children, None).not_started is None and counts(children, None).missing == 2


def test_retry_rides_out_a_locked_database(monkeypatch):
    monkeypatch.setattr("lenet5.report.reading.time.sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert retry(flaky) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):  # other errors are not retried
        retry(lambda: (calls.append(1), int("x")))


def test_report_waits_for_a_writer_holding_the_lock(client, uri, exp, tmp_path, capsys):
    make_sweep(client, exp, "locked", "one_at_a_time", one_at_a_time_jobs(seeds=(0,)))
    held = threading.Event()

    def writer():
        con = sqlite3.connect(uri.removeprefix("sqlite:///"))
        con.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(0.5)
        con.rollback()
        con.close()

    thread = threading.Thread(target=writer)
    thread.start()
    held.wait()
    try:
        assert report(uri, exp, tmp_path) == 0
    finally:
        thread.join()
    assert "sweep id: locked" in capsys.readouterr().out


def test_report_prints_the_sweeps_link_and_registers_its_best_model(
    client, uri, exp, tmp_path, capsys, monkeypatch
):
    import mlflow
    import torch

    from lenet5.core import names
    from lenet5.tracking import views

    monkeypatch.delenv(names.UI_ENV, raising=False)
    jobs = one_at_a_time_jobs(seeds=(0,))
    pid = make_sweep(client, exp, "reg-1", "one_at_a_time", jobs)
    exp_id = client.get_experiment_by_name(exp).experiment_id
    assert report(uri, exp, tmp_path, "--no-log") == 0
    out = capsys.readouterr().out
    # No saved view in this store: the link opens the classic runs view all the same.
    assert f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning" in out
    views.write_view(client, exp_id, "reg-1", "one_at_a_time", FACTORS)
    assert report(uri, exp, tmp_path, "--no-log") == 0
    assert f"&viewStateShareKey={views.view_key('reg-1')}" in capsys.readouterr().out
    # --register: the lowest test error's model; a clear refusal while it has none.
    assert report(uri, exp, tmp_path, "--no-log", "--register") == 2
    err = capsys.readouterr().err
    assert "has no logged model" in err and "softmax" in err  # the best: head=softmax
    children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{pid}'")
    best = min(children, key=lambda r: r.data.metrics["test/error"])
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=best.info.run_id):
        mlflow.pytorch.log_model(
            torch.nn.Linear(4, 2),
            name="model",
            pip_requirements=["torch"],
            serialization_format="pickle",
        )
    assert report(uri, exp, tmp_path, "--no-log", "--register", "best-lenet") == 0
    assert "as model 'best-lenet' version 1" in capsys.readouterr().out
    (version,) = client.search_model_versions("name = 'best-lenet'")
    assert version.run_id == best.info.run_id


def test_per_example_flips_and_the_test_sets_share_of_the_spread_by_hand():
    from lenet5.report.examples import comparison_line, flips, spread_line, test_set_share

    target = [0, 1, 2, 3, 4, 5]
    base = (target, [0, 1, 2, 3, 9, 9])  # wrong on the 4 and the 5
    arm = (target, [0, 7, 2, 7, 4, 9])  # wrong on the 1, the 3 and the 5: right on the 4
    worse, better = flips(arm, base)
    assert worse == {1: 1, 3: 1} and better == {4: 1}
    line = comparison_line("activation=relu", [(arm, base), (arm, base)])
    assert line.startswith("  activation=relu: wrong where the baseline is right 2 of 6 test")
    assert "right where it is wrong 1;" in line and "(2 seeds)" in line
    # Errors 0.10, 0.12, 0.14 on 100 examples: std over seeds 2 points; binomial
    # sqrt(mean(e(1-e))/100) = 3.24 points, more than all of it: the seeds' own is 0.
    runs = [([0] * 100, [1] * k + [0] * (100 - k)) for k in (10, 12, 14)]
    seen, binomial, own = test_set_share(runs)
    assert seen == pytest.approx(2.0)
    assert binomial == pytest.approx(100 * ((0.09 + 0.1056 + 0.1204) / 300) ** 0.5)
    assert own == 0.0
    assert test_set_share(runs[:1]) is None and spread_line("x", runs[:1]) is None


def test_plan_gives_each_comparisons_seeds_and_the_studys_runs(client, uri, exp, capsys):
    """--plan on a 3-seed pilot: per comparison, the seeds seeds_needed finds at its spread
    (paired, Holm over the 4) or its verdict if resolved; the study's runs at the most."""
    from lenet5.report.inference import seeds_needed
    from lenet5.report.tuning import simple_tables

    jobs = one_at_a_time_jobs()
    make_sweep(client, exp, "pilot", "one_at_a_time", jobs)
    noisy = [(c, s, e + 0.002 * ((s * 7 + len(str(c))) % 3), st) for c, s, e, st in jobs]
    make_sweep(client, exp, "pilot-noisy", "one_at_a_time", noisy)
    assert (
        main(["--tracking-uri", uri, "--experiment", exp, "--sweep-id", "pilot-noisy", "--plan"])
        == 0
    )
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("Plan for study one_at_a_time from sweep pilot-noisy (margin 0.2")
    runs = [Run(f"r{i}", "", st, {**c, "seed": str(s)}, e) for i, (c, s, e, st) in enumerate(noisy)]
    _, rows = simple_tables(runs, FACTORS, BASELINE, 0.2)
    expect = []
    for r in rows:
        if r.table != "tuned" or r.is_baseline:
            continue
        k = r.n if r.verdict in ("equivalent", "worse", "better") else seeds_needed(r.diff, 0.2)
        said = f"about {k} seeds" if k else "more than 200 seeds"  # -0.18 against 0.2: ~2,000
        assert f"  {r.factor}={r.level}: {said}" in text
        expect += [k] if k else []
    most = max(expect)
    assert f"The study with {most} seeds: about {most * 5} runs (5 per seed):" in text
    assert f"hydra/sweeper=adaptive hydra.sweeper.seeds.max={most}" in text
    assert not list((Path(uri.removeprefix("sqlite:///")).parent).glob("reports"))  # no files


def test_compute_per_arm_is_the_mean_of_its_runs_flops_and_errors(tmp_path):
    from lenet5.report.cost import cost_lines, costs
    from lenet5.report.render import cost_figure

    base = {"activation": "scaled_tanh"}

    def run(i, act, flops, err):
        return Run(
            f"r{i}", "", "FINISHED", {"activation": act, "seed": str(i % 2)}, err, 0.9, {}, flops
        )

    runs = [
        run(0, "scaled_tanh", 2.0e12, 0.010),
        run(1, "scaled_tanh", 2.2e12, 0.012),
        run(2, "relu", 1.0e12, 0.050),
        run(3, "relu", None, 0.040),  # recorded before FLOPs existed: left out
    ]
    rows = costs(runs, ["activation"], base)
    assert [(c.arm, c.n) for c in rows] == [("baseline", 2), ("activation=relu", 1)]
    assert rows[0].flops == pytest.approx(2.1e12) and rows[0].error == pytest.approx(1.1)
    assert rows[1].std is None
    assert cost_lines(rows)[1] == "  baseline: 2.1e+12 training FLOPs, test error 1.10% (n=2)"
    png = cost_figure(tmp_path / "cost.png", "study x", rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert costs([r for r in runs if r.flops is None], ["activation"], base) == []
    assert cost_figure(tmp_path / "none.png", "x", []) is None
