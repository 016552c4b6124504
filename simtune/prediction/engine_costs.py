"""What DeepSpeed's engine costs per call on one machine, read off one measured workload, so that
another workload on the same machine can be predicted without measuring its engines.

The workload calibration measures, per ZeRO stage, what real engines add beyond the cost model's
terms (``MeasuredCompute.stage_overheads``: per forward, backward and step call) and what one
more reduction bucket costs (``reduce_call_overheads``). Those are sums of per-unit costs times
counts of this workload: modules that hold parameters, parameter tensors, buckets. Dividing by
the counts gives costs per unit (:class:`~simtune.model.inputs.FrameworkCosts`) that another
workload multiplies by its own counts:

    engine_micro_step_s     = forward_0 + loop_0                    (stage 0's, every micro-step)
    engine_boundary_s       = backward_0                            (where the ranks meet)
    engine_step_s           = step_0
    gather_call_s           = (step_3 - step_0) / persistent tensors   (one allgather each after the step)
    gradient_hook_s         = (backward_2 - backward_0 - extra copies) / parameter tensors
    zero3_module_s          = (forward_3 - forward_0) / modules with parameters
    zero3_module_backward_s = (backward_3 - backward_0 - hooks - extra copies) / modules with parameters
    reduce_bucket_s         = the measured cost of one more reduction call (stage 2, else 1 or 3)

with the extra copies those of :func:`simtune.model.step_time.gradient_copy_s` at that stage over
stage 0's, and the dispatch costs per kernel taken from the hardware (the profile's own
measurement). The model's own Python in a forward pass is the intercept of the measured forward
less the operators' forward over the measured micro-batch sizes (least squares), per module that
holds parameters:

    forward_module_s        = intercept(measured forward - operators' forward) / modules with parameters

Each is at least 0. Stage 3's two passes are read apart: they run different hooks, and a backward
residual carries the noise of the backward's larger compute, which one cost per pass for both
would carry into the forward (docs/cost-model.md 3.3).

Costs per unit read off a 0.5M-parameter model miss what the engine does in proportion to the
model's size (ZeRO-1/2's flat fp32 partitions: gradient copies, norms, overflow checks, the
fp32-to-parameter copy), which on a 124M-parameter model is seconds per step on CPU. A second
workload of the same shape and many more parameters, its engines measured beside the first's,
gives those costs per parameter (:func:`param_pass_costs`); they are then taken off the first's
residuals before the per-unit costs are read, and replace the modelled gradient copies.
"""

from __future__ import annotations

import dataclasses

from simtune.errors import WorkloadError
from simtune.knobs import knob
from simtune.model.compute_time import pass_time
from simtune.model.inputs import FrameworkCosts, HardwareSpec, ModelSpec, TrainConfig, least_squares_line
from simtune.model.step_time import gradient_copy_s, param_pass_terms
from simtune.precision import autocast_parts


def labelled_config(stage: int, micro_batch_size: int, precision: str, dp_degree: int = 1,
                    fused_adam: bool = True) -> TrainConfig:
    """The TrainConfig of a precision label (``"bf16+autocast"``: :mod:`simtune.precision`);
    ``fused_adam``: whether the engine ran DeepSpeed's FusedAdam (``TrainConfig.fused_adam``)."""
    dtype, autocast = autocast_parts(precision)
    return TrainConfig(stage=stage, micro_batch_size=micro_batch_size, dp_degree=dp_degree, precision=dtype,
                       autocast=autocast, deepspeed_autocast=autocast, fused_adam=fused_adam)


def forward_intercept_s(model: ModelSpec, hardware: HardwareSpec, precision: str) -> float:
    """Least-squares intercept over the measured sizes of the measured forward less the operators'
    forward on ``hardware`` (0 with fewer than two sizes)."""
    mc = model.measured_compute
    if mc is None or len(mc.points) < 2:
        return 0.0
    closed = dataclasses.replace(model, measured_compute=None, measured_memory=None)
    residuals = [fwd - pass_time(closed, hardware, labelled_config(0, mbs, precision), backward=False).total_s
                 for mbs, fwd, _ in mc.points]
    intercept, _ = least_squares_line([float(mbs) for mbs, _, _ in mc.points], residuals)
    return intercept


def kept_whole(model: ModelSpec) -> tuple[int, int]:
    """(elements, tensors) of the tensors ZeRO-3 keeps whole on every rank at DeepSpeed's default
    threshold (the engines calibration measures run with it): never fetched, gathered once after
    each step."""
    return model.layout.persistent(int(knob("stage3_param_persistence_threshold").default))


