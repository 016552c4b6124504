import dataclasses

import pytest

from simtune.model.compute_time import pass_time

from simtune.errors import ProfileError

from simtune.model.inputs import MeasuredCompute, TrainConfig
from simtune.model.step_time import estimate_time, gradient_copy_s


def serial_sum(t) -> float:
    return (t.forward_s + t.backward_s + t.recompute_s + t.grad_reduce_s + t.param_gather_s + t.optimizer_s
            + t.offload_transfer_s)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_without_overlap_the_step_is_the_sum_of_its_terms(gpt2, make_hardware, stage):
    t = estimate_time(gpt2, make_hardware(overlap_capable=False), TrainConfig(stage=stage, micro_batch_size=4,
                                                                              dp_degree=8))
    assert t.step_s == pytest.approx(serial_sum(t)) and t.hidden_comm_s == pytest.approx(0, abs=1e-12)


def test_overlap_hides_stage2_reduction_behind_backward(gpt2, hardware):
    buckets = dict(stage=2, micro_batch_size=4, dp_degree=8, reduce_bucket_size=10_000_000)
    off = estimate_time(gpt2, hardware, TrainConfig(**buckets))
    on = estimate_time(gpt2, hardware, TrainConfig(**buckets, overlap_comm=True))
    assert on.step_s < off.step_s and on.hidden_comm_s > 0
    assert on.step_s == pytest.approx(serial_sum(on) - on.hidden_comm_s)
    assert on.exposed_comm_s >= 0


def test_a_collective_beside_the_compute_slows_it_by_its_share_while_it_runs(gpt2, make_hardware):
    buckets = dict(stage=2, micro_batch_size=4, dp_degree=8, reduce_bucket_size=10_000_000, overlap_comm=True)
    free = estimate_time(gpt2, make_hardware(), TrainConfig(**buckets))
    held = estimate_time(gpt2, make_hardware(collective_compute_share=0.2), TrainConfig(**buckets))
    assert 0 < held.step_s - free.step_s <= 0.2 * free.hidden_comm_s + 1e-12
    assert held.hidden_comm_s == pytest.approx(free.hidden_comm_s - (held.step_s - free.step_s))
    cpu = make_hardware(collective_compute_share=0.2, overlap_capable=False)
    assert estimate_time(gpt2, cpu, TrainConfig(**buckets)).step_s == estimate_time(
        gpt2, make_hardware(overlap_capable=False), TrainConfig(**buckets)).step_s
    with pytest.raises(ProfileError, match="collective_compute_share"):
        make_hardware(collective_compute_share=1.0)


def test_one_bucket_cannot_overlap(gpt2, hardware):
    """The default 5e8-element bucket holds all 124M gradients: reduced after the backward."""
    t = estimate_time(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=4, dp_degree=8, overlap_comm=True))
    assert t.hidden_comm_s == pytest.approx(0, abs=1e-12)


def test_checkpointing_adds_one_forward_of_the_layers(gpt2, hardware):
    plain = estimate_time(gpt2, hardware, TrainConfig(stage=0, micro_batch_size=4))
    config = TrainConfig(stage=0, micro_batch_size=4, activation_checkpointing=True)
    ckpt = estimate_time(gpt2, hardware, config)
    assert ckpt.recompute_s == pytest.approx(pass_time(gpt2, hardware, config, backward=False, layers_only=True).total_s)
    assert 0 < ckpt.recompute_s < plain.forward_s
    assert ckpt.step_s == pytest.approx(plain.step_s + ckpt.recompute_s)


def test_accumulation_repeats_micro_steps_but_not_the_boundary(gpt2, hardware):
    one = estimate_time(gpt2, hardware, TrainConfig(stage=1, micro_batch_size=4, dp_degree=8))
    four = estimate_time(gpt2, hardware, TrainConfig(stage=1, micro_batch_size=4, dp_degree=8,
                                                     gradient_accumulation_steps=4))
    micro = one.forward_s + one.backward_s
    assert four.step_s == pytest.approx(one.step_s + 3 * micro)
    assert four.grad_reduce_s == pytest.approx(one.grad_reduce_s)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_the_engines_backward_work_runs_once_a_step_at_stages_0_1_and_every_micro_step_at_2_3(
        gpt2, make_hardware, stage):
    """What real engines add to the backward is measured at one micro-step per step; stages 0/1
    reduce, and wait for the other ranks, at the boundary only, so it is not repeated per micro-step
    there (only the accumulation into the kept gradients is)."""
    engine_backward = 5e-3
    measured = MeasuredCompute(points=((1, 0.01, 0.02), (8, 0.08, 0.16)),
                               stage_overheads=tuple((s, 4, 0.0, engine_backward, 0.0, 0.0) for s in range(4)))
    model = dataclasses.replace(gpt2, measured_compute=measured)
    hardware = make_hardware(streaming_bytes_per_s=1e12)

    def config(gas):
        return TrainConfig(stage=stage, micro_batch_size=4, dp_degree=8, gradient_accumulation_steps=gas)

    one, four = estimate_time(model, hardware, config(1)), estimate_time(model, hardware, config(4))
    accumulation = 4 * gradient_copy_s(model, hardware, config(4)) if stage < 2 else 0.0
    assert (accumulation > 0) == (stage < 2)
    expected = accumulation if stage < 2 else 3 * engine_backward
    assert four.engine_overhead_s - one.engine_overhead_s == pytest.approx(expected)


