"""Capacity planning: queries over a tuning space, every configuration estimated by the Predictor.

Pure and fast (no torch, no I/O beyond loading presets). The configurations tried are those of a
:class:`PlanningGrid`: the knob values a user would list in a DeepSpeed config for the autotuner.
:meth:`PlanningGrid.space` writes that config for one ZeRO stage and reads it as a
:class:`~simtune.space.TuningSpace`; its ``variants`` are the :class:`~simtune.space.Trial` s
tried. A :class:`Planner` is the grid with a :class:`~simtune.prediction.predictor.Predictor` (one
model on ``gpus`` GPUs of a profile, nodes = ceil(gpus / GPUs per node), one data-parallel rank
per GPU); its queries:

- :meth:`Planner.best_plan`: the fastest configuration (highest predicted samples/s);
- :meth:`Planner.largest_micro_batch`: the largest micro-batch size per GPU that fits at a stage;
- :meth:`Planner.throughput_by_micro_batch`: the best predicted throughput at each micro-batch size;
- :func:`family_ladder` and :func:`largest_fitting_model`: the largest model of a family that
  fits, scaling depth and width along the family's published shapes and beyond them.

A configuration *fits* when the model's peak memory per GPU, the profile's fixed overhead
included, is at most the profile's usable memory plus that overhead (at most the device memory),
and offloaded states fit in host memory: ``Estimate.feasible``. Beyond one node the
data-parallel group uses the profile's inter-node collectives (:func:`~simtune.prediction.predictor.layout_hardware`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Optional, Sequence, Union

from simtune.errors import InputError, WorkloadError
from simtune.hardware.profile import HardwareProfile
from simtune.knobs import BUCKET_SIZES, deepspeed_defaults, knob
from simtune.model import Estimate, ModelSpec, TrainConfig
from simtune.model.adapters import model_spec
from simtune.naming import experiment_name
from simtune.prediction.largest_fit import MAX_MICRO_BATCH_SIZE, largest_that_fits
from simtune.prediction.predictor import Predictor, default_precision
from simtune.space import Trial, TuningSpace
from simtune.workloads.analysis import parameter_count
from simtune.workloads.presets import Workload, list_presets, load_workload

OFFLOAD_DEVICES: dict[str, tuple[str, str]] = {
    "none": ("none", "none"),
    "optimizer": ("cpu", "none"),
    "optimizer+parameters": ("cpu", "cpu"),
}
"""The planner's offload modes: what goes to host memory (nothing, the optimizer states, or the
optimizer states and the parameters) as the trial's (offload_optimizer, offload_param) devices.
Parameters without the optimizer are not tried."""
OFFLOAD_MODES = tuple(OFFLOAD_DEVICES)


def offload_mode(trial: Trial) -> Optional[str]:
    """The planner's name of the trial's offload; None for one it does not try."""
    devices = (trial.offload_optimizer, trial.offload_param)
    return next((mode for mode, d in OFFLOAD_DEVICES.items() if d == devices), None)


def offload_allowed(stage: int, mode: str) -> bool:
    """Optimizer offload needs stage 1 or more, parameter offload stage 3 (as DeepSpeed)."""
    optimizer, param = OFFLOAD_DEVICES[mode]
    return (optimizer == "none" or stage >= 1) and (param == "none" or stage == 3)


@dataclass(frozen=True)
class PlanningGrid:
    """The knob values the planner tries at every stage and micro-batch size.

    The bucket sizes are DeepSpeed's autotuner's (5e7, 5e8, 1e9 elements); ``stage3_memory``
    pairs (max live parameters, max reuse distance): DeepSpeed's default (1e9, 1e9) and a
    low-memory setting that releases gathered parameters sooner. The tuning space lists
    ``stage3_max_live_parameters`` only (a user cannot list the reuse distance), so each trial's
    reuse distance is the one paired with its live parameters: a cross product would try
    (1e8, 1e9) and (1e9, 1e8) as well, a live list alone would lose the low-memory setting."""

    reduce_bucket_sizes: tuple[int, ...] = BUCKET_SIZES
    overlap_comm: tuple[bool, ...] = (False, True)
    stage3_memory: tuple[tuple[int, int], ...] = ((1_000_000_000, 1_000_000_000), (100_000_000, 100_000_000))
    offload_modes: tuple[str, ...] = OFFLOAD_MODES
    activation_checkpointing: tuple[bool, ...] = (False, True)
    max_micro_batch_size: int = MAX_MICRO_BATCH_SIZE

    def restricted(self, *, offload: Optional[str] = None, checkpointing: Optional[bool] = None) -> "PlanningGrid":
        """The same grid with offload and/or activation checkpointing fixed."""
        grid = self
        if offload is not None:
            grid = replace(grid, offload_modes=(offload,))
        if checkpointing is not None:
            grid = replace(grid, activation_checkpointing=(checkpointing,))
        return grid

    def ds_config(self, stage: int) -> dict[str, Any]:
        """The DeepSpeed config, lists included, that tunes this grid at one stage: the grid's
        lists for the knobs the stage reads, DeepSpeed's default for every other knob its
        autotuner would tune, the offload devices of the grid's modes, activation checkpointing
        tuned, micro-batch sizes up to ``max_micro_batch_size``."""
        lists: dict[str, list[Any]] = {
            "reduce_bucket_size": list(self.reduce_bucket_sizes), "overlap_comm": list(self.overlap_comm),
            "stage3_max_live_parameters": [live for live, _ in self.stage3_memory]}
        zero: dict[str, Any] = {key: values for key, values in lists.items() if stage in knob(key).read_at}
        zero.update({key: value for key, value in deepspeed_defaults(stage).items() if key not in zero})
        zero["stage"] = stage
        modes = [OFFLOAD_DEVICES[mode] for mode in self.offload_modes if offload_allowed(stage, mode)]
        for i, key in enumerate(("offload_optimizer", "offload_param")):
            devices = list(dict.fromkeys(d[i] for d in modes))
            if devices and devices != ["none"]:
                zero[key] = {"device": devices}
        return {"zero_optimization": zero,
                "autotuning": {"fast": False, "tune_activation_checkpointing": True,
                               "max_train_micro_batch_size_per_gpu": self.max_micro_batch_size}}

    def space(self, stage: int, gpus: int) -> TuningSpace:
        """The tuning space of :meth:`ds_config` on ``gpus`` processes."""
        return _space(self, stage, gpus)

    def trials(self, space: TuningSpace, stage: int, micro_batch_size: int,
               gradient_accumulation_steps: int = 1) -> tuple[Trial, ...]:
        """The space's variants at one stage, mbs and gas that the grid tries (its offload modes
        and checkpointing choices), the stage-3 reuse distance paired with the live parameters."""
        reuse = dict(self.stage3_memory)
        trials = []
        for trial in space.variants(stage, micro_batch_size, gradient_accumulation_steps):
            mode = offload_mode(trial)
            if mode not in self.offload_modes or trial.activation_checkpointing not in self.activation_checkpointing:
                continue
            if stage == 3:
                live = space.knob_values(trial)["stage3_max_live_parameters"]
                trial = trial.replace(zero_knobs={**trial.knobs, "stage3_max_reuse_distance": reuse[live]})
            trials.append(trial)
        return tuple(trials)


@functools.lru_cache(maxsize=256)
def _space(grid: PlanningGrid, stage: int, gpus: int) -> TuningSpace:
    return TuningSpace.from_config(grid.ds_config(stage), world_size=gpus)


DEFAULT_GRID = PlanningGrid()
PLAIN_GRID = DEFAULT_GRID.restricted(offload="none", checkpointing=False)
"""DeepSpeed's own space: no offload, no activation checkpointing."""


