"""Build the cost model's inputs from simtune's own objects: a workload, a hardware profile and a
trial of the tuning space. The only module of the model that reads other parts of simtune.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from simtune import knobs as knob_table
from simtune.errors import ProfileError
from simtune.hardware.profile import DTYPE_BYTES, FRAMEWORK_COSTS, CollectiveFit, HardwareProfile, MatmulMeasurement, bus_factor
from simtune.hardware.spec import ENGINE_COSTS
from simtune.model.inputs import (AlgorithmRate, Block, CollectiveCost, Collectives, ComputeCurves, EfficiencyCurve,
                                  FrameworkCosts, FusedAttentionRate, HardwareSpec, ModelSpec, TrainConfig, WeightCost,
                                  least_squares_line)
from simtune.nvme_settings import NvmeSwapSettings
from simtune.optimizers import (ADAMW, CALIBRATED_ALGORITHMS, HOST_KERNEL_FITS, OptimizerChoice, fit_algorithm,
                                fit_name, implementation_of)
from simtune.space import Trial
from simtune.workloads.analysis import (classification_pooled, construction_gathers, forward_flops, idle_elements,
                                        largest_layer_params, module_parameters, parameter_count,
                                        parameter_tensor_numels)
from simtune.workloads.presets import Workload

def block_of(workload: Workload) -> Block:
    """How the workload's layers are built, from its model type and Hugging Face config."""
    cfg, kind = workload.hf_config, workload.model_type

    def dropout(key: str) -> bool:  # 0.1 is the transformers config classes' default
        value = cfg.get(key, 0.1)
        return isinstance(value, (int, float)) and value > 0

    if kind in ("llama", "mistral", "qwen2", "qwen3"):
        heads = int(cfg.get("num_key_value_heads") or 0)
        return Block(norm="rms_norm", mlp="swiglu", fused_qkv=False, linear_bias=False,
                     hidden_dropout=False, rotary=True, learned_positions=False, kv_heads=heads,
                     head_norms=kind == "qwen3", softmax_fp32=True, **_head_of(workload))
    if kind == "gpt2":
        act = str(cfg.get("activation_function", "gelu_new"))
        return Block(mlp="gelu_python" if act == "gelu_new" else "gelu", hidden_dropout=dropout("resid_pdrop"),
                     **_head_of(workload))
    encoder = kind in ("bert", "distilbert", "deberta-v2", "roberta")
    return Block(mlp="gelu", fused_qkv=False, causal=not encoder, mlm_head=encoder and workload.task == "masked-lm",
                 hidden_dropout=dropout("hidden_dropout_prob" if "hidden_dropout_prob" in cfg else "dropout"),
                 **_head_of(workload))


def _head_of(workload: Workload) -> dict[str, Any]:
    """The :class:`Block` fields of the workload's head: an LM head, tied to the token embedding
    or not (a module holding a parameter registered earlier: :class:`~simtune.workloads.analysis.ModuleParams`),
    or a classifier that pools the first token or scores every position
    (:func:`simtune.workloads.analysis.classification_pooled`)."""
    if workload.task != "sequence-classification":
        return {"tied_head": any(m.shared for m in module_parameters(workload))}
    return {"head": "pooled" if classification_pooled(workload) else "scored", "num_labels": workload.num_labels,
            "tied_head": False}


def model_spec(workload: Workload, activation_bytes_per_sample_per_layer: Optional[float] = None) -> ModelSpec:
    """The model's numbers from the workload's closed-form analysis (forward FLOPs of one sample)."""
    return ModelSpec(
        parameter_count=parameter_count(workload), num_layers=workload.num_layers,
        hidden_size=workload.hidden_size, num_heads=workload.num_heads,
        intermediate_size=workload.intermediate_size, vocab_size=workload.vocab_size,
        seq_len=workload.seq_len, flops_per_sample_forward=float(forward_flops(workload).total(1)),
        largest_layer_params=largest_layer_params(workload),
        activation_bytes_per_sample_per_layer=activation_bytes_per_sample_per_layer,
        param_tensor_numels=parameter_tensor_numels(workload), **structure_of(workload))