def test_gradients_that_fit_in_the_cache_accumulate_at_its_rate(gpt2, make_hardware):
    """Stages 0/1 add each micro-step's gradients to the kept ones (3 b P bytes from the second
    micro-step on) at the streaming rate, or at the cached rate where both sets (2 b P) fit in
    the rank's share of the cache; the copies into stage 2's buckets keep the streaming rate."""
    both = 2 * 4 * gpt2.parameter_count  # fp32 gradients, kept and new
    streaming, cached = 1e11, 4e11
    out_of_cache = make_hardware(streaming_bytes_per_s=streaming, cached_plain_bytes_per_s=cached,
                                 cache_bytes=both - 1, threads_per_rank=1)
    in_cache = dataclasses.replace(out_of_cache, cache_bytes=both)
    config = TrainConfig(stage=1, micro_batch_size=4, dp_degree=8, gradient_accumulation_steps=4, precision="fp32")
    moved = 3 * 4 * gpt2.parameter_count * 3 / 4
    assert gradient_copy_s(gpt2, out_of_cache, config) == pytest.approx(moved / streaming)
    assert gradient_copy_s(gpt2, in_cache, config) == pytest.approx(moved / cached)
    stage2 = dataclasses.replace(config, stage=2)
    assert gradient_copy_s(gpt2, in_cache, stage2) == gradient_copy_s(gpt2, out_of_cache, stage2) > 0
    # one add per tensor, each dispatched: beside the device's time, or after it on a CPU
    dispatch = dataclasses.replace(in_cache.framework, backward_kernel_s=1e-5)
    adds = len(gpt2.layout.numels) * 1e-5
    beside = dataclasses.replace(in_cache, framework=dispatch)
    assert gradient_copy_s(gpt2, beside, config) == pytest.approx(max(moved / cached, adds * 3 / 4))
    after = dataclasses.replace(beside, overlap_capable=False)
    assert gradient_copy_s(gpt2, after, config) == pytest.approx(moved / cached + adds * 3 / 4)
    assert gradient_copy_s(gpt2, after, dataclasses.replace(config, gradient_accumulation_steps=1)) == 0
    # ranks that share a CPU node share its cache: twice the ranks, half the share each
    shared = in_cache.with_ranks_per_node(2 * in_cache.ranks_per_node, 1)
    assert shared.cache_bytes == both // 2 and shared.plain_bandwidth_within(both) is None


def test_stage2_accumulation_reduces_every_micro_step(gpt2, hardware):
    one = estimate_time(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=4, dp_degree=8))
    four = estimate_time(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=4, dp_degree=8,
                                                     gradient_accumulation_steps=4))
    assert four.grad_reduce_s == pytest.approx(4 * one.grad_reduce_s)


def test_cpu_offload_uses_the_cpu_adam_rate_and_pays_transfers(gpt2, hardware):
    device = estimate_time(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=4, dp_degree=8))
    offload = estimate_time(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=4, dp_degree=8,
                                                        offload_optimizer=True))
    ratio = hardware.cpu_adam_s_per_param / hardware.optimizer_s_per_param
    assert offload.optimizer_s == pytest.approx(ratio * device.optimizer_s)
    assert offload.offload_transfer_s > 0 and device.offload_transfer_s == 0
    assert offload.step_s > device.step_s