@dataclass(frozen=True)
class Plan:
    """One trial and its estimate on ``gpus`` GPUs; ``config`` is the cost model's configuration
    of the trial (every knob resolved)."""

    trial: Trial
    estimate: Estimate
    config: TrainConfig
    gpus: int

    @property
    def throughput_samples_per_s(self) -> float:
        return self.estimate.metrics.throughput_samples_per_s

    @property
    def name(self) -> str:
        """Its experiment name, knobs at DeepSpeed's defaults left out."""
        return experiment_name(self.trial, deepspeed_defaults(self.trial.stage, listable_only=False))


def check_precision(profile: HardwareProfile, precision: str) -> None:
    if precision not in profile.compute.curves:
        have = ", ".join(sorted(profile.compute.curves))
        raise InputError(f"Hardware profile {profile.name!r} has no {precision} compute ({have} only); "
                         f"choose --precision among these.")


def _ranking_key(trial: Trial, estimate: Estimate) -> tuple[float, int, int, bool, int]:
    """Fastest first; on a tie the lower stage, no offload, no checkpointing, less memory."""
    offloads = (trial.offload_optimizer != "none") + (trial.offload_param != "none")
    return (-estimate.metrics.throughput_samples_per_s, trial.stage, offloads, trial.activation_checkpointing,
            estimate.memory.total_bytes)