def structure_of(workload: Workload) -> dict[str, Any]:
    """The ModelSpec fields that say how the workload's layers are built (its kernels, attention
    and the modules ZeRO-3 hooks) and which of its elements no sample trains, beyond its sizes
    and counts."""
    return dict(attention=workload.attention, attention_dropout=workload.attention_dropout > 0, loss=workload.loss,
                block=block_of(workload), idle_elements=idle_elements(workload),
                construction_gathers=construction_gathers(workload),
                parameter_modules=sum(m.repeats for m in module_parameters(workload) if m.tensors or m.shared))


def collective_cost(fit: CollectiveFit) -> CollectiveCost:
    """The model's cost of one fitted collective. With a tail point (a larger message timed beyond
    the fitted sizes, CPU) slower than the line there, bytes beyond the largest fitted size ``S0``
    run at ``f (S1 - S0) / (t1 - line(S0))``: the bus bandwidth from the line's end to the tail's
    fastest repeat ``t1`` at ``S1``."""
    cost = CollectiveCost(latency_s=fit.latency_s, bandwidth_bytes_per_s=fit.bandwidth_bytes_per_s)
    if not fit.tail_points or not fit.points:
        return cost
    factor = bus_factor(fit.op, fit.ranks)
    s0 = max(p.bytes for p in fit.points)
    tail = max(fit.tail_points, key=lambda p: p.bytes)
    beyond_s = tail.stats.min_s - cost.call_s(s0, factor)
    if tail.bytes <= s0 or beyond_s <= (tail.bytes - s0) * factor / fit.bandwidth_bytes_per_s:
        return cost  # no slower than the line: one regime
    return CollectiveCost(latency_s=fit.latency_s, bandwidth_bytes_per_s=fit.bandwidth_bytes_per_s,
                          beyond_bytes=float(s0), beyond_bandwidth_bytes_per_s=factor * (tail.bytes - s0) / beyond_s)


def _collectives(table: Mapping[str, CollectiveFit]) -> Optional[Collectives]:
    ops = ("allreduce", "allgather", "reduce_scatter")
    if not all(op in table for op in ops):
        return None
    return Collectives(*(collective_cost(table[op]) for op in ops))


def streaming_bandwidth(profile: HardwareProfile, dtype: str = "fp32") -> Optional[float]:
    """Bytes per second memory-bound kernels move over ``dtype`` elements: the profile's GELU
    forward+backward fit in that dtype (5 elements moved per element: read and write forward, read
    two and write one backward; measured by calibration, or a spec profile's stated rate), else
    for fp32 its memory bandwidth (an achievable figure for spec profiles, the measured copy
    otherwise) and for 16-bit dtypes None (as fp32)."""
    fit = profile.compute.elementwise_fit("gelu", dtype)
    if fit is None or fit.s_per_element <= 0:
        return profile.device.memory_bandwidth_bytes_per_s if dtype == "fp32" else None
    return 5 * DTYPE_BYTES[dtype] / fit.s_per_element


PLAIN_COPIES = ("d2d", "host_memcpy")
"""The calibration's copies within the device's own memory: CUDA's device-to-device, the CPU's
RAM-to-RAM (64 MiB at most, beyond the caches)."""


def plain_bandwidth(profile: HardwareProfile) -> Optional[float]:
    """Bytes per second (read plus written) of a memory-bound kernel without arithmetic (norms,
    casts, in-place scaling): twice the rate of the calibration's copy within the device's memory
    (:data:`PLAIN_COPIES`; a copy of N bytes reads N and writes N), from the slope over its sizes;
    None where the profile has none (spec profiles)."""
    for direction in PLAIN_COPIES:
        points = [p for p in profile.offload.points if p.direction == direction]
        if len(points) >= 2:
            _, slope = least_squares_line([float(p.bytes) for p in points], [p.stats.min_s for p in points])
            if slope > 0:
                return 2.0 / slope
    return None


