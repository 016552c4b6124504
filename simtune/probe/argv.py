"""The probe's command line, and the command line the user's script sees.

DeepSpeed's launcher starts each rank as ``python -u -m simtune.probe --local_rank=N
--simtune-probe=P SCRIPT ARGS...``: it puts ``--local_rank`` right after the module name, before
the module's own arguments. Everything before SCRIPT is therefore either the probe's flag or the
launcher's ``--local_rank``; SCRIPT is the first other argument and everything after it belongs
to the script, untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from simtune.probe.protocol import PROBE_FLAG, SERVE_FLAG


class ProbeUsageError(ValueError):
    """The probe was started with a command line it cannot use."""


@dataclass(frozen=True)
class ProbeInvocation:
    settings_path: str | None
    """probe.json of the one run; None in a shared launch."""
    script: str
    script_args: tuple[str, ...]
    local_rank: str | None = None
    serve_folder: str | None = None
    """The requests' folder of a shared launch (``--simtune-serve``, :mod:`simtune.probe.serve`)."""

    def script_argv(self) -> list[str]:
        """``sys.argv`` as the script would have seen it under the launcher:
        ``[SCRIPT, --local_rank=N, ARGS...]`` (without ``--local_rank`` when none was given)."""
        rank = [] if self.local_rank is None else [f"--local_rank={self.local_rank}"]
        return [self.script, *rank, *self.script_args]


def parse_probe_argv(argv: list[str]) -> ProbeInvocation:
    """Split the probe's arguments (without the program name) into its own and the script's."""
    values: dict[str, str] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        name, has_value, value = arg.partition("=")
        if name not in (PROBE_FLAG, SERVE_FLAG, "--local_rank"):
            break
        if not has_value:
            if index + 1 >= len(argv):
                raise ProbeUsageError(f"{name} needs a value.")
            index += 1
            value = argv[index]
        values[name] = value
        index += 1
    settings_path, serve_folder = values.get(PROBE_FLAG), values.get(SERVE_FLAG)
    if (settings_path is None) == (serve_folder is None):
        raise ProbeUsageError(f"Give {PROBE_FLAG}=PROBE_JSON or {SERVE_FLAG}=FOLDER before the script, not "
                              f"{'both' if settings_path else 'neither'}.")
    if index >= len(argv):
        raise ProbeUsageError("no training script was given after the probe's arguments.")
    return ProbeInvocation(settings_path, argv[index], tuple(argv[index + 1:]), values.get("--local_rank"),
                           serve_folder)