def test_offload_with_torch_adam_steps_torchs_adamw_on_the_host(gpt2, make_hardware):
    """DeepSpeed hands an offloaded optimizer to torch's AdamW when the config says torch_adam, to
    DeepSpeedCPUAdam otherwise; a profile without a host torch fit keeps the CPU Adam rate."""
    hw = make_hardware(host_torch_adamw_s_per_param=1e-9)
    cpu_adam = TrainConfig(stage=2, micro_batch_size=4, dp_degree=8, offload_optimizer=True)
    torch_adam = dataclasses.replace(cpu_adam, fused_adam=False)
    slow, fast = estimate_time(gpt2, hw, torch_adam), estimate_time(gpt2, hw, cpu_adam)
    assert slow.optimizer_s == pytest.approx(fast.optimizer_s * 1e-9 / hw.cpu_adam_s_per_param)
    unmeasured = make_hardware()
    assert estimate_time(gpt2, unmeasured, torch_adam).optimizer_s == estimate_time(gpt2, unmeasured, cpu_adam).optimizer_s


def _offload_parts(m, hw, **fields):
    from simtune.model.optimizer_time import offload_transfer_s
    from simtune.model.shards import shards

    config = TrainConfig(micro_batch_size=4, dp_degree=8, offload_optimizer=True, precision="bf16", **fields)
    s = shards(m, config)
    return s, offload_transfer_s(m, s, hw, config)


def test_stage_2_offload_sends_fp32_gradients_down_and_16_bit_weights_up(gpt2, make_hardware):
    """DeepSpeed casts the slice's gradients to fp32 on the device before they go to the host, and
    the host casts the updated fp32 slice into a 16-bit buffer that goes up."""
    bare = make_hardware(h2d_bandwidth_bytes_per_s=20e9, d2h_bandwidth_bytes_per_s=25e9)
    s, seconds = _offload_parts(gpt2, bare, stage=2)
    assert seconds == pytest.approx(4 * s.flat_partition / 25e9 + 2 * s.flat_partition / 20e9)
    host = dataclasses.replace(bare, host_copy_bytes_per_s=10e9)
    assert _offload_parts(gpt2, host, stage=2)[1] - seconds == pytest.approx((4 + 2) * s.flat_partition / (2 * 10e9))
    device = dataclasses.replace(bare, streaming_bytes_per_s=2e12)
    assert _offload_parts(gpt2, device, stage=2)[1] - seconds == pytest.approx((2 + 4) * s.flat_partition / 2e12)


def test_pageable_offload_buffers_copy_at_the_pageable_rates_where_measured(gpt2, make_hardware):
    measured = make_hardware(h2d_pageable_bytes_per_s=5e9, d2h_pageable_bytes_per_s=4e9)
    unmeasured = make_hardware()
    s, pinned = _offload_parts(gpt2, measured, stage=2)
    pageable = _offload_parts(gpt2, measured, stage=2, offload_optimizer_pinned=False)[1]
    assert pageable == pytest.approx(4 * s.flat_partition / 4e9 + 2 * s.flat_partition / 5e9)
    assert pinned == _offload_parts(gpt2, unmeasured, stage=2)[1] < pageable
    assert _offload_parts(gpt2, unmeasured, stage=2, offload_optimizer_pinned=False)[1] == pinned


def test_stage_3_uploads_its_updated_16_bit_partition_from_pageable_memory_whatever_pin_memory_says(gpt2, make_hardware):
    """torch casts a blocking fp32 -> 16-bit copy to the device on the host, into a new pageable
    tensor; in fp32 the partition goes up as it is, and with the parameters offloaded it stays."""
    hw = make_hardware(h2d_pageable_bytes_per_s=5e9, d2h_pageable_bytes_per_s=4e9, host_copy_bytes_per_s=10e9)
    s, seconds = _offload_parts(gpt2, hw, stage=3)
    p = s.partition
    rounds = 2 * p / hw.d2h_bandwidth_bytes_per_s + 2 * p / hw.h2d_bandwidth_bytes_per_s  # accumulate, gas 1
    assert seconds == pytest.approx(rounds + 4 * p / hw.d2h_bandwidth_bytes_per_s + 2 * p / 5e9 + 6 * p / 20e9)
    assert _offload_parts(gpt2, hw, stage=3, offload_optimizer_pinned=False)[1] > seconds
    from simtune.model.optimizer_time import offload_transfer_s
    from simtune.model.shards import shards

    fp32 = TrainConfig(stage=3, micro_batch_size=4, dp_degree=8, offload_optimizer=True, precision="fp32")
    p32 = shards(gpt2, fp32).partition
    assert offload_transfer_s(gpt2, shards(gpt2, fp32), hw, fp32) == pytest.approx(
        8 * p32 / hw.d2h_bandwidth_bytes_per_s + 8 * p32 / hw.h2d_bandwidth_bytes_per_s)
    both = TrainConfig(stage=3, micro_batch_size=4, dp_degree=8, offload_optimizer=True, offload_param=True,
                       precision="bf16", stage3_param_persistence_threshold=0)
    gathers = dataclasses.replace(both, offload_optimizer=False)
    s_both = shards(gpt2, both)
    assert offload_transfer_s(gpt2, s_both, hw, both) - offload_transfer_s(gpt2, s_both, hw, gathers) == pytest.approx(
        rounds + 4 * p / hw.d2h_bandwidth_bytes_per_s + 6 * p / 20e9)


