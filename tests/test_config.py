"""Every option of every config group composes and trains a step; bad configs are refused."""

import sys

import pytest
import torch
from config_options import COMPANIONS, all_options
from hydra.errors import MissingConfigException
from hydra.utils import instantiate

from lenet5.cli.train import compose, run
from lenet5.core.errors import ConfigError, UserError
from lenet5.training.build import build_module
from lenet5.training.sdlm import SDLM
from lenet5.training.validate import validate


def test_the_groups_users_rely_on_exist():
    options = set(all_options())
    for group, names in {
        "model/activation": ["scaled_tanh", "tanh", "relu", "sigmoid"],
        "model/pooling": ["subsampling", "avg", "max"],
        "model/connectivity": ["sparse", "full"],
        "model/head": ["rbf", "softmax"],
        "model": ["paper", "modern", "tutorial_tanh_avg", "tutorial_tanh_max"],
        "data": ["mnist", "mnist_subset", "fashion_mnist", "kmnist", "qmnist", "cifar10"],
        "model/norm": ["none", "batch"],
        "model/dropout": ["none", "p0.5"],
        "experiment": ["modern_tricks", "one_at_a_time_datasets"],
        "optimizer": ["sgd", "sgd_momentum", "adam"],
    }.items():
        for name in names:
            assert (group, name) in options


@pytest.mark.parametrize(("group", "option"), all_options())
def test_every_option_composes_and_trains_a_step(group, option):
    cfg = compose([f"{group}={option}", *COMPANIONS.get((group, option), [])])
    validate(cfg)
    assert cfg.hydra.runtime.choices[group] == option
    datamodule = instantiate(cfg.data, seed=0)  # builds, loads nothing yet
    assert datamodule.batch_size == cfg.data.batch_size
    module = build_module(cfg)
    c, s, k = cfg.model.in_channels, cfg.model.input_size, cfg.model.num_classes
    x, y = torch.randn(4, c, s, s), torch.randint(0, k, (4,))
    scores = module(x)
    assert scores.shape == (4, k) and torch.isfinite(scores).all()
    loss = module.loss(scores, y)
    loss.backward()
    optim = module.configure_optimizers()
    optim = optim["optimizer"] if isinstance(optim, dict) else optim
    if isinstance(optim, SDLM):  # its curvature is estimated before each pass by the module
        optim.estimate_hessian(module.model, module.loss, x, y)
    before = [p.detach().clone() for p in module.parameters()]
    optim.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


def test_presets_pick_the_documented_choices():
    expected = {
        "paper": ("scaled_tanh", "subsampling", "sparse", "rbf", "mle"),
        "modern": ("relu", "max", "full", "softmax", "cross_entropy"),
        "tutorial_tanh_avg": ("tanh", "avg", "full", "softmax", "cross_entropy"),
        "tutorial_tanh_max": ("tanh", "max", "full", "softmax", "cross_entropy"),
    }
    for preset, choices in expected.items():
        got = compose([f"model={preset}"]).hydra.runtime.choices
        groups = ("activation", "pooling", "connectivity", "head", "loss")
        assert tuple(got[f"model/{g}"] for g in groups) == choices, preset


def test_paper_recipe_sets_optimizer_schedule_init_and_per_sample_updates():
    cfg = compose(["recipe=paper"])
    choices = cfg.hydra.runtime.choices
    assert (choices["optimizer"], choices["scheduler"], choices["model/init"]) == (
        "sdlm",
        "paper",
        "paper_sqrt",
    )
    assert cfg.optimizer.lr == 0.0001 and cfg.optimizer.mu == 0.02
    assert cfg.data.batch_size == 1 and cfg.trainer.max_epochs == 20
    # the command line still wins over the recipe, e.g. the printed 2.4/F initialization
    assert compose(["recipe=paper", "model/init=paper"]).model.init.fan_in_power == 1.0


