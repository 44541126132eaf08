"""Tuned reports: per-arm selection on validation, intervals, Holm, factorial effects.

No training in the fast tier: sweeps are logged straight into a temporary SQLite store with
MlflowClient (known validation accuracies, test errors and val/acc curves), and every
interval is checked against scipy's own functions.
"""

import csv
import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from scipy import stats

from lenet5.core.names import NUISANCE as TAG
from lenet5.report import Run, main
from lenet5.report.inference import contrast, holm, holm_levels
from lenet5.report.tuning import factorial_tables, select, simple_tables

FACTORS = ["activation", "pooling"]
BASELINE = {"activation": "scaled_tanh", "pooling": "subsampling"}
LRS = ["0.0003", "0.001", "0.003"]
BASELINE_AB = {"A": "a0", "B": "b0"}


def setting(lr: str) -> str:
    return json.dumps({"optimizer.lr": lr})


@pytest.fixture(scope="module")
def uri(empty_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    shutil.copyfile(empty_store, folder / "mlflow.db")  # a fresh store in milliseconds
    return f"sqlite:///{folder}/mlflow.db"


@pytest.fixture(scope="module")
def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


_clock = itertools.count(1_700_000_000_000, 1000)


def log_sweep(client, exp_name, tmp_path, jobs, factors=FACTORS, baseline=BASELINE):
    """Parent + children: jobs are (levels, lr, seed, val_acc, test_error, val curve)."""
    exp_id = client.create_experiment(exp_name, artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(
        exp_id,
        start_time=next(_clock),
        tags={
            "lenet5.role": "sweep",
            "lenet5.sweep_id": f"{exp_name}-1",
            "lenet5.study": exp_name,
            "lenet5.factors": json.dumps(factors),
            "lenet5.baseline": json.dumps(baseline),
            "lenet5.expected_runs": str(len(jobs)),
        },
    )
    for levels, lr, seed, val, err, curve in jobs:
        tags = {
            "mlflow.parentRunId": parent.info.run_id,
            "lenet5.sweep_id": f"{exp_name}-1",
            "lenet5.role": "trial",
            **levels,
            "seed": str(seed),
        }
        if lr is not None:
            tags[TAG] = setting(lr)
        run = client.create_run(exp_id, start_time=next(_clock), tags=tags)
        rid = run.info.run_id
        metrics = [Metric("test/error", err, 0, 0), Metric("final/val_acc", val, 0, 0)]
        metrics += [Metric("val/acc", v, 0, 100 * (i + 1)) for i, v in enumerate(curve)]
        client.log_batch(rid, metrics=metrics)
        client.set_terminated(rid, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    return exp_name


# Validation accuracy per (arm, lr): the baseline is best at 1e-3, ReLU at 3e-4, max pooling
# at 3e-3. At ReLU, 3e-3 has the single best run (0.999, seed 0) but not the best mean: the
# selection must go by mean over seeds.
VAL = {
    ("scaled_tanh", "subsampling"): {"0.0003": 0.970, "0.001": 0.985, "0.003": 0.975},
    ("relu", "subsampling"): {"0.0003": 0.984, "0.001": 0.978, "0.003": 0.960},
    ("scaled_tanh", "max"): {"0.0003": 0.972, "0.001": 0.980, "0.003": 0.986},
}
# Test error: ReLU is much worse at the baseline's lr (1e-3) than at its own (3e-4).
ERR = {
    ("scaled_tanh", "subsampling"): {"0.0003": 0.030, "0.001": 0.015, "0.003": 0.025},
    ("relu", "subsampling"): {"0.0003": 0.016, "0.001": 0.045, "0.003": 0.080},
    ("scaled_tanh", "max"): {"0.0003": 0.028, "0.001": 0.020, "0.003": 0.013},
}
NOISE = {0: -0.002, 1: 0.0005, 2: 0.0015}


def oat_jobs():
    rng = np.random.default_rng(0)
    jobs = []
    for (act, pool), vals in VAL.items():
        for lr, v in vals.items():
            for seed in (0, 1, 2):
                val = v + NOISE[seed]
                if (act, lr) == ("relu", "0.003"):
                    val = 0.999 if seed == 0 else 0.94
                err = ERR[(act, pool)][lr] + NOISE[seed] / 2 + rng.normal(0, 0.001)
                curve = [val - 0.05 + 0.01 * seed, val - 0.01, val]
                jobs.append(({"activation": act, "pooling": pool}, lr, seed, val, err, curve))
    return jobs


def report(uri, exp, out) -> int:
    return main(["--tracking-uri", uri, "--experiment", exp, "--out", str(out), "--no-log"])


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def oat(client, tmp_path_factory):
    """One tuned one-at-a-time sweep for the tests that read it: (experiment, jobs)."""
    jobs = oat_jobs()
    return log_sweep(client, "oat_tuned", tmp_path_factory.mktemp("oat"), jobs), jobs


def test_selection_on_mean_validation_and_tuned_vs_fixed_against_scipy(oat, uri, tmp_path, capsys):
    exp, jobs = oat
    assert report(uri, exp, tmp_path / "out") == 0
    text = capsys.readouterr().out
    rows = read_csv(tmp_path / "out/report.csv")
    assert all(v == v.strip() for r in rows for v in r.values())  # plain numbers, no padding
    selected = {r["level"]: json.loads(r["setting"]) for r in rows if r["verdict"] == "selected"}
    assert selected == {
        "baseline": {"optimizer.lr": "0.001"},
        "activation=relu": {"optimizer.lr": "0.0003"},  # not 3e-3, its single best run
        "pooling=max": {"optimizer.lr": "0.003"},
    }

    def errs(act, pool, lr):
        return {
            s: 100 * e
            for lv, r_lr, s, _, e, _ in jobs
            if (lv["activation"], lv["pooling"], r_lr) == (act, pool, lr)
        }

    base = errs("scaled_tanh", "subsampling", "0.001")
    arms = {
        ("tuned", "relu"): errs("relu", "subsampling", "0.0003"),
        ("tuned", "max"): errs("scaled_tanh", "max", "0.003"),
        ("fixed", "relu"): errs("relu", "subsampling", "0.001"),
        ("fixed", "max"): errs("scaled_tanh", "max", "0.001"),
    }
    for table in ("tuned", "fixed"):
        got = {r["level"]: r for r in rows if r["table"] == table and r["is_baseline"] == "0"}
        ps = {}
        for level in ("relu", "max"):
            a = [arms[(table, level)][s] for s in (0, 1, 2)]
            b = [base[s] for s in (0, 1, 2)]
            ref = stats.ttest_rel(a, b)  # same seeds on both sides: paired
            row = got[level]
            assert row["test"] == "paired t"
            assert float(row["diff_pct"]) == pytest.approx(np.mean(a) - np.mean(b), rel=1e-5)
            assert float(row["mean_error_pct"]) == pytest.approx(np.mean(a), rel=1e-5)
            assert float(row["p"]) == pytest.approx(ref.pvalue, rel=1e-4)
            ci = ref.confidence_interval(confidence_level=float(row["ci_level"]))
            assert float(row["diff_low_pct"]) == pytest.approx(ci.low, rel=1e-4)
            assert float(row["diff_high_pct"]) == pytest.approx(ci.high, rel=1e-4)
            ps[level] = ref.pvalue
        # Holm over the table's two comparisons, by hand.
        lo, hi = sorted(ps, key=ps.get)
        assert float(got[lo]["p_holm"]) == pytest.approx(min(1, 2 * ps[lo]), rel=1e-4)
        assert float(got[hi]["p_holm"]) == pytest.approx(
            max(min(1, 2 * ps[lo]), min(1, ps[hi])), rel=1e-4
        )
    # Holm-compatible intervals: one excludes 0 exactly where its adjusted p is below 0.05.
    for r in rows:
        if r["table"] in ("tuned", "fixed") and r["is_baseline"] == "0":
            excludes = float(r["diff_low_pct"]) > 0 or float(r["diff_high_pct"]) < 0
            assert excludes == (float(r["p_holm"]) < 0.05), r
    # The verdict changes with tuning: ReLU's error is far higher at the baseline's lr.
    tuned_relu = next(r for r in rows if r["table"] == "tuned" and r["level"] == "relu")
    fixed_relu = next(r for r in rows if r["table"] == "fixed" and r["level"] == "relu")
    assert float(fixed_relu["diff_pct"]) > 2.5 > abs(float(tuned_relu["diff_pct"]))
    assert fixed_relu["verdict"] == "worse"
    assert "Selection per arm" in text and "Tuned: each arm at its own" in text
    assert "Fixed setting" in text and "lr=0.0003" in text
    changed = [line for line in text.splitlines() if "changed by tuning" in line]
    # Both flips are worse at the baseline's lr (ERR: +3 and +0.5 points), not at their own.
    assert [line.split(":")[0].strip() for line in changed] == [
        "activation=relu",
        "pooling=max",
    ]
    assert all("at the baseline's setting worse" in line for line in changed)
    assert (tmp_path / "out/report.png").stat().st_size > 10_000
    assert "## Selection per arm" in (tmp_path / "out/report.md").read_text()
    # The study's margin (study.margin, recorded with the sweep; 0.2 where a sweep has none)
    # is how the verdicts read; --margin reads them against another.
    assert "Verdicts against a margin of 0.2 points of test error" in text
    args = ["--tracking-uri", uri, "--experiment", exp, "--out", str(tmp_path / "m"), "--no-log"]
    assert main([*args, "--margin", "50"]) == 0
    wide = read_csv(tmp_path / "m/report.csv")
    assert "Verdicts against a margin of 50 points" in capsys.readouterr().out
    compared = [r for r in wide if r["table"] in ("tuned", "fixed") and r["is_baseline"] == "0"]
    assert compared
    for r in compared:  # every interval here lies inside +/-50 points
        assert float(r["diff_low_pct"]) > -50 and float(r["diff_high_pct"]) < 50
        assert r["verdict"] == "equivalent"


def test_learning_curves_are_read_per_epoch(oat, uri):
    from lenet5.report import collect, find_sweep, open_experiment
    from lenet5.report.figure_tuned import arm_curves, band
    from lenet5.report.reading import curves

    exp, jobs = oat
    cl, e = open_experiment(uri, exp)
    info = collect(cl, e, find_sweep(cl, e), uri)
    hist = curves(cl, info.children)
    series = arm_curves(info.children, hist, FACTORS, ("relu", "subsampling"), setting("0.0003"))
    epochs, m, lo, hi = band(series)
    want = np.array([j[5] for j in jobs if j[0]["activation"] == "relu" and j[1] == "0.0003"])
    assert epochs == [1, 2, 3]
    assert m == pytest.approx(100 * want.mean(axis=0))
    assert lo == pytest.approx(100 * want.min(axis=0))
    assert hi == pytest.approx(100 * want.max(axis=0))


def test_paired_and_welch_intervals_equal_scipys():
    a = [1.2, 1.9, 1.4, 1.7]
    b = [1.0, 1.3, 1.5, 1.1]
    paired = contrast(
        [list(zip("0123", a, strict=True)), list(zip("0123", b, strict=True))], [1, -1], level=0.99
    )
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(confidence_level=0.99)
    assert paired.paired and paired.n == "4 pairs"
    assert (paired.low, paired.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert paired.p == pytest.approx(ref.pvalue, rel=1e-9)
    # Different seeds (and sizes): independent groups, Welch.
    c = [1.0, 1.3, 1.5]
    welch = contrast([list(zip("0123", a, strict=True)), list(zip("456", c, strict=True))], [1, -1])
    ref = stats.ttest_ind(a, c, equal_var=False)
    ci = ref.confidence_interval(confidence_level=0.95)
    assert not welch.paired and welch.n == "4+3"
    assert (welch.low, welch.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert welch.p == pytest.approx(ref.pvalue, rel=1e-9)
    # One run on a side: an estimate without an interval.
    one = contrast([[("0", 1.0)], list(zip("456", c, strict=True))], [1, -1])
    assert one.low is None and one.estimate == pytest.approx(1.0 - np.mean(c))


def test_holm_against_a_hand_checked_example():
    # m = 4. Sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> 0.06
    # (adjusted p-values never decrease along the order).
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Levels: 0.005 < 0.05/4 and 0.01 < 0.05/3 rejected; 0.03 > 0.05/2 stops: 0.03 and 0.04
    # get that level, 1 - 0.025, so their intervals contain 0 as Holm says.
    assert holm_levels(p) == pytest.approx([1 - 0.05 / 3, 1 - 0.025, 1 - 0.025, 1 - 0.0125])


def test_interaction_on_a_synthetic_2x2_with_a_known_interaction():
    # Error in %: baseline 1.0, ReLU +1.0, max pooling +0.5, and together +1.5 more than the
    # sum of the two (an interaction of 1.5 points); seed effects shared by the cells, and
    # a small cell x seed noise.
    rng = np.random.default_rng(3)
    true = {("a0", "b0"): 1.0, ("a1", "b0"): 2.0, ("a0", "b1"): 1.5, ("a1", "b1"): 4.0}
    seeds = range(5)
    seed_effect = {s: rng.normal(0, 0.3) for s in seeds}
    runs, table = [], {}
    for (a, b), mu in true.items():
        for s in seeds:
            err = mu + seed_effect[s] + rng.normal(0, 0.05)
            table[(a, b, s)] = err
            runs.append(
                Run(f"{a}{b}{s}", "r", "FINISHED", {"A": a, "B": b, "seed": str(s)}, err / 100)
            )
    rows = factorial_tables(runs, ["A", "B"], {"A": "a0", "B": "b0"})
    (inter,) = [r for r in rows if r.table == "interaction"]
    per_seed = [
        table[("a1", "b1", s)]
        - table[("a1", "b0", s)]
        - table[("a0", "b1", s)]
        + table[("a0", "b0", s)]
        for s in seeds
    ]
    ref = stats.ttest_1samp(per_seed, 0.0)
    ci = ref.confidence_interval(confidence_level=0.95)  # one interaction: Holm leaves 95%
    d = inter.diff
    assert inter.factor == "A x B" and inter.level == "a1 x b1" and d.paired
    assert d.estimate == pytest.approx(np.mean(per_seed), rel=1e-9)
    assert d.estimate == pytest.approx(1.5, abs=0.1)
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert inter.verdict == "worse"  # a positive interaction: more error than additive
    # Main effect of A: averaged over B's two levels, per seed; two main effects -> Holm m=2.
    main_a = next(r for r in rows if r.table == "main" and r.factor == "A")
    per_seed_a = [
        (
            table[("a1", "b0", s)]
            - table[("a0", "b0", s)]
            + table[("a1", "b1", s)]
            - table[("a0", "b1", s)]
        )
        / 2
        for s in seeds
    ]
    assert main_a.diff.estimate == pytest.approx(np.mean(per_seed_a), rel=1e-9)
    assert main_a.diff.estimate == pytest.approx(1.75, abs=0.1)
    ci = stats.ttest_1samp(per_seed_a, 0.0).confidence_interval(main_a.diff.level)
    assert main_a.diff.level in (pytest.approx(0.975), pytest.approx(0.95))
    assert (main_a.diff.low, main_a.diff.high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_verdicts_read_the_interval_against_the_margin():
    from lenet5.report.inference import Contrast, t_crit, verdict

    def c(low, high):  # a 95% interval [low, high]: its standard error from t's quantile
        half = (high - low) / 2
        return Contrast((low + high) / 2, half / t_crit(0.95, 4.0), 4.0, True, "5 pairs")

    assert verdict(c(-0.15, 0.1), margin=0.2) == "equivalent"  # contains 0, inside +/-0.2
    assert verdict(c(0.02, 0.15), margin=0.2) == "equivalent"  # excludes 0: too small to matter
    assert verdict(c(0.05, 0.35), margin=0.2) == "worse"  # excludes 0, reaches past 0.2
    assert verdict(c(-3.2, -0.1), margin=0.2) == "better"
    assert verdict(c(-3.2, 10.8), margin=0.2) == "too wide to conclude"
    assert verdict(c(-0.1, 0.3), margin=0.2) == "too wide to conclude"
    assert verdict(c(-0.1, 0.3), margin=0.5) == "equivalent"  # a study that cares less
    assert verdict(None) == "n too small"


def test_seeds_needed_to_resolve_a_comparison_match_a_direct_search():
    from lenet5.report.inference import paired_contrast, seeds_needed
    from lenet5.report.render_tuned import planning_lines

    def first_k(sd, room, level=0.95):  # scipy's t, searched independently
        return next(
            k for k in range(2, 500) if stats.t.ppf((1 + level) / 2, k - 1) * sd / k**0.5 < room
        )

    seeds = [0, 1, 2]
    base = [[(s, 1.0) for s in seeds]]
    # Near 0: to be equivalent the interval must shrink inside +/-0.2 around +0.05.
    near = paired_contrast([[(0, 1.3), (1, 0.6), (2, 1.25)], base[0]], [1.0, -1.0])
    sd = np.std([0.3, -0.4, 0.25], ddof=1)
    assert near.estimate == pytest.approx(0.05)
    assert seeds_needed(near, margin=0.2) == first_k(sd, 0.2 - 0.05)
    # Far from 0 (+3): clear of 0 is enough.
    far = paired_contrast([[(0, 3.5), (1, 2.0), (2, 6.5)], base[0]], [1.0, -1.0])
    sd_far = np.std([2.5, 1.0, 5.5], ddof=1)
    assert seeds_needed(far, margin=0.2) == first_k(sd_far, 3.0)
    # A table's rows still too wide get a line each, with that number.
    errors = [("a0", 0, 1.0), ("a0", 1, 1.0), ("a0", 2, 1.0)]
    errors += [("a1", 0, 1.3), ("a1", 1, 0.6), ("a1", 2, 1.25)]
    runs = [
        Run(f"{lvl}{s}", "r", "FINISHED", {"A": lvl, "seed": str(s)}, e / 100, val=0.9)
        for lvl, s, e in errors
    ]
    _, rows = simple_tables(runs, ["A"], {"A": "a0"})
    lines = planning_lines(rows, 0.2)
    assert f"  tuned: A=a1: about {first_k(sd, 0.15)} seeds" in lines


def test_too_wide_an_interval_is_flagged_and_n_is_stated():
    # Two seeds, very noisy: the interval contains 0 and reaches past the margin.
    runs = [
        Run(f"{lvl}{s}", "r", "FINISHED", {"A": lvl, "seed": str(s)}, e / 100, val=0.9)
        for lvl, s, e in [("a0", 0, 1.0), ("a0", 1, 1.2), ("a1", 0, 0.5), ("a1", 1, 2.1)]
    ]
    _, rows = simple_tables(runs, ["A"], {"A": "a0"})
    (row,) = [r for r in rows if r.table == "tuned" and not r.is_baseline]
    assert row.diff.low < 0 < row.diff.high
    assert row.verdict == "too wide to conclude" and row.diff.n == "2 pairs" and row.n == 2


def test_selection_ignores_unfinished_runs_and_breaks_no_ties_by_luck():
    runs = [
        Run("1", "r", "FINISHED", {"A": "a0", TAG: setting("0.001")}, 0.02, val=0.97),
        Run("2", "r", "FAILED", {"A": "a0", TAG: setting("0.003")}, None, val=0.99),
        Run("3", "r", "FINISHED", {"A": "a0", TAG: setting("0.0003")}, 0.03, val=0.96),
    ]
    (sel,) = select(runs, ["A"]).values()
    assert sel.selected == setting("0.001") and setting("0.003") not in sel.by_setting
    assert sel.by_setting[setting("0.0003")] == (pytest.approx(96.0), 1)
    assert not math.isnan(sel.by_setting[sel.selected][0])


USER_STUDY = """\
# @package _global_
defaults:
  - override /model: paper
study:
  name: my_tuned
  factors: [activation]
  baseline: {activation: scaled_tanh}
  nuisance: {data.batch_size: [32, 64]}
hydra:
  sweeper:
    params:
      model/activation: scaled_tanh,relu
      %s
      seed: 0,1
"""


def compose_study(tmp_path, sweep_values: str, *overrides: str):
    """The config of `lenet5-train -m experiment=my_tuned ...` with a user's study file
    outside the repo (hydra.searchpath), as the sweep callback sees it."""
    from hydra import compose, initialize_config_dir

    from lenet5.core.paths import PROJECT_ROOT

    (tmp_path / "experiment").mkdir(parents=True, exist_ok=True)
    line = f"data.batch_size: {sweep_values}" if sweep_values else ""
    (tmp_path / "experiment/my_tuned.yaml").write_text(USER_STUDY % line)
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base=None):
        return compose(
            "config",
            [f"hydra.searchpath=[file://{tmp_path}]", "experiment=my_tuned", *overrides],
            return_hydra_config=True,
        )


def test_a_users_nuisance_grid_is_checked_against_the_sweep_and_tagged(tmp_path):
    from lenet5.core.errors import SweepFailed
    from lenet5.study.nuisance import check_grid, run_tags
    from lenet5.tracking import runs as tracking
    from lenet5.tracking.runinfo import ui_tags

    cfg = compose_study(tmp_path, "32,64")
    check_grid(cfg)  # as declared: accepted
    check_grid(compose_study(tmp_path, "32,64", "data.batch_size=64"))  # a subset: scaled down
    with pytest.raises(
        SweepFailed, match=r"expands data.batch_size=32,128.*data.batch_size: 32,64"
    ):
        check_grid(compose_study(tmp_path, "32,128"))
    with pytest.raises(
        SweepFailed,
        match=r"declares data.batch_size: \[32, 64\] but the sweep expands data.batch_size=32;",
    ):
        check_grid(compose_study(tmp_path, "32"))  # the file itself leaves 64 out
    with pytest.raises(SweepFailed, match=r"data\.batch_size=16"):
        check_grid(compose_study(tmp_path, "32,64", "data.batch_size=16"))  # outside the grid
    job = compose_study(tmp_path, "32,64", "data.batch_size=32", "seed=1", "model/activation=relu")
    assert run_tags(job) == {TAG: json.dumps({"data.batch_size": "32"})}
    tags = tracking.tags_for({"model/activation": "relu"}, 1)
    ui = ui_tags(job, tags, [], tracking.CHOICE_TAGS)
    assert ui[TAG] == run_tags(job)[TAG]
    assert ui["run_name"] == "act=relu\u00b7batch_size=32\u00b7s1"


def test_a_grid_key_the_sweep_does_not_expand_is_refused(tmp_path):
    from lenet5.core.errors import SweepFailed
    from lenet5.study.nuisance import check_grid

    cfg = compose_study(tmp_path, "")
    with pytest.raises(SweepFailed, match=r"does not expand data.batch_size: add"):
        check_grid(cfg)


def test_studies_without_a_grid_tag_nothing(tmp_path):
    from hydra import compose, initialize_config_dir

    from lenet5.core.paths import PROJECT_ROOT
    from lenet5.study.nuisance import check_grid, run_tags

    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base=None):
        cfg = compose("config", ["experiment=one_at_a_time"], return_hydra_config=True)
    check_grid(cfg)
    assert run_tags(cfg) == {}


@pytest.mark.slow
def test_a_users_study_with_its_own_grid_trains_and_reports_with_no_code(
    new_store, tmp_path, capsys
):
    """`lenet5-train -m experiment=my_tuned` (a study file outside the repo, its own nuisance
    grid on data.batch_size), then `lenet5-report`: 2 arms x 2 batch sizes x 2 seeds."""
    import subprocess
    import sys

    store = new_store(tmp_path / "store", experiment="lenet5")
    compose_study(tmp_path / "conf", "32,64")  # writes the study file
    train = str(Path(sys.executable).with_name("lenet5-train"))
    short = ["data.val_size=100", "trainer.max_epochs=2", "+trainer.limit_train_batches=3"]
    quiet = ["trainer.enable_progress_bar=false", "mlflow.pictures=false", "mlflow.log_model=false"]
    quiet.append("threads=1")  # two torch threads spin where the machine is busy
    done = subprocess.run(
        [
            train,
            "-m",
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "experiment=my_tuned",
            *short,
            *quiet,
            *store,
            f"hydra.sweep.dir={tmp_path}/hydra",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    uri = store[0].split("=", 1)[1]
    assert main(["--tracking-uri", uri, "--out", str(tmp_path / "out"), "--no-log"]) == 0
    text = capsys.readouterr().out
    assert "nuisance: data.batch_size" in text and "runs: 8 finished" in text
    rows = read_csv(tmp_path / "out/report.csv")
    selection = [r for r in rows if r["table"] == "selection"]
    assert {(r["level"], json.loads(r["setting"])["data.batch_size"]) for r in selection} == {
        (arm, bs) for arm in ("baseline", "activation=relu") for bs in ("32", "64")
    }
    assert all(int(r["n"]) == 2 for r in selection)
    assert sum(r["verdict"] == "selected" for r in selection) == 2
    tuned = [r for r in rows if r["table"] == "tuned" and r["is_baseline"] == "0"]
    assert [r["level"] for r in tuned] == ["relu"] and tuned[0]["test"] == "paired t"
    assert (tmp_path / "out/report.png").stat().st_size > 10_000
    # Its saved view in the MLflow UI shows the nuisance key beside the factors, a column the
    # trials fill (their flattened config) and an axis of the parallel-coordinates chart.
    from lenet5.tracking.views import TAG_PREFIX

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("lenet5")
    (record,) = [json.loads(v) for k, v in exp.tags.items() if k.startswith(TAG_PREFIX)]
    state = json.loads(record["state"])
    assert state["selectedColumns"][:3] == [
        "params.`activation`",
        "params.`data.batch_size`",
        "params.`seed`",
    ]
    (parallel,) = [c for c in state["compareRunCharts"] if c["type"] == "PARALLEL"]
    assert parallel["selectedParams"] == ["activation", "data.batch_size"]
    trials = client.search_runs([exp.experiment_id], state["searchFilter"])
    assert sorted(r.data.params["data.batch_size"] for r in trials) == ["32"] * 4 + ["64"] * 4


def test_a_tuned_factorial_report_shows_selections_effects_and_interactions(tmp_path):
    from lenet5.report.figure_tuned import write_tuned_chart
    from lenet5.report.reading import SweepInfo
    from lenet5.report.render_tuned import render_tuned_markdown, render_tuned_text
    from lenet5.report.stats import counts
    from lenet5.report.tuning import tables

    runs = []
    for a, b, lr, s in itertools.product(("a0", "a1"), ("b0", "b1"), LRS, range(3)):
        err = 0.01 * (1 + (a == "a1") + (a == "a1" and b == "b1")) + 0.001 * s
        val = 0.98 - abs(LRS.index(lr) - (a == "a1")) * 0.01
        tags = {"A": a, "B": b, "seed": str(s), TAG: setting(lr)}
        runs.append(Run(f"{a}{b}{lr}{s}", "r", "FINISHED", tags, err, val=val))
    info = SweepInfo(
        "fact", "fact-1", "p", "FINISHED", "e", "sqlite://", ["A", "B"], BASELINE_AB,
        runs, counts(runs, len(runs)),
    )  # fmt: skip
    sels, rows = tables(runs, ["A", "B"], BASELINE_AB)
    assert {c: s.selected for c, s in sels.items()} == {
        ("a0", "b0"): setting("0.0003"),
        ("a0", "b1"): setting("0.0003"),
        ("a1", "b0"): setting("0.001"),
        ("a1", "b1"): setting("0.001"),
    }
    assert {r.table for r in rows} == {"tuned", "fixed", "main", "interaction"}
    text = render_tuned_text(info, sels, rows)
    for part in ("Selection per arm", "Main effects", "Two-way interactions", "A x B", "a1 x b1"):
        assert part in text
    # Holm's family is each table's: 2 levels in tuned, fixed and main; 1 interaction.
    assert text.count("Holm-adjusted over the table's 2 comparisons:") == 3
    assert text.count("Holm-adjusted over the table's 1 comparison:") == 1
    assert "### A x B" in render_tuned_markdown(info, sels, rows)
    fig = write_tuned_chart(tmp_path / "f.png", info, sels, rows, {})  # no curves: drawn
    assert (tmp_path / "f.png").stat().st_size > 10_000
    # The interaction plot: A's levels on x, a line per level of B, each cell's mean test error
    # (%) at its selected setting; the lines' slopes differ by the interaction, 1.0.
    (ax,) = [a for a in fig.axes if a.get_title().startswith("A x B: test error")]
    assert "a1 x b1 interaction +1.00 [" in ax.get_title()
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.lines}
    assert lines == {"B=b0": pytest.approx([1.1, 2.1]), "B=b1": pytest.approx([1.1, 3.1])}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a0", "a1"]


def test_a_study_without_a_grid_keeps_its_chart_and_gains_learning_curves(tmp_path):
    from lenet5.report import render
    from lenet5.report.reading import SweepInfo
    from lenet5.report.stats import counts, summarize

    runs, curves = [], {}
    for act, s in itertools.product(("scaled_tanh", "relu"), range(3)):
        rid = f"{act}{s}"
        runs.append(Run(rid, rid, "FINISHED", {"activation": act, "seed": str(s)}, 0.02))
        curves[rid] = [0.90 + 0.01 * s, 0.95 + 0.01 * s + (act == "relu") * 0.01]
    info = SweepInfo(
        "s", "s-1", "p", "FINISHED", "e", "sqlite://", ["activation"],
        {"activation": "scaled_tanh"}, runs, counts(runs, 6),
    )  # fmt: skip
    rows = summarize(runs, ["activation"], {"activation": "scaled_tanh"})
    fig = render.write_chart(tmp_path / "c.png", info, rows, curves)
    (ax,) = [a for a in fig.axes if a.get_title().startswith("activation: validation")]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.lines}
    assert lines["relu (n=3)"] == pytest.approx([91.0, 97.0])
    assert lines["scaled_tanh (n=3)"] == pytest.approx([91.0, 96.0])
    assert any(a.get_title() == "activation (simple)" for a in fig.axes)  # the error panel


def test_tuned_flag_gives_a_factorial_without_a_grid_its_interactions(
    client, uri, tmp_path, capsys
):
    jobs = []
    for act, pool, s in itertools.product(("scaled_tanh", "relu"), ("subsampling", "max"), (0, 1)):
        err = 0.01 + 0.01 * (act == "relu") * (1 + (pool == "max")) + 0.001 * s
        jobs.append(({"activation": act, "pooling": pool}, None, s, 0.98, err, [0.9, 0.98]))
    exp = log_sweep(client, "fact_plain", tmp_path, jobs)
    argv = ["--tracking-uri", uri, "--experiment", exp, "--no-log"]
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    plain = capsys.readouterr().out
    assert "interaction" not in plain and "Main effects" in plain  # as before, by default
    assert main([*argv, "--out", str(tmp_path / "tuned"), "--tuned"]) == 0
    text = capsys.readouterr().out
    assert "nuisance: none" in text and "Fixed setting" not in text
    rows = read_csv(tmp_path / "tuned/report.csv")
    (inter,) = [r for r in rows if r["table"] == "interaction"]
    # (relu,max) - (relu,sub) - (tanh,max) + (tanh,sub) = 2 - 1 - 0 + 0 points, per seed.
    assert float(inter["diff_pct"]) == pytest.approx(1.0)
    assert inter["test"] == "paired t" and inter["n_diff"] == "2 pairs"


@pytest.mark.parametrize(
    ("study", "arms", "factors"),
    [
        ("one_at_a_time_tuned", 5, ["activation", "pooling", "connectivity", "head"]),
        ("activation_x_head_tuned", 4, ["activation", "head"]),
        ("activation_x_init_tuned", 4, ["activation", "init"]),
    ],
)
def test_the_shipped_tuned_studies_expand_their_grid_with_the_arms_and_seeds(study, arms, factors):
    from hydra import compose, initialize_config_dir

    from lenet5.core.paths import PROJECT_ROOT
    from lenet5.study.design import CHOICE_TAGS
    from lenet5.study.nuisance import check_grid, grid
    from lenet5.study.overrides import count_jobs

    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base=None):
        cfg = compose("config", [f"experiment={study}"], return_hydra_config=True)
    check_grid(cfg)
    assert grid(cfg) == {"optimizer.lr": ["0.0003", "0.001", "0.003"]}
    assert count_jobs(cfg) == arms * 3 * 3
    assert list(cfg.study.factors) == factors
    assert set(factors) <= set(CHOICE_TAGS.values())  # each factor is a tag the runs carry


def test_the_report_flags_arms_still_learning_and_selections_at_a_grids_edge(
    oat, uri, tmp_path, capsys
):
    """oat's curves rise 5, 4 and 3 points (seeds 0-2) over their last 2 epochs: every arm
    is flagged at the setting reported; ReLU selected the bottom of its grid, max pooling the
    top, the baseline the middle (not flagged). Both files carry the same lines."""
    exp, _ = oat
    assert report(uri, exp, tmp_path / "out") == 0
    text = capsys.readouterr().out
    checks = text.split("Checks:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    rising = "not converged, more epochs: its validation accuracy rose +4.00 points over its"
    assert checks == [
        f"  activation=relu at lr=0.0003: {rising} last 2 epochs (mean of 3 runs), more than "
        "half the margin",
        f"  pooling=max at lr=0.003: {rising} last 2 epochs (mean of 3 runs), more than half "
        "the margin",
        f"  baseline at lr=0.001: {rising} last 2 epochs (mean of 3 runs), more than half the "
        "margin",
        "  activation=relu: optimizer.lr=0.0003 selected, the bottom of its grid (0.0003, "
        "0.001, 0.003): the best may lie below it; widen the grid",
        "  pooling=max: optimizer.lr=0.003 selected, the top of its grid (0.0003, 0.001, "
        "0.003): the best may lie above it; widen the grid",
    ]
    markdown = (tmp_path / "out/report.md").read_text()
    assert "## Checks" in markdown
    assert all(f"- {c.strip()}" in markdown for c in checks)


def test_a_flat_curve_or_a_two_value_grid_is_not_flagged():
    from lenet5.report.checks import at_edges, not_converged, rise
    from lenet5.report.tuning import Selection

    assert rise([[0.90, 0.95, 0.96], [0.90, 0.93, 0.98]]) == pytest.approx(0.07)
    assert rise([[0.9, 0.95]]) is None  # too short to say
    runs = [
        Run(f"{a}{s}", "", "FINISHED", {"activation": a, "seed": str(s)}, 0.01)
        for a in ("relu", "scaled_tanh")
        for s in (0, 1)
    ]
    curves = {
        "relu0": [0.97, 0.98, 0.99],  # +2 points
        "relu1": [0.90, 0.95, 0.98],  # +8 points
        "scaled_tanh0": [0.98, 0.9805, 0.9809],  # +0.09: under half the 0.2 margin
        "scaled_tanh1": [0.98, 0.9805, 0.9809],
    }
    base = {"activation": "scaled_tanh"}
    assert not_converged(runs, curves, ["activation"], base, margin=0.2) == [
        "activation=relu: not converged, more epochs: its validation accuracy rose +5.00 "
        "points over its last 2 epochs (mean of 2 runs), more than half the margin"
    ]
    assert not_converged(runs, curves, ["activation"], base, margin=12) == []
    by = {setting("0.001"): (98.0, 2), setting("0.003"): (98.5, 2)}
    two = {("relu",): Selection(("relu",), by, setting("0.003"))}
    assert at_edges(two, ["activation"], base) == []  # two values: every choice is an edge


def test_robust_summaries_beside_the_intervals(oat, uri, tmp_path, capsys):
    """Per arm at its selected setting: the share of seeds it beats the baseline in, the
    median and interquartile mean (scipy's trim_mean, 0.25) of the per-seed differences."""
    from scipy.stats import trim_mean

    from lenet5.report.robust import bootstrap_ci, iqm, prob_better

    assert prob_better([-1.0, 0.0, 2.0, -3.0]) == pytest.approx(0.625)
    assert iqm([1, 2, 3, 4, 100, -50, 7, 8]) == pytest.approx(
        trim_mean([1, 2, 3, 4, 100, -50, 7, 8], 0.25)
    )
    low, high = bootstrap_ci([0.1, 0.3, 0.2, 0.5, 0.4], reps=500)
    assert 0.1 <= low < 0.3 < high <= 0.5
    assert bootstrap_ci([0.1, 0.3, 0.2], reps=200) == bootstrap_ci([0.1, 0.3, 0.2], reps=200)
    exp, jobs = oat
    assert report(uri, exp, tmp_path / "out") == 0
    text = capsys.readouterr().out
    block = text.split(
        "Robust summaries (per-seed differences to the baseline, points of test error):\n"
    )[1]

    def errs(act, pool, lr):
        return [
            100 * e
            for lv, r_lr, _, _, e, _ in jobs
            if (lv["activation"], lv["pooling"], r_lr) == (act, pool, lr)
        ]

    base = errs("scaled_tanh", "subsampling", "0.001")
    relu = [a - b for a, b in zip(errs("relu", "subsampling", "0.0003"), base, strict=True)]
    median = sorted(relu)[1]
    line = next(x for x in block.splitlines() if x.startswith("  activation=relu: "))
    assert line == (
        f"  activation=relu: better than the baseline in {prob_better(relu):.0%} of 3 seeds; "
        f"per-seed difference median {median:+.2f}, IQM {trim_mean(relu, 0.25):+.2f}"
    )
