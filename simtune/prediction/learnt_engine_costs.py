"""Engine costs per unit learnt on one machine, kept so that the next workload on it is measured,
and predicted, without engines of its own.

A search that measured a workload's real engines on this machine's profile reads DeepSpeed's costs
per unit off them (:func:`simtune.prediction.engine_costs.framework_costs_of`: per ZeRO-3 module in
each pass, gradient hook, reduction bucket, persistent gather, engine call and step) and saves them in
``<user profile folder>/engine_costs/<profile>.json`` under the workload's key, with the precision
and the fingerprint of the profile's numbers. Costs saved against other numbers (the machine was
calibrated again) are ignored.

The profile a prediction uses then carries, in its framework section, the median of each cost over
the saved workloads of the prediction's precision (over all of them when none has it). A workload
whose own engines were measured keeps its own costs (the framework section is then not read); the
others (a new workload measured without engines, one never measured) are costed per unit. The
reduction-bucket cost is taken only from workloads whose engines with small buckets were measured.
The costs per parameter (``FrameworkCosts.param_pass_s``) are saved only where two workloads of
one shape and different sizes were measured (the reference and its twin,
:func:`simtune.prediction.engine_costs.param_pass_costs`); their median is taken per stage and
phase over the workloads that have them.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from simtune.atomic import write_atomically
from simtune.file_lock import exclusive
from simtune.hardware.profile import FrameworkProfile, HardwareProfile
from simtune.hardware.serialize import profile_fingerprint
from simtune.model.inputs import FrameworkCosts

LEARNT = ("zero3_module_s", "zero3_module_backward_s", "reduce_bucket_s", "gradient_hook_s", "engine_step_s",
          "engine_micro_step_s", "engine_boundary_s", "forward_module_s", "gather_call_s")
"""The framework costs read off measured engines; the dispatch costs per kernel come from the
profile's own microbenchmark and are not replaced."""

PER_PARAMETER_KEY = "per_parameter_s"
"""Where an entry keeps its ``param_pass_s`` table (stage 3's step per parameter of a rank's shard);
tables saved under other keys meant otherwise and are not read."""


@dataclass(frozen=True)
class LearntEngineCosts:
    """The costs a prediction on one profile takes from the workloads measured on it."""

    sources: tuple[str, ...]
    """Keys of the workloads the costs were read from."""
    costs: Mapping[str, float]
    """Cost name (one of :data:`LEARNT`) -> seconds: the median over the sources that measured it."""
    param_pass_s: tuple[tuple[float, float, float], ...] = ()
    """Per stage, (forward, backward, step) seconds per parameter; empty when none was learnt."""

    def covers(self, *, bucket_engines: bool) -> bool:
        """Whether these costs stand in for everything a workload's engines would give: the cost
        per reduction bucket too when the engines with small buckets are wanted."""
        return not bucket_engines or "reduce_bucket_s" in self.costs

    def describe(self) -> str:
        per_param = " and per parameter" if self.param_pass_s else ""
        return f"engine costs per unit{per_param} learnt from " + ", ".join(self.sources)


def learnt_costs_path(profile_name: str, folder: str | os.PathLike[str] | None = None) -> Path:
    """``<user profile folder>/engine_costs/<profile>.json`` (a sub-folder, so that profile
    listings do not mistake it for a profile)."""
    from simtune.hardware.registry import profile_side_file

    return profile_side_file("engine_costs", profile_name, folder)


