"""Capacity planning: the configuration space enumerated against the cost model.

Pure and fast (no torch, no I/O beyond loading presets): every answer is the best of a small,
explicit grid of configurations, each estimated with :func:`simtune.model.estimate`.

- :func:`best_plan`: the fastest configuration (highest predicted samples/s) for a model on
  ``gpus`` GPUs of a hardware profile;
- :func:`largest_micro_batch`: the largest micro-batch size per GPU that fits at a stage;
- :func:`throughput_by_micro_batch`: the best predicted throughput at each micro-batch size;
- :func:`family_ladder` and :func:`largest_fitting_model`: the largest model of a family that
  fits, scaling depth and width along the family's published shapes and beyond them.

A configuration *fits* when the model's peak memory per GPU, the profile's fixed overhead
included, is at most the profile's usable memory plus that overhead (at most the device memory),
and offloaded states fit in host memory: ``Estimate.feasible``. Beyond one node
(``gpus`` > GPUs per node) the data-parallel group uses the profile's inter-node collectives
(:func:`hardware_for`). There is no tensor parallelism (mp = 1): one data-parallel rank per GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Optional, Sequence

from simtune.errors import InputError, WorkloadError
from simtune.hardware.profile import HardwareProfile
from simtune.model import Estimate, HardwareSpec, ModelSpec, TrainConfig, estimate
from simtune.model.adapters import hardware_spec, model_spec
from simtune.model.memory import estimate_memory
from simtune.naming import experiment_name
from simtune.knobs import deepspeed_defaults
from simtune.prediction.largest_fit import MAX_MICRO_BATCH_SIZE, largest_that_fits
from simtune.space import Trial
from simtune.workloads.analysis import parameter_count
from simtune.workloads.presets import Workload, list_presets, load_workload

OFFLOAD_MODES = ("none", "optimizer", "optimizer+parameters")
"""What goes to host memory: nothing, the optimizer states (stages 1-3), or the optimizer states
and the parameters (stage 3)."""

@dataclass(frozen=True)
class PlanningGrid:
    """The knob values the planner tries at every stage and micro-batch size.

    The bucket sizes are DeepSpeed's autotuner's (5e7, 5e8, 1e9 elements); ``stage3_memory``
    pairs (max live parameters, max reuse distance): DeepSpeed's default (1e9, 1e9) and a
    low-memory setting that releases gathered parameters sooner."""

    reduce_bucket_sizes: tuple[int, ...] = (50_000_000, 500_000_000, 1_000_000_000)
    overlap_comm: tuple[bool, ...] = (False, True)
    stage3_memory: tuple[tuple[int, int], ...] = ((1_000_000_000, 1_000_000_000), (100_000_000, 100_000_000))
    offload_modes: tuple[str, ...] = OFFLOAD_MODES
    activation_checkpointing: tuple[bool, ...] = (False, True)

    def restricted(self, *, offload: Optional[str] = None, checkpointing: Optional[bool] = None) -> "PlanningGrid":
        """The same grid with offload and/or activation checkpointing fixed."""
        grid = self
        if offload is not None:
            grid = replace(grid, offload_modes=(offload,))
        if checkpointing is not None:
            grid = replace(grid, activation_checkpointing=(checkpointing,))
        return grid


DEFAULT_GRID = PlanningGrid()
PLAIN_GRID = DEFAULT_GRID.restricted(offload="none", checkpointing=False)
"""DeepSpeed's own space: no offload, no activation checkpointing."""


@dataclass(frozen=True)
class Plan:
    """One configuration and its estimate on ``gpus`` GPUs."""

    config: TrainConfig
    estimate: Estimate
    gpus: int

    @property
    def throughput_samples_per_s(self) -> float:
        return self.estimate.metrics.throughput_samples_per_s

    @property
    def trial(self) -> Trial:
        """The configuration as a point of the tuning space (knobs that differ from DeepSpeed's
        defaults only)."""
        return trial_of(self.config)

    @property
    def name(self) -> str:
        """Its experiment name, as a search would call it."""
        return experiment_name(self.trial, deepspeed_defaults(self.config.stage))


# ------------------------------------------------------------------------------------------------
# hardware and precision
def hardware_for(profile: HardwareProfile, gpus: int) -> HardwareSpec:
    """The model's hardware for ``gpus`` GPUs of the profile's device: nodes = ceil(gpus / per
    node); a data-parallel group larger than a node uses the inter-node collectives."""
    if gpus < 1:
        raise InputError(f"The GPU count must be at least 1, got {gpus}.")
    spec = hardware_spec(profile)
    per_node = profile.device.count_per_node
    return replace(spec, ranks_per_node=min(gpus, per_node), nodes=math.ceil(gpus / per_node))


