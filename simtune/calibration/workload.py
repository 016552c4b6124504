"""Workload calibration's records and cache: what one workload costs on one machine.

``calibrate_workload(workload, profile, precision=...)`` (model mode: a preset or a config.json;
:mod:`simtune.calibration.workload_launch`) and ``calibrate_script(...)`` (script mode: the
user's unmodified script, :mod:`simtune.calibration.workload_script`) launch the measuring ranks
(:mod:`simtune.calib`), which measure:

- the parameters (count of distinct storages, every tensor's size in ``model.parameters()``
  order, the largest module);
- the forward FLOPs per sample, counted by fvcore's ``FlopCountAnalysis`` (matrix products only,
  a multiply-add as 2 FLOPs) or, where fvcore cannot see the products, by torch's
  ``FlopCounterMode`` (``flops_counter`` says which);
- the bytes saved for backward per sample (``torch.autograd.graph.saved_tensors_hooks``,
  distinct storages, parameters excluded), per transformer layer and in total, and the peak
  memory of forward + backward, with and without activation checkpointing;
- forward and backward seconds at several micro-batch sizes (1, 2, 4, 8 while they fit), in the
  training precision, on this machine's device, on every rank of the node at once, after a
  warm-up, as min / median / max over repeats;
- model mode also: real DeepSpeed engines at every ZeRO stage (what the engine adds to the
  model's own time and memory), and on CPU the memory of the program and of ZeRO's runtime.

The result is a frozen :class:`WorkloadCalibration` with every raw number, saved as JSON under
``~/.simtune/cache/`` (``$SIMTUNE_CACHE_DIR``, or the given folder) by a fingerprint of the model
config (or the script path, arguments and modification time), sequence length, precision and
hardware profile name: a second search with the same inputs reads it instead of measuring again.
:class:`simtune.prediction.predictor.Predictor` turns it into the cost model's inputs (docs/estimate.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from simtune.atomic import write_atomically
from simtune.errors import SimtuneError, WorkloadError
from simtune.hardware.profile import HardwareProfile
from simtune.hardware.registry import simtune_home
from simtune.model.inputs import MeasuredCompute, MeasuredMemory, ModelSpec
from simtune.workloads.presets import Workload

SCHEMA_VERSION = 2
DEFAULT_MICRO_BATCH_SIZES = (1, 2, 4, 8)
CACHE_ENV = "SIMTUNE_CACHE_DIR"
LOG_PREFIX = "simtune-workload:"
"""Starts the lines a measuring rank prints about its own failure (the host quotes them)."""

StageOverhead = tuple[int, int, float, float, float, float]
"""A row of :attr:`simtune.model.inputs.MeasuredCompute.stage_overheads`."""
ReduceCallOverhead = tuple[int, int, float]
"""A row of :attr:`simtune.model.inputs.MeasuredCompute.reduce_call_overheads`."""
StageResidual = tuple[int, int, int]
"""A row of :attr:`simtune.model.inputs.MeasuredMemory.stage_residuals`."""
Log = Callable[[str], None]
"""Where a calibration says what it does (a line of text; None: nowhere)."""


class WorkloadCalibrationError(SimtuneError):
    """The workload could not be measured (the model does not build, run or fit)."""


def default_cache_dir() -> Path:
    """``$SIMTUNE_CACHE_DIR`` when set, else ``<simtune home>/cache`` (``$SIMTUNE_HOME`` or
    ``~/.simtune``)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else simtune_home() / "cache"


@dataclass(frozen=True)
class TimeStats:
    """Seconds of one call over the timed repeats."""

    min_s: float
    median_s: float
    max_s: float
    repeats: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> "TimeStats":
        """Min, median and max of timed samples (at least one)."""
        return cls(min_s=min(samples), median_s=statistics.median(samples), max_s=max(samples),
                   repeats=len(samples))


