"""Weight initialization choices.

The paper (appendix A) draws every weight and bias of a unit uniformly in
[-2.4/F, 2.4/F], F being the unit's fan-in. PyTorch's default (the layers' own
`reset_parameters`) is the modern substitute.
"""

import torch
from torch import nn

from lenet5.connectivity import SparseConv2d
from lenet5.pooling import TrainableSubsampling


def fan_in(module: nn.Module) -> torch.Tensor | int | None:
    """Fan-in of each unit of a layer: an int, a per-output-map tensor, or None if no weights."""
    if isinstance(module, SparseConv2d):
        return module.fan_in()
    if isinstance(module, nn.Conv2d):
        return module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, TrainableSubsampling):
        return 4  # a subsampling unit sees its 2x2 field
    return None


@torch.no_grad()
def paper_uniform(model: nn.Module, scale: float = 2.4) -> nn.Module:
    """Uniform in [-scale/F, scale/F] for each weight and bias (appendix A)."""
    for module in model.modules():
        f = fan_in(module)
        if f is None:
            continue
        if isinstance(module, SparseConv2d):
            bound = scale / f.to(module.weight.dtype)  # one bound per output map
            module.weight.copy_(
                (torch.rand_like(module.weight) * 2 - 1) * bound[module.out_idx, None, None]
            )
            module.bias.copy_((torch.rand_like(module.bias) * 2 - 1) * bound)
            continue
        for p in (module.weight, module.bias):
            if p is not None:
                p.uniform_(-scale / f, scale / f)
    return model


def pytorch_default(model: nn.Module) -> nn.Module:
    """Keep the initialization each layer gave itself at construction."""
    return model