def cached_plain_bandwidth(profile: HardwareProfile) -> Optional[float]:
    """:func:`plain_bandwidth` over data that stays in the cache: twice the rate of the
    calibration's copy inside one rank's share of it (``host_memcpy_cached``, its fastest repeat);
    None where the profile has none (accelerators, spec profiles, older calibrations)."""
    points = [p for p in profile.offload.points if p.direction == "host_memcpy_cached"]
    if not points or profile.device.cache_bytes <= 0:
        return None
    return max(2.0 * p.bytes / p.stats.min_s for p in points)


def dropout_cost(profile: HardwareProfile, streaming_bytes_per_s: float) -> float:
    """Seconds per dropout element beyond its bytes: the slope of the measured fp32 dropout
    forward (least squares over its sizes) less 2.5 elements of 4 bytes over the bandwidth;
    0 without a dropout fit (spec profiles: CUDA's generator is bandwidth-bound)."""
    fit = profile.compute.elementwise_fit("dropout", "fp32")
    if fit is None or len(fit.points) < 2:
        return 0.0
    _, slope = least_squares_line([float(p.elements) for p in fit.points], [p.fwd.min_s for p in fit.points])
    return max(0.0, slope - 2.5 * 4 / streaming_bytes_per_s)


def matmul_weight_cost(profile: HardwareProfile) -> Optional[WeightCost]:
    """Seconds per weight byte a linear layer costs beyond its FLOPs, from the profile's weight
    points (CPU): pairs of fp32 products of the same FLOPs, few tokens over a large weight and
    many over a small one, timed in turn; per pair, forward and backward each,

        (t_large - t_small) / (weight_bytes_large - weight_bytes_small)

    on the fastest repeats (a negative difference reads 0), at the large weight's size. None
    without pairs (spec profiles, CUDA, older calibrations)."""
    pairs: dict[float, list[MatmulMeasurement]] = {}
    for p in profile.compute.weight_points:
        if p.dtype == "fp32":
            pairs.setdefault(p.fwd_flop, []).append(p)
    rows = []
    for points in pairs.values():
        if len(points) < 2:
            continue
        ordered = sorted(points, key=lambda p: p.hidden * p.out_features)
        small, large = ordered[0], ordered[-1]
        extra = 4.0 * (large.hidden * large.out_features - small.hidden * small.out_features)
        if extra <= 0:
            continue
        rows.append((4.0 * large.hidden * large.out_features, max(0.0, large.fwd.min_s - small.fwd.min_s) / extra,
                     max(0.0, large.bwd.min_s - small.bwd.min_s) / extra))
    return WeightCost(tuple(sorted(rows))) if rows else None


FRESH_COPY_DIRECTION = "host_fresh"
"""A CPU profile's copy points into a newly allocated tensor (calibration's ``copy`` section)."""


def first_touch_cost(profile: HardwareProfile) -> Optional[float]:
    """Seconds per byte a freshly mapped tensor costs beyond a copy into one already mapped:
    (fresh copy - copy) / bytes at the largest size measured both ways (CPU); None without
    fresh copies (spec profiles, CUDA, older calibrations)."""
    if profile.device.kind != "cpu":
        return None
    points = profile.offload.points
    fresh = {p.bytes: p.stats.min_s for p in points if p.direction == FRESH_COPY_DIRECTION}
    reused = {p.bytes: p.stats.min_s for p in points if p.direction == "host_memcpy"}
    both = sorted(set(fresh) & set(reused))
    if not both:
        return None
    size = both[-1]
    return max(0.0, fresh[size] - reused[size]) / size


def threads_per_rank(profile: HardwareProfile) -> Optional[int]:
    """A CPU profile's threads per rank when measured (its recorded OMP_NUM_THREADS); None on
    accelerators or when not recorded."""
    threads = profile.provenance.assumptions.get("omp_num_threads", "")
    return int(threads) if profile.device.kind == "cpu" and threads.isdigit() and int(threads) > 0 else None


