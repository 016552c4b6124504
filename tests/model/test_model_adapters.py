import pytest

from simtune.errors import ProfileError
from simtune.hardware.registry import load_profile
from simtune.model.adapters import hardware_spec, model_spec, train_config
from simtune.model.estimate import estimate
from simtune.space import Trial
from simtune.workloads.analysis import parameter_count
from simtune.workloads.presets import load_workload


def test_model_spec_carries_the_workload_analysis():
    workload = load_workload("gpt2")
    spec = model_spec(workload)
    assert spec.parameter_count == parameter_count(workload) == sum(spec.param_tensor_numels)
    assert spec.largest_layer_params == workload.vocab_size * workload.hidden_size
    assert spec.flops_per_sample_forward > 2 * spec.parameter_count * workload.seq_len * 0.5


def test_hardware_spec_from_a_shipped_profile():
    profile = load_profile("dgx-a100-80gb")
    spec = hardware_spec(profile)
    assert spec.usable_memory_bytes == profile.device.usable_memory_bytes
    assert spec.ranks_per_node == profile.device.count_per_node and spec.overlap_capable
    assert spec.collectives.allreduce.bandwidth_bytes_per_s == profile.collectives.intra_node["allreduce"].bandwidth_bytes_per_s
    assert spec.compute.bf16 is not None
    with pytest.raises(ProfileError, match="no optimizer fit"):
        hardware_spec(profile, optimizer_impl="sgd")


def test_train_config_takes_trial_knobs_and_offload():
    trial = Trial(3, 4, 2, {"reduce_bucket_size": 5e7, "overlap_comm": False, "allgather_partitions": True},
                  offload_optimizer="cpu", activation_checkpointing=True)
    config = train_config(trial, dp_degree=8, precision="bf16")
    assert (config.stage, config.micro_batch_size, config.gradient_accumulation_steps) == (3, 4, 2)
    assert config.reduce_bucket_size == 50_000_000 and config.overlap_comm is False
    assert config.offload_optimizer and not config.offload_param and config.activation_checkpointing
    auto = train_config(Trial(2, 1), dp_degree=2, precision="fp32", knobs={"reduce_bucket_size": None})
    assert auto.reduce_bucket_size == 500_000_000 and not auto.overlap
    nvme = train_config(Trial(3, 4, offload_optimizer="nvme", offload_param="nvme"), dp_degree=8, precision="bf16")
    assert nvme.offload_optimizer and nvme.offload_optimizer_nvme and nvme.swaps_optimizer_states
    assert nvme.offload_param and nvme.offload_param_nvme and nvme.swaps_parameters
    assert not config.offload_optimizer_nvme


def test_a_profiles_nvme_rates_reach_the_model():
    spec = hardware_spec(load_profile("hgx-h200-141gb"))
    assert (spec.nvme_read_bytes_per_s, spec.nvme_write_bytes_per_s) == (46e9, 26e9)
    assert hardware_spec(load_profile("dgx-a100-80gb")).nvme_read_bytes_per_s is None


def test_a_shipped_preset_on_a_shipped_profile_estimates():
    e = estimate(model_spec(load_workload("gpt2-medium")), hardware_spec(load_profile("dgx-h100-80gb")),
                 train_config(Trial(2, 8), dp_degree=8, precision="bf16"))
    assert e.feasible and e.time.step_s > 0 and e.metrics.throughput_samples_per_s > 0


def test_a_gpu_profile_calibrated_without_engines_takes_the_spec_engine_costs():
    """Calibrated without engines and with none learnt, DeepSpeed's costs are unknown, not free: on a GPU
    the spec profiles' published estimates stand in; a CPU profile, or one with any engine cost, keeps its own."""
    import dataclasses

    from simtune.hardware.profile import FrameworkProfile
    from simtune.hardware.spec import ENGINE_COSTS
    from simtune.model.adapters import spec_engine_costs_stand_in

    spec = load_profile("hgx-h200-141gb")
    dispatch_only = FrameworkProfile(kind="measured", forward_kernel_s=11e-6, backward_kernel_s=25e-6,
                                     zero3_module_s=0.0, reduce_bucket_s=0.0, gradient_hook_s=0.0, engine_step_s=0.0)
    calibrated = dataclasses.replace(spec, framework=dispatch_only)
    assert spec_engine_costs_stand_in(calibrated)
    framework = hardware_spec(calibrated).framework
    assert framework.forward_kernel_s == 11e-6 and framework.backward_kernel_s == 25e-6  # its own dispatch
    assert all(getattr(framework, key) == value for key, value in ENGINE_COSTS.items())
    learnt = dataclasses.replace(calibrated, framework=dataclasses.replace(dispatch_only, zero3_module_s=4e-4))
    assert not spec_engine_costs_stand_in(learnt)
    assert hardware_spec(learnt).framework.zero3_module_s == 4e-4 and hardware_spec(learnt).framework.engine_step_s == 0
    cpu = dataclasses.replace(calibrated, device=dataclasses.replace(spec.device, kind="cpu"))
    assert not spec_engine_costs_stand_in(cpu)
    assert hardware_spec(spec).framework.zero3_module_s == ENGINE_COSTS["zero3_module_s"]  # the spec's own


