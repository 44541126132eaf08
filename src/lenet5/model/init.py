"""Weight initialization choices.

The paper (appendix A) draws every weight and bias of a unit uniformly in
[-2.4/F, 2.4/F], F being the unit's fan-in, "so that the initial standard deviation of the
weighted sums is in the same range for each unit, and falls within the normal operating
region of the sigmoid". The printed 1/F does not do that: with unit-variance inputs the
weighted sum's standard deviation is 2.4/sqrt(3F), 0.28 for C1 (F=25) but 0.07 for C5
(F=400), and the signal shrinks layer by layer to ~0.03 at C5's output. 1/sqrt(F) (the
rule of the same authors' "Efficient BackProp", sec. 4.6) gives 2.4/sqrt(3) = 1.39 for
every unit, which is what the sentence describes. Both are options (conf/model/init/
paper.yaml, paper_sqrt.yaml); benchmarks/results/paper_reproduction.md measures what the
choice does to SDLM. PyTorch's default (the layers' own `reset_parameters`) is the modern
substitute.

Blocks say their own fan-in: a block of this project defines `fan_in()`, or, where its
units have different fan-ins (sparse C3), `uniform_by_fan_in_(scale, power)`. A torch layer
with a weight matrix or kernel (nn.Linear, nn.Conv2d, ...) has one fan-in for every unit: the
size of one output unit's slice of its weight.
"""

import torch
from torch import nn


def fan_in(module: nn.Module) -> int | torch.Tensor | None:
    """Fan-in of each unit of a layer, or None for a layer without weights of its own."""
    own = getattr(module, "fan_in", None)
    if callable(own):
        return own()
    weight = dict(module.named_parameters(recurse=False)).get("weight")  # not a sub-layer's
    if weight is not None and weight.dim() >= 2:
        return weight[0].numel()
    return None


@torch.no_grad()
def paper_uniform(model: nn.Module, scale: float = 2.4, fan_in_power: float = 1.0) -> nn.Module:
    """Uniform in [-scale/F**fan_in_power, scale/F**fan_in_power] for each weight and bias
    (appendix A: fan_in_power 1 as printed, 0.5 as its stated rationale needs)."""
    if fan_in_power <= 0:
        raise ValueError(f"fan_in_power must be > 0, got {fan_in_power}")
    for module in model.modules():
        own_rule = getattr(module, "uniform_by_fan_in_", None)
        if own_rule is not None:
            own_rule(scale, fan_in_power)
            continue
        f = fan_in(module)
        if f is None:
            continue
        bound = scale / f**fan_in_power
        for p in (module.weight, module.bias):
            if p is not None:
                p.uniform_(-bound, bound)
    return model


def pytorch_default(model: nn.Module) -> nn.Module:
    """Keep the initialization each layer gave itself at construction."""
    return model