def default_precision(profile: HardwareProfile) -> str:
    """bf16 where the profile has a bf16 compute curve, else fp16, else fp32."""
    for precision in ("bf16", "fp16", "fp32"):
        if precision in profile.compute.curves:
            return precision
    raise InputError(f"Hardware profile {profile.name!r} has no compute curve.")


def check_precision(profile: HardwareProfile, precision: str) -> None:
    if precision not in profile.compute.curves:
        have = ", ".join(sorted(profile.compute.curves))
        raise InputError(f"Hardware profile {profile.name!r} has no {precision} compute ({have} only); "
                         f"choose --precision among these.")


# ------------------------------------------------------------------------------------------------
# configurations
def _variants(stage: int, grid: PlanningGrid) -> list[dict]:
    """TrainConfig fields of every knob/offload/checkpointing combination of one stage."""
    if stage == 0:
        knobs: list[dict] = [{}]
    else:
        knobs = [{"reduce_bucket_size": rbs, "overlap_comm": overlap}
                 for rbs in grid.reduce_bucket_sizes for overlap in grid.overlap_comm]
        if stage == 3:
            knobs = [{**k, "stage3_max_live_parameters": live, "stage3_max_reuse_distance": reuse}
                     for k in knobs for live, reuse in grid.stage3_memory]
    offloads = [mode for mode in grid.offload_modes if _offload_allowed(stage, mode)]
    return [{**k, **_offload_fields(mode), "activation_checkpointing": ckpt}
            for k in knobs for mode in offloads for ckpt in grid.activation_checkpointing]


def _offload_allowed(stage: int, mode: str) -> bool:
    return mode == "none" or (mode == "optimizer" and stage >= 1) or (mode == "optimizer+parameters" and stage == 3)


def _offload_fields(mode: str) -> dict:
    return {"offload_optimizer": mode != "none", "offload_param": mode == "optimizer+parameters"}


def offload_mode(config: TrainConfig) -> str:
    if config.offload_param:
        return "optimizer+parameters"
    return "optimizer" if config.offload_optimizer else "none"


def configurations(stage: int, micro_batch_size: int, gpus: int, precision: str,
                   grid: PlanningGrid = DEFAULT_GRID, gradient_accumulation_steps: int = 1) -> list[TrainConfig]:
    """Every configuration of the grid at one stage and micro-batch size."""
    return [TrainConfig(stage=stage, micro_batch_size=micro_batch_size,
                        gradient_accumulation_steps=gradient_accumulation_steps, dp_degree=gpus,
                        precision=precision, **fields)
            for fields in _variants(stage, grid)]


def trial_of(config: TrainConfig) -> Trial:
    """The configuration as a tuning-space point, naming only knobs that differ from DeepSpeed's
    defaults for the stage."""
    defaults = deepspeed_defaults(config.stage, listable_only=False)
    knobs = {}
    if config.stage > 0:
        values = {"reduce_bucket_size": config.reduce_bucket_size, "overlap_comm": config.overlap}
        if config.stage == 3:
            values.update(stage3_max_live_parameters=config.stage3_max_live_parameters,
                          stage3_max_reuse_distance=config.stage3_max_reuse_distance)
        knobs = {k: v for k, v in values.items() if defaults.get(k) != v}
    return Trial(stage=config.stage, micro_batch_size=config.micro_batch_size,
                 gradient_accumulation_steps=config.gradient_accumulation_steps, zero_knobs=knobs,
                 offload_optimizer="cpu" if config.offload_optimizer else "none",
                 offload_param="cpu" if config.offload_param else "none",
                 activation_checkpointing=config.activation_checkpointing)


def _ranking_key(plan: Plan) -> tuple:
    """Fastest first; on a tie the lower stage, no offload, no checkpointing, less memory."""
    c = plan.config
    return (-plan.throughput_samples_per_s, c.stage, c.offload_optimizer + c.offload_param,
            c.activation_checkpointing, plan.estimate.memory.total_bytes)


def best_of(model: ModelSpec, hardware: HardwareSpec, configs: Iterable[TrainConfig]) -> Optional[Plan]:
    """The fastest configuration that fits, or None."""
    best: Optional[Plan] = None
    for config in configs:
        e = estimate(model, hardware, config)
        if not e.feasible:
            continue
        plan = Plan(config, e, config.dp_degree)
        if best is None or _ranking_key(plan) < _ranking_key(best):
            best = plan
    return best


def fits(model: ModelSpec, hardware: HardwareSpec, configs: Iterable[TrainConfig]) -> bool:
    """True when any of the configurations fits (memory only, so it is cheap)."""
    return any(estimate_memory(model, hardware, c).feasible for c in configs)


