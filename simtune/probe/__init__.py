"""The in-process probe: runs the user's training script unmodified under DeepSpeed's launcher,
times optimizer steps ``start..end`` end to end with the forward/backward/step split beside them,
reads peak memory, writes metrics.json and ends the run (see docs/experiments.md).

Started as ``deepspeed <launcher args> --module simtune.probe --simtune-probe=<probe.json>
SCRIPT ARGS...``. Importing this package imports neither torch nor DeepSpeed; the runner uses
:mod:`simtune.probe.protocol`.
"""

from simtune.probe.protocol import (
    EXIT_NO_METRICS,
    EXIT_OUT_OF_MEMORY,
    NO_METRICS_PREFIX,
    OUT_OF_MEMORY_PREFIX,
    PROBE_FLAG,
    REQUIRED_METRIC_KEYS,
    ProbeSettings,
)

__all__ = [
    "EXIT_NO_METRICS",
    "EXIT_OUT_OF_MEMORY",
    "NO_METRICS_PREFIX",
    "OUT_OF_MEMORY_PREFIX",
    "PROBE_FLAG",
    "REQUIRED_METRIC_KEYS",
    "ProbeSettings",
]
