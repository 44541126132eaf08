"""Stochastic diagonal Levenberg-Marquardt (SDLM), the paper's optimizer (appendix C).

Each parameter k moves by its own step  eps_k = eta / (mu + h_kk)  along the negative
gradient of the per-sample loss. h_kk is a Gauss-Newton estimate of the k-th diagonal term
of the Hessian, averaged over a few hundred training samples (500 in the paper) before each
pass and held fixed during that pass; mu (0.02) keeps the step bounded where the curvature
is small. eta follows a per-pass schedule (`piecewise_constant`, conf/scheduler/paper.yaml).

h is back-propagated layer by layer, like a gradient (app. C), with two approximations: the
Gauss-Newton one (the f'' term is dropped, so every h is >= 0) and the diagonal one (the
cross terms between units, and between connections sharing a weight, are dropped):

    d2E/da_i^2 = f'(a_i)^2 d2E/dx_i^2               through an activation x_i = f(a_i)
    d2E/dx_j^2 = sum_i w_ij^2 d2E/da_i^2            through a weighted sum a_i = sum_j w_ij x_j
    d2E/dw_k^2 = sum_(i,j) shares w_k of d2E/da_i^2 x_j^2

The last two are what autograd gives for a *squared copy* of the layer: the same layer with
every weight squared, applied to the squared input z = x^2, computes s_i = sum_j w_ij^2 z_j,
so its vector-Jacobian product with h = d2E/da^2 is sum_i w_ij^2 h_i for z_j and
sum_(i,j) h_i x_j^2 for each w_ij^2, summed over the positions that share the weight (a bias
has input 1, so its h is the sum of h over its units). One VJP per layer thus serves every
layer that is linear in its input and in its weights, whatever its weight sharing.

| layer                                | h of the layer's input, from h of its output           | h of its parameters                    |
| ------------------------------------ | ------------------------------------------------------ | -------------------------------------- |
| nn.Linear, nn.Conv2d, SparseConv2d   | VJP of the squared copy: sum_i w_ij^2 h_i              | same VJP: sum_shared h_i x_j^2; bias: sum h_i |
| elementwise activation f             | f'(a)^2 h, f' by autograd on f                         |                                        |
| TrainableSubsampling (c, b per map)  | h_a = f'(a)^2 h, then c^2 h_a to each of the 4 inputs  | c: sum h_a (sum of the 4 inputs^2); b: sum h_a |
| nn.AvgPool2d (k x k)                 | h / k^4 to each input of the field (weights 1/k^2)     |                                        |
| nn.MaxPool2d                         | h to the input that won (weight 1), 0 to the others     |                                        |
| nn.Flatten                           | reshaped                                               |                                        |
| RBFHead + MLELoss (eq. 8)            | 2 (E = sum_j (x_j - w_Dj)^2 per sample, exact)         | (centres are fixed)                    |
| RBFHead + MAPLoss (eq. 9)            | exact diagonal: 2 p_0 + sum_i p_i d_ij^2 - (sum_i p_i d_ij)^2 | (centres are fixed)             |
| nn.Linear head + CrossEntropyLoss    | p (1 - p) at the logits (exact diagonal), then as nn.Linear | as nn.Linear                      |
| a block with `curvature(x, h)`       | its own row (lenet5.model.norm: (gamma/sigma)^2 h; lenet5.model.dropout: h/(1-p)) | its own row         |

For the MAP loss, y_i = sum_j (x_j - w_ij)^2, d_ij = dy_i/dx_j = 2 (x_j - w_ij), p_i the
softmax of -y with the rubbish class and p_0 the rubbish class's share: the first term is the
RBF units' own curvature (sum_i dE/dy_i = p_0), the rest the variance of d under p, both >= 0.
The paper keeps a running average of h over the 500 samples; a plain mean is used here.
"""

from bisect import bisect_right

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lenet5.model.activation import ScaledTanh
from lenet5.model.connectivity import SparseConv2d
from lenet5.model.head import RBFHead
from lenet5.model.loss import MAPLoss, MLELoss
from lenet5.model.pooling import TrainableSubsampling

Curvature = dict[nn.Parameter, torch.Tensor]

