"""LeNet-5 assembled from the swappable blocks (paper sec. II-B, fig. 2).

input -> C1 conv 5x5 (6) -> act -> S2 pool -> C3 conv 5x5 (16, connectivity) -> act -> S4 pool
      -> C5 conv 5x5 (120) -> act -> F6 linear (84) -> act -> output head

The paper applies its squashing function after C1, S2, C3, S4, C5 and F6; its trainable
subsampling carries the activation inside (see `pooling.py`), while average and max
pooling, like most modern LeNets, apply none.
"""

import inspect
from collections import OrderedDict
from collections.abc import Callable

from torch import nn

F6_UNITS = 84  # 7x12, the size of the RBF bitmaps (sec. II-B)
MIN_INPUT_SIZE = 32  # C5 needs 5x5 maps from S4


def c5_output_size(input_size: int) -> int:
    """Side of C5's output maps for a square input (floor division, as the pool layers do)."""
    size = input_size - 4  # C1
    size = (size // 2) - 4  # S2, C3
    return (size // 2) - 4  # S4, C5


class LeNet5(nn.Sequential):
    @staticmethod
    def check(input_size: object) -> None:
        """Refuse an input too small for the network, before anything is built."""
        if not isinstance(input_size, int) or input_size < MIN_INPUT_SIZE:
            raise ValueError(
                f"model.input_size={input_size!r} is too small: LeNet-5's C5 needs 5x5 maps "
                f"from S4, so inputs must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (MNIST's "
                "28x28 digits are padded to 32, sec. II-B: set data.size=32)"
            )

    def __init__(
        self,
        activation: Callable[[], nn.Module],
        pooling: Callable[..., nn.Module],
        connectivity: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        in_channels: int = 1,
        input_size: int = 32,
        num_classes: int = 10,
    ):
        self.check(input_size)
        c5_side = c5_output_size(input_size)
        super().__init__(
            OrderedDict(
                c1=nn.Conv2d(in_channels, 6, 5),
                c1_act=activation(),
                s2=_pool(pooling, 6, activation),
                c3=connectivity(in_channels=6, out_channels=16, kernel_size=5),
                c3_act=activation(),
                s4=_pool(pooling, 16, activation),
                c5=nn.Conv2d(16, 120, 5),
                c5_act=activation(),
                flatten=nn.Flatten(),
                f6=nn.Linear(120 * c5_side**2, F6_UNITS),
                f6_act=activation(),
                head=head(in_features=F6_UNITS, out_features=num_classes),
            )
        )


def _pool(pooling: Callable[..., nn.Module], channels: int, activation) -> nn.Module:
    """Build a pooling layer, giving it the map count and activation if it takes them.

    Trainable subsampling has per-map parameters and its own squashing; torch.nn pools
    (AvgPool2d, MaxPool2d, or any other named in a config file) take neither.
    """
    accepts = inspect.signature(pooling).parameters
    kwargs = {"channels": channels, "activation": activation()}
    return pooling(**{k: v for k, v in kwargs.items() if k in accepts})


def n_trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