@dataclass(frozen=True)
class MicroBatchMeasurement:
    """Everything measured at one micro-batch size."""

    micro_batch_size: int
    forward: TimeStats
    backward: TimeStats
    saved_bytes: int
    """Bytes saved for backward by the whole forward (distinct storages, parameters excluded)."""
    saved_bytes_by_layer: tuple[tuple[str, int], ...]
    """The same, split by the module that saved them: each transformer layer by its name, and
    ``"other"`` for embeddings, the head and the loss."""
    peak_bytes: int
    """Peak memory of forward + backward above the memory held before it (CUDA: allocated;
    CPU: resident set size, from a reset high-water mark)."""
    activation_peak_bytes: int
    """peak_bytes less the parameter gradients the backward creates (model states, counted apart)."""
    forward_checkpointed: Optional[TimeStats] = None
    """With activation checkpointing (None when the model has no switch for it)."""
    backward_checkpointed: Optional[TimeStats] = None
    activation_peak_checkpointed_bytes: Optional[int] = None


ENGINE_TIMES = ("forward", "backward", "step", "loop", "module_forward", "module_backward")


@dataclass(frozen=True)
class EngineMeasurement:
    """A real DeepSpeed engine at one ZeRO stage (DeepSpeed's default knobs), timed call by call
    over a few optimizer steps after warm-up, on every rank of the launch at once."""

    stage: int
    world_size: int
    micro_batch_size: int
    forward: TimeStats
    backward: TimeStats
    step: TimeStats
    loop: TimeStats
    """Per optimizer step, outside the three calls: making the batch and the loop itself."""
    module_forward: TimeStats
    """The bare model's forward and backward at the same micro-batch size, timed in the same
    iterations as the engine (paired, so a slow moment of the machine hits both)."""
    module_backward: TimeStats
    peak_bytes: int
    """Peak memory over building the model, ``deepspeed.initialize`` and the first steps, above
    what the process held before (CPU: resident set; CUDA: allocated)."""
    reduce_bucket_size: Optional[int] = None
    """None: DeepSpeed's default; else the small bucket of the engine that gives the cost of one
    more reduction call."""


@dataclass(frozen=True)
class ModelShape:
    """The transformer shape the activation and FLOP formulas need (from the model's config)."""

    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int


