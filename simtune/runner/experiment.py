"""What the runner runs and what it gives back."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping

from simtune.space import Trial

STATUSES = ("ok", "oom", "crashed", "timeout")
"""Every recorded outcome of an experiment (see :mod:`simtune.runner.outcome`)."""


@dataclass(frozen=True)
class Experiment:
    name: str
    """Directory name under results_dir, e.g. ``z1_gas1_tmbspg8``."""
    trial: Trial
    """The point of the tuning space (``simtune.space.Trial``), or None."""
    ds_config: Mapping[str, Any]
    """The experiment's full DeepSpeed config (written to ``<result_dir>/ds_config.json``)."""
    window: tuple[int, int] | None = None
    """(start_profile_step, end_profile_step) when not the runner's."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"{self.name!r} cannot name an experiment's result directory.")


@dataclass(frozen=True)
class ExperimentResult:
    name: str
    status: str
    """One of :data:`STATUSES`."""
    reason: str
    """Why it failed, from the logs (empty when ok)."""
    metrics: Mapping[str, Any] | None
    """The probe's metrics.json when ok, else None."""
    result_dir: str
    wall_s: float
    """Wall time of the launch, from start to the end of the process group."""
    reused: bool = False
    """True when taken from an earlier run's result directory instead of launched again."""
    others_cores: float | None = None
    """Cores other processes used on average during the run (:mod:`simtune.runner.interference`)."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


def as_json(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses and mappings become objects, tuples lists."""
    return json.loads(json.dumps(value, default=_plain))
