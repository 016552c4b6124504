from simtune.model.inputs import TrainConfig
from simtune.model.memory import estimate_memory


def test_total_is_states_held_buffers_phase_max_and_overhead(gpt2, hardware):
    m = estimate_memory(gpt2, hardware, TrainConfig(stage=3, micro_batch_size=4, dp_degree=8))
    expected = (m.model_states_bytes + m.gradient_buckets_bytes + m.gathered_parameters_bytes
                + max(m.activations_bytes + m.logits_bytes + m.comm_scratch_bytes, m.step_transient_bytes)
                + m.fixed_overhead_bytes)
    assert m.buckets_held_through_step and m.gradient_buckets_bytes > 0
    assert m.total_bytes == expected and m.fixed_overhead_bytes == hardware.fixed_overhead_bytes


def test_stage2_buckets_and_gradients_share_the_backward_slot_with_activations(gpt2, hardware):
    # stage_1_and_2.py frees its buckets after each backward and its gradients inside the step,
    # before the optimizer runs: neither meets the step's transient
    m = estimate_memory(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=4, dp_degree=8))
    backward = (m.activations_bytes + m.logits_bytes + m.comm_scratch_bytes + m.gradient_buckets_bytes
                + m.gradients_bytes)
    assert not m.buckets_held_through_step and not m.gradients_held_through_step
    assert m.backward_phase_bytes == backward
    assert m.total_bytes == (m.model_states_bytes - m.gradients_bytes + max(backward, m.step_transient_bytes)
                             + m.fixed_overhead_bytes)


def test_stage1_frees_its_gradients_before_the_optimizers_temporaries(gpt2, make_hardware):
    """Llama-3-8B-like: one rank's optimizer step of a large model at micro-batch 1 outweighs its
    activations, so whether the 16-bit gradients are still there decides the peak."""
    hardware = make_hardware(optimizer_impl="torch_adamw_foreach")
    config = TrainConfig(stage=1, micro_batch_size=1, dp_degree=8, precision="bf16")
    m = estimate_memory(gpt2, hardware, config)
    flat = -(-gpt2.parameter_count // 8)
    # the optimizer's moment: the fp32 gradient partition and foreach's sqrt copy of it; the cast's:
    # the partition's bf16 gradients, their flat copy and its fp32 cast
    assert m.step_transient_bytes >= 8 * flat
    assert m.total_bytes == (m.parameters_bytes + m.master_weights_bytes + m.optimizer_states_bytes
                             + max(m.backward_phase_bytes, m.step_transient_bytes) + m.fixed_overhead_bytes)
    assert m.backward_phase_bytes >= m.gradients_bytes == 2 * gpt2.parameter_count
    # stages 0 and 3 keep theirs through the step
    for stage in (0, 3):
        kept = estimate_memory(gpt2, hardware, TrainConfig(stage=stage, micro_batch_size=1, dp_degree=8,
                                                           precision="bf16"))
        assert kept.gradients_held_through_step and kept.backward_phase_bytes < kept.gradients_bytes + \
            kept.activations_bytes + kept.logits_bytes + kept.comm_scratch_bytes + kept.gradient_buckets_bytes + 1


def test_the_optimizer_implementations_temporaries_join_the_step(gpt2, make_hardware):
    config = TrainConfig(stage=1, micro_batch_size=1, dp_degree=1)
    fused = estimate_memory(gpt2, make_hardware(optimizer_impl="torch_adamw_fused"), config)
    for_loop = estimate_memory(gpt2, make_hardware(optimizer_impl="torch_adamw_for_loop"), config)
    # one rank updates the whole flat fp32 buffer: the fp32 gradients and two fp32 temporaries of it
    p = gpt2.parameter_count
    assert for_loop.step_transient_bytes == 4 * p + 2 * 4 * p
    # a fused kernel has none, so the step's peak is the cast before it: the fp32 gradients and their
    # flat copy (fp32 already: no cast copy)
    assert fused.step_transient_bytes == 4 * p + 4 * p


def test_feasible_compares_with_usable_memory_plus_fixed_overhead(gpt2, make_hardware):
    # the total counts the fixed overhead, so the limit is the usable memory plus that overhead
    config = TrainConfig(stage=2, micro_batch_size=4, dp_degree=8)
    hardware = make_hardware()
    needed = estimate_memory(gpt2, hardware, config).total_bytes
    fixed = hardware.fixed_overhead_bytes
    assert 0 < fixed < needed
    fits = estimate_memory(gpt2, make_hardware(usable_memory_bytes=needed - fixed), config)
    assert fits.feasible and fits.limit_bytes == needed
    short = estimate_memory(gpt2, make_hardware(usable_memory_bytes=needed - fixed - 1), config)
    assert not short.feasible and short.limit_bytes == needed - 1


def test_a_total_between_usable_memory_and_the_device_memory_fits(gpt2, make_hardware):
    # regression: the fixed overhead was counted twice (in the total and by comparing with usable memory)
    config = TrainConfig(stage=2, micro_batch_size=4, dp_degree=8)
    needed = estimate_memory(gpt2, make_hardware(), config).total_bytes
    fixed = 2 * 2**30
    hardware = make_hardware(device_memory_bytes=needed + fixed // 2, usable_memory_bytes=needed + fixed // 2 - fixed,
                             fixed_overhead_bytes=fixed)
    assert hardware.usable_memory_bytes < needed <= hardware.usable_memory_bytes + fixed
    m = estimate_memory(gpt2, hardware, config)
    assert m.total_bytes == needed and m.feasible and m.limit_bytes == hardware.device_memory_bytes


def test_the_limit_never_exceeds_the_device_memory(gpt2, make_hardware):
    hardware = make_hardware(usable_memory_bytes=80 * 2**30)  # usable = device memory, fixed overhead 2 GiB
    m = estimate_memory(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=4, dp_degree=8))
    assert m.limit_bytes == hardware.device_memory_bytes


def test_host_memory_limits_offload_when_known(gpt2, make_hardware):
    config = TrainConfig(stage=2, micro_batch_size=1, dp_degree=8, offload_optimizer=True)
    host = estimate_memory(gpt2, make_hardware(), config).host_bytes
    assert host > 0
    assert estimate_memory(gpt2, make_hardware(host_memory_bytes=8 * host), config).feasible
    assert not estimate_memory(gpt2, make_hardware(host_memory_bytes=8 * host - 1), config).feasible


def test_more_micro_batch_needs_more_memory(gpt2, hardware):
    totals = [estimate_memory(gpt2, hardware, TrainConfig(stage=3, micro_batch_size=mbs, dp_degree=8)).total_bytes
              for mbs in (1, 2, 4, 8)]
    assert totals == sorted(totals) and len(set(totals)) == 4


def test_checkpointing_needs_less_memory(gpt2, hardware):
    plain = estimate_memory(gpt2, hardware, TrainConfig(stage=1, micro_batch_size=8, dp_degree=8))
    ckpt = estimate_memory(gpt2, hardware, TrainConfig(stage=1, micro_batch_size=8, dp_degree=8,
                                                       activation_checkpointing=True))
    assert ckpt.activations_bytes < plain.activations_bytes and ckpt.total_bytes < plain.total_bytes


def test_higher_stage_needs_less_model_state_memory(gpt2, hardware):
    states = [estimate_memory(gpt2, hardware, TrainConfig(stage=s, micro_batch_size=1, dp_degree=8)).model_states_bytes
              for s in range(4)]
    assert states == sorted(states, reverse=True) and len(set(states)) == 4
