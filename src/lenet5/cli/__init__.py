"""The commands, on top of both stacks: `lenet5-train` (`train`), the sweep's Hydra callback
(`sweep`), what a tested run records (`record`), `lenet5-predict` (`predict`). Only these set
process state (signal handlers, environment variables), scoped to the command."""
