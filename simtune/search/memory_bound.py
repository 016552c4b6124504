"""How large a micro-batch size the measured search may launch: what fits in the memory that exists.

Before a micro-batch size is launched, its memory per rank must fit in
:class:`RankMemory`: on CPU the machine's available memory (``psutil``) shared by the processes
that run at once on it; on a GPU the device's memory (the hardware profile's when given, else
torch's); the per-process memory budget (``--memory-budget``) when it is smaller. What a size needs per rank comes from, in order:

- the cost model (:class:`simtune.prediction.predictor.Predictor`) when the workload's numbers are at hand
  without a launch: a size fits when its predicted total does and the model's own limit holds
  (:meth:`~simtune.prediction.predictor.Predictor.max_micro_batch_size` bisects the same rule);
- otherwise the stage's measured peaks: memory grows with the micro-batch size, at most in
  proportion to the largest successful run's peak (``peak * m / m0`` is an upper bound for
  ``m >= m0``, as the part that does not grow is not negative); with two successful sizes, the
  line through the two largest. Before any run of the stage, nothing is known: the size is tried.

A size that does not fit is never launched (an out-of-memory run on CPU is stopped by the
kernel's OOM killer, which can take other processes down with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import psutil

from simtune.errors import SimtuneError
from simtune.hardware import HardwareProfile, find_profile_for, load_profile
from simtune.prediction.predictor import Predictor
from simtune.runner.resources import Resources
from simtune.search.model_inputs import WorkloadChoice, choose_script_workload, choose_workload, local_device_name
from simtune.space import TuningSpace
from simtune.workloads import Workload

GIB = 2**30


def size_text(n: float) -> str:
    """Bytes in GiB from 1 GiB on, else in MiB."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"


@dataclass(frozen=True)
class RankMemory:
    """The memory one rank of an experiment may use, and where the number comes from."""

    bytes: int
    how: str


def rank_memory(accelerator: str, processes: int, device_memory_bytes: int | None = None,
                budget_bytes: int | None = None) -> RankMemory:
    """:class:`RankMemory` of this machine: on CPU its available memory over the ``processes``
    running at once; on a GPU ``device_memory_bytes`` (a profile's), else torch's device memory;
    the per-process memory budget when that is smaller."""
    found = _existing_memory(accelerator, processes, device_memory_bytes)
    if budget_bytes is not None and budget_bytes < found.bytes:
        return RankMemory(budget_bytes, f"the memory budget of {size_text(budget_bytes)} per rank")
    return found


def _existing_memory(accelerator: str, processes: int, device_memory_bytes: int | None) -> RankMemory:
    if accelerator == "cpu":
        available = int(psutil.virtual_memory().available)
        share = available // max(1, processes)
        return RankMemory(share, f"{size_text(share)} per rank: {size_text(available)} available on this machine "
                                 f"over {processes} process(es)")
    if device_memory_bytes is None:
        import torch  # 2 s to import: only a GPU's size needs it

        device_memory_bytes = int(torch.cuda.get_device_properties(0).total_memory)
    return RankMemory(device_memory_bytes, f"{size_text(device_memory_bytes)} of device memory per rank")


Predicted = Callable[[int, int], "tuple[int, bool]"]
"""``predicted(stage, mbs)``: (predicted bytes per rank, whether the model says it fits)."""