def spec_engine_costs_stand_in(profile: HardwareProfile) -> bool:
    """True for a GPU profile whose framework section holds no engine cost (calibrated without
    engines, none learnt by a search since): DeepSpeed's costs are not free there, so the spec
    profiles' published estimates (:data:`simtune.hardware.spec.ENGINE_COSTS`) stand in for them.
    CPU profiles keep what they have: those estimates describe DeepSpeed on CUDA hosts."""
    fw = profile.framework
    return (fw is not None and profile.device.kind != "cpu" and not fw.param_pass_s
            and not any(getattr(fw, key) for key in (*ENGINE_COSTS, "forward_module_s")))


def framework_costs(profile: HardwareProfile) -> FrameworkCosts:
    """The profile's framework section, with the spec's engine costs where
    :func:`spec_engine_costs_stand_in`."""
    fw = profile.framework
    if fw is None:
        return FrameworkCosts()
    costs = {key: getattr(fw, key) for key in FRAMEWORK_COSTS}
    if spec_engine_costs_stand_in(profile):
        costs.update(ENGINE_COSTS)
    return FrameworkCosts(**costs, param_pass_s=fw.param_pass_s)


HOST_TORCH_ADAMW_FITS = ("torch_adamw_foreach_host", "torch_adamw_for_loop", "torch_adamw_foreach")
"""The profile's fits of torch's AdamW on host tensors, in order: a GPU calibration's host fit; on
a CPU profile the device's own, for-loop first (torch's default for CPU tensors: foreach and fused
only where asked for)."""


def host_torch_adamw_fit(profile: HardwareProfile) -> Optional[str]:
    """The first of :data:`HOST_TORCH_ADAMW_FITS` the profile measured on the CPU; None without
    one (spec profiles)."""
    fits = profile.optimizer.fits
    return next((name for name in HOST_TORCH_ADAMW_FITS if name in fits and fits[name].device == "cpu"), None)


def host_torch_adamw_rate(profile: HardwareProfile) -> Optional[float]:
    """Seconds per parameter of torch's AdamW on host tensors (:func:`host_torch_adamw_fit`)."""
    name = host_torch_adamw_fit(profile)
    return None if name is None else profile.optimizer.fits[name].s_per_param


def host_optimizer_fit(profile: HardwareProfile, torch_adamw: bool, algorithm: str = "adamw") -> Optional[str]:
    """Which of the profile's fits an offloaded optimizer is stepped at, as
    :func:`simtune.model.optimizer_time.host_step_s_per_param` chooses: torch's AdamW on host
    tensors where DeepSpeed runs it and the profile measured it, else the algorithm's own DeepSpeed
    CPU kernel where the profile timed it (:func:`host_algorithm_rates`), else the CPU Adam fit
    (``offload.cpu_adam_impl``; a spec profile's rate is DeepSpeedCPUAdam's, derived)."""
    torch_fit = host_torch_adamw_fit(profile) if torch_adamw else None
    if torch_fit is not None:
        return torch_fit
    if not torch_adamw and any(rate.algorithm == algorithm for rate in host_algorithm_rates(profile)):
        return HOST_KERNEL_FITS[algorithm]
    impl = profile.offload.cpu_adam_impl
    return HOST_KERNEL_FITS["adamw"] if impl == "spec" else impl


def _measured_rates(profile: HardwareProfile, fits_by_algorithm: Mapping[str, str],
                    device: str) -> tuple[AlgorithmRate, ...]:
    """The algorithms whose named fit the profile measured on ``device``, with their zero-state
    costs; a fit whose slope is not positive (a disturbed calibration) is left out, and the bytes
    ratio stands in."""
    fits = profile.optimizer.fits
    return tuple(AlgorithmRate(algorithm, fits[name].s_per_param, fits[name].zero_state_s_per_param)
                 for algorithm, name in fits_by_algorithm.items()
                 if name in fits and fits[name].device == device and fits[name].s_per_param > 0)


def algorithm_rates(profile: HardwareProfile, adamw_fit: str) -> tuple[AlgorithmRate, ...]:
    """The algorithms besides AdamW the profile timed on the device in the implementation of
    ``adamw_fit`` (:func:`simtune.optimizers.fit_name`)."""
    kind = implementation_of(adamw_fit)
    if kind is None:
        return ()
    return _measured_rates(profile, {a: fit_name(a, kind) for a in CALIBRATED_ALGORITHMS}, profile.device.kind)


