"""Pooling choices for S2 and S4.

The paper's layers S2 and S4 (sec. II-B) are *trainable subsampling*: each unit sums its
non-overlapping 2x2 field, multiplies the sum by a trainable coefficient, adds a trainable
bias (one coefficient and one bias per feature map) and applies the squashing function.
Average and max pooling, the modern substitutes, are plain `torch.nn` classes named in
their config files.
"""

import torch
import torch.nn.functional as F
from torch import nn


class TrainableSubsampling(nn.Module):
    """2x2 sum x per-map coefficient + per-map bias, then the activation (sec. II-B)."""

    def __init__(self, channels: int, activation: nn.Module):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.activation = activation

    def fan_in(self) -> int:
        return 4  # each unit sees its 2x2 field (for `lenet5.model.init`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # avg_pool * 4 == the sum over the 2x2 field; one fused kernel instead of a conv.
        summed = F.avg_pool2d(x, 2) * 4.0
        return self.activation(summed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1))
