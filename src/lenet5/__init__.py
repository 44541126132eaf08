"""lenet5: ablate the design choices of LeNet-5 (LeCun et al., 1998).

The subpackages are the layers (docs/architecture.md; `lint-imports` checks them): `core`
at the bottom; the training side `model`, `data`, `training` and the MLflow side `study`,
`tracking`, `report`, which never import each other; the commands in `cli` on top.
"""

from lenet5.core import compat

compat.install()  # the previous release's module paths, for one release
