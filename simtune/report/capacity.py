"""The capacity-planning report: what a model needs on hardware the user may not have.

:func:`capacity_study` computes every number (the data behind each table and plot) from the cost
model; :func:`capacity_sections` turns the study into report sections. Nothing is measured here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

from simtune.errors import InputError
from simtune.hardware.profile import HardwareProfile
from simtune.model import ModelSpec, TrainConfig
from simtune.model.adapters import model_spec
from simtune.prediction.planning import (DEFAULT_GRID, LADDER_GROWTH, OFFLOAD_MODES, FamilyMember, Plan, Planner, check_precision,
                                         family_ladder, ladder_planners, ladder_specs, offload_mode)
from simtune.prediction.predictor import default_precision
from simtune.report.data.best_config import BestConfig, StepTimeBars, best_configs, step_time_bars
from simtune.report.data.largest_model import LargestModels, largest_models
from simtune.report.data.memory import MemoryBreakdown, memory_breakdown
from simtune.report.data.micro_batch import MicroBatchStudy, micro_batch_study
from simtune.report.data.scaling import Scaling, scaling
from simtune.report.data.training_cost import TrainingCost, training_budget, training_cost
from simtune.report.document import BulletList, Figure, Paragraph, Section, Table, slug
from simtune.report.plots.largest_model import draw_largest_model
from simtune.report.plots.memory import draw_memory
from simtune.report.plots.micro_batch import draw_micro_batch
from simtune.report.plots.scaling import draw_scaling
from simtune.report.plots.step_time import draw_step_time
from simtune.report.plots.training_cost import draw_training_cost
from simtune.report.profiles import profile_section
from simtune.report.units import count, duration, gib, milliseconds, money, number, percent
from simtune.space import Trial
from simtune.workloads.analysis import parameter_count
from simtune.workloads.presets import Workload


@dataclass(frozen=True)
class CapacityRequest:
    workload: Workload
    profiles: tuple[HardwareProfile, ...]
    gpu_counts: tuple[int, ...]
    precision: Optional[str] = None
    """None: each profile's default (bf16 where it has it, else fp16)."""
    tokens: Optional[float] = None
    samples: Optional[float] = None
    price_usd_per_gpu_hour: Optional[float] = None
    global_batch_size: Optional[int] = None
    """None: gradient accumulation 1 and the micro-batch size free."""
    autocast: bool = False
    """Plan an fp32 model trained inside torch autocast (``TrainConfig.autocast``)."""
    deepspeed_autocast: bool = False
    """With ``autocast``: DeepSpeed's own (``TrainConfig.deepspeed_autocast``)."""

    def __post_init__(self) -> None:
        if not self.profiles:
            raise InputError("Name at least one hardware profile (--profile NAME).")
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise InputError(f"A hardware profile is named twice in {', '.join(names)}.")
        if not self.gpu_counts or any(n < 1 for n in self.gpu_counts):
            raise InputError(f"GPU counts must be positive integers, got {list(self.gpu_counts)}.")
        if self.tokens is not None and self.samples is not None:
            raise InputError("Give the training budget as tokens or as samples, not both.")
        for label, value in (("tokens", self.tokens), ("samples", self.samples),
                             ("price per GPU-hour", self.price_usd_per_gpu_hour),
                             ("global batch", self.global_batch_size)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise InputError(f"The {label} must be a positive number, got {value!r}.")
        if self.global_batch_size is not None:
            uneven = [n for n in self.gpu_counts if self.global_batch_size % n]
            if uneven:
                raise InputError(f"The global batch of {self.global_batch_size} samples cannot be split evenly over "
                                 f"{', '.join(map(str, uneven))} GPUs; choose a multiple of every GPU count.")
        if self.precision is not None:
            for profile in self.profiles:
                check_precision(profile, self.precision)
        if self.autocast:
            for profile in self.profiles:
                if (self.precision or default_precision(profile)) == "fp32":
                    raise InputError(f"Autocast needs a 16-bit precision, and {profile.name} would train in fp32: "
                                     f"pass --precision bf16 or fp16.")


@dataclass(frozen=True)
class CapacityStudy:
    request: CapacityRequest
    model: ModelSpec
    parameters: int
    precisions: Mapping[str, str]
    plans: Mapping[tuple[str, int], Optional[Plan]]
    best: tuple[BestConfig, ...]
    step_time: StepTimeBars
    memory: tuple[MemoryBreakdown, ...]
    micro_batch: tuple[MicroBatchStudy, ...]
    scaling: Scaling
    cost: TrainingCost
    ladder: tuple[FamilyMember, ...]
    largest: LargestModels

    @property
    def gpu_counts(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.request.gpu_counts)))

    @property
    def profile_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.request.profiles)


