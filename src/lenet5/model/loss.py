"""Losses for the RBF head (cross-entropy for the linear head is `torch.nn.CrossEntropyLoss`).

Each takes the head's scores (largest = predicted class) and integer targets.

For the RBF head the scores are -y_i (the negated penalties), so the paper's equations
are written here in terms of y = -scores.
"""

import torch
from torch import nn


class PenaltyLoss(nn.Module):
    """A loss defined on the RBF head's penalties; it refuses any other head up front."""

    scores = "rbf_penalties"  # the outputs it is defined on (`lenet5.model.head.RBFHead.scores`)

    @classmethod
    def check(cls, head: object) -> None:
        """Refuse a head whose outputs are not RBF penalties."""
        if getattr(head, "scores", None) != cls.scores:
            raise ValueError(
                f"model.loss={cls.__module__}.{cls.__name__} is defined on RBF penalties, but "
                f"model/head is {getattr(head, '__name__', head)}: use model/head=rbf, or "
                "model/loss=cross_entropy"
            )


class MLELoss(PenaltyLoss):
    """Paper eq. 8: the mean penalty of the correct class, E = mean(y_D)."""

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -scores.gather(1, target[:, None]).mean()


class MAPLoss(PenaltyLoss):
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

    def extra_repr(self) -> str:
        return f"j={self.j}"
