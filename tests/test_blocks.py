"""The paper's blocks do what the paper says (sec. II-B, appendix A)."""

import pytest
import torch

from lenet5.cli.train import compose
from lenet5.core.paths import CONF_DIR
from lenet5.model.activation import ScaledTanh
from lenet5.model.connectivity import SparseConv2d
from lenet5.model.head import RBFHead, digit_bitmaps
from lenet5.model.init import fan_in, paper_uniform
from lenet5.model.loss import MAPLoss, MLELoss
from lenet5.model.network import LeNet5, n_trainable_params
from lenet5.model.pooling import TrainableSubsampling
from lenet5.training.build import build_model

TABLE_I = compose().model.connectivity.table  # the table as the config file states it


def paper_model(*overrides):
    return build_model(compose(list(overrides)).model)


def test_scaled_tanh_fixed_points():
    f = ScaledTanh()
    assert f(torch.tensor(1.0)).item() == pytest.approx(1.0, abs=2e-5)
    assert f(torch.tensor(-1.0)).item() == pytest.approx(-1.0, abs=2e-5)
    assert f(torch.tensor(50.0)).item() == pytest.approx(1.7159)


def test_parameter_counts_match_the_paper():
    assert n_trainable_params(paper_model("model=paper")) == 60_000
    assert n_trainable_params(paper_model("model=paper", "model/connectivity=full")) == 60_900


def test_layer_parameter_counts():
    model = paper_model("model=paper")
    counts = {name: n_trainable_params(m) for name, m in model.named_children()}
    assert counts["c1"] == 156 and counts["s2"] == 12 and counts["c3"] == 1516
    assert counts["s4"] == 32 and counts["c5"] == 48_120 and counts["f6"] == 10_164
    assert counts["head"] == 0


def test_table_one_as_configured():
    assert len(TABLE_I) == 16 and sum(len(r) for r in TABLE_I) == 60
    assert list(TABLE_I[0]) == [0, 1, 2] and list(TABLE_I[15]) == [0, 1, 2, 3, 4, 5]


def test_sparse_c3_disconnected_map_cannot_change_output():
    torch.manual_seed(0)
    conv = SparseConv2d(6, 16, 5, [list(r) for r in TABLE_I])
    x = torch.randn(2, 6, 14, 14)
    base = conv(x)
    for s2_map in range(6):
        bumped = x.clone()
        bumped[:, s2_map] += torch.randn(2, 14, 14) * 10
        out = conv(bumped)
        for c3_map, row in enumerate(TABLE_I):
            changed = not torch.allclose(out[:, c3_map], base[:, c3_map])
            assert changed == (s2_map in row), (s2_map, c3_map)


def test_sparse_c3_disconnected_weights_get_no_gradient():
    torch.manual_seed(0)
    conv = SparseConv2d(6, 16, 5, [list(r) for r in TABLE_I])
    assert conv.weight.shape == (60, 5, 5)  # no storage at all for the cut connections
    before = conv.dense_weight().detach().clone()
    conv(torch.randn(3, 6, 14, 14)).square().sum().backward()
    assert conv.weight.grad.abs().flatten(1).sum(1).min() > 0  # every kept connection learns
    torch.optim.SGD(conv.parameters(), lr=0.1).step()
    after = conv.dense_weight().detach()
    for c3_map, row in enumerate(TABLE_I):
        for s2_map in range(6):
            moved = not torch.equal(after[c3_map, s2_map], before[c3_map, s2_map])
            assert moved == (s2_map in row), (c3_map, s2_map)
            if s2_map not in row:
                assert torch.all(after[c3_map, s2_map] == 0)


def test_sparse_table_is_validated():
    with pytest.raises(ValueError, match="row 1"):
        SparseConv2d(6, 2, 5, [[0], [7]])
    with pytest.raises(ValueError, match="2 rows but the layer has 3"):
        SparseConv2d(6, 3, 5, [[0], [1]])