def test_unknown_collectives_or_cpu_adam_fail_only_when_needed(gpt2, make_hardware):
    hardware = make_hardware(collectives=None, cpu_adam_s_per_param=None)
    assert estimate_time(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=1)).step_s > 0
    with pytest.raises(ProfileError, match="collective"):
        estimate_time(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=1, dp_degree=8))
    with pytest.raises(ProfileError, match="CPU Adam"):
        estimate_time(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=1, offload_optimizer=True))


def test_stage_0_in_16_bits_around_torchs_adamw_pays_a_dispatch_per_op_per_tensor(gpt2, make_hardware):
    """DeepSpeed wraps any optimizer but its FusedAdam in FP16_UnfusedOptimizer at stage 0 in 16 bits:
    13 host ops per parameter tensor after a synchronisation per tensor."""
    from simtune.model.inputs import FrameworkCosts
    from simtune.model.step_time import UNFUSED_WRAPPER_OPS_PER_TENSOR, unfused_wrapper_s

    hw = make_hardware(framework=FrameworkCosts(forward_kernel_s=10e-6, engine_step_s=2e-3))
    fused = TrainConfig(stage=0, micro_batch_size=4, dp_degree=1, precision="bf16")
    torch_adam = TrainConfig(stage=0, micro_batch_size=4, dp_degree=1, precision="bf16", fused_adam=False)
    tensors = len(gpt2.layout.numels)
    assert tensors == 148  # GPT-2 124M: 12 layers of 12 tensors, two embeddings, the final norm's two
    assert unfused_wrapper_s(gpt2, hw, torch_adam) == pytest.approx(tensors * UNFUSED_WRAPPER_OPS_PER_TENSOR * 10e-6)
    assert unfused_wrapper_s(gpt2, hw, fused) == 0.0
    for other in (dict(stage=1), dict(precision="fp32"), dict(autocast=True)):
        assert unfused_wrapper_s(gpt2, hw, dataclasses.replace(torch_adam, **other)) == 0.0
    # it lands in the step call, and makes stage 0 slower than stage 1 where both were level
    wrapped, plain = estimate_time(gpt2, hw, torch_adam), estimate_time(gpt2, hw, fused)
    assert wrapped.step_phase_s - plain.step_phase_s == pytest.approx(unfused_wrapper_s(gpt2, hw, torch_adam))
    assert wrapped.engine_overhead_s - plain.engine_overhead_s == pytest.approx(unfused_wrapper_s(gpt2, hw, torch_adam))
    assert wrapped.step_s > estimate_time(gpt2, hw, dataclasses.replace(torch_adam, stage=1)).step_s



def test_stage_3_checkpointing_fires_the_recomputed_layers_fetch_hooks_once_more(gpt2, make_hardware):
    """The recomputed forward runs every checkpointed layer's modules again: their ZeRO-3 hooks fire,
    their allgathers do not repeat (the backward reuses what the recomputation gathered)."""
    from simtune.model.comm_time import communication
    from simtune.model.inputs import FrameworkCosts
    from simtune.model.shards import shards
    from simtune.model.step_time import framework_costs, recomputed_modules

    hw = make_hardware(framework=FrameworkCosts(zero3_module_s=300e-6, zero3_module_backward_s=200e-6))
    plain = TrainConfig(stage=3, micro_batch_size=4, dp_degree=8)
    ckpt = dataclasses.replace(plain, activation_checkpointing=True)
    assert recomputed_modules(gpt2, plain) == 0 and recomputed_modules(gpt2, ckpt) == 6 * 12  # 6 per layer
    half = dataclasses.replace(ckpt, checkpointing_policy="every-2-layers")
    assert recomputed_modules(gpt2, half) == 6 * 6
    (f0, b0, s0), (f1, b1, s1) = framework_costs(gpt2, hw, plain), framework_costs(gpt2, hw, ckpt)
    assert (f1, s1) == (f0, s0) and b1 - b0 == pytest.approx(72 * 200e-6)  # the backward's cost per module
    assert communication(gpt2, shards(gpt2, ckpt), hw, ckpt) == communication(gpt2, shards(gpt2, plain), hw, plain)
    stage2 = dataclasses.replace(ckpt, stage=2)
    assert framework_costs(gpt2, hw, stage2)[1] == framework_costs(gpt2, hw, dataclasses.replace(stage2,
                                                                   activation_checkpointing=False))[1]


