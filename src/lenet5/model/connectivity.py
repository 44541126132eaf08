"""C3 connectivity: the paper's sparse Table I, or full.

Table I (sec. II-B) connects each of the 16 C3 maps to a subset of the 6 S2 maps, to
break symmetry and cut connections. `SparseConv2d` stores only the weights of the
connections in the table (so the parameter count is the paper's 1,516 for C3) and
scatters them into a dense kernel at each forward pass: a disconnected S2 map cannot
influence a C3 map, and there is no weight for such a connection to receive a gradient.
The full variant is a plain `torch.nn.Conv2d` named in `conf/model/connectivity/full.yaml`.
"""

import torch
import torch.nn.functional as F
from torch import nn


class SparseConv2d(nn.Module):
    """Convolution whose output map o only sees the input maps listed in ``table[o]``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, table: list[list[int]]
    ):
        super().__init__()
        if len(table) != out_channels:
            raise ValueError(
                f"connection table has {len(table)} rows but the layer has {out_channels} "
                "output maps: give one row of input maps per output map"
            )
        for o, row in enumerate(table):
            bad = [i for i in row if not 0 <= i < in_channels]
            if bad or not row or len(set(row)) != len(row):
                raise ValueError(
                    f"connection table row {o} = {list(row)} must list distinct input maps "
                    f"in 0..{in_channels - 1}"
                )
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.table = [list(row) for row in table]
        out_idx = [o for o, row in enumerate(table) for _ in row]
        in_idx = [i for row in table for i in row]
        self.register_buffer("out_idx", torch.tensor(out_idx), persistent=False)
        self.register_buffer("in_idx", torch.tensor(in_idx), persistent=False)
        # One 5x5 kernel per connection of the table, plus one bias per output map.
        self.weight = nn.Parameter(torch.empty(len(in_idx), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def fan_in(self) -> torch.Tensor:
        """Number of inputs of each output unit: connected maps x kernel area."""
        fan_ins = [len(row) * self.kernel_size**2 for row in self.table]
        return torch.tensor(fan_ins, device=self.weight.device)

    def reset_parameters(self) -> None:
        # Same rule as nn.Conv2d's default (1/sqrt(F)), with each output map's own fan-in.
        self.uniform_by_fan_in_(scale=1.0, power=0.5)

    @torch.no_grad()
    def uniform_by_fan_in_(self, scale: float, power: float) -> None:
        """Weights and biases uniform in +/-scale/F**power, F each output map's own fan-in
        (its units have different fan-ins, so `lenet5.model.init` hands the rule to the block)."""
        bound = scale / self.fan_in().to(self.weight.dtype) ** power
        self.weight.copy_((torch.rand_like(self.weight) * 2 - 1) * bound[self.out_idx, None, None])
        self.bias.copy_((torch.rand_like(self.bias) * 2 - 1) * bound)

    def dense_weight(self) -> torch.Tensor:
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels, self.in_channels, k, k)
        return dense.index_put((self.out_idx, self.in_idx), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"connections={len(self.in_idx)}"
        )
