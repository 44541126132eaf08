"""SDLM (appendix C): the curvature it back-propagates, its steps, its schedule."""

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.func import functional_call, hessian

from lenet5.core.paths import CONF_DIR
from lenet5.model.activation import ScaledTanh
from lenet5.model.connectivity import SparseConv2d
from lenet5.model.head import RBFHead
from lenet5.model.loss import MAPLoss, MLELoss
from lenet5.model.pooling import TrainableSubsampling
from lenet5.training.sdlm import SDLM, hessian_diagonal

# ---------------------------------------------------------------------------------------
# 1. Nets where the diagonal Gauss-Newton estimate is the exact Hessian diagonal: one layer
# linear in its weights, then a loss whose Hessian in that layer's output is diagonal (MLE:
# 2I) or whose weights each feed a single unit (Linear). Compared with torch.func.hessian.


def exact_diagonal(model, loss, x, y) -> dict[str, torch.Tensor]:
    """Mean over samples of the diagonal of the exact per-sample Hessian in each parameter."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    out = {k: torch.zeros_like(v) for k, v in params.items()}
    for xn, yn in zip(x, y, strict=True):
        h = hessian(lambda p, xn=xn, yn=yn: loss(functional_call(model, p, (xn[None],)), yn[None]))(
            params
        )
        for k, v in params.items():
            out[k] += h[k][k].reshape(v.numel(), v.numel()).diagonal().reshape(v.shape)
    return {k: v / len(x) for k, v in out.items()}


def assert_matches_exact(model, loss, x, y):
    ours = hessian_diagonal(model, loss, x, y)
    exact = exact_diagonal(model, loss, x, y)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[p], exact[name], rtol=1e-4, atol=1e-6)
        assert exact[name].abs().max() > 1e-3  # a real check, not 0 == 0


def test_linear_cross_entropy_is_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4))
    x, y = torch.randn(6, 5), torch.randint(0, 4, (6,))
    assert_matches_exact(model, nn.CrossEntropyLoss(), x, y)


def test_linear_rbf_map_is_exact():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 84), RBFHead(84, 10))
    with torch.no_grad():
        model[0].weight.mul_(3)  # outputs near the +/-1 bitmaps, so several classes compete
    x, y = torch.randn(5, 6), torch.randint(0, 10, (5,))
    assert_matches_exact(model, MAPLoss(j=0.1), x, y)


@pytest.mark.parametrize("sparse", [False, True])
def test_shared_weight_conv_rbf_mle_is_exact(sparse):
    # 21 maps of 2x2 = the 84 RBF inputs; each kernel weight is shared by 4 connections.
    torch.manual_seed(2)
    if sparse:
        table = [[o % 3] if o % 2 else [o % 3, (o + 1) % 3] for o in range(21)]
        conv = SparseConv2d(3, 21, 3, table)
    else:
        conv = nn.Conv2d(3, 21, 3)
    model = nn.Sequential(conv, nn.Flatten(), RBFHead(84, 10))
    x, y = torch.randn(4, 3, 4, 4), torch.randint(0, 10, (4,))
    assert_matches_exact(model, MLELoss(), x, y)


# ---------------------------------------------------------------------------------------
# 2. A small net with every layer type, against the paper's recurrences written out as
# loops over units and connections (numpy, closed-form derivatives: no autograd).

DERIVATIVES = {
    ScaledTanh: lambda a: 1.7159 * 2 / 3 * (1 - np.tanh(2 / 3 * a) ** 2),
    nn.Tanh: lambda a: 1 - np.tanh(a) ** 2,
    nn.Sigmoid: lambda a: (s := 1 / (1 + np.exp(-a))) * (1 - s),
    nn.ReLU: lambda a: (a > 0).astype(float),
}


def loop_conv(weight, table, x, h):
    """weight (O, I, k, k) dense, table[o] = connected input maps. Returns h_x, h_w, h_b."""
    n_out, _, k, _ = weight.shape
    h_x, h_w, h_b = np.zeros_like(x), np.zeros_like(weight), np.zeros(n_out)
    rows, cols = h.shape[1:]
    for o in range(n_out):
        for r in range(rows):
            for c in range(cols):
                h_b[o] += h[o, r, c]
                for m in table[o]:
                    for u in range(k):
                        for v in range(k):
                            h_w[o, m, u, v] += h[o, r, c] * x[m, r + u, c + v] ** 2
                            h_x[m, r + u, c + v] += weight[o, m, u, v] ** 2 * h[o, r, c]
    return h_x, h_w, h_b


def loop_linear(weight, x, h):
    h_x, h_w = np.zeros_like(x), np.zeros_like(weight)
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            h_w[i, j] += h[i] * x[j] ** 2
            h_x[j] += weight[i, j] ** 2 * h[i]
    return h_x, h_w, h.copy()


def loop_subsampling(coef, bias, fprime, x, h):
    h_x, h_c, h_b = np.zeros_like(x), np.zeros_like(coef), np.zeros_like(bias)
    for m in range(x.shape[0]):
        for r in range(x.shape[1] // 2):
            for c in range(x.shape[2] // 2):
                field = x[m, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2]
                a = coef[m] * field.sum() + bias[m]
                h_a = fprime(a) ** 2 * h[m, r, c]
                h_c[m] += h_a * (field**2).sum()
                h_b[m] += h_a
                h_x[m, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = coef[m] ** 2 * h_a
    return h_x, h_c, h_b


def loop_pool(kind, x, h):
    h_x = np.zeros_like(x)
    for m in range(x.shape[0]):
        for r in range(x.shape[1] // 2):
            for c in range(x.shape[2] // 2):
                field = x[m, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2]
                if kind == "max":
                    u, v = np.unravel_index(field.argmax(), field.shape)
                    h_x[m, 2 * r + u, 2 * c + v] = h[m, r, c]
                else:  # average: weights 1/4, squared 1/16
                    h_x[m, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = h[m, r, c] / 16
    return h_x


def loop_head(loss, scores, x, centres, target):
    """h at the RBF input (MLE, MAP) or at the logits (cross-entropy), one sample."""
    if isinstance(loss, MLELoss):
        return np.full_like(x, 2.0)
    if isinstance(loss, nn.CrossEntropyLoss):
        p = np.exp(scores - scores.max())
        p /= p.sum()
        return p * (1 - p)
    # MAP: the exact second derivative of y_D + log(exp(-j) + sum_i exp(-y_i)) in each x_j
    pen = ((x[None, :] - centres) ** 2).sum(1)
    z = np.exp(-loss.j) + np.exp(-pen).sum()
    p = np.exp(-pen) / z
    h = np.zeros_like(x)
    for j in range(len(x)):
        d = 2 * (x[j] - centres[:, j])
        dE_dy = -p.copy()
        dE_dy[target] += 1
        h[j] = sum(dE_dy[i] * 2 for i in range(len(p)))  # RBF curvature, d2y_i/dx_j2 = 2
        h[j] += sum(p[i] * d[i] ** 2 for i in range(len(p))) - sum(p * d) ** 2
    return h


def loop_hessian_diagonal(model, loss, x, y) -> dict[nn.Parameter, np.ndarray]:
    """The recurrences of appendix C, sample by sample, unit by unit."""
    layers = list(model)
    total: dict[nn.Parameter, np.ndarray] = {}

    def add(p, v):
        total[p] = total.get(p, 0) + v

    for xn, yn in zip(x, y, strict=True):
        inputs = [xn[None]]
        with torch.no_grad():
            for layer in layers:
                inputs.append(layer(inputs[-1]))
        acts = [t[0].double().numpy() for t in inputs]
        head = layers[-1]
        if isinstance(head, RBFHead):
            h = loop_head(loss, None, acts[-2], head.centres.double().numpy(), int(yn))
        else:
            h_out = loop_head(loss, acts[-1], None, None, int(yn))
            h, h_w, h_b = loop_linear(head.weight.detach().double().numpy(), acts[-2], h_out)
            add(head.weight, h_w)
            add(head.bias, h_b)
        for i in reversed(range(len(layers) - 1)):
            layer, a = layers[i], acts[i]
            if isinstance(layer, nn.Linear):
                h, h_w, h_b = loop_linear(layer.weight.detach().double().numpy(), a, h)
                add(layer.weight, h_w)
                add(layer.bias, h_b)
            elif isinstance(layer, SparseConv2d):
                dense = layer.dense_weight().detach().double().numpy()
                h, h_w, h_b = loop_conv(dense, layer.table, a, h)
                add(layer.weight, h_w[layer.out_idx, layer.in_idx])
                add(layer.bias, h_b)
            elif isinstance(layer, nn.Conv2d):
                w = layer.weight.detach().double().numpy()
                table = [range(w.shape[1])] * w.shape[0]
                h, h_w, h_b = loop_conv(w, table, a, h)
                add(layer.weight, h_w)
                add(layer.bias, h_b)
            elif isinstance(layer, TrainableSubsampling):
                fprime = DERIVATIVES[type(layer.activation)]
                coef = layer.weight.detach().double().numpy()
                bias = layer.bias.detach().double().numpy()
                h, h_c, h_b = loop_subsampling(coef, bias, fprime, a, h)
                add(layer.weight, h_c)
                add(layer.bias, h_b)
            elif isinstance(layer, nn.MaxPool2d | nn.AvgPool2d):
                h = loop_pool("max" if isinstance(layer, nn.MaxPool2d) else "avg", a, h)
            elif isinstance(layer, nn.Flatten):
                h = h.reshape(a.shape)
            else:
                h = DERIVATIVES[type(layer)](a) ** 2 * h
    return {p: v / len(x) for p, v in total.items()}


def small_net(pool: str, act, head: str) -> nn.Sequential:
    """2@8x8 -> sparse conv 3@6x6 -> scaled tanh -> subsampling 3@3x3 -> conv 4@2x2 -> act
    -> pool 4@1x1 -> flatten -> linear -> act -> head."""
    torch.manual_seed(3)
    out_f6 = 84 if head == "rbf" else 16
    layers = [
        SparseConv2d(2, 3, 3, [[0], [1], [0, 1]]),
        ScaledTanh(),
        TrainableSubsampling(3, nn.Tanh()),
        nn.Conv2d(3, 4, 2),
        act(),
        nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4, out_f6),
        ScaledTanh(),
        RBFHead(84, 10) if head == "rbf" else nn.Linear(16, 10),
    ]
    model = nn.Sequential(*layers)
    with torch.no_grad():  # weights of order 1, so the activations are far from linear
        for p in model.parameters():
            p.uniform_(-1.5, 1.5)
    return model.double()


@pytest.mark.parametrize(
    ("pool", "act", "head", "loss"),
    [
        ("max", nn.Sigmoid, "rbf", MLELoss()),
        ("avg", nn.ReLU, "rbf", MAPLoss(j=0.1)),
        ("avg", ScaledTanh, "linear", nn.CrossEntropyLoss()),
    ],
)
def test_every_layer_type_matches_the_papers_recurrences_written_as_loops(pool, act, head, loss):
    model = small_net(pool, act, head)
    x = torch.randn(3, 2, 8, 8, dtype=torch.double)
    y = torch.tensor([0, 3, 7])
    ours = hessian_diagonal(model, loss, x, y)
    loops = loop_hessian_diagonal(model, loss, x, y)
    assert set(ours) == set(loops) == set(model.parameters())
    for p in model.parameters():
        np.testing.assert_allclose(ours[p].numpy(), loops[p], rtol=1e-9, atol=1e-12)
    assert all(v.min() >= 0 for v in ours.values())  # Gauss-Newton: never negative
    assert all(v.max() > 0 for v in ours.values())


def test_unsupported_layer_is_refused_by_name():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(), nn.Linear(3, 2))
    with pytest.raises(NotImplementedError, match="Dropout"):
        hessian_diagonal(model, nn.CrossEntropyLoss(), torch.randn(2, 3), torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------------
# 3. The optimizer: steps lr / (mu + h), h held during the pass.


def test_step_is_lr_over_mu_plus_h_per_parameter():
    torch.manual_seed(4)
    model, loss = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)), nn.CrossEntropyLoss()
    opt = SDLM(model.parameters(), lr=0.3, mu=0.05)
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    opt.estimate_hessian(model, loss, x, y)
    h = hessian_diagonal(model, loss, x, y)
    before = [p.detach().clone() for p in model.parameters()]
    loss(model(x[:1]), y[:1]).backward()
    opt.step()
    for p, p0 in zip(model.parameters(), before, strict=True):
        expected = p0 - 0.3 / (0.05 + h[p]) * p.grad
        torch.testing.assert_close(p.detach(), expected)
        assert not torch.allclose(p.detach(), p0 - 0.3 / 0.05 * p.grad)  # h matters


def test_h_is_held_during_the_pass(monkeypatch):
    torch.manual_seed(5)
    model, loss = nn.Sequential(nn.Linear(4, 3)), nn.CrossEntropyLoss()
    opt = SDLM(model.parameters(), lr=0.1)
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    opt.estimate_hessian(model, loss, x[:10], y[:10])
    held = {p: opt.state[p]["h"].clone() for p in model.parameters()}
    calls = []
    monkeypatch.setattr("lenet5.training.sdlm.hessian_diagonal", lambda *a: calls.append(a))
    for i in range(10, 30):
        opt.zero_grad()
        loss(model(x[i : i + 1]), y[i : i + 1]).backward()
        opt.step()
    assert calls == []  # steps never re-estimate
    for p in model.parameters():
        assert torch.equal(opt.state[p]["h"], held[p])


def test_step_before_any_estimate_says_what_to_do():
    model = nn.Linear(2, 2)
    opt = SDLM(model.parameters())
    model(torch.randn(1, 2)).sum().backward()
    with pytest.raises(RuntimeError, match="estimate_hessian"):
        opt.step()


def test_paper_schedule_gives_the_papers_eta_per_pass():
    # appendix C: 0.0005 x2 passes, 0.0002 x3, 0.0001 x3, 0.00005 x4, then 0.00001
    opt_cfg = OmegaConf.load(CONF_DIR / "optimizer/sdlm.yaml")
    sched_cfg = OmegaConf.load(CONF_DIR / "scheduler/paper.yaml")
    opt = instantiate(opt_cfg)([nn.Parameter(torch.zeros(1))])
    scheduler = instantiate(sched_cfg)(opt)
    etas = []
    for _ in range(20):
        etas.append(opt.param_groups[0]["lr"])
        scheduler.step()
    expected = [5e-4] * 2 + [2e-4] * 3 + [1e-4] * 3 + [5e-5] * 4 + [1e-5] * 8
    assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(etas, expected, strict=True))
    assert opt.param_groups[0]["mu"] == 0.02 and opt.n_samples == 500