def test_gradients_cast_to_the_communication_dtype_and_back_cost_their_bytes(gpt2, make_hardware):
    """Stages 0-2 cast each reduced bucket to communication_data_type and copy it back: 2 (b + g)
    bytes per gradient element per reduction; stage 3 fills buckets of that dtype and casts the
    reduced partition back."""
    from simtune.model.step_time import communication_cast_s

    hw = make_hardware(streaming_bytes_per_s=1e12)
    p = gpt2.parameter_count
    base = dict(micro_batch_size=4, dp_degree=8, precision="bf16", gradient_accumulation_steps=2)
    cast = {stage: communication_cast_s(gpt2, hw, TrainConfig(stage=stage, communication_precision="fp32", **base))
            for stage in range(4)}
    assert cast[0] == cast[1] == pytest.approx(2 * (2 + 4) * p / 1e12)
    assert cast[2] == pytest.approx(2 * cast[1])  # every micro-step
    assert cast[3] == pytest.approx(2 * ((4 - 2) * p + (4 + 2) * p / 8) / 1e12)
    for same in (dict(communication_precision="bf16"), dict(communication_precision=None),
                 dict(dp_degree=1, stage=2, communication_precision="fp32")):
        assert communication_cast_s(gpt2, hw, TrainConfig(**{**base, "stage": 2, **same})) == 0.0
    # it runs in the backward, as engine work
    plain = TrainConfig(stage=0, **base)
    wide = dataclasses.replace(plain, communication_precision="fp32")
    assert (estimate_time(gpt2, hw, wide).backward_phase_s - estimate_time(gpt2, hw, plain).backward_phase_s
            > cast[0])  # the cast and the wider allreduce
    assert (estimate_time(gpt2, hw, wide).engine_overhead_s - estimate_time(gpt2, hw, plain).engine_overhead_s
            == pytest.approx(cast[0]))


def test_the_loop_clips_gradients_itself_only_over_the_models_fp32_gradients(gpt2, make_hardware):
    """clip_fp32_gradients: a norm and a multiply per tensor over the fp32 gradients (12 bytes per
    parameter), a few more ops, one scalar allreduce; elsewhere the optimizers take the norm anyway."""
    from simtune.model.inputs import FrameworkCosts
    from simtune.model.step_time import CLIPPING_FIXED_OPS, clipping_s

    hw = make_hardware(streaming_bytes_per_s=1e11, framework=FrameworkCosts(forward_kernel_s=5e-6))
    clipped = TrainConfig(stage=0, micro_batch_size=4, dp_degree=1, precision="fp32", gradient_clipping=True)
    ops = 2 * len(gpt2.layout.numels) + CLIPPING_FIXED_OPS
    assert clipping_s(gpt2, hw, clipped) == pytest.approx(12 * gpt2.parameter_count / 1e11 + ops * 5e-6)
    at_8 = dataclasses.replace(clipped, dp_degree=8)
    assert clipping_s(gpt2, hw, at_8) == pytest.approx(clipping_s(gpt2, hw, clipped) + 20e-6)  # the allreduce's latency
    deepspeed_autocast = dataclasses.replace(clipped, precision="bf16", autocast=True, deepspeed_autocast=True)
    assert clipping_s(gpt2, hw, deepspeed_autocast) == clipping_s(gpt2, hw, clipped)
    for other in (dict(gradient_clipping=False), dict(stage=1), dict(precision="bf16")):
        assert clipping_s(gpt2, hw, dataclasses.replace(clipped, **other)) == 0.0
    # a loop outside DeepSpeed under torch autocast clips the fp32 gradients too, without an allreduce
    torch_autocast = dataclasses.replace(at_8, precision="fp16", autocast=True)
    assert clipping_s(gpt2, hw, torch_autocast) == pytest.approx(clipping_s(gpt2, hw, clipped))
    # it lands in the engine's step call
    plain = dataclasses.replace(clipped, gradient_clipping=False)
    assert (estimate_time(gpt2, hw, clipped).step_phase_s - estimate_time(gpt2, hw, plain).step_phase_s
            == pytest.approx(clipping_s(gpt2, hw, clipped)))


