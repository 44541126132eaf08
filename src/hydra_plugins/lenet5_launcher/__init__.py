"""Hydra loads launchers only from the `hydra_plugins` package: this names lenet5's own
(`lenet5.cli.launcher`) there, and makes it what `hydra/launcher=joblib` selects.

Its config takes the place of the joblib plugin's in Hydra's ConfigStore (same group and
name, stored later: Hydra scans `hydra_joblib_launcher` before this package, and a yaml of
the same name would be matched against the plugin's schema with a deprecation warning)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

from lenet5.cli import launcher


class IsolatedLauncher(launcher.IsolatedLauncher):
    """`hydra/launcher=joblib`: each job in a process of its own (lenet5.cli.launcher)."""


@dataclass
class IsolatedLauncherConf(JobLibLauncherConf):
    """Joblib's keys (n_jobs: jobs at a time, -1 one per core); the others have no effect."""

    _target_: str = f"{__name__}.IsolatedLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="joblib", node=IsolatedLauncherConf, provider="lenet5"
)
