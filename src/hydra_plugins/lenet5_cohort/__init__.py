"""lenet5's cohort launcher (`hydra/launcher=cohort`), where Hydra looks for launchers.

Hydra instantiates launchers only from its `hydra_plugins` namespace; the launcher itself is
`lenet5.cli.cohort.CohortLauncher` (this module only names it here, and loads nothing else:
Hydra imports every plugin module at each start)."""

from lenet5.cli.cohort import CohortLauncher as _CohortLauncher


class CohortLauncher(_CohortLauncher):
    """See `lenet5.cli.cohort`."""