def micro_batch_candidates(largest: int) -> tuple[int, ...]:
    """Powers of two up to the largest size that fits, and that size."""
    if largest < 1:
        return ()
    values = {2 ** k for k in range(largest.bit_length()) if 2 ** k <= largest}
    values.add(largest)
    return tuple(sorted(values))


class Planner:
    """The grid's queries for one model on ``gpus`` GPUs of a profile in one precision.

    ``predictor`` fills what a trial leaves out with DeepSpeed's defaults; each stage's trials are
    estimated by the same predictor bound to that stage's space (:meth:`Predictor.for_space`)."""

    def __init__(self, predictor: Predictor, grid: PlanningGrid = DEFAULT_GRID) -> None:
        self.predictor = predictor
        self.grid = grid
        self.gpus = predictor.dp_degree * predictor.mp_degree
        self._stage_predictors: dict[int, Predictor] = {}
        self._largest: dict[int, int] = {}

    @classmethod
    def from_parts(cls, workload: Workload, profile: Union[HardwareProfile, str], gpus: int,
                   precision: Optional[str] = None, grid: PlanningGrid = DEFAULT_GRID,
                   autocast: bool = False, deepspeed_autocast: bool = False) -> "Planner":
        """``gpus`` GPUs of the profile (nodes = ceil(gpus / GPUs per node)) in ``precision``
        (default: :func:`~simtune.prediction.predictor.default_precision`), under torch autocast
        around an fp32 model with ``autocast`` (DeepSpeed's own with ``deepspeed_autocast``)."""
        if isinstance(profile, str):
            from simtune.hardware.registry import load_profile

            profile = load_profile(profile)
        precision = precision or default_precision(profile)
        return cls(Predictor.from_parts(None, workload, profile, world_size=gpus, precision=precision,
                                        autocast=autocast, deepspeed_autocast=deepspeed_autocast), grid)

    def restricted(self, *, offload: Optional[str] = None, checkpointing: Optional[bool] = None) -> "Planner":
        """The same model and hardware with offload and/or activation checkpointing fixed."""
        return Planner(self.predictor, self.grid.restricted(offload=offload, checkpointing=checkpointing))

    @property
    def precision(self) -> str:
        return self.predictor.precision

    def stage_predictor(self, stage: int) -> Predictor:
        """The predictor bound to the grid's space at ``stage``."""
        if stage not in self._stage_predictors:
            self._stage_predictors[stage] = self.predictor.for_space(self.grid.space(stage, self.gpus))
        return self._stage_predictors[stage]

    def trials(self, stage: int, micro_batch_size: int, gradient_accumulation_steps: int = 1) -> tuple[Trial, ...]:
        """Every configuration of the grid at one stage, mbs and gas."""
        return _trials(self.grid, stage, micro_batch_size, gradient_accumulation_steps)

    def for_model(self, model: ModelSpec) -> "Planner":
        """The same hardware, layout, precision and grid for another model (closed-form counts;
        a family ladder's members share one planner per GPU count this way)."""
        p = self.predictor
        return Planner(Predictor(model, p.hardware, dp_degree=p.dp_degree, mp_degree=p.mp_degree,
                                 precision=p.precision, profile=p.profile,
                                 checkpointing_policy=p.checkpointing_policy, autocast=p.autocast,
                                 deepspeed_autocast=p.deepspeed_autocast), self.grid)

    def plan(self, trial: Trial) -> Plan:
        """The trial's estimate."""
        predictor = self.stage_predictor(trial.stage)
        return Plan(trial, predictor.predict(trial), predictor.config(trial), self.gpus)

    def fits(self, trials: Iterable[Trial]) -> bool:
        """True when any of the trials fits (memory only, so it is cheap)."""
        return any(self.stage_predictor(t.stage).fits(t) for t in trials)

    def best_of(self, trials: Iterable[Trial]) -> Optional[Plan]:
        """The fastest trial that fits, or None."""
        best: Optional[tuple[tuple[float, int, int, bool, int], Trial]] = None
        for trial in trials:
            e = self.stage_predictor(trial.stage).predict(trial)
            if not e.feasible:
                continue
            key = _ranking_key(trial, e)
            if best is None or key < best[0]:
                best = (key, trial)
        return None if best is None else self.plan(best[1])

    def largest_micro_batch(self, stage: int) -> int:
        """The largest micro-batch size per GPU at which some trial of the stage fits, 0 when none
        does. Memory grows with the micro-batch size (activations and logits are linear in it),
        so fitting is monotone: :func:`~simtune.prediction.largest_fit.largest_that_fits` finds
        the boundary."""
        if stage not in self._largest:
            found = largest_that_fits(lambda mbs: self.fits(self.trials(stage, mbs)), 1, self.grid.max_micro_batch_size)
            self._largest[stage] = found or 0
        return self._largest[stage]

    def throughput_by_micro_batch(self, stage: int) -> tuple[Plan, ...]:
        """The fastest fitting trial of the stage at each candidate micro-batch size (gas 1)."""
        plans = (self.best_of(self.trials(stage, mbs)) for mbs in micro_batch_candidates(self.largest_micro_batch(stage)))
        return tuple(p for p in plans if p is not None)

    def best_plan(self, global_batch_size: Optional[int] = None, stages: Sequence[int] = (0, 1, 2, 3)) -> Optional[Plan]:
        """The fastest trial that fits, or None.

        Without ``global_batch_size`` gradient accumulation is 1 and the micro-batch size is free
        (the global batch is mbs * gpus, as DeepSpeed's autotuner chooses it without
        max_train_batch_size); with it, mbs * gas * gpus must equal it, so the per-GPU batch
        ``global_batch_size / gpus`` is split into micro-batches of every size that divides it."""
        gpus = self.gpus
        if global_batch_size is not None and global_batch_size % gpus:
            raise InputError(f"The global batch of {global_batch_size} samples cannot be split evenly over "
                             f"{gpus} GPUs; choose a multiple of {gpus}.")
        trials: list[Trial] = []
        for stage in stages:
            largest = self.largest_micro_batch(stage)
            if global_batch_size is None:
                trials += [t for mbs in micro_batch_candidates(largest) for t in self.trials(stage, mbs)]
                continue
            per_gpu = global_batch_size // gpus
            for mbs in range(1, min(per_gpu, largest) + 1):
                if per_gpu % mbs == 0:
                    trials += self.trials(stage, mbs, per_gpu // mbs)
        return self.best_of(trials)


@functools.lru_cache(maxsize=4096)
def _trials(grid: PlanningGrid, stage: int, micro_batch_size: int, gradient_accumulation_steps: int
            ) -> tuple[Trial, ...]:
    """The trials do not depend on the number of processes: one space of one process serves every
    GPU count (and the answer is cached, since every GPU count and profile asks again)."""
    return grid.trials(grid.space(stage, 1), stage, micro_batch_size, gradient_accumulation_steps)


# ------------------------------------------------------------------------------------------------
# model families
LADDER_GROWTH = 2.0 ** 0.5
"""Each extrapolated member has about this many times the parameters of the previous one."""
LADDER_MAX_PARAMETERS = 4e12
"""The ladder stops at the first member beyond this many parameters."""


@dataclass(frozen=True)
class FamilyMember:
    """One model of a family ladder."""

    workload: Workload = field(repr=False)
    label: str
    parameters: int
    extrapolated: bool
    """Scaled beyond the family's published shapes (not a shipped preset or the user's model)."""


def _set_sizes(workload: Workload, layers: int, hidden: int, heads: int, intermediate: int, name: str) -> Workload:
    """A copy of the workload with other sizes, its Hugging Face config updated to match."""
    config = dict(workload.hf_config)
    for keys, value in ((("num_hidden_layers", "n_layer", "n_layers", "num_layers"), layers),
                        (("hidden_size", "n_embd", "dim", "d_model"), hidden),
                        (("num_attention_heads", "n_head", "n_heads", "num_heads"), heads),
                        (("intermediate_size", "n_inner", "hidden_dim", "ffn_dim", "d_ff"), intermediate)):
        for key in keys:
            if config.get(key) is not None:
                config[key] = value
    if config.get("num_key_value_heads"):
        groups = max(1, workload.num_heads // int(config["num_key_value_heads"]))
        config["num_key_value_heads"] = max(1, heads // groups)
    return replace(workload, name=name, hf_config=config, num_layers=layers, hidden_size=hidden,
                   num_heads=heads, intermediate_size=intermediate, published_parameters=None)


def family_members(workload: Workload) -> tuple[Workload, ...]:
    """The shipped presets of the workload's family with a published size (same model type), at
    the workload's sequence length, and the workload itself; smallest first."""
    members = {_shape(workload): workload}
    for name in list_presets():
        try:
            other = load_workload(name, workload.seq_len)
        except WorkloadError:  # a preset with fewer positions than this sequence length
            continue
        if (other.family == workload.family and other.model_type == workload.model_type
                and other.published_parameters and other.vocab_size == workload.vocab_size):
            members.setdefault(_shape(other), other)
    return tuple(sorted(members.values(), key=parameter_count))


def _shape(w: Workload) -> tuple[int, int, int, int]:
    return (w.num_layers, w.hidden_size, w.num_heads, w.intermediate_size)


def family_ladder(workload: Workload, max_parameters: float = LADDER_MAX_PARAMETERS) -> tuple[FamilyMember, ...]:
    """The family's published shapes, then larger ones with the largest shape's aspect ratio.

    Beyond the largest published member (L layers, hidden h, head size d = h / heads, MLP width
    ratio I / h), member k scales depth and width by g^(k/3) each, g = LADDER_GROWTH, so the
    parameters (about 12 L h^2) grow by about g per member: L_k = round(L g^(k/3)),
    h_k = d * round(h g^(k/3) / d), heads_k = h_k / d, I_k = h_k * I / h. The embedding and
    sequence length stay those of the family."""
    published = family_members(workload)
    ladder = [FamilyMember(w, w.name, parameter_count(w), False) for w in published]
    top = published[-1]
    head_size = top.hidden_size // top.num_heads
    ratio = top.intermediate_size / top.hidden_size
    k = 0
    while ladder[-1].parameters <= max_parameters:
        k += 1
        scale = LADDER_GROWTH ** (k / 3)
        layers = max(1, round(top.num_layers * scale))
        heads = max(1, round(top.hidden_size * scale / head_size))
        hidden = heads * head_size
        if (layers, hidden) == _shape(ladder[-1].workload)[:2]:
            continue
        scaled = _set_sizes(top, layers, hidden, heads, round(hidden * ratio), name="")
        count = parameter_count(scaled)
        label = f"{top.family} {_short_count(count)} (L{layers} h{hidden})"
        ladder.append(FamilyMember(replace(scaled, name=label), label, count, True))
    return tuple(ladder)


def _short_count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


@dataclass(frozen=True)
class LargestModel:
    """The largest member of a ladder that fits one (stage, GPU count, offload) setting."""

    index: Optional[int]
    """Index into the ladder of the largest member that fits; None when even the first does not."""
    beyond_ladder: bool
    """The last member fits too: the real limit is larger than the ladder goes."""


def ladder_specs(ladder: Sequence[FamilyMember]) -> tuple[ModelSpec, ...]:
    """The cost model's view of each member (closed form)."""
    return tuple(model_spec(m.workload) for m in ladder)


def ladder_planners(specs: Sequence[ModelSpec], planner: Planner) -> tuple[Planner, ...]:
    """A planner per member of the ladder (:func:`ladder_specs`), smallest first, on the hardware
    and layout of ``planner``."""
    return tuple(planner.for_model(spec) for spec in specs)


def largest_fitting_model(planners: Sequence[Planner], stage: int, offload: str = "none") -> Optional[LargestModel]:
    """Walk up the ladder (a planner per member, smallest first: :func:`ladder_planners`) at
    micro-batch size 1 with every knob and checkpointing choice of the grid; the answer is the
    member before the first that does not fit. None when the offload mode does not apply to the
    stage."""
    if not offload_allowed(stage, offload):
        return None
    index: Optional[int] = None
    for i, planner in enumerate(planners):
        member = planner.restricted(offload=offload)
        if not member.fits(member.trials(stage, 1)):
            break
        index = i
    return LargestModel(index, index == len(planners) - 1)


__all__ = [
    "DEFAULT_GRID", "OFFLOAD_DEVICES", "OFFLOAD_MODES", "PLAIN_GRID", "FamilyMember", "LargestModel", "Plan",
    "Planner", "PlanningGrid", "check_precision", "family_ladder", "family_members", "ladder_planners",
    "ladder_specs", "largest_fitting_model", "micro_batch_candidates", "offload_allowed", "offload_mode",
]