def test_trainable_subsampling_is_sum_times_coefficient_plus_bias():
    pool = TrainableSubsampling(2, torch.nn.Identity())
    with torch.no_grad():
        pool.weight.copy_(torch.tensor([0.5, -2.0]))
        pool.bias.copy_(torch.tensor([1.0, 0.25]))
    x = torch.arange(32.0).view(1, 2, 4, 4)
    out = pool(x)
    top_left_sum = x[0, :, :2, :2].sum(dim=(1, 2))
    assert out.shape == (1, 2, 2, 2)
    assert torch.allclose(out[0, :, 0, 0], top_left_sum * pool.weight + pool.bias)


def test_bitmaps_are_plus_minus_one_and_distinct():
    b = digit_bitmaps()
    assert b.shape == (10, 84) and set(b.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(r.tolist()) for r in b}) == 10


def test_rbf_classifies_each_bitmap_as_its_digit():
    head = RBFHead(84, 10)
    scores = head(digit_bitmaps())
    assert scores.argmax(1).tolist() == list(range(10))
    assert torch.allclose(scores.diagonal(), torch.zeros(10), atol=1e-4)  # y_k = 0 at the centre
    # scores are -y_i = -sum_j (x_j - w_ij)^2
    x = torch.randn(4, 84)
    expected = -((x[:, None, :] - digit_bitmaps()[None]) ** 2).sum(-1)
    assert torch.allclose(head(x), expected, atol=1e-3)


def test_rbf_centres_are_not_parameters():
    head = RBFHead(84, 10)
    assert list(head.parameters()) == []
    with pytest.raises(ValueError, match="bitmaps for the 10 digits only"):
        RBFHead(84, 11)