def param_pass_costs(small: ModelSpec, large: ModelSpec, ranks: int) -> tuple[tuple[float, float, float], ...]:
    """Per ZeRO stage 0-3, (forward, backward, step) engine seconds per parameter, from two
    workloads with the same modules and parameter tensors but different sizes, their engines
    measured at the same micro-batch size on the same ``ranks`` data-parallel ranks (the engine
    residuals r of ``MeasuredCompute.stage_overheads``):

        k[stage][phase] = (r_large - r_small) / (P_large - P_small)      (at least 0)

    with stage 3's step per parameter of a rank's shard (times ``ranks``), and its forward per
    parameter fetched (P less the persistent tensors' elements: a forward fetches nothing else),
    as :class:`~simtune.model.inputs.FrameworkCosts` keeps them. What the engine does per module,
    hook, bucket and call cancels; what it does per byte (ZeRO-1/2's flat partitions, norms,
    overflow checks, copies, stage 3's fetched copies) remains."""
    lo_mc, hi_mc = small.measured_compute, large.measured_compute
    if lo_mc is None or hi_mc is None or not lo_mc.stage_overheads or not hi_mc.stage_overheads:
        raise WorkloadError("Both workloads need measured engines to read the costs per parameter from.")
    common = {row[:2] for row in lo_mc.stage_overheads} & {row[:2] for row in hi_mc.stage_overheads}
    sizes = [mbs for mbs in {mbs for _, mbs in common} if all((stage, mbs) in common for stage in range(4))]
    extra = large.parameter_count - small.parameter_count
    if not sizes or extra <= 0:
        raise WorkloadError("The two workloads' engines were not measured at every stage at one micro-batch size, "
                            "or the second is not the larger.")
    mbs = min(sizes)
    fetched = extra - (kept_whole(large)[0] - kept_whole(small)[0])
    rows = []
    for stage in range(4):
        lo, hi = lo_mc.overheads(stage, mbs), hi_mc.overheads(stage, mbs)
        over = (fetched if stage == 3 else extra, extra, extra)
        f, b, st = (max(0.0, (hi[i] - lo[i]) / over[i]) if over[i] > 0 else 0.0 for i in range(3))
        rows.append((f, b, st * ranks if stage == 3 else st))
    return tuple(rows)


def framework_costs_of(model: ModelSpec, hardware: HardwareSpec, precision: str,
                       param_pass_s: tuple[tuple[float, float, float], ...] = ()) -> FrameworkCosts:
    """Per-unit engine costs from ``model``'s measured engines (see the module docstring). With
    ``param_pass_s`` (:func:`param_pass_costs`) the engine's work in proportion to the model's
    size (``step_time.framework_costs``' terms at the hardware's ranks) is taken off each residual
    first and stands in for the modelled gradient copies; the costs returned carry it."""
    mc = model.measured_compute
    if mc is None or not mc.stage_overheads:
        raise WorkloadError("The workload has no measured engines to read the framework's costs from.")
    mbs = min(row[1] for row in mc.stage_overheads)
    params = float(model.parameter_count)
    kept_elements, kept_tensors = kept_whole(model)

    def overheads(stage: int) -> tuple[float, ...]:
        row = mc.overheads(stage, mbs)
        if not param_pass_s:
            return row
        per_param = param_pass_terms(param_pass_s[stage], params, stage, hardware.ranks, kept_elements)
        return tuple(v - x for v, x in zip(row[:3], per_param)) + row[3:]

    f0, b0, s0, l0 = overheads(0)
    f2, b2, _, _ = overheads(2)
    f3, b3, s3, _ = overheads(3)
    gather = max(0.0, (s3 - s0) / kept_tensors) if kept_tensors else 0.0

    def copies(stage: int) -> float:
        if param_pass_s:
            return 0.0
        return gradient_copy_s(model, hardware, labelled_config(stage, mbs, precision))

    tensors = len(model.layout.numels)
    hook = max(0.0, (b2 - b0 - (copies(2) - copies(0))) / tensors)
    module_forward = max(0.0, (f3 - f0) / model.hooked_modules)
    module_backward = max(0.0, (b3 - b0 - tensors * hook - (copies(3) - copies(0))) / model.hooked_modules)
    bucket = next((c for c in (mc.reduce_call_overhead(s, mbs) for s in (2, 1, 3)) if c > 0), 0.0)
    python = max(0.0, forward_intercept_s(model, hardware, precision) / model.hooked_modules)
    return dataclasses.replace(hardware.framework, zero3_module_s=module_forward,
                               zero3_module_backward_s=module_backward, reduce_bucket_s=bucket,
                               gradient_hook_s=hook, engine_step_s=max(0.0, s0),
                               engine_micro_step_s=max(0.0, f0 + l0), engine_boundary_s=max(0.0, b0),
                               forward_module_s=python,
                               gather_call_s=gather, param_pass_s=tuple(param_pass_s))


__all__ = ["framework_costs_of", "param_pass_costs"]