def host_algorithm_rates(profile: HardwareProfile) -> tuple[AlgorithmRate, ...]:
    """The algorithms besides AdamW whose DeepSpeed CPU kernel the profile timed on the host
    (:data:`simtune.optimizers.HOST_KERNEL_FITS`)."""
    return _measured_rates(profile, {a: fit for a, fit in HOST_KERNEL_FITS.items() if a != "adamw"}, "cpu")


def hardware_spec(profile: HardwareProfile, optimizer_impl: Optional[str] = None) -> HardwareSpec:
    """The model's hardware numbers from a profile. The device optimizer is ``optimizer_impl``
    when given, else the fastest AdamW fit measured on the device; the rates of the other
    algorithms the profile timed in that fit's implementation on the device come with it
    (``HardwareSpec.algorithm_rates``)."""
    curves = {dtype: EfficiencyCurve(tuple((p.work_flop, p.flop_per_s) for p in curve.points))
              for dtype, curve in profile.compute.curves.items()}
    if "fp32" not in curves:
        raise ProfileError(f"Hardware profile {profile.name!r} has no fp32 compute curve.")
    fits = profile.optimizer.fits
    if optimizer_impl is not None:
        if optimizer_impl not in fits:
            raise ProfileError(f"Hardware profile {profile.name!r} has no optimizer fit {optimizer_impl!r} "
                               f"(it has {', '.join(sorted(fits)) or 'none'}).")
        fit = fits[optimizer_impl]
        if fit_algorithm(optimizer_impl) != "adamw":
            raise ProfileError(f"Optimizer fit {optimizer_impl!r} timed {fit_algorithm(optimizer_impl) or 'another algorithm'}, "
                               "not AdamW: name an AdamW fit and the algorithm apart (simtune estimate --algorithm).")
    else:
        on_device = [f for f in fits.values() if f.device == profile.device.kind and fit_algorithm(f.impl) == "adamw"]
        if not on_device:
            raise ProfileError(f"Hardware profile {profile.name!r} has no optimizer fit on {profile.device.kind}.")
        fit = min(on_device, key=lambda f: f.s_per_param)
    collectives = profile.collectives
    device = profile.device
    pool = profile.compute.thread_pool
    streaming = streaming_bandwidth(profile)
    assert streaming is not None
    narrow = tuple((dtype, bw) for dtype in ("bf16", "fp16")
                   if dtype in profile.compute.curves and (bw := streaming_bandwidth(profile, dtype)) is not None)
    return HardwareSpec(
        device_memory_bytes=device.memory_bytes, usable_memory_bytes=device.usable_memory_bytes,
        fixed_overhead_bytes=device.fixed_overhead_bytes,
        compute=ComputeCurves(fp32=curves["fp32"], bf16=curves.get("bf16"), fp16=curves.get("fp16"),
                              attention=tuple((dtype, FusedAttentionRate(r.forward_flop_per_s, r.backward_flop_per_s))
                                              for dtype, r in sorted(profile.compute.attention.items()))),
        optimizer_s_per_param=fit.s_per_param, optimizer_impl=fit.impl,
        zero_state_s_per_param=fit.zero_state_s_per_param, algorithm_rates=algorithm_rates(profile, fit.impl),
        collectives=_collectives(collectives.intra_node) if collectives.applicable else None,
        h2d_bandwidth_bytes_per_s=profile.offload.h2d_bytes_per_s,
        d2h_bandwidth_bytes_per_s=profile.offload.d2h_bytes_per_s,
        h2d_pageable_bytes_per_s=profile.offload.h2d_pageable_bytes_per_s,
        d2h_pageable_bytes_per_s=profile.offload.d2h_pageable_bytes_per_s,
        host_copy_bytes_per_s=profile.offload.host_memcpy_bytes_per_s,
        cpu_adam_s_per_param=profile.offload.cpu_adam_s_per_param,
        host_torch_adamw_s_per_param=host_torch_adamw_rate(profile), host_algorithm_rates=host_algorithm_rates(profile),
        ranks_per_node=device.count_per_node, nodes=device.nodes,
        inter_node_collectives=_collectives(collectives.inter_node) if collectives.applicable else None,
        overlap_capable=device.kind == "cuda", host_memory_bytes=profile.offload.host_memory_bytes,
        nvme_read_bytes_per_s=profile.offload.nvme_read_bytes_per_s,
        nvme_write_bytes_per_s=profile.offload.nvme_write_bytes_per_s,
        collective_compute_share=(collectives.compute_share or 0.0) if collectives.applicable else 0.0,
        fused_attention_dropout=device.kind == "cuda", dropout_mask_bytes=1 if device.kind == "cuda" else None,
        streaming_bytes_per_s=streaming, streaming_by_precision=narrow, plain_bytes_per_s=plain_bandwidth(profile),
        cache_bytes=device.cache_bytes, cached_plain_bytes_per_s=cached_plain_bandwidth(profile),
        framework=framework_costs(profile), first_touch_s_per_byte=first_touch_cost(profile),
        threads_per_rank=threads_per_rank(profile), dropout_s_per_element=dropout_cost(profile, streaming),
        pool_wake_s=None if pool is None else pool.wake_s,
        pool_product_wake_s=None if pool is None else pool.product_wake_s,
        matmul_weights=matmul_weight_cost(profile),
        reduce_scatter_staging=device.kind == "cpu", resident_on_touch=device.kind == "cpu")


