"""Hydra loads launchers only from the `hydra_plugins` package: this names lenet5's Slurm
launcher (`lenet5.cli.slurm`: a task lost without its result fails only its own job) there,
as `hydra/launcher=lenet5_slurm`, which conf/hydra/launcher/slurm.yaml builds on.

Only where the submitit plugin is installed (the [slurm] extra): without it `lenet5-train`
says which extra `hydra/launcher=slurm` needs (`lenet5.cli.train.check_plugins`)."""

from dataclasses import dataclass

try:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
except ImportError:  # no [slurm] extra: nothing to register
    SlurmQueueConf = None

if SlurmQueueConf is not None:
    from hydra.core.config_store import ConfigStore

    from lenet5.cli import slurm

    class SlurmLauncher(slurm.SlurmLauncher):
        """`hydra/launcher=slurm` (lenet5.cli.slurm)."""

    @dataclass
    class Lenet5SlurmConf(SlurmQueueConf):
        """The submitit plugin's Slurm keys, and how long a task may be out of the queue
        without its result before it counts as lost."""

        _target_: str = f"{__name__}.SlurmLauncher"
        lost_after_s: float = 30.0

    ConfigStore.instance().store(
        group="hydra/launcher", name="lenet5_slurm", node=Lenet5SlurmConf, provider="lenet5"
    )