def capacity_study(request: CapacityRequest) -> CapacityStudy:
    workload = request.workload
    model = model_spec(workload)
    counts = tuple(sorted(set(request.gpu_counts)))
    profiles = request.profiles
    names = tuple(p.name for p in profiles)
    precisions = {p.name: request.precision or default_precision(p) for p in profiles}
    planners = {(p.name, n): Planner.from_parts(workload, p, n, precisions[p.name], autocast=request.autocast,
                                                deepspeed_autocast=request.deepspeed_autocast)
                for p in profiles for n in counts}
    plans = {key: planner.best_plan(request.global_batch_size) for key, planner in planners.items()}
    per_node = {p.name: p.device.count_per_node for p in profiles}
    peaks = {p.name: p.device.peak_flop_per_s.get(precisions[p.name], 0.0) for p in profiles}
    best = best_configs(plans, names, counts, per_node, peaks)
    parameters = parameter_count(workload)
    budget = training_budget(request.tokens, request.samples, workload.seq_len, parameters)
    ladder = family_ladder(workload)
    specs = ladder_specs(ladder)
    return CapacityStudy(
        request=request, model=model, parameters=parameters, precisions=precisions, plans=plans, best=best,
        step_time=step_time_bars(best),
        memory=tuple(memory_breakdown(p, [planners[(p.name, n)] for n in counts]) for p in profiles),
        micro_batch=tuple(micro_batch_study(p, [planners[(p.name, n)] for n in counts]) for p in profiles),
        scaling=scaling(plans, names, counts, per_node, request.global_batch_size is not None),
        cost=training_cost(plans, names, counts, budget, request.price_usd_per_gpu_hour),
        ladder=ladder,
        largest=largest_models(ladder, {key: ladder_planners(specs, planner) for key, planner in planners.items()}),
    )


# ------------------------------------------------------------------------------------------------
# wording
def knob_text(config: TrainConfig) -> str:
    if config.stage == 0:
        return "-"
    parts = [f"bucket {config.reduce_bucket_size:.0e}".replace("e+0", "e"),
             "overlap on" if config.overlap else "overlap off"]
    if config.stage == 3:
        parts.append(f"live/reuse {config.stage3_max_live_parameters:.0e}".replace("e+0", "e"))
    return ", ".join(parts)


def _offload_text(trial: Trial) -> str:
    mode = offload_mode(trial)
    return {"none": "none", "optimizer": "optimizer to CPU",
            "optimizer+parameters": "optimizer + parameters to CPU"}[mode]


def _nodes(gpus: int, per_node: int) -> int:
    return math.ceil(gpus / per_node)


def _autocast_text(request: CapacityRequest) -> str:
    if not request.autocast:
        return ""
    return " under DeepSpeed's torch autocast" if request.deepspeed_autocast else " under torch autocast"


def _precision_note(request: CapacityRequest) -> str:
    """What the precision keeps in which dtype, after the profiles' precisions."""
    if not request.autocast:
        return " (mixed precision with fp32 master weights and Adam states)."
    states = ("; DeepSpeed's fp32 master kept; linear layers communicated in 16-bit" if request.deepspeed_autocast
              else ", reduced in fp32")
    return (f"{_autocast_text(request)} around an fp32 model (fp32 parameters and gradients{states}; products in "
            "16-bit on copies cast each forward; norms and softmax in fp32).")


