"""Batch normalization, a modern switch tutorials add to LeNet-5 (`model/norm`).

Not in the paper (1998); `model/norm=batch` puts a batch normalization after each of C1, C3,
C5 and F6 (before the activation, as Ioffe & Szegedy 2015 place it). It defaults to none in
every preset, so no existing run changes.

The block is torch's own with two additions: one class serves both the 4-D conv maps and
F6's 2-D output, and it carries its row of SDLM's curvature table (`curvature`, see
`lenet5.training.sdlm`), with the same two approximations as the other rows: Gauss-Newton
(every h >= 0) and diagonal (the batch mean and variance are held fixed, as the cross terms
between units are dropped everywhere else).
"""

import torch
import torch.nn.functional as F
from torch import nn

Curvature = dict[nn.Parameter, torch.Tensor]


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """torch's batch normalization for (N, C) and (N, C, H, W) inputs alike:
    y = gamma (x - mean) / sqrt(var + eps) + beta per channel, the batch's statistics in
    training, the running ones in evaluation."""

    @classmethod
    def check(cls, batch_size: int) -> None:
        """Refuse, before training, batches too small to have statistics: one sample gives
        each F6 unit a single value to normalize over (torch refuses it mid-run)."""
        if batch_size < 2:
            raise ValueError(
                f"model/norm=batch normalizes over each batch, and data.batch_size={batch_size} "
                "(per-sample updates, as recipe=paper trains) leaves F6 one value per unit: set "
                "data.batch_size>=2, or model/norm=none"
            )

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"BatchNorm takes (N, C) or (N, C, H, W) inputs, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) == 1 and self.running_mean is not None:
            # An epoch's last batch can be a single sample (N % batch_size == 1): it has no
            # batch statistics, so it is normalized by the running ones, which it leaves as
            # they are.
            self._check_input_dim(x)
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)

    def curvature(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, Curvature]:
        """h of the input, gamma and beta from h of the output. With the statistics fixed the
        layer is y = a x + b per channel, a = gamma / sqrt(var + eps): h_x = a^2 h; gamma's
        input is x_hat, so h_gamma = sum h x_hat^2; beta's is 1: h_beta = sum h."""
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if (self.training and len(x) > 1) or self.running_mean is None:
            mean, var = x.mean(dims), x.var(dims, unbiased=False)  # what forward used
        else:
            mean, var = self.running_mean, self.running_var
        inv_std = (var + self.eps).rsqrt().view(shape)
        x_hat = (x - mean.view(shape)) * inv_std
        if not self.affine:
            return inv_std.square() * h, {}
        gamma = self.weight.detach().view(shape)
        params = {self.weight: (h * x_hat.square()).sum(dims), self.bias: h.sum(dims)}
        return (gamma * inv_std).square() * h, params