def test_a_for_loop_optimizer_adds_the_dispatch_its_small_tensors_outlast(gpt2, make_hardware):
    """torch's for-loop AdamW launches eight kernels per tensor: on a GPU they add only where they
    outlast the tensor's work (GPT-2's biases and norms, not its matrices); on a CPU every launch
    adds; at stages 1-3 and in stage 0's 16-bit wrappers the optimizer steps flat tensors."""
    from simtune.model.inputs import FrameworkCosts
    from simtune.model.optimizer_time import loop_dispatch_s

    framework = FrameworkCosts(forward_kernel_s=8e-6)
    gpu = make_hardware(optimizer_impl="torch_adamw_for_loop", framework=framework, optimizer_s_per_param=1e-10)
    config = TrainConfig(stage=0, micro_batch_size=4, precision="fp32")
    launch = 8 * 8e-6
    # by hand: every tensor costs the larger of its launches and its elements' work
    by_hand = sum(max(launch, n * 1e-10) for n in gpt2.layout.numels) - gpt2.parameter_count * 1e-10
    extra = loop_dispatch_s(gpt2, gpu, config)
    assert extra == pytest.approx(by_hand, rel=1e-9)
    small = sum(1 for n in gpt2.layout.numels if n * 1e-10 < launch)
    assert 0 < small < len(gpt2.layout.numels) and extra < small * launch
    t = estimate_time(gpt2, gpu, config)
    assert t.optimizer_s == pytest.approx(gpt2.parameter_count * 1e-10 + extra)

    cpu = dataclasses.replace(gpu, overlap_capable=False)
    assert loop_dispatch_s(gpt2, cpu, config) == pytest.approx(len(gpt2.layout.numels) * launch)
    for other in (TrainConfig(stage=1, micro_batch_size=4, dp_degree=8, precision="fp32"),
                  TrainConfig(stage=0, micro_batch_size=4, precision="bf16")):
        assert loop_dispatch_s(gpt2, gpu, other) == 0
    assert loop_dispatch_s(gpt2, gpu, TrainConfig(stage=0, micro_batch_size=4, precision="bf16", autocast=True)) \
        == pytest.approx(extra)  # autocast steps the fp32 model's own tensors
    for impl in ("torch_adamw_foreach", "torch_adamw_fused", None):
        assert loop_dispatch_s(gpt2, dataclasses.replace(gpu, optimizer_impl=impl), config) == 0


def test_torch_loss_scaling_passes_over_the_fp32_gradients_once_in_fp16_under_autocast(gpt2, make_hardware):
    """GradScaler.unscale_: every fp32 gradient read and written once (8 bytes per parameter) and a
    few ops; DeepSpeed's own fp16 and bf16 under autocast need no scaler."""
    from simtune.model.inputs import FrameworkCosts
    from simtune.model.step_time import LOSS_SCALING_OPS, loss_scaling_s

    hw = make_hardware(streaming_bytes_per_s=1e11, framework=FrameworkCosts(forward_kernel_s=5e-6))
    curves = hw.compute
    hw = dataclasses.replace(hw, compute=dataclasses.replace(curves, fp16=curves.bf16))  # fp16 as fast as bf16
    scaled = TrainConfig(stage=0, micro_batch_size=4, precision="fp16", autocast=True)
    assert loss_scaling_s(gpt2, hw, scaled) == pytest.approx(8 * gpt2.parameter_count / 1e11 + LOSS_SCALING_OPS * 5e-6)
    for other in (dict(precision="bf16"), dict(autocast=False), dict(deepspeed_autocast=True)):
        assert loss_scaling_s(gpt2, hw, dataclasses.replace(scaled, **other)) == 0.0
    plain = TrainConfig(stage=0, micro_batch_size=4, precision="fp16")
    # it lands in the step call
    assert (estimate_time(gpt2, hw, scaled).step_phase_s - estimate_time(gpt2, hw, dataclasses.replace(
        scaled, precision="bf16")).step_phase_s == pytest.approx(loss_scaling_s(gpt2, hw, scaled)))
    assert loss_scaling_s(gpt2, hw, plain) == 0.0


def test_elements_no_sample_trains_add_their_zero_state_cost_to_the_rank_holding_them(gpt2, make_hardware):
    """Idle elements (ModelSpec.idle_elements) pay the hardware's zero-state cost on top of the
    ordinary step: all of them at stage 0, a rank's share where the optimizer state is partitioned,
    none with the optimizer offloaded or where the hardware measured none."""
    from simtune.model.optimizer_time import optimizer_s
    from simtune.model.shards import shards

    idle = 1_000_000
    model = dataclasses.replace(gpt2, idle_elements=idle)
    plain = make_hardware(optimizer_s_per_param=2e-9)
    zero = dataclasses.replace(plain, zero_state_s_per_param=5e-9)
    for stage, share in ((0, 1.0), (1, 1 / 8), (2, 1 / 8), (3, 1 / 8)):
        config = TrainConfig(stage=stage, micro_batch_size=4, dp_degree=8, precision="fp32")
        s = shards(model, config)
        extra = optimizer_s(model, s, zero, config) - optimizer_s(model, s, plain, config)
        assert extra == pytest.approx(idle * share * 5e-9, rel=0.01)
        assert optimizer_s(gpt2, s, zero, config) == pytest.approx(optimizer_s(gpt2, s, plain, config))
    offload = TrainConfig(stage=2, micro_batch_size=4, dp_degree=8, precision="fp32", offload_optimizer=True)
    s = shards(model, offload)
    assert optimizer_s(model, s, zero, offload) == optimizer_s(model, s, plain, offload)
    with pytest.raises(ProfileError):
        dataclasses.replace(plain, zero_state_s_per_param=-1e-9)