def _entries(path: Path) -> dict[str, Any]:
    """The saved entries (workload key -> entry); none when the file is missing or unreadable
    (it is a cache of what measurements showed: a damaged one is measured again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def record_engine_costs(profile: HardwareProfile, workload_key: str, precision: str, costs: FrameworkCosts, *,
                        buckets_measured: bool, path: Optional[Path] = None) -> Optional[Path]:
    """Save what ``workload_key``'s engines cost per unit on ``profile`` (replacing that workload's
    earlier entry); the reduction-bucket cost only when ``buckets_measured``. Returns the file, or
    None when it already held these costs."""
    target = path if path is not None else learnt_costs_path(profile.name)
    values = {name: float(getattr(costs, name)) for name in LEARNT if name != "reduce_bucket_s" or buckets_measured}
    entry: dict[str, Any] = {"precision": precision, "profile_numbers": profile_fingerprint(profile), "costs": values,
                             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if costs.param_pass_s:
        entry[PER_PARAMETER_KEY] = [list(row) for row in costs.param_pass_s]
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target.with_name(f".{target.name}.lock")):
        entries = _entries(target)
        earlier = entries.get(workload_key)
        if isinstance(earlier, dict) and {k: v for k, v in earlier.items() if k != "date"} == {
                k: v for k, v in entry.items() if k != "date"}:
            return None
        entries[workload_key] = entry
        write_atomically(target, json.dumps({"profile": profile.name, "entries": entries}, indent=1,
                                            sort_keys=True) + "\n")
    return target


def learnt_engine_costs(profile: HardwareProfile, precision: str,
                        path: Optional[Path] = None) -> Optional[LearntEngineCosts]:
    """The costs saved for ``profile``'s current numbers, preferring workloads of ``precision``;
    None when there are none."""
    numbers = profile_fingerprint(profile)
    entries = {key: e for key, e in _entries(path if path is not None else learnt_costs_path(profile.name)).items()
               if isinstance(e, dict) and e.get("profile_numbers") == numbers and isinstance(e.get("costs"), dict)}
    same = {key: e for key, e in entries.items() if e.get("precision") == precision}
    chosen = same or entries
    if not chosen:
        return None
    costs = {}
    for name in LEARNT:
        values = [float(v) for v in (_saved(e["costs"], name) for e in chosen.values())
                  if isinstance(v, (int, float)) and v >= 0]
        if values:
            costs[name] = statistics.median(values)
    tables = [_param_passes(e.get(PER_PARAMETER_KEY)) for e in chosen.values()]
    tables = [t for t in tables if t]

    def median(stage: int, phase: int) -> float:
        return statistics.median(t[stage][phase] for t in tables)

    per_param = tuple((median(s, 0), median(s, 1), median(s, 2)) for s in range(4)) if tables else ()
    return LearntEngineCosts(tuple(sorted(chosen)), costs, per_param) if costs else None


def _saved(costs: Mapping[str, Any], name: str) -> Any:
    """One saved cost; an entry saved when one cost stood for both of stage 3's passes gives it
    for the backward's too. An entry saved before the backward's work where the ranks meet was
    kept apart (no ``engine_boundary_s``) held it in ``engine_micro_step_s``, which is then not
    read: it would be charged in every micro-step."""
    if name == "zero3_module_backward_s" and name not in costs:
        return costs.get("zero3_module_s")
    if name == "engine_micro_step_s" and "engine_boundary_s" not in costs:
        return None
    return costs.get(name)


def _param_passes(value: Any) -> tuple[tuple[float, float, float], ...]:
    """A saved ``param_pass_s`` table; empty when missing or malformed."""
    if not (isinstance(value, list) and len(value) == 4 and all(
            isinstance(row, list) and len(row) == 3 and all(isinstance(v, (int, float)) and v >= 0 for v in row)
            for row in value)):
        return ()
    return tuple((float(row[0]), float(row[1]), float(row[2])) for row in value)


def with_learnt_engine_costs(profile: HardwareProfile, learnt: Optional[LearntEngineCosts]) -> HardwareProfile:
    """``profile`` with ``learnt``'s costs in its framework section (unchanged when None)."""
    if learnt is None:
        return profile
    framework = profile.framework or FrameworkProfile(kind="measured", forward_kernel_s=0.0, backward_kernel_s=0.0,
                                                      zero3_module_s=0.0, reduce_bucket_s=0.0, gradient_hook_s=0.0,
                                                      engine_step_s=0.0)
    provenance = dataclasses.replace(profile.provenance, notes=profile.provenance.notes + (learnt.describe(),))
    costs: dict[str, Any] = dict(learnt.costs)
    if learnt.param_pass_s:
        costs["param_pass_s"] = learnt.param_pass_s
    return dataclasses.replace(profile, framework=dataclasses.replace(framework, **costs), provenance=provenance)


__all__ = ["LEARNT", "PER_PARAMETER_KEY", "LearntEngineCosts", "learnt_costs_path", "learnt_engine_costs",
           "record_engine_costs", "with_learnt_engine_costs"]
