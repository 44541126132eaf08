"""What a sweep opens as in the MLflow UI: a saved view of the experiment, links to it.

A saved view is the experiment tag `mlflow.sharedViewState.<key>` the UI itself writes from
its "Views" menu (MLflow 3.17): a JSON record whose `state` holds the runs table's filter,
sort, columns and the charts. The sweep's view selects its trials, shows every one of them
(not the UI's first 10), puts each factor, each nuisance key of a tuned study (e.g.
`optimizer.lr`) and the seed beside the final test error, sorted by it, and opens charts: the
final test error per run (bars), parallel coordinates over the factors and nuisance keys, and
each run's difference from the baseline run.

Every link opens the classic runs view (`?workflowType=machine_learning`): without it MLflow
3.17 opens experiments in its GenAI view.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

from lenet5.core import names
from lenet5.core.paths import is_server
from lenet5.study.design import CHOICE_TAGS
from lenet5.study.overrides import overrides_of

TAG_PREFIX = "mlflow.sharedViewState."
ERROR = names.FINAL_TEST_ERROR  # what the view sorts by and charts
DEFAULT_UI = "http://127.0.0.1:5000"
WORKFLOW = "workflowType=machine_learning"


def view_key(sweep_id: str) -> str:
    return "lenet5" + hashlib.sha256(sweep_id.encode()).hexdigest()[:16]


def ui_base(tracking_uri: str) -> str:
    """The UI's address: $LENET5_UI_URL, a tracking server's own, else `mlflow ui`'s default."""
    if os.environ.get(names.UI_ENV):
        return os.environ[names.UI_ENV].rstrip("/")
    if is_server(tracking_uri):
        return tracking_uri.rstrip("/")
    return DEFAULT_UI


def ui_command(tracking_uri: str) -> str | None:
    """The command that serves the UI for a local store (None for a tracking server)."""
    if is_server(tracking_uri):
        return None
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000"


def runs_link(base: str, exp_id: str, key: str | None = None, charts: bool = False) -> str:
    link = f"{base}/#/experiments/{exp_id}/runs?{WORKFLOW}"
    if key:
        link += f"&viewStateShareKey={key}"
    if charts:
        link += "&compareRunsMode=CHART"
    return link


