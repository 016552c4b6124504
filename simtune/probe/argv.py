"""The probe's command line, and the command line the user's script sees.

DeepSpeed's launcher starts each rank as ``python -u -m simtune.probe --local_rank=N
--simtune-probe=P SCRIPT ARGS...``: it puts ``--local_rank`` right after the module name, before
the module's own arguments. Everything before SCRIPT is therefore either the probe's flag or the
launcher's ``--local_rank``; SCRIPT is the first other argument and everything after it belongs
to the script, untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from simtune.probe.protocol import PROBE_FLAG


class ProbeUsageError(ValueError):
    """The probe was started with a command line it cannot use."""


@dataclass(frozen=True)
class ProbeInvocation:
    settings_path: str
    script: str
    script_args: tuple[str, ...]
    local_rank: str | None = None

    def script_argv(self) -> list[str]:
        """``sys.argv`` as the script would have seen it under the launcher:
        ``[SCRIPT, --local_rank=N, ARGS...]`` (without ``--local_rank`` when none was given)."""
        rank = [] if self.local_rank is None else [f"--local_rank={self.local_rank}"]
        return [self.script, *rank, *self.script_args]


def parse_probe_argv(argv: list[str]) -> ProbeInvocation:
    """Split the probe's arguments (without the program name) into its own and the script's."""
    settings_path = local_rank = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        name, has_value, value = arg.partition("=")
        if name not in (PROBE_FLAG, "--local_rank"):
            break
        if not has_value:
            if index + 1 >= len(argv):
                raise ProbeUsageError(f"{name} needs a value.")
            index += 1
            value = argv[index]
        if name == PROBE_FLAG:
            settings_path = value
        else:
            local_rank = value
        index += 1
    if settings_path is None:
        raise ProbeUsageError(f"{PROBE_FLAG}=PROBE_JSON is missing before the script.")
    if index >= len(argv):
        raise ProbeUsageError("no training script was given after the probe's arguments.")
    return ProbeInvocation(settings_path, argv[index], tuple(argv[index + 1:]), local_rank)
