"""LeNet-5 assembled from the swappable blocks (paper sec. II-B, fig. 2).

input -> C1 conv 5x5 (6) -> act -> S2 pool -> C3 conv 5x5 (16, connectivity) -> act -> S4 pool
      -> C5 conv 5x5 (120) -> act -> F6 linear (84) -> act -> output head

The paper applies its squashing function after C1, S2, C3, S4, C5 and F6; its trainable
subsampling carries the activation inside (see `pooling.py`), while average and max
pooling, like most modern LeNets, apply none. The modern switches (`norm.py`, `dropout.py`,
off in every preset) add a norm after C1, C3, C5 and F6, before the activation, and dropout
before the head.

Each block comes as a factory, whatever form its option file takes (`slots.py`), and is
built once per use.
"""

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from lenet5.core.errors import ConfigError
from lenet5.model.slots import SLOTS, accepted, where

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
        norm: Callable[..., nn.Module] | None = None,
        dropout: Callable[[], nn.Module] | None = None,
    ):
        """Each block is a factory (a class, or a function returning a Module), called once
        per use. `norm` (None: none) follows C1, C3, C5 and F6, before their activation;
        `dropout` (None: none) sits between F6 and the head. Without them the layers, their
        names and the order they draw their initial weights in are the paper's."""
        self.check(input_size)
        c5_side = c5_output_size(input_size)
        layers: OrderedDict[str, nn.Module] = OrderedDict()

        def weighted(name: str, layer: nn.Module, units: int) -> None:
            layers[name] = layer
            if norm is not None:
                layers[f"{name}_norm"] = norm(
                    **accepted(norm, num_features=units, num_channels=units)
                )
            layers[f"{name}_act"] = activation()

        weighted("c1", nn.Conv2d(in_channels, 6, 5), 6)
        layers["s2"] = _pool(pooling, 6, activation)
        weighted("c3", connectivity(in_channels=6, out_channels=16, kernel_size=5), 16)
        layers["s4"] = _pool(pooling, 16, activation)
        weighted("c5", nn.Conv2d(16, 120, 5), 120)
        layers["flatten"] = nn.Flatten()
        weighted("f6", nn.Linear(120 * c5_side**2, F6_UNITS), F6_UNITS)
        if dropout is not None:
            layers["dropout"] = dropout()
        layers["head"] = head(in_features=F6_UNITS, out_features=num_classes)
        super().__init__(layers)
        self.input_shape = (in_channels, input_size, input_size)

    @torch.no_grad()
    def check_forward(self) -> None:
        """Pass two blank inputs through, layer by layer, in evaluation mode (nothing drawn,
        no running statistics moved): a block that cannot take what the layer before it gives
        (a norm for conv maps only, after F6's (N, 84) output, ...) is refused before
        training, by its option file."""
        x, training = torch.zeros(2, *self.input_shape), self.training
        self.eval()
        try:
            for name, layer in self.named_children():
                try:
                    x = layer(x)
                except Exception as e:
                    group = layer_group(name)
                    raise ConfigError(
                        f"{where(group) if group else 'layer ' + name}: layer {name} "
                        f"({type(layer).__name__}) cannot take its input of shape "
                        f"{tuple(x.shape)}: {type(e).__name__}: {e}"
                        + (f"; {group} takes {SLOTS[group].expects}" if group else "")
                    ) from e
        finally:
            self.train(training)


# Which config group made each layer, for messages about a layer that fails.
LAYER_GROUPS = {
    "s2": "model/pooling",
    "s4": "model/pooling",
    "c3": "model/connectivity",
    "dropout": "model/dropout",
    "head": "model/head",
}


def layer_group(name: str) -> str | None:
    """The config group a layer of LeNet5 comes from (None for the fixed C1, C5, F6)."""
    suffix = {"_norm": "model/norm", "_act": "model/activation"}
    return next((g for s, g in suffix.items() if name.endswith(s)), LAYER_GROUPS.get(name))


def _pool(pooling: Callable[..., nn.Module], channels: int, activation) -> nn.Module:
    """Build a pooling layer, giving it the map count and activation if it takes them.

    Trainable subsampling has per-map parameters and its own squashing; torch.nn pools
    (AvgPool2d, MaxPool2d, or any other named in a config file) take neither.
    """
    offered = accepted(pooling, channels=channels, activation=None)
    if "activation" in offered:
        offered["activation"] = activation()
    return pooling(**offered)


def n_trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