class MemoryBound:
    """Which micro-batch sizes may be launched (see the module docstring)."""

    def __init__(self, memory: RankMemory, predicted: Predicted | None = None, model: str = ""):
        self.memory = memory
        self.predicted = predicted
        self.model = model
        """What the predictions come from, in words (empty without predictions)."""
        self._peaks: dict[int, dict[int, int]] = {}

    def learn(self, stage: int, mbs: int, metrics: Mapping[str, Any] | None) -> None:
        """A successful run's measured peak memory per rank."""
        peak = (metrics or {}).get("peak_memory_bytes")
        if isinstance(peak, (int, float)) and not isinstance(peak, bool) and peak > 0:
            self._peaks.setdefault(stage, {})[mbs] = int(peak)

    def need(self, stage: int, mbs: int) -> tuple[int, str] | None:
        """(bytes per rank the size needs, how that is known); None when nothing tells."""
        if self.predicted is not None:
            return self.predicted(stage, mbs)[0], f"the cost model ({self.model}) predicts"
        peaks = self._peaks.get(stage, {})
        known = sorted(peaks)
        if not known:
            return None
        if mbs <= known[-1]:
            return peaks[max(m for m in known if m >= mbs)], "a measured run took"
        if len(known) >= 2:
            (m0, p0), (m1, p1) = [(m, peaks[m]) for m in known[-2:]]
            slope = max(0.0, (p1 - p0) / (m1 - m0))
            return int(p1 + slope * (mbs - m1)), f"the line through the peaks measured at {m0} and {m1} gives"
        m0 = known[-1]
        return int(peaks[m0] * mbs / m0), f"the peak measured at {m0}, in proportion, gives"

    def fits(self, stage: int, mbs: int) -> bool | None:
        """False when the size does not fit, True when it does, None when nothing tells."""
        need = self.need(stage, mbs)
        if need is None:
            return None
        if self.predicted is not None and not self.predicted(stage, mbs)[1]:
            return False
        return need[0] <= self.memory.bytes

    def reason(self, stage: int, mbs: int) -> str:
        """Why ``mbs`` does not fit, in words."""
        need = self.need(stage, mbs)
        if need is None:
            return ""
        if self.predicted is not None and not self.predicted(stage, mbs)[1]:
            return f"{need[1]} it does not fit the hardware profile's memory"
        return f"{need[1]} {size_text(need[0])} per rank, more than {self.memory.how}"


def search_memory_bound(space: TuningSpace, resources: Resources, *, parallel: int, precision: str,
                        workload: Workload | None = None,
                        script: tuple[str, tuple[str, ...], dict[str, Any]] | None = None, profile: str | None = None,
                        budget_bytes: int | None = None, say: Callable[[str], None] = lambda line: None
                        ) -> MemoryBound:
    """The measured search's bound on this machine: the memory that exists per rank, and the cost
    model's predictions when a hardware profile of this machine (``profile``, else the one found)
    and the workload's numbers are at hand without a launch: ``workload`` (model mode: closed
    form or a cached measurement) or ``script`` ((script, args, ds_config): a cached measurement
    of the script's model); ``budget_bytes``: the per-process memory budget, when there is one."""
    hardware: HardwareProfile | None = None
    try:
        if profile is not None:
            hardware = load_profile(profile)
        else:
            entry = find_profile_for(local_device_name(resources.accelerator), resources.world_size,
                                     resources.num_nodes)
            hardware = load_profile(entry.path) if entry is not None else None
    except SimtuneError:
        hardware = None
    device_bytes = hardware.device.memory_bytes if hardware is not None and resources.accelerator != "cpu" else None
    memory = rank_memory(resources.accelerator, resources.num_gpus * max(1, parallel), device_bytes, budget_bytes)
    chosen: WorkloadChoice | None = None
    if hardware is not None:
        try:
            if workload is not None:
                chosen = choose_workload(workload, hardware, precision=precision, measure=False, say=say)
            elif script is not None:
                chosen = choose_script_workload(*script, hardware, precision=precision, num_gpus=resources.num_gpus,
                                                local=False, say=say)
        except SimtuneError:
            chosen = None
    if chosen is None or hardware is None:
        say(f"micro-batch sizes are bounded by the memory that exists ({memory.how}), each stage's from its "
            f"measured peaks")
        return MemoryBound(memory)
    predictor = Predictor.from_parts(space, chosen.model, hardware, world_size=resources.world_size,
                                     precision=precision, nodes=resources.num_nodes)

    def predicted(stage: int, mbs: int) -> tuple[int, bool]:
        estimate = predictor.predict(space.trial(stage, mbs))
        return int(estimate.memory.total_bytes), bool(estimate.feasible)

    model = f"{chosen.how} {chosen.key}, profile {hardware.name}"
    say(f"micro-batch sizes are bounded by the memory that exists ({memory.how}) and the cost model's "
        f"memory predictions ({model})")
    return MemoryBound(memory, predicted, model)
