"""Activation ("squashing function") choices.

The paper (sec. II-B and appendix A) uses f(a) = A tanh(S a) with A = 1.7159, S = 2/3,
chosen so that f(1) = 1 and f(-1) = -1. The modern substitutes (tanh, ReLU, sigmoid, or
any `torch.nn` activation) need no code: their config file names the class.
"""

import torch
from torch import nn


class ScaledTanh(nn.Module):
    """f(a) = A tanh(S a), the paper's squashing function (appendix A)."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0):
        super().__init__()
        self.amplitude = amplitude
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, slope={self.slope:.6f}"