def test_mle_and_map_losses_follow_the_equations():
    y = torch.tensor([[1.0, 4.0, 9.0], [2.0, 0.5, 3.0]])  # penalties
    target = torch.tensor([0, 2])
    assert MLELoss()(-y, target).item() == pytest.approx((1.0 + 3.0) / 2)
    j = 0.1
    expected = (
        sum(
            y[i, target[i]] + torch.log(torch.exp(torch.tensor(-j)) + torch.exp(-y[i]).sum())
            for i in range(2)
        )
        / 2
    )
    assert MAPLoss(j)(-y, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_paper_init_bounds_follow_fan_in():
    torch.manual_seed(0)
    model = paper_model("model=paper")
    paper_uniform(model)
    assert model.c1.weight.abs().max() <= 2.4 / 25
    assert model.c5.weight.abs().max() <= 2.4 / 400
    assert model.f6.weight.abs().max() <= 2.4 / 120
    assert model.c5.weight.abs().max() > 0.9 * 2.4 / 400  # uniform fills its range
    c3 = model.c3
    for o, row in enumerate(TABLE_I):
        w = c3.weight[c3.out_idx == o]
        assert w.abs().max() <= 2.4 / (25 * len(row))


def test_paper_sqrt_init_gives_every_unit_the_same_weighted_sum_spread():
    torch.manual_seed(0)
    model = paper_model("model=paper", "model/init=paper_sqrt")  # 2.4 / sqrt(F)
    assert model.c1.weight.abs().max() <= 2.4 / 5
    assert 0.9 * 2.4 / 20 < model.c5.weight.abs().max() <= 2.4 / 20
    with pytest.raises(ValueError, match="fan_in_power"):
        paper_uniform(model, fan_in_power=0)
    # the point of it (appendix A's rationale): unit-variance inputs give weighted sums of
    # std 2.4/sqrt(3) = 1.39 whatever the fan-in; with 2.4/F, C5's (F=400) is 20x smaller
    x = torch.randn(256, 16, 5, 5)
    sums = torch.nn.functional.conv2d(x, model.c5.weight)
    assert sums.std().item() == pytest.approx(2.4 / 3**0.5, rel=0.1)
    paper_uniform(model)
    assert torch.nn.functional.conv2d(x, model.c5.weight).std().item() < 0.1


def test_input_size_too_small_is_refused():
    with pytest.raises(ValueError, match="at least 32x32"):
        LeNet5(torch.nn.ReLU, torch.nn.MaxPool2d, torch.nn.Conv2d, torch.nn.Linear, input_size=28)


@pytest.mark.parametrize(("size", "channels", "classes"), [(32, 3, 2), (40, 1, 10)])
def test_shapes_for_other_inputs(size, channels, classes):
    model = paper_model(
        "model=modern",
        f"data.size={size}",
        f"data.channels={channels}",
        f"data.num_classes={classes}",
    )
    assert model(torch.randn(5, channels, size, size)).shape == (5, classes)


class TwoClassHead(torch.nn.Linear):
    """A head that serves two classes only, and says so through its own `check`."""

    @classmethod
    def check(cls, num_classes: int, loss: object = None) -> None:
        if num_classes != 2:
            raise ValueError(f"TwoClassHead serves 2 classes, not {num_classes}")


def test_validation_calls_the_blocks_own_checks():
    from lenet5.core.errors import ConfigError
    from lenet5.training.validate import validate

    head = ["model/head=softmax", f"model.head._target_={__name__}.TwoClassHead"]
    validate(compose([*head, "data.num_classes=2"]))  # the block accepts it
    with pytest.raises(ConfigError, match="TwoClassHead serves 2 classes, not 10"):
        validate(compose(head))
    with pytest.raises(ConfigError) as err:
        validate(compose(["model/head=softmax", "model.head._target_=torch.nn.Nope"]))
    assert str(err.value).startswith(
        "model/head=softmax (" + str(CONF_DIR / "model/head/softmax.yaml") + "), overridden by "
        "model.head._target_=torch.nn.Nope: _target_ torch.nn.Nope cannot be imported "
        "(torch.nn has no attribute 'Nope'); model/head takes a torch.nn.Module class"
    )


def test_each_layer_says_its_own_fan_in():
    model = paper_model("model=paper")
    assert [fan_in(getattr(model, name)) for name in ("c1", "s2", "c5", "f6", "head")] == [
        25,
        4,
        16 * 25,
        120,
        None,  # fixed RBF centres: nothing to initialize
    ]
    # Table I: 6 maps see 3 of S2's maps, 9 see 4, 1 sees all 6
    assert sorted(fan_in(model.c3).tolist()) == [75] * 6 + [100] * 9 + [150]
    assert fan_in(model.c1_act) is None


def test_batch_norm_follows_each_conv_and_f6_and_dropout_precedes_the_head():
    model = paper_model("model=paper", "model/norm=batch", "model/dropout=p0.5")
    names = [name for name, _ in model.named_children()]
    assert names == [
        *("c1", "c1_norm", "c1_act", "s2", "c3", "c3_norm", "c3_act", "s4"),
        *("c5", "c5_norm", "c5_act", "flatten", "f6", "f6_norm", "f6_act", "dropout", "head"),
    ]
    assert [model.get_submodule(f"{n}_norm").num_features for n in ("c1", "c3", "c5", "f6")] == [
        6,
        16,
        120,
        84,
    ]
    assert model.dropout.p == 0.5
    # gamma and beta per map or unit: 2 x (6 + 16 + 120 + 84); dropout has none
    assert n_trainable_params(model) == 60_000 + 452
    assert n_trainable_params(paper_model("model=modern", "model/norm=batch")) == 61_706 + 452
    assert n_trainable_params(paper_model("model=paper", "model/dropout=p0.5")) == 60_000
    model.train()
    x = torch.randn(8, 1, 32, 32)
    assert model(x).shape == (8, 10)
    model.eval()
    torch.testing.assert_close(model(x), model(x))  # no dropout, running statistics


def test_batch_norm_curvature_row():
    from lenet5.model.norm import BatchNorm

    torch.manual_seed(0)
    for shape in ((64, 5), (16, 5, 3, 3)):
        bn = BatchNorm(5)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0)
        x, h = torch.randn(*shape) * 3 + 1, torch.rand(*shape)
        dims = [0, *range(2, len(shape))]
        view = (1, -1) + (1,) * (len(shape) - 2)
        var = x.var(dims, unbiased=False)
        h_x, params = bn.curvature(x, h)
        # with the batch's statistics fixed, y = a x + b per channel, a = gamma / sqrt(var + eps)
        a = bn.weight.detach() / (var + bn.eps).sqrt()
        torch.testing.assert_close(h_x, a.view(view) ** 2 * h)
        x_hat = (x - x.mean(dims).view(view)) / (var + bn.eps).sqrt().view(view)
        torch.testing.assert_close(params[bn.weight], (h * x_hat**2).sum(dims))
        torch.testing.assert_close(params[bn.bias], h.sum(dims))
        bn.eval()  # evaluation: the running statistics
        h_x, _ = bn.curvature(x, h)
        a = bn.weight.detach() / (bn.running_var + bn.eps).sqrt()
        torch.testing.assert_close(h_x, a.view(view) ** 2 * h)