def _summary_section(study: CapacityStudy) -> Section:
    w = study.request.workload
    profiles = ", ".join(f"`{p.name}` ({p.kind}, {p.device.name}, {p.device.count_per_node} per node, "
                         f"{study.precisions[p.name]}{_autocast_text(study.request)})"
                         for p in study.request.profiles)
    intro = (f"Predicted by simtune's cost model for `{w.name}` ({w.family}, {count(study.parameters)} parameters: "
             f"{w.num_layers} layers, hidden size {w.hidden_size}, {w.num_heads} heads, {w.seq_len} tokens per "
             f"sample) on {profiles}, at {', '.join(str(n) for n in study.gpu_counts)} GPUs. Nothing in this report "
             f"was measured: every number is as good as the hardware profiles it comes from (see the last section).")
    batch = (f"The global batch is fixed at {study.request.global_batch_size} samples."
             if study.request.global_batch_size else
             "Gradient accumulation is 1 and each configuration uses the micro-batch size that is fastest, so the "
             "global batch is the micro-batch size times the GPU count.")
    items = []
    runs = {(r.profile, r.gpus): r for r in study.cost.runs}
    for best in study.best:
        if best.plan is None:
            items.append(f"`{best.profile}`, {best.gpus} GPUs: the model does not fit in any configuration tried.")
            continue
        c, run = best.plan.config, runs[(best.profile, best.gpus)]
        trial = best.plan.trial
        gas = c.gradient_accumulation_steps
        extras = "".join((f" x {gas} accumulation" if gas > 1 else "",
                          ", activation checkpointing" if c.activation_checkpointing else "",
                          f", offload: {_offload_text(trial)}" if offload_mode(trial) != "none" else ""))
        items.append(f"`{best.profile}`, {best.gpus} GPUs: ZeRO-{c.stage}, micro-batch {c.micro_batch_size}{extras}; "
                     f"{number(best.plan.throughput_samples_per_s)} samples/s, {duration(run.time_s)} to train "
                     f"{count(study.cost.budget.tokens)} tokens.")
    return Section("Summary", (Paragraph(intro), Paragraph(batch), BulletList(tuple(items))))


def _best_section(study: CapacityStudy) -> Section:
    config_rows, memory_rows, time_rows = [], [], []
    for best in study.best:
        plan = best.plan
        head = (best.profile, str(best.gpus), str(best.nodes))
        if plan is None:
            config_rows.append(head + ("does not fit",) + ("-",) * 7)
            memory_rows.append(head[:2] + ("does not fit",) + ("-",) * 6)
            time_rows.append(head[:2] + ("does not fit",) + ("-",) * 8)
            continue
        c, m, t = plan.config, plan.estimate.memory, plan.estimate.time
        config_rows.append(head + (f"ZeRO-{c.stage}", str(c.micro_batch_size), str(c.gradient_accumulation_steps),
                                   str(c.global_batch_size), knob_text(c), _offload_text(plan.trial),
                                   "on" if c.activation_checkpointing else "off", f"`{plan.name}`"))
        memory_rows.append(head[:2] + (
            gib(m.total_bytes), gib(m.limit_bytes), gib(m.model_states_bytes),
            gib(m.gradient_buckets_bytes + m.gathered_parameters_bytes + m.comm_scratch_bytes),
            gib(m.activations_bytes + m.logits_bytes), gib(m.step_transient_bytes),
            gib(m.host_bytes) if m.host_bytes else "-"))
        tokens_per_s = plan.throughput_samples_per_s * study.request.workload.seq_len
        time_rows.append(head[:2] + (
            milliseconds(t.step_s), milliseconds(t.forward_s + t.backward_s + t.recompute_s),
            milliseconds(t.exposed_comm_s), milliseconds(t.hidden_comm_s),
            milliseconds(t.optimizer_s + t.offload_transfer_s),
            number(plan.throughput_samples_per_s), number(tokens_per_s, 3),
            f"{plan.estimate.metrics.flops_per_gpu / 1e12:.3g}", percent(best.mfu)))
    blocks = (
        Paragraph("The fastest configuration the planner found at each GPU count (highest predicted samples/s among "
                  "every ZeRO stage, micro-batch size, bucket size, overlap setting, ZeRO-3 memory setting, offload "
                  "and activation checkpointing it tries; see Assumptions). The name is the experiment name a search "
                  "would give it: `simtune search` can verify it for real."),
        Table(("profile", "GPUs", "nodes", "stage", "micro-batch", "accumulation", "global batch", "knobs", "offload",
               "act. checkpointing", "experiment name"), tuple(config_rows),
              (False, True, True, False, True, True, True, False, False, False, False)),
        Paragraph("Memory per GPU of these configurations (the peak the model predicts, the profile's fixed "
                  "overhead included, and the limit it must stay under: usable memory plus fixed overhead; model "
                  "states are parameters, gradients, fp32 master weights and optimizer states; buffers "
                  "are gradient buckets, gathered ZeRO-3 parameters and communication scratch; the step transient "
                  "is the optimizer step's fp32 gradients, which share their slot with the activations):"),
        Table(("profile", "GPUs", "peak", "limit", "model states", "buffers", "activations + logits",
               "step transient", "host (offload)"), tuple(memory_rows), (False,) + (True,) * 8),
        Paragraph("Time per optimizer step (compute is forward, backward and recomputation; exposed communication is "
                  "what overlap does not hide; MFU is model FLOP/s per GPU over the profile's dense peak):"),
        Table(("profile", "GPUs", "step", "compute", "exposed comm.", "hidden comm.", "optimizer + offload",
               "samples/s", "tokens/s", "TFLOP/s per GPU", "MFU"), tuple(time_rows), (False,) + (True,) * 10),
    )
    if study.step_time.labels:
        blocks += (Figure("step-time", "Predicted time per sample of the best configuration, by term: the step's "
                          "terms divided by the samples one GPU processes per step (micro-batch x accumulation).",
                          study.step_time, draw_step_time),)
    return Section("Best configuration per profile and GPU count", blocks)


