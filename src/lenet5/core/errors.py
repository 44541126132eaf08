"""The errors a user fixes. `lenet5-train` prints a `UserError`'s message, which says what,
where and how to fix it, as one line and exits 2."""


class UserError(Exception):
    """A problem the user fixes (a setting, the data, the store)."""


class ConfigError(UserError, ValueError):
    """A config that cannot work; the message names the setting and the fix."""


class DataError(UserError, RuntimeError):
    """The data set is absent, unreadable or corrupt; the message says how to fix it."""


class StoreError(UserError, RuntimeError):
    """The MLflow store cannot be opened or written; the message says where and why."""


class SweepFailed(SystemExit):
    """Ends a sweep with exit status 1 and this message.

    A SystemExit, because Hydra turns any Exception raised in a callback into a warning
    and would exit 0.
    """