def train_config(trial: Trial, *, dp_degree: int, precision: str, mp_degree: int = 1,
                 knobs: Optional[Mapping[str, Any]] = None, checkpointing_policy: str = "full",
                 autocast: bool = False, deepspeed_autocast: bool = False, fused_adam: bool = True,
                 communication_precision: Optional[str] = None, gradient_clipping: bool = False,
                 offload_pinned: tuple[bool, bool] = (True, True), optimizer: OptimizerChoice = ADAMW,
                 nvme_swap: NvmeSwapSettings = NvmeSwapSettings()) -> TrainConfig:
    """The model's configuration for a trial. ``knobs`` are the experiment's ZeRO values
    (``TuningSpace.knob_values``; default: the trial's tuned ones); keys the model does not use
    and None ("auto") values leave DeepSpeed's defaults. ``checkpointing_policy``: what the
    trial's activation checkpointing keeps (:mod:`simtune.model.checkpointing`); ``autocast``: torch
    autocast around an fp32 model (``TrainConfig.autocast``), DeepSpeed's own with
    ``deepspeed_autocast``; ``fused_adam``: the optimizer is DeepSpeed's FusedAdam;
    ``communication_precision``: the config's ``communication_data_type``; ``gradient_clipping``: the
    config clips gradients; ``offload_pinned``: the ``pin_memory`` of the optimizer's and the
    parameters' offload sections; ``optimizer``: the algorithm it trains with; ``nvme_swap``: the
    offload sections' NVMe swap settings."""
    values = dict(trial.zero_knobs if knobs is None else knobs)
    fields: dict[str, Any] = {key: (bool(values[key]) if knob_table.is_flag(key) else int(float(values[key])))
                              for key in knob_table.modelled_keys() if values.get(key) is not None}
    return TrainConfig(
        stage=trial.stage, micro_batch_size=trial.micro_batch_size,
        gradient_accumulation_steps=trial.gradient_accumulation_steps, dp_degree=dp_degree,
        mp_degree=mp_degree, precision=precision, offload_optimizer=trial.offload_optimizer != "none",
        offload_param=trial.offload_param != "none", offload_optimizer_nvme=trial.offload_optimizer == "nvme",
        offload_param_nvme=trial.offload_param == "nvme", activation_checkpointing=trial.activation_checkpointing,
        checkpointing_policy=checkpointing_policy, autocast=autocast, deepspeed_autocast=deepspeed_autocast,
        fused_adam=fused_adam, communication_precision=communication_precision,
        gradient_clipping=gradient_clipping, offload_optimizer_pinned=offload_pinned[0],
        offload_param_pinned=offload_pinned[1], optimizer=optimizer, nvme=nvme_swap, **fields)