def _memory_section(study: CapacityStudy) -> Section:
    blocks: list = [Paragraph(
        "Memory per GPU of each ZeRO stage at DeepSpeed's default knobs, without offload or activation "
        "checkpointing, stacked by term, the profile's fixed overhead included; the solid red line is the limit "
        "the total must stay under, the profile's usable memory plus its fixed overhead: the device memory, "
        "unless a profile keeps memory back, when the device memory is dashed above it. A bar above the solid "
        "line does not fit. Stages 1, 2 and 3 partition the optimizer states, then the gradients, then the "
        "parameters over the GPUs, so their bars shrink as GPUs are added; activations do not.")]
    for data in study.memory:
        blocks.append(Figure(f"memory-{slug(data.profile)}",
                             f"{data.profile}: memory per GPU by term at micro-batch size "
                             f"{data.micro_batch_size} ({data.micro_batch_note}).", data, draw_memory))
    return Section("Memory per GPU by ZeRO stage", tuple(blocks))


def _micro_batch_section(study: CapacityStudy) -> Section:
    rows = []
    stages = study.micro_batch[0].stages if study.micro_batch else ()
    for data in study.micro_batch:
        for panel in data.panels:
            cells = []
            for s in stages:
                plain, ckpt = panel.largest(s, False), panel.largest(s, True)
                cells.append(f"{plain or '-'} ({ckpt or '-'})")
            rows.append((data.profile, str(panel.gpus), *cells))
    blocks: list = [
        Paragraph("The largest micro-batch size per GPU that fits at each stage, with gradient accumulation 1, the "
                  "best bucket and overlap settings and no offload; in brackets, with activation checkpointing. "
                  "'-' means nothing fits."),
        Table(("profile", "GPUs", *(f"ZeRO-{s}" for s in stages)), tuple(rows), (False,) + (True,) * (1 + len(stages))),
        Paragraph("Predicted throughput against the micro-batch size, at each stage's fastest knobs (solid: without "
                  "activation checkpointing, dashed: with it). Curves end at the largest size that fits. Larger "
                  "micro-batches amortise communication and the optimizer step over more samples; checkpointing "
                  "costs a third forward pass but lets the micro-batch grow."),
    ]
    for data in study.micro_batch:
        blocks.append(Figure(f"micro-batch-{slug(data.profile)}",
                             f"{data.profile}: predicted throughput by micro-batch size "
                             f"and ZeRO stage.", data, draw_micro_batch))
    return Section("Micro-batch size", tuple(blocks))