@pytest.mark.parametrize("algorithm,impl,ratio", [
    ("sgd_momentum", "torch_adamw_for_loop", 32 / 84), ("sgd", "torch_adamw_foreach", 12 / 84),
    ("adagrad", "torch_adamw_for_loop", 48 / 84), ("adagrad", "torch_adamw_foreach", 56 / 84),
    ("lion", "deepspeed_fused_adam", 20 / 28), ("adamw", "torch_adamw_fused", 1.0)])
def test_another_algorithm_steps_at_the_adamw_rate_scaled_to_its_bytes(gpt2, make_hardware, algorithm, impl, ratio):
    """The profile times AdamW; an algorithm's step is that rate times its bytes over AdamW's in the
    same implementation (simtune.optimizers), on ZeRO's flat tensors (no per-tensor dispatch)."""
    from simtune.optimizers import OptimizerChoice

    hw = make_hardware(optimizer_impl=impl, optimizer_s_per_param=3e-9)
    config = TrainConfig(stage=2, micro_batch_size=4, dp_degree=8, precision="bf16",
                         optimizer=OptimizerChoice(algorithm))
    adamw = dataclasses.replace(config, optimizer=OptimizerChoice())
    assert estimate_time(gpt2, hw, config).optimizer_s == pytest.approx(ratio * estimate_time(gpt2, hw, adamw).optimizer_s)


def test_a_for_loop_launches_each_algorithms_own_passes_per_tensor(gpt2, make_hardware):
    from simtune.model.inputs import FrameworkCosts
    from simtune.model.optimizer_time import loop_dispatch_s
    from simtune.optimizers import OptimizerChoice

    cpu = make_hardware(optimizer_impl="torch_adamw_for_loop", framework=FrameworkCosts(forward_kernel_s=8e-6),
                        overlap_capable=False)
    tensors = len(gpt2.layout.numels)
    for algorithm, passes in (("adamw", 8), ("adagrad", 4), ("sgd_momentum", 3), ("sgd", 1), ("lion", 0)):
        config = TrainConfig(stage=0, micro_batch_size=4, precision="fp32", optimizer=OptimizerChoice(algorithm))
        assert loop_dispatch_s(gpt2, cpu, config) == pytest.approx(tensors * passes * 8e-6)


def test_only_an_algorithm_taking_the_root_of_a_state_pays_for_elements_no_sample_trains(gpt2, make_hardware):
    from simtune.model.optimizer_time import optimizer_s
    from simtune.model.shards import shards
    from simtune.optimizers import OptimizerChoice

    model = dataclasses.replace(gpt2, idle_elements=1_000_000)
    plain = make_hardware(optimizer_s_per_param=2e-9)
    zero = dataclasses.replace(plain, zero_state_s_per_param=5e-9)
    for algorithm, pays in (("adamw", True), ("adagrad", True), ("sgd_momentum", False), ("lion", False)):
        config = TrainConfig(stage=0, micro_batch_size=4, precision="fp32", optimizer=OptimizerChoice(algorithm))
        s = shards(model, config)
        extra = optimizer_s(model, s, zero, config) - optimizer_s(model, s, plain, config)
        assert extra == pytest.approx(1_000_000 * 5e-9 if pays else 0.0)


