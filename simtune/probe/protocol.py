"""What the runner and the probe agree on: probe.json, the metrics keys, exit codes and lines.

The runner writes ``probe.json`` (:class:`ProbeSettings`) into the experiment's result directory
and passes its path with :data:`PROBE_FLAG`; the probe writes ``metrics.json`` with at least
:data:`REQUIRED_METRIC_KEYS`, or ends with one of the exit codes and stderr lines below, which
the runner reads to classify the outcome. This module imports nothing heavy (no torch), so the
runner can use it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simtune.atomic import write_atomically
from simtune.errors import ConfigError

PROBE_FLAG = "--simtune-probe"
"""The probe's own flag, ``--simtune-probe=<result_dir>/probe.json``, removed before the script runs."""

SHARED_RSS_KIND = "rss_peak_after_earlier_runs"
"""metrics.json's ``memory_kind`` of a host run that followed others in a shared launch: its
``VmHWM`` starts from what the process kept of them (heap the allocator does not hand back,
libraries loaded), so it can read high (0-1.5% on gpt2-tiny: benchmarks/results/shared_launch.txt)
and teaches no memory correction."""

SERVE_FLAG = "--simtune-serve"
"""``--simtune-serve=<folder>``: the ranks of a shared launch run one request after another from
that folder (:mod:`simtune.probe.serve`) instead of one script run."""

LINE_PREFIX = "simtune-probe:"
"""Every line the probe prints starts with this."""

OUT_OF_MEMORY_PREFIX = f"{LINE_PREFIX} out of memory:"
"""Start of the stderr line printed when a rank's peak memory exceeds the budget."""

NO_METRICS_PREFIX = f"{LINE_PREFIX} no metrics:"
"""Start of the stderr line printed when the script ends before the last measured step."""

CANNOT_START_PREFIX = f"{LINE_PREFIX} cannot start:"
"""Start of the stderr line printed when the probe's own arguments or probe.json are unusable."""

EXIT_OUT_OF_MEMORY = 3
"""Exit code of every rank when the peak memory of some rank exceeds the budget."""

EXIT_NO_METRICS = 4
"""Exit code when the script ended (or never called ``deepspeed.initialize``) before the window closed."""

REQUIRED_METRIC_KEYS = (
    "throughput",
    "latency",
    "FLOPS_per_gpu",
    "step_time_s",
    "step_times_s",
    "fwd_s",
    "bwd_s",
    "step_s",
    "peak_memory_bytes",
    "peak_memory_per_rank",
    "memory_kind",
    "train_batch_size",
    "world_size",
)
"""Keys a valid metrics.json holds (see docs/experiments.md for all of them)."""


@dataclass(frozen=True)
class ProbeSettings:
    """Contents of probe.json: the measured window, where to write, and the memory budget.

    Steps are optimizer steps numbered from 1 (DeepSpeed's ``global_steps`` after the step);
    the window is ``start_profile_step..end_profile_step`` inclusive.
    """

    start_profile_step: int
    end_profile_step: int
    metrics_path: str
    memory_budget_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("start_profile_step", "end_profile_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}.")
        if self.end_profile_step < self.start_profile_step:
            raise ConfigError(
                f"end_profile_step ({self.end_profile_step}) must not be below "
                f"start_profile_step ({self.start_profile_step})."
            )
        budget = self.memory_budget_bytes
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0):
            raise ConfigError(f"memory_budget_bytes must be a positive integer, not {budget!r}.")

    def write(self, path: str | Path) -> None:
        """Write probe.json atomically."""
        write_json_atomically(path, asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> "ProbeSettings":
        with open(path, encoding="utf-8") as handle:
            return cls(**json.load(handle))


def request_path(folder: str | Path, number: int) -> Path:
    """A shared launch's request ``number`` (from 1): ``{"argv", "probe", "stdout", "stderr"}``
    (the script's arguments, probe.json, the run's two logs) or ``{"stop": true}``."""
    return Path(folder) / f"request-{number}.json"


def started_path(folder: str | Path, number: int) -> Path:
    """Written by rank 0 when the ranks take request ``number`` up."""
    return Path(folder) / f"started-{number}"


def reply_path(folder: str | Path, number: int) -> Path:
    """Written by rank 0 once request ``number`` ran to the end of its window and the ranks
    released it: ``{"returncode": 0, "run_s": ..., "ends": null}``, ``"ends"`` saying why the
    launch ends after it (its engine outlived the run, or it left device memory allocated:
    :func:`simtune.probe.serve.left_behind`) instead of taking the next request. A run
    that ends otherwise ends the launch without a reply."""
    return Path(folder) / f"reply-{number}.json"


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; empty when the file is missing, unreadable or holds no object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json_atomically(path: str | Path, data: object) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it, so readers never see half a file."""
    write_atomically(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
