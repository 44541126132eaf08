"""Dropout, a modern switch tutorials add to LeNet-5 (`model/dropout`).

Not in the paper (1998); `model/dropout` puts a dropout between F6 and the head (as
Srivastava et al. 2014 apply it to fully connected layers). It defaults to none in every
preset, so no existing run changes. Like the other blocks it carries its row of SDLM's
curvature table (`curvature`, see `lenet5.training.sdlm`).
"""

import torch
from torch import nn

Curvature = dict[nn.Parameter, torch.Tensor]


class Dropout(nn.Dropout):
    """torch's dropout, with its curvature row: in training y = m x / (1 - p), m in {0, 1}
    with P(m = 1) = 1 - p, so h_x = m h / (1 - p)^2, whose mean over masks is h / (1 - p)
    (the mask itself is not kept between forward and curvature pass); in evaluation h."""

    def curvature(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, Curvature]:
        keep = 1.0 - self.p if self.training and self.p < 1 else 1.0
        return h / keep, {}