# torch.nn activations that are not elementwise (or carry parameters SDLM would miss).
_NOT_ELEMENTWISE = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.GLU, nn.PReLU)


class SDLM(torch.optim.Optimizer):
    """p <- p - lr / (mu + h) * grad, h from `estimate_hessian` (held until the next call)."""

    def __init__(self, params, lr: float = 0.0005, mu: float = 0.02, n_samples: int = 500):
        if lr <= 0 or mu < 0 or n_samples < 1:
            raise ValueError(
                f"SDLM needs lr > 0, mu >= 0, n_samples >= 1; got {lr}, {mu}, {n_samples}"
            )
        super().__init__(params, {"lr": lr, "mu": mu})
        self.n_samples = n_samples  # how many samples the caller should pass to estimate_hessian

    def estimate_hessian(self, model: nn.Module, loss: nn.Module, x, y) -> None:
        """Average the Gauss-Newton diagonal of `loss(model(x_n), y_n)` over the samples."""
        h = hessian_diagonal(model, loss, x, y)
        for group in self.param_groups:
            for p in group["params"]:
                if p not in h:
                    raise ValueError(f"a parameter of shape {tuple(p.shape)} is not in `model`")
                self.state[p]["h"] = h[p]
                self.state[p].pop("mu", None)  # h + mu made again at the next step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, denominators = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "h" not in state:
                    raise RuntimeError(
                        "SDLM has no curvature estimate yet: call estimate_hessian(model, loss, "
                        "x, y) before the pass (the paper re-estimates it before each pass, app. C)"
                    )
                if state.get("mu") != group["mu"]:  # h + mu is fixed for the pass: made once
                    state["denominator"], state["mu"] = state["h"] + group["mu"], group["mu"]
                params.append(p)
                grads.append(p.grad)
                denominators.append(state["denominator"])
            if params:  # one call for every parameter (per-sample updates: ~10 ops less each)
                torch._foreach_addcdiv_(params, grads, denominators, value=-group["lr"])
        return loss


def piecewise_constant(optimizer, milestones: list[int], factors: list[float]):
    """lr x factors[i] from pass milestones[i-1] on (passes count from 0), stepped per pass."""
    if len(factors) != len(milestones) + 1 or list(milestones) != sorted(milestones):
        raise ValueError("give increasing milestones and one more factor than milestones")
    factors = list(factors)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: factors[bisect_right(milestones, epoch)]
    )


def hessian_diagonal(model: nn.Sequential, loss: nn.Module, x, y) -> Curvature:
    """Mean over the samples of x of the back-propagated Gauss-Newton diagonal (table above)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError("hessian_diagonal walks an nn.Sequential layer by layer")
    *body, head = list(model)
    inputs = [x.detach()]
    with torch.no_grad():
        for layer in body:
            inputs.append(layer(inputs[-1]))
    h, curvature = _head(head, loss, inputs[-1], y)
    for layer, layer_input in zip(reversed(body), reversed(inputs[:-1]), strict=True):
        h, params = _backprop(layer, layer_input, h)
        for p, hp in params.items():
            curvature[p] = curvature[p] + hp if p in curvature else hp
    return {p: hp / len(x) for p, hp in curvature.items()}


def _head(head: nn.Module, loss: nn.Module, x, y) -> tuple[torch.Tensor, Curvature]:
    """h of the head's input (per sample) and of its parameters, from the loss."""
    if isinstance(head, RBFHead):
        if isinstance(loss, MLELoss):
            return torch.full_like(x, 2.0), {}
        if isinstance(loss, MAPLoss):
            return _rbf_map(head, loss.j, x, y), {}
    elif isinstance(loss, nn.CrossEntropyLoss) and loss.weight is None:
        with torch.no_grad():
            p = head(x).softmax(1)
        return _backprop(head, x, p * (1 - p))
    raise NotImplementedError(
        f"SDLM has no curvature for head {type(head).__name__} with loss {type(loss).__name__}"
    )


