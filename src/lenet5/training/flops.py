"""A run's training cost in FLOPs: forward and backward of one training sample, counted
once per configuration by torch's own counter (`torch.utils.flop_counter`), times the
samples the run trained on.

Counted as the network computes, not as a diagram would: the paper's sparse C3
(`model.connectivity.SparseConv2d`) scatters its 60 kernels into a dense 16x6 one and runs
one convolution, so it costs what full C3 costs here; the RBF head's distances and the
paper's loss count as the matrix products and reductions they run.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def flops_per_sample(model: nn.Module, loss: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Forward, loss and backward FLOPs per sample of the batch (x, y), on a copy of the
    network in training mode, so the run's own weights, gradients and batch-norm statistics
    are left as they are."""
    twin = copy.deepcopy(model).train()
    counter = FlopCounterMode(display=False)
    with counter:
        loss(twin(x), y).backward()
    return counter.get_total_flops() // len(x)
