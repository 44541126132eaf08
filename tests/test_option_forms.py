"""An option file in any natural form works, from a folder outside the repo; a target that is
not what its slot takes is refused before training, naming the file, the target and the slot."""

from pathlib import Path

import pytest
import torch
from torch import nn

from lenet5.cli.train import compose, run
from lenet5.core.errors import ConfigError
from lenet5.training.build import build_model
from lenet5.training.validate import validate


def leaky(negative_slope: float = 0.01) -> nn.Module:
    """A factory of activations, as a user might write one."""
    return nn.LeakyReLU(negative_slope)


def pool(kernel_size: int = 2, channels: int | None = None) -> nn.Module:
    """A factory of pools that takes the map count, which the network offers where taken."""
    assert channels in (6, 16)
    return nn.AvgPool2d(kernel_size)


def not_a_module() -> str:
    return "relu"


# Every form of an option file, for a slot that takes no arguments (activation) and one that
# takes some of its own (pooling). What each builds, checked below.
FORMS = {
    "model/activation": {
        "class": ("_target_: torch.nn.Softsign\n", nn.Softsign, {}),
        "class_args": (
            "_target_: torch.nn.LeakyReLU\nnegative_slope: 0.1\n",
            nn.LeakyReLU,
            {"negative_slope": 0.1},
        ),
        "partial": ("_target_: torch.nn.GELU\n_partial_: true\n", nn.GELU, {}),
        "partial_args": (
            "_target_: torch.nn.ELU\n_partial_: true\nalpha: 0.5\n",
            nn.ELU,
            {"alpha": 0.5},
        ),
        "factory": (f"_target_: {__name__}.leaky\n", nn.LeakyReLU, {"negative_slope": 0.01}),
        "factory_args": (
            f"_target_: {__name__}.leaky\nnegative_slope: 0.3\n",
            nn.LeakyReLU,
            {"negative_slope": 0.3},
        ),
    },
    "model/pooling": {
        "class": (
            "_target_: torch.nn.MaxPool2d\nkernel_size: 2\n",
            nn.MaxPool2d,
            {"kernel_size": 2},
        ),
        "partial": (
            "_target_: torch.nn.AvgPool2d\n_partial_: true\nkernel_size: 2\n",
            nn.AvgPool2d,
            {"kernel_size": 2},
        ),
        "class_trainable": ("_target_: lenet5.model.pooling.TrainableSubsampling\n", None, {}),
        "factory": (f"_target_: {__name__}.pool\n", nn.AvgPool2d, {"kernel_size": 2}),
        "factory_args": (
            f"_target_: {__name__}.pool\nkernel_size: 2\n",
            nn.AvgPool2d,
            {"kernel_size": 2},
        ),
    },
}
CASES = [(group, form) for group, forms in FORMS.items() for form in forms]


def write_option(folder: Path, group: str, name: str, text: str) -> list[str]:
    """A one-file option in a config folder outside the repo; the overrides that pick it."""
    (folder / group).mkdir(parents=True, exist_ok=True)
    (folder / group / f"{name}.yaml").write_text(text)
    return [f"hydra.searchpath=[file://{folder}]", f"{group}={name}"]


def layers_of(model: nn.Module, group: str) -> list[nn.Module]:
    if group == "model/activation":
        return [model.c1_act, model.c3_act, model.c5_act, model.f6_act]
    return [model.s2, model.s4]


@pytest.mark.parametrize(("group", "form"), CASES)
def test_each_form_builds_a_layer_per_use_and_trains_a_step(group, form, tmp_path):
    text, cls, attrs = FORMS[group][form]
    cfg = compose(write_option(tmp_path, group, form, text))
    validate(cfg)
    model = build_model(cfg.model)
    layers = layers_of(model, group)
    assert len({id(layer) for layer in layers}) == len(layers)  # one instance per use
    for layer in layers:
        assert type(layer) is cls if cls else layer.weight.shape in {(6,), (16,)}
        for name, value in attrs.items():
            assert getattr(layer, name) == value
    scores = model(torch.randn(3, 1, 32, 32))
    assert scores.shape == (3, 10) and torch.isfinite(scores).all()
    scores.sum().backward()