@dataclass(frozen=True)
class WorkloadCalibration:
    """One workload measured on one machine; every number kept raw next to what is derived."""

    fingerprint: str
    name: str
    """Preset name, config.json path or script path."""
    mode: str
    """"model" or "script"."""
    seq_len: int
    precision: str
    profile_name: str
    """The hardware profile of the machine it was measured on."""
    device: str
    """"cpu" or "cuda" (and the device name)."""
    threads: int
    """torch threads used for the timings (cores of one rank on CPU)."""
    shape: ModelShape
    parameter_count: int
    param_tensor_numels: tuple[int, ...]
    largest_layer_params: int
    flops_per_sample_forward: float
    """Counted forward FLOPs of one sample (2 per multiply-add, matrix products only)."""
    flops_counter: str
    """"fvcore" (FlopCountAnalysis) or "torch" (torch.utils.flop_counter.FlopCounterMode)."""
    flops_by_micro_batch: tuple[tuple[int, float], ...]
    """(micro-batch size, counted forward FLOPs) as counted."""
    saved_bytes_per_sample: float
    """Slope of the saved bytes over the measured micro-batch sizes (least squares)."""
    saved_bytes_per_sample_per_layer: float
    """Mean over the transformer layers of their slope."""
    measurements: tuple[MicroBatchMeasurement, ...]
    engines: tuple[EngineMeasurement, ...]
    """Real engines per stage (empty when measured in-process)."""
    ranks: int
    """Processes that measured side by side (the node's ranks in a launch; 1 in-process)."""
    base_rss_bytes: int
    """CPU: resident memory of a rank after importing torch and DeepSpeed and joining the process
    group (what the hardware profile's fixed overhead measures); 0 in-process or on CUDA."""
    program_overhead_bytes: int
    """CPU: what importing the model's library, building the model and its first forward and
    backward (kernel caches, thread pools, allocator pools) add to base_rss_bytes and keep, less
    the model's fp32 parameters and gradients; 0 in-process or on CUDA."""
    zero_runtime_bytes: int
    """CPU: what the first ZeRO-1/2 and ZeRO-3 engines add (the code ZeRO loads on first use),
    measured with a tiny model; 0 in-process or on CUDA."""
    date: str
    torch_version: str
    seconds: float
    """Wall time of the measurement."""
    notes: tuple[str, ...] = ()
    script_overhead: Optional[TimeStats] = None
    """Script mode: seconds per micro-step the script spent outside the engine's forward,
    backward and step calls (data loading, its own bookkeeping, a Trainer's callbacks), timed over
    steps of the measuring run; the same at every ZeRO stage. None in model mode."""
    script_overhead_micro_batch_size: Optional[int] = None
    """The micro-batch size those steps ran at."""
    checkpointing_skipped: bool = False
    """True when activation checkpointing was left out of the measurement (the search that asked
    for it never checkpoints); a search that does measures again. (A model without the switch has
    no checkpointed numbers either, but this stays False: measuring again would not add them.)"""
    bucket_engines_skipped: bool = False
    """True when the engines with small buckets were left out (no configuration of the search
    that asked for it issues another number of gradient reductions than DeepSpeed's default
    bucket); a search with one measures again."""
    hf_config: Optional[dict[str, Any]] = None
    """Script mode: the measured model's Hugging Face config (``config.to_dict()``) when it has one,
    which says how its layers are built (their kernels, attention, the modules ZeRO-3 hooks); None
    for a model without one and in model mode (the workload names its config)."""
    engines_skipped: bool = False
    """True when no engine was measured (the profile's learnt engine costs stood in for them); a
    search that wants them measures again."""
    micro_batch_sizes_asked: tuple[int, ...] = DEFAULT_MICRO_BATCH_SIZES
    """The sizes the measurement was asked for (``measurements`` holds those that fitted the
    memory and time limits); a search whose space reaches a larger one measures again."""
    from_cache: bool = field(default=False, compare=False)
    """True when this object was read from the cache rather than measured now (not saved)."""

    # ------------------------------------------------------------------ using it
    def matches(self, profile_name: str, precision: str) -> bool:
        """True when the measured times apply: same hardware profile and same precision."""
        return self.profile_name == profile_name and self.precision == precision

    def _sorted(self) -> list[MicroBatchMeasurement]:
        return sorted(self.measurements, key=lambda m: m.micro_batch_size)

    def script_stage_overheads(self) -> tuple[StageOverhead, ...]:
        """The script's own work per micro-step as the cost model's per-stage overhead rows
        ((stage, mbs, forward, backward, step, loop) with only the loop set), the same at every
        stage; () without a script measurement."""
        if self.script_overhead is None or not self.script_overhead_micro_batch_size:
            return ()
        loop = max(0.0, self.script_overhead.median_s)
        return tuple((stage, self.script_overhead_micro_batch_size, 0.0, 0.0, 0.0, loop) for stage in range(4))

    def measured_compute(self, stage_overheads: tuple[StageOverhead, ...] = (),
                         reduce_call_overheads: tuple[ReduceCallOverhead, ...] = ()) -> MeasuredCompute:
        """Median forward and backward seconds per measured micro-batch size (and checkpointed
        backward when measured), with the given per-stage engine overheads; without engines of its
        own the model says so (the profile's framework costs then stand in)."""
        rows = self._sorted()
        ckpt = None
        if rows and all(m.backward_checkpointed is not None for m in rows):
            ckpt = tuple((m.micro_batch_size, m.backward_checkpointed.median_s) for m in rows
                         if m.backward_checkpointed is not None)
        return MeasuredCompute(tuple((m.micro_batch_size, m.forward.median_s, m.backward.median_s) for m in rows),
                               checkpointed_backward=ckpt, stage_overheads=tuple(stage_overheads),
                               reduce_call_overheads=tuple(reduce_call_overheads), engines_measured=bool(self.engines),
                               threads=self.threads if self.device == "cpu" else None)

    def measured_memory(self, process_overheads: bool,
                        stage_residuals: tuple[StageResidual, ...] = ()) -> MeasuredMemory:
        """Activation peaks per micro-batch size; the program's and ZeRO runtime's memory when
        ``process_overheads`` (device memory is the process's memory: CPU); the given per-stage
        residuals of the engines."""
        peaks = tuple((m.micro_batch_size, m.activation_peak_bytes, m.activation_peak_checkpointed_bytes)
                      for m in self._sorted())
        return MeasuredMemory(peaks, process_overhead_bytes=self.program_overhead_bytes if process_overheads else 0,
                              zero_runtime_bytes=self.zero_runtime_bytes if process_overheads else 0,
                              stage_residuals=tuple(stage_residuals))

    def model_spec(self, with_measured_compute: bool = True, stage_overheads: tuple[StageOverhead, ...] = (),
                   process_overheads: bool = False, stage_residuals: tuple[StageResidual, ...] = (),
                   reduce_call_overheads: tuple[ReduceCallOverhead, ...] = ()) -> ModelSpec:
        """The cost model's view of this workload: measured counts, counted FLOPs, measured
        activation bytes per layer, and (when the times apply: same hardware and precision) the
        measured times, engine overheads and activation peaks."""
        s = self.shape
        per_layer = self.saved_bytes_per_sample_per_layer
        return ModelSpec(
            parameter_count=self.parameter_count, num_layers=s.num_layers, hidden_size=s.hidden_size,
            num_heads=s.num_heads, intermediate_size=s.intermediate_size, vocab_size=s.vocab_size,
            seq_len=self.seq_len, flops_per_sample_forward=self.flops_per_sample_forward,
            largest_layer_params=self.largest_layer_params,
            activation_bytes_per_sample_per_layer=per_layer if per_layer > 0 else None,
            param_tensor_numels=self.param_tensor_numels,
            measured_compute=(self.measured_compute(stage_overheads, reduce_call_overheads)
                              if with_measured_compute else None),
            measured_memory=self.measured_memory(process_overheads, stage_residuals) if with_measured_compute else None)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("from_cache")
        data["schema_version"] = SCHEMA_VERSION
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WorkloadCalibration":
        if data.get("schema_version") != SCHEMA_VERSION:
            raise WorkloadCalibrationError(
                f"The workload calibration has schema version {data.get('schema_version')!r}, "
                f"not {SCHEMA_VERSION}.")
        values = {k: v for k, v in data.items() if k != "schema_version"}
        try:
            values["shape"] = ModelShape(**values["shape"])
            values["param_tensor_numels"] = tuple(values["param_tensor_numels"])
            values["flops_by_micro_batch"] = tuple(tuple(p) for p in values["flops_by_micro_batch"])
            values["notes"] = tuple(values.get("notes", ()))
            values["micro_batch_sizes_asked"] = tuple(values.get("micro_batch_sizes_asked", DEFAULT_MICRO_BATCH_SIZES))
            values["measurements"] = tuple(_measurement(m) for m in values["measurements"])
            values["script_overhead"] = _stats(values.get("script_overhead"))
            values["engines"] = tuple(
                EngineMeasurement(stage=e["stage"], world_size=e["world_size"], micro_batch_size=e["micro_batch_size"],
                                  peak_bytes=e["peak_bytes"], reduce_bucket_size=e.get("reduce_bucket_size"),
                                  **{k: TimeStats(**e[k]) for k in ENGINE_TIMES})
                for e in values["engines"])
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise WorkloadCalibrationError(f"The workload calibration is incomplete ({exc}).") from None