def test_one_choice_flips_on_top_of_a_preset():
    cfg = compose(["model=paper", "model/pooling=max", "model/loss=map", "model.loss.j=0.5"])
    assert cfg.model.pooling._target_ == "torch.nn.MaxPool2d"
    assert cfg.model.connectivity._target_.endswith("SparseConv2d")
    assert cfg.model.loss.j == 0.5


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(MissingConfigException) as err:
        compose(["model/activation=swishy"])
    message = str(err.value)
    for valid in ("scaled_tanh", "tanh", "relu", "sigmoid"):
        assert valid in message


# The launchers shipped (Hydra's own, the joblib plugin, the submitit plugin's local and
# Slurm ones) and the class each resolves to.
LAUNCHERS = {
    "basic": "BasicLauncher",
    "joblib": "IsolatedLauncher",  # lenet5.cli.launcher: each job in its own process
    "slurm": "SlurmLauncher",
    "submitit_local": "LocalLauncher",
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_every_study_composes_under_every_launcher(launcher):
    """A study file says what to run, not where: no launcher key of its own, so each
    launcher's schema takes it (a joblib-only `n_jobs` once broke `hydra/launcher=slurm`)."""
    studies = sorted(o for g, o in all_options() if g == "experiment")
    assert len(studies) >= 9
    for study in studies:
        cfg = compose([f"experiment={study}", f"hydra/launcher={launcher}"])
        assert cfg.hydra.launcher._target_.endswith("." + LAUNCHERS[launcher]), study
        assert cfg.hydra.sweeper.params, study  # the study's grid is there for every launcher
        assert cfg.threads == 1, study
    # Without a launcher named, a study runs its jobs in parallel with joblib, one per core
    # (joblib's own n_jobs=-1) and 1 torch thread each.
    default = compose([f"experiment={studies[0]}"])
    assert default.hydra.runtime.choices["hydra/launcher"] == "joblib"
    assert default.hydra.launcher.n_jobs == -1


def test_cohorts_on_slurm_take_the_slurm_launchers_keys():
    """`hydra/launcher=cohort_slurm`: the cohort launcher with a `slurm` block, each key one
    of `hydra/launcher=slurm`'s (what a user sets there works here)."""
    from hydra.utils import instantiate

    cohorts = compose(["hydra/launcher=cohort_slurm", "hydra.launcher.slurm.gpus_per_node=1"])
    launcher = instantiate(cohorts.hydra.launcher)
    assert type(launcher).__name__ == "CohortLauncher"
    assert launcher.slurm["gpus_per_node"] == 1 and launcher.slurm["lost_after_s"] == 30
    solo = compose(["hydra/launcher=slurm"]).hydra.launcher
    assert set(launcher.slurm) < set(solo)
    assert instantiate(compose(["hydra/launcher=cohort"]).hydra.launcher).slurm is None


def test_a_launcher_whose_plugin_is_missing_names_the_extra(monkeypatch, capsys):
    from lenet5.cli.train import check_plugins, main

    check_plugins(["-m", "hydra/launcher=slurm", "seed=0,1"])  # installed here: accepted
    # As in a Python without the [slurm] extra: the plugin's import fails.
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher", None)
    monkeypatch.setattr(sys, "argv", ["lenet5-train", "-m", "hydra/launcher=slurm", "seed=0,1"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: hydra/launcher=slurm needs Hydra's plugin hydra_plugins.")
    assert line.endswith("install it with: pip install -e '.[slurm]' (from the lenet5 checkout)")


def test_a_sweeper_whose_plugin_is_missing_names_the_extra(monkeypatch):
    from lenet5.cli.train import check_plugins

    check_plugins(["-m", "hydra/sweeper=optuna"])  # installed with the dev extra: accepted
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_optuna_sweeper", None)
    with pytest.raises(UserError, match=r"^hydra/sweeper=optuna needs Hydra's plugin") as err:
        check_plugins(["-m", "hydra/sweeper=optuna"])
    assert str(err.value).endswith("pip install -e '.[optuna]' (from the lenet5 checkout)")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is invalid: it must be a number > 0"),
        (["optimizer.lr=abc"], "optimizer.lr='abc' is invalid"),
        (["data.batch_size=0"], "data.batch_size=0 is invalid: it must be an integer >= 1"),
        (["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5 is invalid"),
        (["data.size=28"], "at least 32x32"),
        (["model/head=rbf", "data.num_classes=12"], "10 digits only"),
        (
            ["model/head=softmax", "model/loss=mle"],
            "use model/head=rbf, or model/loss=cross_entropy",
        ),
        (["model/head=rbf", "model/loss=cross_entropy"], "model/loss=mle or model/loss=map"),
        (
            ["+trainer.gradient_clip_val=0.5", "data.chunk_size=1024"],
            "trainer.gradient_clip_val=0.5 needs one update per Lightning step, but "
            "data.chunk_size=1024 serves several: set data.chunk_size=64",
        ),
    ],
)
def test_impossible_configs_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.devices=2"], "trainer.devices=2: a run of LeNet-5 (60k parameters) gains"),
        (["trainer.devices=auto"], "trainer.devices=auto: a run of LeNet-5"),
        (["+trainer.strategy=ddp_spawn"], "trainer.strategy=ddp_spawn: a run of LeNet-5"),
    ],
)
def test_one_run_is_one_device_and_parallel_runs_are_named(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    assert message in str(err.value)
    assert "hydra/launcher=joblib hydra.launcher.n_jobs=N" in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: nothing to refuse")
def test_gpu_asked_for_where_there_is_none_is_refused_before_training():
    with pytest.raises(ConfigError) as err:
        validate(compose(["trainer.accelerator=gpu"]))
    assert "trainer.accelerator=gpu, but torch" in str(err.value)
    assert "sees no CUDA GPU here: use trainer.accelerator=cpu" in str(err.value)


@pytest.mark.parametrize("typed", ["2026", "nan", "true", "null", "1e3", "1_000", "0x10", ".inf"])
def test_names_are_the_text_typed_whatever_yaml_reads_it_as(typed):
    cfg = compose([f"mlflow.experiment_name={typed}", f"study.name={typed}"])
    validate(cfg)
    assert cfg.mlflow.experiment_name == typed
    assert cfg.study.name == (None if typed == "null" else typed)  # null: not a study


def test_a_name_yaml_reads_as_a_number_in_a_file_is_refused_naming_the_key(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment/y2026.yaml").write_text(
        "# @package _global_\nstudy:\n  name: 2026\n  factors: [activation]\n"
        "  baseline: {activation: scaled_tanh}\n"
    )
    with pytest.raises(ConfigError) as err:
        validate(compose([f"hydra.searchpath=[file://{tmp_path}]", "experiment=y2026"]))
    assert str(err.value) == (
        "study.name: YAML reads the name 2026 as int, not as text: quote it in the file that "
        "sets it ('2026'), or set it on the command line"
    )


def test_a_run_named_2026_lands_in_the_experiment_named_2026(quick, new_store, tmp_path):
    from mlflow.tracking import MlflowClient

    run([*quick, *new_store(tmp_path, experiment="2026")])
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (rec,) = client.search_runs([client.get_experiment_by_name("2026").experiment_id])
    assert rec.info.status == "FINISHED"
    assert rec.data.params["mlflow.experiment_name"] == "2026"


def test_the_modern_switches_are_off_in_every_preset():
    for preset in ("paper", "modern", "tutorial_tanh_avg", "tutorial_tanh_max"):
        cfg = compose([f"model={preset}"])
        choices = cfg.hydra.runtime.choices
        assert (choices["model/norm"], choices["model/dropout"]) == ("none", "none")
        assert cfg.model.norm is None and cfg.model.dropout is None