def test_one_line_files_train_end_to_end_from_outside_the_repo(quick, store, client, tmp_path):
    """The README's one-line form, and a factory with arguments, in a run: what a user does."""
    extra = tmp_path / "my_conf"
    write_option(extra, "model/activation", "softsign", "_target_: torch.nn.Softsign\n")
    write_option(extra, "model/pooling", "mine", f"_target_: {__name__}.pool\nkernel_size: 2\n")
    run(
        [
            *quick,
            *store,
            f"hydra.searchpath=[file://{extra}]",
            "model/activation=softsign",
            "model/pooling=mine",
        ]
    )
    (rec,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert rec.info.status == "FINISHED"
    assert (rec.data.tags["activation"], rec.data.tags["pooling"]) == ("softsign", "mine")
    # trainable subsampling's 12 + 32 parameters gone with the plain pool: 60,000 - 44
    assert rec.data.metrics["n_params"] == 59_956


@pytest.mark.slow
@pytest.mark.parametrize(("group", "form"), CASES)
def test_each_form_trains_end_to_end_from_outside_the_repo(
    group, form, quick, store, client, tmp_path
):
    text, _, _ = FORMS[group][form]
    run([*quick, *store, *write_option(tmp_path / "conf", group, form, text)])
    (rec,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert rec.info.status == "FINISHED", rec.data.tags.get("failure_reason")
    assert rec.data.tags[group.split("/")[1]] == form


@pytest.mark.parametrize(
    ("group", "text", "problem", "expects"),
    [
        (
            "model/activation",
            "_target_: torch.nn.Softsgn\n",
            "_target_ torch.nn.Softsgn cannot be imported (torch.nn has no attribute 'Softsgn')",
            "model/activation takes a torch.nn.Module class or a function that returns a Module, "
            "built with no arguments",
        ),
        (
            "model/activation",
            "_target_: torch.Tensor\n",
            "_target_ torch.Tensor is a class but not a torch.nn.Module",
            "model/activation takes a torch.nn.Module class",
        ),
        (
            "model/pooling",
            "_target_: torch.nn.functional.max_pool2d_with_indices\n",  # a function, not a layer
            "_target_ torch.nn.functional.max_pool2d_with_indices failed to build with (): "
            "TypeError: max_pool2d_with_indices() missing 2 required positional arguments",
            "model/pooling takes a torch.nn.Module class or a function that returns a Module",
        ),
        (
            "model/activation",
            f"_target_: {__name__}.not_a_module\n",
            f"_target_ {__name__}.not_a_module returned a str, not a torch.nn.Module",
            "model/activation takes",
        ),
        (
            "model/pooling",
            "_target_: math.pi\n",
            "_target_ math.pi is a float, not a class or function",
            "model/pooling takes",
        ),
        (
            "model/norm",
            "_target_: torch.nn.BatchNorm2d\n",  # 4-D only: F6's output is 2-D
            "layer f6_norm (BatchNorm2d) cannot take its input of shape (2, 84): ValueError: "
            "expected 4D input (got 2D input)",
            "model/norm takes",
        ),
    ],
)
def test_a_target_the_slot_cannot_take_is_refused_before_any_run_opens(
    group, text, problem, expects, quick, store, client, tmp_path
):
    overrides = write_option(tmp_path / "conf", group, "bad", text)
    with pytest.raises(ConfigError) as err:
        run([*quick, *store, *overrides])
    message = str(err.value)
    assert message.startswith(f"{group}=bad ({tmp_path / 'conf' / group / 'bad.yaml'}): ")
    assert problem in message and expects in message
    assert "\n" not in message  # one line
    assert client.get_experiment_by_name("test") is None or not client.search_runs(
        [client.get_experiment_by_name("test").experiment_id]
    )