def _stats(data: Optional[Mapping[str, Any]]) -> Optional[TimeStats]:
    return None if data is None else TimeStats(**data)


def _measurement(m: Mapping[str, Any]) -> MicroBatchMeasurement:
    return MicroBatchMeasurement(
        micro_batch_size=m["micro_batch_size"], forward=TimeStats(**m["forward"]), backward=TimeStats(**m["backward"]),
        saved_bytes=m["saved_bytes"],
        saved_bytes_by_layer=tuple((str(n), int(b)) for n, b in m["saved_bytes_by_layer"]),
        peak_bytes=m["peak_bytes"], activation_peak_bytes=m["activation_peak_bytes"],
        forward_checkpointed=_stats(m.get("forward_checkpointed")),
        backward_checkpointed=_stats(m.get("backward_checkpointed")),
        activation_peak_checkpointed_bytes=m.get("activation_peak_checkpointed_bytes"))


# ---------------------------------------------------------------------- fingerprints and cache
def fingerprint(identity: Mapping[str, Any], seq_len: int, precision: str, profile_name: str) -> str:
    """SHA-256 of what determines the measurement: the model (config, or script + args + mtime),
    sequence length, precision and hardware profile."""
    document = json.dumps({"identity": identity, "seq_len": seq_len, "precision": precision,
                           "profile": profile_name, "schema": SCHEMA_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


def model_identity(workload: Workload) -> dict[str, Any]:
    """Model mode: the Hugging Face config and task identify the model."""
    return {"mode": "model", "hf_config": workload.hf_config, "task": workload.task}


def script_identity(script: str, args: Sequence[str]) -> dict[str, Any]:
    """Script mode: the script's absolute path, its arguments and its modification time."""
    path = Path(script).resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise WorkloadError(f"The training script {script} does not exist.") from None
    return {"mode": "script", "script": str(path), "args": list(args), "mtime_ns": mtime}


def cache_path(cache_dir: Optional[os.PathLike[str] | str], key: str) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"workload-{key[:24]}.json"


def read_cached(path: Path) -> Optional[WorkloadCalibration]:
    """The calibration saved at ``path``, or None when there is none or it cannot be used."""
    try:
        data = json.loads(path.read_text())
        return dataclasses.replace(WorkloadCalibration.from_dict(data), from_cache=True)
    except (OSError, ValueError, SimtuneError):
        return None


@dataclass(frozen=True)
class Request:
    """What a measuring rank measures (JSON-able: the launch reads it from a file)."""

    model: str
    seq_len: int
    precision: str
    threads: int
    micro_batch_sizes: tuple[int, ...]
    repeats: int
    memory_limit_bytes: int
    """Activations of the largest micro-batch must stay under half of this."""
    profile_name: str
    fingerprint: str
    checkpointing: bool = True
    """Also measure with activation checkpointing (when the model can switch it); a search whose
    space never checkpoints leaves it out (a quarter to a half of the model's measurement)."""
    bucket_engines: bool = True
    """Also measure the engines with small buckets at stages 1-3 (the cost per reduction call)."""
    engines: bool = True
    """Measure real engines at every stage (what DeepSpeed adds to this model); a search on a
    profile that already knows the engine's costs per unit (:mod:`simtune.prediction.engine_costs`)
    leaves them out (two fifths of the measurement of a small model)."""


@dataclass(frozen=True)
class MeasureScope:
    """The optional parts of a workload measurement a search needs: activation checkpointing
    (when it is a choice) and the engines with small buckets (when a configuration issues another
    number of gradient reductions than DeepSpeed's default bucket: the cost per reduction call).
    Leaving them out saves a quarter of the model's measurement and three of seven engines."""

    checkpointing: bool = True
    bucket_engines: bool = True
    engines: bool = True
    """False: no engine at all (the profile's learnt engine costs stand in for them)."""
    largest_micro_batch_size: int = DEFAULT_MICRO_BATCH_SIZES[-1]
    """The largest micro-batch size the search may run: the model is measured up to it (see
    :func:`larger_micro_batch_sizes`)."""

    @property
    def larger_micro_batch_sizes(self) -> tuple[int, ...]:
        return larger_micro_batch_sizes(self.largest_micro_batch_size)

    def missing_from(self, calibration: WorkloadCalibration) -> list[str]:
        """What this scope needs that ``calibration`` left out."""
        missing = []
        larger = self.larger_micro_batch_sizes
        if larger and larger[-1] > max(calibration.micro_batch_sizes_asked):
            missing.append(f"micro-batch sizes up to {larger[-1]}")
        if self.checkpointing and calibration.checkpointing_skipped:
            missing.append("activation checkpointing")
        if self.engines and calibration.engines_skipped:
            missing.append("the engines")
        elif self.engines and self.bucket_engines and calibration.bucket_engines_skipped:
            missing.append("the engines with small buckets")
        return missing


MEASURED_MICRO_BATCH_CAP = 32
"""The largest micro-batch size a workload measurement asks for, whatever the space reaches."""


def larger_micro_batch_sizes(largest: int) -> tuple[int, ...]:
    """The sizes a workload is measured at beyond :data:`DEFAULT_MICRO_BATCH_SIZES` for a search
    that runs micro-batches up to ``largest``: the powers of two after the default's largest, up to
    the first that reaches ``largest`` (at most :data:`MEASURED_MICRO_BATCH_CAP`); none when the
    defaults reach it. The model is interpolated between measured sizes and extrapolated beyond
    the largest, and a CPU step is not linear in the micro-batch size where it is not measured:
    on the 2-core VM gpt2-tiny's backward (64 tokens, one thread) costs 1.40-1.52 ms a sample at 8
    and 1.66-1.77 at 16, where glibc starts to return freed memory to the kernel after each step
    and the next step faults it in again (2,400-6,200 minor faults a step at 16, none at 8:
    docs/estimate.md)."""
    sizes: list[int] = []
    size, target = DEFAULT_MICRO_BATCH_SIZES[-1], min(largest, MEASURED_MICRO_BATCH_CAP)
    while size < target:
        size *= 2
        sizes.append(size)
    return tuple(sizes)


def measurement_request(workload: Workload, precision: str, *, threads: int, micro_batch_sizes: Sequence[int],
                        repeats: int, scope: Optional[MeasureScope] = None, memory_limit_bytes: int = 0,
                        profile_name: str = "", fingerprint: str = "") -> Request:
    """The :class:`Request` that measures ``workload`` (the limit, profile and fingerprint are
    left empty when a calibration in the same launch sets them)."""
    scope = scope or MeasureScope()
    sizes = tuple(sorted(set(micro_batch_sizes) | set(scope.larger_micro_batch_sizes)))
    return Request(model=workload.name, seq_len=workload.seq_len, precision=precision, threads=threads,
                   micro_batch_sizes=sizes, repeats=repeats, memory_limit_bytes=memory_limit_bytes,
                   profile_name=profile_name, fingerprint=fingerprint, checkpointing=scope.checkpointing,
                   bucket_engines=scope.bucket_engines and scope.engines, engines=scope.engines)


def cached_measurement(key: str, cache_dir: Optional[os.PathLike[str] | str], refresh: bool, what: str,
                       log: Optional[Log], scope: Optional[MeasureScope] = None
                       ) -> tuple[Path, Optional[WorkloadCalibration]]:
    """Where the measurement of fingerprint ``key`` is cached, and the cached one unless
    ``refresh`` or it left out a part ``scope`` needs (saying so through ``log``: "workload
    calibration of ``what`` read from ...")."""
    path = cache_path(cache_dir, key)
    cached = None if refresh else read_cached(path)
    if cached is None or cached.fingerprint != key:
        return path, None
    missing = scope.missing_from(cached) if scope is not None else []
    if missing:
        if log:
            log(f"the cached workload calibration of {what} has no numbers for {' and '.join(missing)}; "
                f"measuring again with them.")
        return path, None
    if log:
        log(f"workload calibration of {what} read from the cache {path}; not measured again.")
    return path, cached


def save(calibration: WorkloadCalibration, path: Path) -> Path:
    """Write atomically (a search running beside another never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, json.dumps(calibration.to_dict(), indent=1) + "\n")


def say(message: str) -> None:
    """The default :data:`Log`: a ``simtune:`` line on stderr."""
    print(f"simtune: {message}", file=sys.stderr, flush=True)


def rank_threads(profile: HardwareProfile) -> int:
    """Threads one rank gets: cores / ranks per node on a CPU profile, else torch's default."""
    return threads_per_rank(profile.device.kind, profile.device.count_per_node)


def threads_per_rank(device_kind: str, ranks_per_node: int) -> int:
    """cores / ranks per node on CPU (the training ranks share the cores), else all cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device_kind == "cpu":
        return max(1, cores // max(1, ranks_per_node))
    return cores


__all__ = [
    "DEFAULT_MICRO_BATCH_SIZES", "ENGINE_TIMES", "LOG_PREFIX", "EngineMeasurement", "Log", "MeasureScope",
    "MicroBatchMeasurement", "ModelShape", "Request", "TimeStats", "WorkloadCalibration", "WorkloadCalibrationError",
    "cache_path", "cached_measurement", "default_cache_dir", "fingerprint", "measurement_request", "model_identity",
    "rank_threads", "read_cached", "save", "say", "script_identity", "threads_per_rank",
]