def _scaling_section(study: CapacityStudy) -> Section:
    rows = []
    for series in study.scaling.series:
        for n, t, e in zip(series.gpus, series.throughputs_samples_per_s, series.efficiencies):
            rows.append((series.profile, str(n), str(_nodes(n, series.per_node)),
                         number(t) if t else "does not fit", percent(e)))
    text = ("Throughput of the best configuration at each GPU count, and the scaling efficiency "
            "throughput(N) / (N/N0 x throughput(N0)) against the smallest count N0 where the model fits (1 there by "
            "definition). Beyond one node the gradient and parameter collectives use the profile's inter-node "
            "bandwidth, which is where efficiency usually drops. The dotted lines in the left plot are linear scaling.")
    return Section("Scaling with GPU count", (
        Paragraph(text),
        Table(("profile", "GPUs", "nodes", "samples/s", "efficiency"), tuple(rows), (False, True, True, True, True)),
        Figure("scaling", "Predicted throughput and scaling efficiency against GPU count.", study.scaling,
               draw_scaling)))


def _cost_section(study: CapacityStudy) -> Section:
    cost = study.cost
    priced = cost.price_usd_per_gpu_hour is not None
    rows = []
    for r in cost.runs:
        if r.time_s is None:
            rows.append((r.profile, str(r.gpus), "does not fit", "-", "-") + (("-",) if priced else ()))
            continue
        rows.append((r.profile, str(r.gpus), number(r.throughput_samples_per_s), duration(r.time_s),
                     number(r.gpu_hours, 3)) + ((money(r.cost_usd),) if priced else ()))
    price = (f" at ${cost.price_usd_per_gpu_hour:g} per GPU-hour" if priced
             else "; give --price USD_PER_GPU_HOUR for the cost")
    text = (f"Time and GPU-hours to train {cost.budget.how} ({count(cost.budget.samples)} samples) with the best "
            f"configuration{price}. time = samples / throughput, GPU-hours = time x GPUs; start-up, checkpointing, "
            f"evaluation and failures are not included.")
    headers = ("profile", "GPUs", "samples/s", "time", "GPU-hours") + (("cost",) if priced else ())
    return Section("Time and cost to train", (
        Paragraph(text), Table(headers, tuple(rows), (False,) + (True,) * (len(headers) - 1)),
        Figure("training-cost", "Time, GPU-hours" + (" and cost" if priced else "") + " to train the budget.",
               cost, draw_training_cost)))


def _largest_section(study: CapacityStudy) -> Section:
    data = study.largest
    ladder_rows = tuple((m.label, count(m.parameters), str(m.workload.num_layers), str(m.workload.hidden_size),
                         str(m.workload.num_heads), "extrapolated" if m.extrapolated else "published")
                        for m in study.ladder)
    columns = [(s, o) for s in range(4) for o in OFFLOAD_MODES
               if data.cell(study.profile_names[0], study.gpu_counts[0], s, o) is not None]
    short = {"none": "", "optimizer": " + opt. offload", "optimizer+parameters": " + opt. & param. offload"}
    rows = []
    for profile in study.profile_names:
        for n in study.gpu_counts:
            cells = []
            for s, o in columns:
                cell = data.cell(profile, n, s, o)
                if cell is None or cell.index is None:
                    cells.append("-")
                else:
                    prefix = ">= " if cell.beyond_ladder else ""
                    cells.append(f"{prefix}{count(data.parameters[cell.index])}")
            rows.append((profile, str(n), *cells))
    step = LADDER_GROWTH ** (1 / 3)
    text = (f"The largest model of the {data.family} family that fits, at micro-batch size 1 with the best knobs "
            f"and with or without activation checkpointing. The ladder holds the family's published shapes, then "
            f"larger ones with the largest published shape's aspect ratio (layers and hidden size each grow by "
            f"{100 * (step - 1):.0f}% per step, the head size stays, so the parameters grow about "
            f"{LADDER_GROWTH:.2g}x per step); the answer is the last model before the first that does not fit, so "
            f"the true limit lies between it and the next. Offload moves the optimizer states (and at ZeRO-3 the "
            f"parameters) to host memory, which the profile's host memory per node limits.")
    return Section(f"Largest {data.family} model that fits", (
        Paragraph(text),
        Table(("profile", "GPUs", *(f"ZeRO-{s}{short[o]}" for s, o in columns)), tuple(rows),
              (False,) + (True,) * (1 + len(columns))),
        Figure("largest-model", f"Largest {data.family} model that fits, by ZeRO stage and offload.", data,
               draw_largest_model),
        Paragraph("The ladder:"),
        Table(("model", "parameters", "layers", "hidden", "heads", "shape"), ladder_rows,
              (False, True, True, True, True, False)),
    ))


