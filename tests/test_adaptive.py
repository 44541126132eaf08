"""hydra/sweeper=adaptive: seeds in rounds, more only for the comparisons still open; the
report's sequential verdicts; a relaunch replays the rounds and trains nothing twice. Run
in this process through `lenet5-train`'s entry point (`test_sweep.multirun`)."""

import csv
import json

import pytest
from test_sweep import multirun, parent_and_children, sweep_client  # noqa: F401 (fixtures)

from lenet5.report import main as report
from lenet5.report.reading import children_of
from lenet5.report.sequential import decide, seed_differences

DESIGN = [
    "hydra/sweeper=adaptive",
    "hydra.sweeper.seeds.min=2",
    "hydra.sweeper.seeds.max=4",  # looks at 2, 3, 4 seeds
    "model/activation=scaled_tanh,relu",
    "study.factors=[activation]",
    "+study.baseline.activation=scaled_tanh",
]


def seeds_by_arm(children) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for c in children:
        out.setdefault(c.data.tags["activation"], []).append(int(c.data.tags["seed"]))
    return {k: sorted(v) for k, v in out.items()}


def test_a_resolved_comparison_stops_at_the_first_look(multirun, sweep_client):  # noqa: F811
    """A margin of 100,000 points (wider than any interval of 2 seeds): equivalence at the
    first look, no second round."""
    message, output = multirun(*DESIGN, "study.margin=100000", "seed=0,1,2,3,4,5")
    assert message is None, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    assert seeds_by_arm(children) == {"scaled_tanh": [0, 1], "relu": [0, 1]}
    assert "the sweeper chooses the seeds (2 -> 3 -> 4 per arm); seed=0,1,2,3,4,5" in output
    adaptive = json.loads(parent.data.tags["lenet5.adaptive"])
    assert adaptive == {"looks": [2, 3, 4], "alpha": 0.05, "hope": 1.0}
    assert "lenet5.expected_runs" not in parent.data.tags  # not known before the rounds
    assert parent.info.status == "FINISHED"


@pytest.mark.slow  # 8-16 short runs that learn, and the relaunch (~1 min)
def test_an_open_comparison_gets_seeds_look_by_look_and_a_relaunch_trains_nothing_again(
    multirun,  # noqa: F811
    sweep_client,  # noqa: F811
    tmp_path,
    capsys,
):
    """Two activations close to each other (the paper's scaled tanh, plain tanh), a margin
    of 0.0001 points and no giving up: at the first look's level (t with 1 df: ~100 standard
    errors) no verdict, so both arms get seeds look by look, to a verdict or the last look,
    as `decide` says on the recorded runs."""
    design = [a.replace("scaled_tanh,relu", "scaled_tanh,tanh") for a in DESIGN]
    learn = ["trainer.limit_train_batches=30", "optimizer.lr=0.003"]  # past chance: errors differ
    args = [*design, *learn, "study.margin=0.0001", "hydra.sweeper.give_up=false"]
    message, output = multirun(*args)
    assert message is None, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    assert {c.info.status for c in children} == {"FINISHED"}
    runs = children_of(sweep_client, parent.info.experiment_id, parent.info.run_id)
    diffs = seed_differences(runs, ["activation"], {"activation": "scaled_tanh"})
    (outcome,) = decide(list(diffs.values()), [2, 3, 4], margin=0.0001, hope=None)
    n = outcome.n
    assert n in (3, 4) and seeds_by_arm(children) == {
        "scaled_tanh": list(range(n)),
        "tanh": list(range(n)),
    }
    assert output.count("adaptive seeds: round") == n - 1  # rounds of 2, then +1 seed each
    # Stopped before it ended (its parent KILLED), the relaunch replays the rounds from the
    # store under the same parent: every job skipped with its result, nothing trained again.
    sweep_client.set_terminated(parent.info.run_id, "KILLED")
    message, output = multirun(*args)
    assert message is None, output[-3000:]
    again_parent, again = parent_and_children(sweep_client)
    assert again_parent.info.run_id == parent.info.run_id
    assert again_parent.info.status == "FINISHED"
    assert sorted(c.info.run_id for c in again) == sorted(c.info.run_id for c in children)
    # The report gives the sequential verdict with its look and level.
    capsys.readouterr()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert report(["--tracking-uri", uri, "--no-log", "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    block = text.split("Adaptive seeds (looks at 2, 3, 4 seeds;", 1)[1].splitlines()
    assert block[1].startswith(f"  activation=tanh: {outcome.verdict}")
    assert f"({'look ' + str(outcome.look)}, {n} seeds)" in block[1]
    # Compute per arm: the mean of its runs' training FLOPs, and the figure beside the report.
    flops = [
        c.data.metrics["final/train_flops"] for c in children if c.data.tags["activation"] == "tanh"
    ]
    assert f"  activation=tanh: {sum(flops) / len(flops):.3g} training FLOPs" in text
    assert (tmp_path / "r" / "cost.png").stat().st_size > 0
    # The per-example evidence, counted here from the runs' predictions.
    wrong = {}
    for c in children:
        path = sweep_client.download_artifacts(c.info.run_id, "predictions/test.csv", str(tmp_path))
        with open(path) as f:
            rows = list(csv.DictReader(f))
        wrong[(c.data.tags["activation"], c.data.tags["seed"])] = [
            r["correct"] == "0" for r in rows
        ]
    lost = [
        sum(a and not b for a, b in zip(wrong[("tanh", s)], wrong[("scaled_tanh", s)], strict=True))
        for s in map(str, range(n))
    ]
    assert sum(lost) > 0  # the two activations' runs disagree on some digits
    assert (
        f"  activation=tanh: wrong where the baseline is right {sum(lost) / n:.0f} of 200" in text
    )