def test_an_offloaded_algorithm_steps_on_deepspeeds_cpu_kernel_or_torchs_loop(gpt2, make_hardware):
    """Adagrad and Lion offloaded run DeepSpeed's CPU kernels (fused: the CPU Adam rate times their
    bytes over Adam's 28); SGD has none, so torch's loop steps it on the host (the host torch
    AdamW rate times 32/84), or the CPU Adam rate scaled as a fused kernel where that was not timed."""
    from simtune.model.optimizer_time import host_step_s_per_param
    from simtune.optimizers import OptimizerChoice

    hw = make_hardware(host_torch_adamw_s_per_param=6e-9)
    config = TrainConfig(stage=2, micro_batch_size=4, dp_degree=8, offload_optimizer=True, fused_adam=False)
    cpu_adam = hw.cpu_adam_s_per_param
    for algorithm, rate in (("adagrad", cpu_adam * 20 / 28), ("lion", cpu_adam * 20 / 28),
                            ("sgd_momentum", 6e-9 * 32 / 84), ("adamw", 6e-9)):
        chosen = dataclasses.replace(config, optimizer=OptimizerChoice(algorithm))
        assert host_step_s_per_param(hw, chosen) == pytest.approx(rate), algorithm
    untimed = make_hardware()
    sgd = dataclasses.replace(config, optimizer=OptimizerChoice("sgd_momentum"))
    assert host_step_s_per_param(untimed, sgd) == pytest.approx(untimed.cpu_adam_s_per_param * 20 / 28)


def test_an_offloaded_algorithms_timed_cpu_kernel_wins_over_the_bytes_ratio(make_hardware):
    """Calibration times DeepSpeed's CPU Adagrad and Lion where built: offloaded, that rate is the
    step; SGD, which torch's loop steps on the host, keeps its ratio."""
    from simtune.model.inputs import AlgorithmRate
    from simtune.model.optimizer_time import host_step_s_per_param
    from simtune.optimizers import OptimizerChoice

    hw = make_hardware(host_algorithm_rates=(AlgorithmRate("adagrad", 0.4e-9), AlgorithmRate("sgd_momentum", 9e-9)))
    config = TrainConfig(stage=2, micro_batch_size=4, dp_degree=8, offload_optimizer=True)
    rate = {a: host_step_s_per_param(hw, dataclasses.replace(config, optimizer=OptimizerChoice(a)))
            for a in ("adagrad", "lion", "sgd_momentum")}
    assert rate["adagrad"] == pytest.approx(0.4e-9)
    assert rate["lion"] == pytest.approx(hw.cpu_adam_s_per_param * 20 / 28)
    assert rate["sgd_momentum"] == pytest.approx(hw.cpu_adam_s_per_param * 20 / 28)  # torch's loop: no kernel fit


def test_an_algorithms_measured_rate_wins_over_the_bytes_ratio(gpt2, make_hardware):
    """Calibration times torch's SGD and Adagrad where torch runs them: that rate is the step (a
    coupled weight decay adds its 12 bytes pro rata); an algorithm not timed keeps the ratio."""
    from simtune.model.inputs import AlgorithmRate
    from simtune.model.optimizer_time import device_step_s_per_param
    from simtune.optimizers import OptimizerChoice

    hw = make_hardware(optimizer_impl="torch_adamw_for_loop", optimizer_s_per_param=3e-9,
                       algorithm_rates=(AlgorithmRate("sgd_momentum", 0.7e-9),))
    config = TrainConfig(stage=1, micro_batch_size=4, dp_degree=8, optimizer=OptimizerChoice("sgd_momentum"))
    assert device_step_s_per_param(hw, config) == pytest.approx(0.7e-9)
    decayed = dataclasses.replace(config, optimizer=OptimizerChoice("sgd_momentum", coupled_decay=True))
    assert device_step_s_per_param(hw, decayed) == pytest.approx(0.7e-9 * 44 / 32)
    adagrad = dataclasses.replace(config, optimizer=OptimizerChoice("adagrad"))
    assert device_step_s_per_param(hw, adagrad) == pytest.approx(3e-9 * 48 / 84)


def test_an_algorithms_own_zero_state_cost_is_used_where_it_was_measured(gpt2, make_hardware):
    from simtune.model.inputs import AlgorithmRate
    from simtune.model.optimizer_time import zero_state_s_per_param
    from simtune.optimizers import OptimizerChoice

    hw = make_hardware(optimizer_impl="torch_adamw_for_loop", zero_state_s_per_param=3e-9,
                       algorithm_rates=(AlgorithmRate("adagrad", 1e-9, 2e-9), AlgorithmRate("sgd", 1e-10, 1e-9)))
    config = TrainConfig(stage=0, micro_batch_size=4, precision="fp32")
    for algorithm, z in (("adagrad", 2e-9), ("adamw", 3e-9), ("sgd", 0.0), ("lion", 0.0)):
        assert zero_state_s_per_param(hw, dataclasses.replace(config, optimizer=OptimizerChoice(algorithm))) == z
    unmeasured = make_hardware(optimizer_impl="torch_adamw_for_loop", zero_state_s_per_param=3e-9)
    assert zero_state_s_per_param(unmeasured, dataclasses.replace(config, optimizer=OptimizerChoice("adagrad"))) == 3e-9