# ------------------------------------------------------------------------------------------------
# micro-batch sizes
def largest_micro_batch(model: ModelSpec, hardware: HardwareSpec, stage: int, gpus: int, precision: str,
                        grid: PlanningGrid = PLAIN_GRID, limit: int = MAX_MICRO_BATCH_SIZE) -> int:
    """The largest micro-batch size per GPU at which some configuration of the stage fits, 0 when
    none does. Memory grows with the micro-batch size (activations and logits are linear in it),
    so fitting is monotone: :func:`~simtune.prediction.largest_fit.largest_that_fits` finds the boundary."""
    def ok(mbs: int) -> bool:
        return fits(model, hardware, configurations(stage, mbs, gpus, precision, grid))

    return largest_that_fits(ok, 1, limit) or 0


def micro_batch_candidates(largest: int) -> tuple[int, ...]:
    """Powers of two up to the largest size that fits, and that size."""
    if largest < 1:
        return ()
    values = {2 ** k for k in range(largest.bit_length()) if 2 ** k <= largest}
    values.add(largest)
    return tuple(sorted(values))


def throughput_by_micro_batch(model: ModelSpec, hardware: HardwareSpec, stage: int, gpus: int, precision: str,
                              grid: PlanningGrid = PLAIN_GRID) -> tuple[Plan, ...]:
    """The fastest fitting configuration of the stage at each candidate micro-batch size (gas 1)."""
    largest = largest_micro_batch(model, hardware, stage, gpus, precision, grid)
    plans = (best_of(model, hardware, configurations(stage, mbs, gpus, precision, grid))
             for mbs in micro_batch_candidates(largest))
    return tuple(p for p in plans if p is not None)


def best_plan(model: ModelSpec, hardware: HardwareSpec, gpus: int, precision: str,
              grid: PlanningGrid = DEFAULT_GRID, global_batch_size: Optional[int] = None,
              stages: Sequence[int] = (0, 1, 2, 3)) -> Optional[Plan]:
    """The fastest configuration that fits on ``gpus`` GPUs, or None.

    Without ``global_batch_size`` gradient accumulation is 1 and the micro-batch size is free (the
    global batch is mbs * gpus, as DeepSpeed's autotuner chooses it without max_train_batch_size);
    with it, mbs * gas * gpus must equal it, so the per-GPU batch ``global_batch_size / gpus`` is
    split into micro-batches of every size that divides it."""
    if global_batch_size is not None and global_batch_size % gpus:
        raise InputError(f"The global batch of {global_batch_size} samples cannot be split evenly over "
                         f"{gpus} GPUs; choose a multiple of {gpus}.")
    configs: list[TrainConfig] = []
    for stage in stages:
        largest = largest_micro_batch(model, hardware, stage, gpus, precision, grid)
        if global_batch_size is None:
            configs += [c for mbs in micro_batch_candidates(largest)
                        for c in configurations(stage, mbs, gpus, precision, grid)]
            continue
        per_gpu = global_batch_size // gpus
        for mbs in range(1, min(per_gpu, largest) + 1):
            if per_gpu % mbs == 0:
                configs += configurations(stage, mbs, gpus, precision, grid, per_gpu // mbs)
    return best_of(model, hardware, configs)


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


def largest_fitting_model(specs: Sequence[ModelSpec], hardware: HardwareSpec, stage: int, gpus: int,
                          precision: str, offload: str = "none",
                          grid: PlanningGrid = DEFAULT_GRID) -> Optional[LargestModel]:
    """Walk up the ladder (model specs, smallest first) at micro-batch size 1 with every knob and
    checkpointing choice of the grid; the answer is the member before the first that does not fit.
    None when the offload mode does not apply to the stage."""
    if not _offload_allowed(stage, offload):
        return None
    configs = configurations(stage, 1, gpus, precision, grid.restricted(offload=offload))
    index: Optional[int] = None
    for i, spec in enumerate(specs):
        if not fits(spec, hardware, configs):
            break
        index = i
    return LargestModel(index, index == len(specs) - 1)


def ladder_specs(ladder: Sequence[FamilyMember]) -> tuple[ModelSpec, ...]:
    return tuple(model_spec(m.workload) for m in ladder)


__all__ = [
    "DEFAULT_GRID", "OFFLOAD_MODES", "PLAIN_GRID", "FamilyMember", "LargestModel", "Plan", "PlanningGrid",
    "best_of", "best_plan", "check_precision", "configurations", "default_precision", "family_ladder",
    "family_members", "fits", "hardware_for", "ladder_specs", "largest_fitting_model", "largest_micro_batch",
    "micro_batch_candidates", "offload_mode", "throughput_by_micro_batch", "trial_of",
]