def assumptions(study: CapacityStudy) -> tuple[str, ...]:
    grid = DEFAULT_GRID
    buckets = ", ".join(f"{b:.0e}".replace("e+0", "e") for b in grid.reduce_bucket_sizes)
    memory_settings = ", ".join(f"{a:.0e}/{b:.0e}".replace("e+0", "e") for a, b in grid.stage3_memory)
    return (
        "Every number comes from simtune's cost model (docs/cost-model.md): ZeRO memory per term as DeepSpeed "
        "0.19.8 allocates it, and step time from the model's operators on the profile's matmul curve, memory "
        "bandwidth and dispatch cost, its collective fits, optimizer rate and framework costs.",
        "One data-parallel rank per GPU and no tensor or pipeline parallelism (mp = 1). Nodes = ceil(GPUs / GPUs per "
        "node); a group that spans nodes uses the profile's inter-node collective costs for all its traffic.",
        f"The planner tries ZeRO stages 0-3; reduce bucket sizes {buckets} elements (DeepSpeed's autotuner values); "
        f"overlap_comm on and off; at ZeRO-3 max live parameters / max reuse distance {memory_settings}; offload of "
        f"nothing, the optimizer (ZeRO 1-3) or the optimizer and the parameters (ZeRO-3) to CPU; activation "
        f"checkpointing off and on. Micro-batch sizes are powers of two and the largest that fits.",
        "A configuration fits when its predicted peak memory per GPU, which includes the profile's fixed overhead "
        "(CUDA context, communicator buffers, allocator slack), is at most the profile's usable memory plus that "
        "overhead (the device memory, unless the profile keeps memory back), and its offloaded states fit in the "
        "host memory of a node.",
        "The best configuration has the highest predicted throughput (samples/s); ties go to the lower stage, no "
        "offload, no checkpointing.",
        "Precision: " + ", ".join(f"{name} {p}" for name, p in study.precisions.items())
        + _precision_note(study.request),
        "Training time is samples / throughput with no start-up, checkpointing, evaluation or failure overhead.",
        "Spec profiles carry efficiency curves, bandwidths and framework costs read from published measurements, "
        "each cited in the profile (see each profile's assumptions below); measure your hardware with "
        "`simtune calibrate` for better numbers.",
    )


def capacity_sections(study: CapacityStudy) -> tuple[Section, ...]:
    return (
        _summary_section(study),
        _best_section(study),
        _memory_section(study),
        _micro_batch_section(study),
        _scaling_section(study),
        _cost_section(study),
        _largest_section(study),
        Section("Assumptions", (BulletList(assumptions(study)),)),
        Section("Hardware profiles", (Paragraph("Where every hardware number comes from."),)),
        *(profile_section(p) for p in study.request.profiles),
    )


def gpu_counts_of(text: str) -> tuple[int, ...]:
    """'8,16,64' -> (8, 16, 64)."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--gpus takes comma-separated whole numbers such as 8,16,64, not {text!r}.") from None
    if not counts or any(n < 1 for n in counts):
        raise InputError(f"--gpus takes positive GPU counts such as 8,16,64, not {text!r}.")
    return counts


__all__ = ["CapacityRequest", "CapacityStudy", "assumptions", "capacity_sections", "capacity_study",
           "gpu_counts_of", "knob_text"]