def run_link(base: str, exp_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{exp_id}/runs/{run_id}?{WORKFLOW}"


def trial_filter(sweep_id: str) -> str:
    return f"tags.`{names.SWEEP_ID}` = '{sweep_id}' and tags.`{names.ROLE}` = '{names.ROLE_TRIAL}'"


def _chart(kind: str, uuid: str, section: str, **fields) -> dict:
    return {
        "uuid": uuid,
        "type": kind,
        "runsCountToCompare": 100,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,
        **fields,
    }


def view_state(
    sweep_id: str, factors: list[str], baseline_run_id: str | None, nuisance: list[str] = ()
) -> dict:
    """The runs table and charts of a sweep's view (the UI's own state keys); `nuisance`:
    the study's nuisance keys, logged as params under their config keys."""
    section = "lenet5-study"
    params = [*factors, *nuisance, names.SEED]
    charts = [
        _chart("BAR", "lenet5-bar", section, metricKey=ERROR, displayName="final test error"),
        _chart(
            "PARALLEL",
            "lenet5-parallel",
            section,
            selectedParams=[*factors, *nuisance],
            selectedMetrics=[ERROR],
            showAllRuns=True,
        ),
    ]
    if baseline_run_id:
        charts.append(
            _chart(
                "DIFFERENCE",
                "lenet5-difference",
                section,
                compareGroups=["Model metrics", "Parameters"],
                chartName="Difference from the baseline run",
                showChangeFromBaseline=True,
                showDifferencesOnly=True,
                baselineColumnUuid=baseline_run_id,
            )
        )
    return {
        "searchFilter": trial_filter(sweep_id),
        "orderByKey": f"metrics.`{ERROR}`",
        "orderByAsc": True,
        "runsHiddenMode": "SHOW_ALL",
        "selectedColumns": [
            *(f"params.`{p}`" for p in params),
            f"metrics.`{ERROR}`",
            f"metrics.`{names.FINAL_VAL_ACC}`",
            "attributes.`Dataset`",
            "attributes.`Models`",
        ],
        "compareRunSections": [
            {
                "uuid": section,
                "name": "Study",
                "display": True,
                "isReordered": True,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        "compareRunCharts": charts,
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
    }


def write_view(
    client,
    exp_id: str,
    sweep_id: str,
    study: str,
    factors: list[str],
    baseline_run_id: str | None = None,
    nuisance: list[str] = (),
) -> str:
    """Save (or update) the sweep's view as an experiment tag; returns its key."""
    key = view_key(sweep_id)
    now = int(time.time() * 1000)
    record = {
        "name": f"{study}: {sweep_id}",
        "createdAt": now,
        "updatedAt": now,
        "state": json.dumps(view_state(sweep_id, factors, baseline_run_id, list(nuisance))),
    }
    client.set_experiment_tag(exp_id, TAG_PREFIX + key, json.dumps(record))
    return key


def describe_experiment(client, exp_id: str, sweep_id: str, study: str, link: str) -> None:
    """The experiment's description (Markdown above the runs table): where to start."""
    text = (
        f"Start here: the latest sweep, **{study}** (`{sweep_id}`), opens as a comparison in "
        f"the view [{study}: {sweep_id}]({link}) (also under *Views*): its trials with each "
        "factor and the final test error, sorted by it, and its charts. Each trial carries "
        "its design choices as params (`activation=relu`, ...), pictures under *Artifacts* "
        "and its best model. `lenet5-report --study NAME` prints the statistics."
    )
    client.set_experiment_tag(exp_id, "mlflow.note.content", text)


def baseline_run(client, exp_id: str, sweep_id: str, baseline: dict) -> str | None:
    """The sweep's FINISHED baseline trial with the lowest seed (None if there is none)."""
    if not baseline:
        return None
    runs = client.search_runs([exp_id], trial_filter(sweep_id), max_results=50_000)
    hits = [
        r
        for r in runs
        if r.info.status == "FINISHED"
        and all(r.data.tags.get(f) == str(v) for f, v in baseline.items())
    ]
    hits.sort(key=lambda r: int(r.data.tags.get(names.SEED, 0)))
    return hits[0].info.run_id if hits else None


def _swept_keys(cfg) -> list[str]:
    """The keys the sweep varies (command line or study file), without Hydra's +/~."""
    return [k.lstrip("+~") for k, (o, _) in overrides_of(cfg).items() if o.is_sweep_override()]


def factors_of(cfg) -> list[str]:
    """The study's factors; for a sweep without a study, the design choices it sweeps."""
    if cfg.study.factors:
        return [str(f) for f in cfg.study.factors]
    return list(dict.fromkeys(CHOICE_TAGS[k] for k in _swept_keys(cfg) if k in CHOICE_TAGS))


def searched_of(cfg) -> list[str]:
    """The config values a sweep varies beyond its design choices and seed (a learning rate
    Optuna searches, a batch size listed on the command line): columns of its view."""
    return [k for k in _swept_keys(cfg) if "." in k and "/" not in k and k not in CHOICE_TAGS]


def publish(client, state: dict, describe: bool = False, final: bool = False) -> str:
    """Write the view of the sweep in `state` (the sweep callback's) and log its link; at the
    end (`final`), with its baseline run for the difference chart. Returns the link."""
    exp_id, sweep_id, study = state["experiment_id"], state["sweep_id"], state["study"]
    baseline = baseline_run(client, exp_id, sweep_id, state["baseline"]) if final else None
    factors, nuisance = state["view_factors"], state.get("view_nuisance", [])
    key = write_view(client, exp_id, sweep_id, study, factors, baseline, nuisance)
    link = runs_link(ui_base(state["tracking_uri"]), exp_id, key)
    if describe:
        describe_experiment(client, exp_id, sweep_id, study, link)
    command = ui_command(state["tracking_uri"])
    logging.getLogger("lenet5.sweep").info(
        "sweep %s in the MLflow UI: %s%s",
        sweep_id,
        link,
        f" (serve it with: {command})" if command else "",
    )
    return link
