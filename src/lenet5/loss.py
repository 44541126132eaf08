"""Losses for the RBF head (cross-entropy for the linear head is `torch.nn.CrossEntropyLoss`).

Each takes the head's scores (largest = predicted class) and integer targets.

For the RBF head the scores are -y_i (the negated penalties), so the paper's equations
are written here in terms of y = -scores.
"""

import torch
from torch import nn


class MLELoss(nn.Module):
    """Paper eq. 8: the mean penalty of the correct class, E = mean(y_D)."""

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -scores.gather(1, target[:, None]).mean()


class MAPLoss(nn.Module):
    """Paper eq. 9: E = mean(y_D + log(exp(-j) + sum_i exp(-y_i))).

    exp(-j) is a "rubbish class" that keeps the penalties from being pushed up together;
    the paper gives no value for j (re-implementations use 0.1).
    """

    def __init__(self, j: float = 0.1):
        super().__init__()
        self.j = j

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        rubbish = scores.new_full((scores.shape[0], 1), -self.j)
        log_z = torch.logsumexp(torch.cat([scores, rubbish], dim=1), dim=1)
        return (log_z - scores.gather(1, target[:, None]).squeeze(1)).mean()