def test_the_host_torch_adamw_rate_is_the_profiles_host_fit():
    """A GPU calibration times torch's AdamW on host tensors; a CPU profile's own for-loop fit is that;
    spec profiles have none."""
    from pathlib import Path

    from simtune.model.adapters import host_torch_adamw_rate

    kit = Path(__file__).resolve().parents[2] / "benchmarks/results/gpu/h200-2026-12-04-kit/h200-141gb-1gpu.json"
    h200 = load_profile(str(kit))
    assert host_torch_adamw_rate(h200) == h200.optimizer.fits["torch_adamw_foreach_host"].s_per_param
    assert hardware_spec(h200).host_torch_adamw_s_per_param == host_torch_adamw_rate(h200)
    assert host_torch_adamw_rate(load_profile("hgx-h200-141gb")) is None


def test_the_host_optimizer_is_named_as_its_rate_is_chosen():
    """torch's AdamW where DeepSpeed runs it (torch_adam) and the profile measured it on the host,
    else DeepSpeedCPUAdam: measured, or a spec profile's derived rate."""
    from pathlib import Path

    from simtune.model.adapters import host_optimizer_fit

    kit = Path(__file__).resolve().parents[2] / "benchmarks/results/gpu/h200-2026-12-04-kit/h200-141gb-1gpu.json"
    h200 = load_profile(str(kit))
    assert host_optimizer_fit(h200, torch_adamw=True) == "torch_adamw_foreach_host"
    assert host_optimizer_fit(h200, torch_adamw=False) == "deepspeed_cpu_adam"
    assert host_optimizer_fit(load_profile("hgx-h200-141gb"), torch_adamw=True) == "deepspeed_cpu_adam"


def test_plain_kernels_run_at_twice_the_copy_rate_within_the_device_memory():
    """A copy of N bytes reads N and writes N: the calibration's device-to-device copy (CUDA) or
    RAM-to-RAM copy (CPU) gives the rate of kernels without arithmetic; spec profiles have none."""
    import dataclasses

    from simtune.hardware.profile import CopyPoint, Stats
    from simtune.model.adapters import plain_bandwidth

    def point(direction: str, nbytes: int, seconds: float) -> CopyPoint:
        return CopyPoint(direction, nbytes, Stats(min_s=seconds, median_s=seconds, max_s=seconds, repeats=3))

    spec = load_profile("dgx-a100-80gb")
    assert plain_bandwidth(spec) is None
    assert hardware_spec(spec).plain_bandwidth() == hardware_spec(spec).streaming_bytes_per_s
    # 1 ms of latency, then 1e9 bytes copied a second: 2e9 bytes moved a second
    copies = (point("h2d", 2**24, 1.0), point("d2d", 10**6, 0.002), point("d2d", 10**8, 0.101))
    measured = dataclasses.replace(spec, offload=dataclasses.replace(spec.offload, points=copies))
    assert plain_bandwidth(measured) == pytest.approx(2e9)
    hw = hardware_spec(measured)
    assert hw.plain_bandwidth() == pytest.approx(2e9)


def test_a_fit_of_another_algorithm_is_not_taken_for_the_adamw_rate():
    import dataclasses

    from simtune.errors import ProfileError
    from simtune.hardware.profile import OptimizerFit
    from simtune.hardware.registry import load_profile
    from simtune.model.adapters import hardware_spec
    from simtune.model.inputs import AlgorithmRate

    base = load_profile("dgx-a100-80gb")
    sgd = OptimizerFit("torch_sgd_foreach", "cuda", 1e-5, 1e-12, 1.0, ())
    profile = dataclasses.replace(base, optimizer=dataclasses.replace(
        base.optimizer, fits={**base.optimizer.fits, "torch_sgd_foreach": sgd}))
    with pytest.raises(ProfileError, match="timed sgd, not AdamW"):
        hardware_spec(profile, "torch_sgd_foreach")
    spec = hardware_spec(profile, "torch_adamw_foreach")
    assert spec.algorithm_rates == (AlgorithmRate("sgd", 1e-12, sgd.zero_state_s_per_param),)
    assert hardware_spec(profile).optimizer_impl != "torch_sgd_foreach"  # the fastest AdamW fit
    assert hardware_spec(profile, "torch_adamw_fused").algorithm_rates == ()  # timed as foreach only
    with pytest.raises(ProfileError, match="names 'rmsprop'"):
        dataclasses.replace(spec, algorithm_rates=(AlgorithmRate("rmsprop", 1e-12),))
