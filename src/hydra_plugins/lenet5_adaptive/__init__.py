"""lenet5's adaptive-seeds sweeper (`hydra/sweeper=adaptive`), where Hydra looks for sweepers.

Hydra instantiates sweepers only from its `hydra_plugins` namespace; the sweeper itself is
`lenet5.cli.adaptive.AdaptiveSeeds` (this module only names it here: Hydra imports every
plugin module at each start, and that one defers what it needs until it sweeps)."""

from lenet5.cli.adaptive import AdaptiveSeeds as _AdaptiveSeeds


class AdaptiveSeeds(_AdaptiveSeeds):
    """See `lenet5.cli.adaptive`."""