@torch.no_grad()
def _rbf_map(head: RBFHead, j: float, x, y) -> torch.Tensor:
    penalties = -head(x)  # y_i
    rubbish = penalties.new_full((len(x), 1), -j)
    p = torch.cat([-penalties, rubbish], 1).softmax(1)
    p, p_rubbish = p[:, :-1, None], p[:, -1:]
    d = 2 * (x[:, None, :] - head.centres)  # dy_i/dx_j, (B, classes, features)
    variance = (p * d.square()).sum(1) - (p * d).sum(1).square()
    return 2 * p_rubbish + variance.clamp_min(0)


def _backprop(layer: nn.Module, x, h) -> tuple[torch.Tensor, Curvature]:
    """h of `layer`'s input and parameters from h of its output (one row of the table).

    The project's one dispatch on layer types: the recurrence is a property of the layer's
    algebra (linear in weights and input, elementwise, a max), most rows are torch's own
    classes that cannot carry a method, and keeping the whole table in one place is what
    lets it be checked against the paper's loops (tests/test_sdlm.py). A block that is not in
    the paper carries its own row, `curvature(x, h)` (lenet5.model.norm, lenet5.model.dropout)."""
    own_row = getattr(layer, "curvature", None)
    if callable(own_row):
        return own_row(x, h)
    if isinstance(layer, (nn.Linear, nn.Conv2d, SparseConv2d)):
        return _squared_vjp(layer, x, h)
    if isinstance(layer, TrainableSubsampling):
        return _subsampling(layer, x, h)
    if isinstance(layer, nn.Flatten):
        return h.reshape(x.shape), {}
    if isinstance(layer, nn.MaxPool2d):  # a 0/1 Jacobian is its own square
        return _vjp(layer, x, h), {}
    if isinstance(layer, nn.AvgPool2d) and not layer.padding and layer.divisor_override is None:
        k = layer.kernel_size
        area = k * k if isinstance(k, int) else k[0] * k[1]
        return _vjp(layer, x, h) / area, {}  # weights 1/area, squared 1/area^2
    if _is_elementwise(layer):
        return _activation(layer, x, h), {}
    raise NotImplementedError(f"SDLM cannot back-propagate curvature through {layer!r}")


def _is_elementwise(layer: nn.Module) -> bool:
    from_torch = type(layer).__module__ == nn.modules.activation.__name__
    return (
        (isinstance(layer, ScaledTanh) or from_torch)
        and not isinstance(layer, _NOT_ELEMENTWISE)
        and not any(True for _ in layer.parameters())
    )


def _vjp(fn, x, v) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        (grad,) = torch.autograd.grad(fn(x), x, v)
    return grad


def _activation(f: nn.Module, a, h) -> torch.Tensor:
    """f'(a)^2 h; f' is the gradient of sum(f(a)) since f is elementwise."""
    fprime = _vjp(f, a, torch.ones_like(a))
    return fprime.square() * h


def _squared_vjp(layer: nn.Module, x, h) -> tuple[torch.Tensor, Curvature]:
    params = dict(layer.named_parameters())
    squared = {name: p.detach().square().requires_grad_() for name, p in params.items()}
    with torch.enable_grad():
        z = x.detach().square().requires_grad_()
        s = functional_call(layer, squared, (z,))
        h_z, *h_params = torch.autograd.grad(s, [z, *squared.values()], h)
    return h_z, dict(zip(params.values(), h_params, strict=True))


def _subsampling(layer: TrainableSubsampling, x, h) -> tuple[torch.Tensor, Curvature]:
    """The squared copy of  a = c * (2x2 sum of x) + b, after f'(a)^2 for the activation inside."""
    c, b = layer.weight.detach(), layer.bias.detach()
    a = F.avg_pool2d(x, 2) * 4.0 * c.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
    h_a = _activation(layer.activation, a, h)
    c2, b2 = c.square().requires_grad_(), b.clone().requires_grad_()
    with torch.enable_grad():
        z = x.detach().square().requires_grad_()
        s = F.avg_pool2d(z, 2) * 4.0 * c2.view(1, -1, 1, 1) + b2.view(1, -1, 1, 1)
        h_z, h_c, h_b = torch.autograd.grad(s, [z, c2, b2], h_a)
    return h_z, {layer.weight: h_c, layer.bias: h_b}