def test_dropout_curvature_row_is_its_mean_over_masks():
    from lenet5.model.dropout import Dropout

    drop, h = Dropout(0.2), torch.rand(4, 84)
    torch.manual_seed(0)
    x = torch.ones(20_000, 84)
    squared_gain = (drop(x) ** 2).mean()  # (m / (1 - p))^2, averaged over masks
    h_x, params = drop.curvature(x, h)
    assert params == {}
    torch.testing.assert_close(h_x, h / 0.8)
    assert squared_gain.item() == pytest.approx(1 / 0.8, rel=0.01)
    drop.eval()
    torch.testing.assert_close(drop.curvature(x, h)[0], h)


def _sdlm_takes_a_blocks_own_row() -> bool:
    """Whether lenet5.sdlm back-propagates curvature through a block's own `curvature` row."""
    from lenet5.model.dropout import Dropout
    from lenet5.training.sdlm import _backprop

    try:
        _backprop(Dropout(0.5), torch.ones(2, 3), torch.ones(2, 3))
    except NotImplementedError:
        return False
    return True


@pytest.mark.skipif(
    not _sdlm_takes_a_blocks_own_row(),
    reason="lenet5.training.sdlm._backprop does not yet call a block's own curvature(x, h) row",
)
def test_sdlm_trains_with_batch_norm_and_dropout(quick, store, client):
    from lenet5.cli.train import run

    whole_epoch = "++trainer.limit_train_batches=1.0"  # the subset's 4 steps: above chance
    run([*quick, *store, "optimizer=sdlm", "model/norm=batch", "model/dropout=p0.5", whole_epoch])
    (rec,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert rec.info.status == "FINISHED", rec.data.tags.get("failure_reason")
    assert rec.data.metrics["n_params"] == 60_452
    assert rec.data.metrics["test/acc"] > 0.25  # above chance after 1 epoch (measured 0.43)


def test_batch_norm_needs_batches():
    from lenet5.core.errors import ConfigError
    from lenet5.training.validate import validate

    with pytest.raises(ConfigError, match=r"data.batch_size=1 \(per-sample updates, as recipe"):
        validate(compose(["recipe=paper", "model/norm=batch"]))
    validate(compose(["recipe=paper", "model/dropout=p0.5"]))  # dropout needs no batch
    from lenet5.model.norm import BatchNorm

    bn = BatchNorm(4).train()
    x = torch.randn(1, 4)  # an epoch's last batch of one: normalized by the running statistics
    torch.testing.assert_close(bn(x), x / (1 + bn.eps) ** 0.5)
    assert torch.equal(bn.running_mean, torch.zeros(4))
