"""The one exception tree.

Every error a user can cause is a :class:`SimtuneError` whose message is one sentence that says
what is wrong and, where it helps, what to do. The CLI prints it and exits non-zero, with no
traceback unless ``--debug`` is given.
"""


class SimtuneError(Exception):
    """Base of every error simtune raises on purpose."""

    exit_code = 2


class ConfigError(SimtuneError):
    """The DeepSpeed configuration or its "autotuning" section is malformed or unsupported."""


class InputError(SimtuneError):
    """A command-line value is wrong: unknown preset, missing script, impossible GPU count, ..."""


class WorkloadError(SimtuneError):
    """A model preset or Hugging Face config cannot be turned into a workload."""


class ProfileError(SimtuneError):
    """A hardware profile is missing, from another schema version, or holds an impossible value."""


class LaunchError(SimtuneError):
    """An experiment could not be launched at all (no launcher, no free port, bad hostfile)."""


class StorageError(SimtuneError):
    """The study's storage cannot be opened or used: missing driver, unreachable server, unusable schema."""


class OutputError(SimtuneError):
    """A file or folder simtune writes cannot be written: a read-only place, a full disk, a file
    where a folder is expected."""
