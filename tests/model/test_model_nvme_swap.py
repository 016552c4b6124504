"""ZeRO-Infinity's NVMe offload: what stage 3 swaps each step, what the host holds for it, and
that stages 1/2 take an NVMe device as host memory (simtune.model.nvme_swap)."""

from __future__ import annotations

import dataclasses

import pytest

from simtune.errors import ConfigError
from simtune.model.estimate import estimate
from simtune.model.inputs import ModelSpec, TrainConfig
from simtune.model.memory_states import host_bytes
from simtune.model.memory_buffers import fetched_elements
from simtune.model.adapters import model_spec
from simtune.model.nvme_swap import (NvmeTraffic, exposed_swap_s, nvme_parameter_partitions, nvme_rates_missing,
                                     nvme_swap_s, nvme_traffic, optimizer_swap_bytes, parameter_buffer_size_short,
                                     parameter_buffers_exact, parameter_buffers_needed, parameter_buffers_short,
                                     parameter_buffers_why, parameter_swap_bytes, parameters_in_host_why,
                                     parameters_on_nvme, sub_groups, swap_buffers_needed, swap_buffers_short,
                                     swap_buffers_why)
from simtune.model.optimizer_time import host_step_s_per_param, offload_transfer_s
from simtune.model.shards import shards
from simtune.nvme_settings import NvmeSwapSettings
from simtune.optimizers import OptimizerChoice
from simtune.workloads.presets import workload_from_config

GIB = 2**30


def model(parameters: int) -> ModelSpec:
    """A model of 64 equal tensors (no padding at 8 ranks)."""
    return ModelSpec(parameter_count=parameters, num_layers=32, hidden_size=4096, num_heads=32,
                     intermediate_size=16384, vocab_size=32000, seq_len=2048, flops_per_sample_forward=6.0 * parameters,
                     largest_layer_params=parameters // 64, param_tensor_numels=(parameters // 64,) * 64)


def nvme(stage=3, **fields) -> TrainConfig:
    return TrainConfig(stage=stage, micro_batch_size=1, dp_degree=8, precision="bf16", offload_optimizer=True,
                       offload_optimizer_nvme=True, **fields)


def test_stage3_swaps_32_bytes_per_adam_element_each_way_at_the_nodes_rate_over_its_ranks(make_hardware):
    m, c = model(1_600_000_000), nvme()
    s = shards(m, c)
    assert s.partition == 200_000_000
    # master and two moments (12 bytes) and the fp32 gradient (4) read, and as many written
    assert optimizer_swap_bytes(m, c) == 16 * s.partition
    hw = make_hardware(ranks_per_node=8, nvme_read_bytes_per_s=40e9, nvme_write_bytes_per_s=20e9)
    waited = nvme_swap_s(m, s, hw, c, host_step_s_per_param=1e-9)
    assert waited == pytest.approx(16 * s.partition * 8 / 40e9 + 16 * s.partition * 8 / 20e9)
    cpu = dataclasses.replace(c, offload_optimizer_nvme=False)
    assert offload_transfer_s(m, s, hw, c) - offload_transfer_s(m, s, hw, cpu) == pytest.approx(waited)
    # one state fewer (Adagrad) swaps 4 bytes less each way
    adagrad = dataclasses.replace(c, optimizer=OptimizerChoice("adagrad"))
    assert optimizer_swap_bytes(m, adagrad) == 12 * s.partition
    # gradient fragments under 1 MiB (262,144 fp32 elements) stay in memory: 64 tensors of 1M
    # elements leave each of 8 ranks fragments of 125,000
    small = model(64_000_000)
    assert optimizer_swap_bytes(small, c) == 12 * shards(small, c).partition


def test_the_host_holds_four_sub_group_buffers_and_the_gradient_partition_instead_of_the_states():
    m = model(1_600_000_000)
    cpu = dataclasses.replace(nvme(), offload_optimizer_nvme=False)
    s = shards(m, cpu)
    # DeepSpeed's default sub-group (1e9 elements) holds the whole 2e8-element partition: 4 buffers
    # of it in fp32 are the 16 bytes per element CPU offload keeps, so the default saves nothing
    assert host_bytes(s, nvme()) == 4 * 4 * s.partition + 2 * s.partition == host_bytes(s, cpu)
    # sub-groups close once they reach 1e7 elements: four 3,125,000-element fragments each
    small = nvme(sub_group_size=10_000_000)
    assert host_bytes(shards(m, small), small) == 4 * 4 * 12_500_000 + 2 * s.partition
    assert host_bytes(shards(m, small), small) < host_bytes(s, cpu) / 5  # the b-byte gradient partition stays
    # the config's buffer_count sets how many buffers
    eight = dataclasses.replace(small, nvme=NvmeSwapSettings(optimizer_buffer_count=8))
    assert host_bytes(shards(m, eight), eight) - host_bytes(shards(m, small), small) == 4 * 4 * 12_500_000


def test_sub_groups_close_at_sub_group_size_and_count_the_gradients_they_swap():
    m = model(1_600_000_000)
    c = nvme(sub_group_size=10_000_000)
    groups = sub_groups(m, c)
    assert groups == ((12_500_000, 12_500_000),) * 16
    assert sum(n for n, _ in groups) == shards(m, c).partition
    # 1M-element tensors leave 125,000-element fragments, under the 1 MiB block: none swapped
    assert {g for _, g in sub_groups(model(64_000_000), c)} == {0}


def test_a_pipelined_swapper_hides_transfers_behind_the_steps_of_other_sub_groups():
    reads, writes, steps = [2.0] * 4, [1.0] * 4, [3.0] * 4
    plain = exposed_swap_s(reads, writes, steps, read_ahead=False, write_behind=False)
    assert plain == pytest.approx(sum(reads) + sum(writes))
    both = exposed_swap_s(reads, writes, steps, read_ahead=True, write_behind=True)
    # steps longer than the transfers beside them: the first read and the last write remain
    assert both == pytest.approx(2.0 + 1.0)
    read_ahead = exposed_swap_s(reads, writes, steps, read_ahead=True, write_behind=False)
    assert both < read_ahead < plain
    # the drive serves one transfer at a time: where transfers outlast the steps the step takes
    # the drive's time, the steps hidden behind it
    slow = exposed_swap_s([5.0] * 4, [5.0] * 4, [1.0] * 4, read_ahead=True, write_behind=True)
    assert slow == pytest.approx(5.0 * 8 - 4 * 1.0)
    # one sub-group overlaps nothing whatever the flags
    assert exposed_swap_s([2.0], [1.0], [3.0], read_ahead=True, write_behind=True) == pytest.approx(3.0)


def test_the_config_pipeline_flags_shorten_the_step_only_with_several_sub_groups(make_hardware):
    m = model(1_600_000_000)
    hw = make_hardware(ranks_per_node=8, nvme_read_bytes_per_s=40e9, nvme_write_bytes_per_s=20e9)
    pipelined = NvmeSwapSettings(pipeline_read=True, pipeline_write=True, optimizer_buffer_count=12)
    for sub_group_size, shorter in ((10_000_000, True), (1_000_000_000, False)):
        c = nvme(sub_group_size=sub_group_size)
        s = shards(m, c)
        rate = host_step_s_per_param(hw, c)
        waits = [nvme_swap_s(m, s, hw, config, host_step_s_per_param=rate)
                 for config in (c, dataclasses.replace(c, nvme=pipelined))]
        assert (waits[1] < 0.9 * waits[0]) is shorter


def test_parameters_from_the_first_sub_group_beyond_max_in_cpu_live_on_nvme_and_are_read_at_every_fetch():
    m = model(70_000_000_000)
    c = nvme(offload_param=True, offload_param_nvme=True, gradient_accumulation_steps=2)
    s = shards(m, c)
    piece = s.partition // 64
    settings = NvmeSwapSettings()
    # the first sub-group (8 tensors, 1.09e9 elements) does not fit 1e9 elements of host memory,
    # so every partition lives on NVMe, not only those beyond the first 1e9 elements
    assert parameters_on_nvme(m, c) == s.partition
    # sub-groups of one tensor: the first 7 (957M elements) fit, the other 57 do not
    assert parameters_on_nvme(m, dataclasses.replace(c, sub_group_size=10**8)) == 57 * piece
    # each is read at its forward and its backward fetch, but the last one stays gathered in between
    # (within stage3_max_reuse_distance of its backward use); the step writes them once
    read, written = parameter_swap_bytes(m, c)
    assert written == 2 * s.partition
    assert read == 2 * 2 * (2 * s.partition - piece)
    kept = dataclasses.replace(c, stage3_max_reuse_distance=10**12)
    assert parameter_swap_bytes(m, kept)[0] == 2 * 2 * s.partition
    # checkpointing adds no fetch (the recomputing forward gathers what backward then uses)
    checkpointed = dataclasses.replace(c, activation_checkpointing=True)
    assert fetched_elements(m, s, checkpointed) == fetched_elements(m, s, c)
    buffers = settings.param_buffer_count * settings.param_buffer_size
    optimizer_part = host_bytes(s, dataclasses.replace(c, offload_param_nvme=False)) - 2 * s.partition
    assert host_bytes(s, c) == optimizer_part + 2 * (settings.max_in_cpu + buffers)
    # a partition within max_in_cpu stays on the host: nothing read or written
    assert parameter_swap_bytes(model(1_600_000_000), c) == (0, 0)
    # partitions under 1 MiB (524,288 bf16 elements) stay in host memory: 64 tensors of 1M
    # elements leave each of 8 ranks 125,000
    assert parameters_on_nvme(model(64_000_000), dataclasses.replace(c, nvme=NvmeSwapSettings(max_in_cpu=0))) == 0


def wide_gpt2(**shape) -> ModelSpec:
    """The 13.2M-parameter GPT-2 shape of benchmarks/nvme_param_buffers.py (tied head)."""
    config = {"model_type": "gpt2", "vocab_size": 1024, "n_positions": 64, "n_embd": 512, "n_layer": 4,
              "n_head": 8, **shape}
    return model_spec(workload_from_config("wide", config, seq_len=64))


def params_on_nvme(**fields) -> TrainConfig:
    """Every parameter on NVMe (max_in_cpu 0) at stage 3 on 2 fp32 ranks."""
    settings = fields.pop("nvme", {})
    return TrainConfig(stage=3, micro_batch_size=1, dp_degree=2, precision="fp32", offload_optimizer=True,
                       offload_param=True, offload_param_nvme=True, nvme=NvmeSwapSettings(max_in_cpu=0, **settings),
                       **fields)


RELEASE_ALL = {"stage3_max_reuse_distance": 0, "stage3_max_live_parameters": 0, "stage3_prefetch_bucket_size": 0}


def test_parameter_swap_buffers_cover_the_partitions_kept_gathered_through_forward():
    m = wide_gpt2()
    # 13 partitions of 1 MiB or more per rank: the table and each layer's QKV and two MLP matrices
    parts = nvme_parameter_partitions(m, params_on_nvme())
    assert len(parts) == 13 and all(kept for _, _, kept in parts)
    # DeepSpeed's defaults keep all of them gathered from forward to backward: 13 held at once
    assert parameter_buffers_needed(m, params_on_nvme()) == 13
    assert parameter_buffers_short(m, params_on_nvme()) == (5, 13)
    # released after each use, one at a time; but transformers initialises the MLP's two
    # matrices together while the model is built, so 2
    released = params_on_nvme(**RELEASE_ALL)
    assert parameter_buffers_needed(m, released) == 2
    assert parameter_buffers_short(m, released) is None
    assert parameter_buffers_needed(dataclasses.replace(m, construction_gathers=()), released) == 1
    # a reuse distance of 6e6 keeps the last layer's three: 4 with the tied table's return for the head
    middle = params_on_nvme(stage3_max_reuse_distance=6_000_000, stage3_prefetch_bucket_size=0)
    assert sum(kept for _, _, kept in nvme_parameter_partitions(m, middle)) == 3
    assert parameter_buffers_needed(m, middle) == 4
    # the table, released, is read at both of its uses in each pass: 2 x 13 partitions + 2 tables
    # per micro-step (what benchmarks/results/param_swap_counts.txt counted)
    read, written = parameter_swap_bytes(m, released)
    table = 1024 * 512 // 2
    assert read == 4 * (2 * written // 4 + 2 * table)
    # with max_in_cpu's default nothing stays on NVMe, but the model is built on it: 2
    host = dataclasses.replace(released, nvme=NvmeSwapSettings())
    assert parameters_on_nvme(m, host) == 0 and parameter_buffers_needed(m, host) == 2


def test_kept_parameters_with_prefetch_need_exactly_their_count_and_buffers_the_largest_partition():
    m = wide_gpt2()
    exact = params_on_nvme(nvme={"param_buffer_count": 14})
    assert parameter_buffers_exact(m, exact) and parameter_buffers_short(m, exact) == (14, 13)
    assert "exactly 13" in parameter_buffers_why(m, exact)
    assert parameter_buffers_short(m, params_on_nvme(nvme={"param_buffer_count": 13})) is None
    no_prefetch = params_on_nvme(stage3_prefetch_bucket_size=0, nvme={"param_buffer_count": 20})
    assert not parameter_buffers_exact(m, no_prefetch) and parameter_buffers_short(m, no_prefetch) is None
    assert "at least 13" in parameter_buffers_why(m, params_on_nvme())
    # the MLP's matrices have partitions of 524,288 fp32 elements: the buffers must hold them
    assert parameter_buffer_size_short(m, params_on_nvme(nvme={"param_buffer_size": 524_287})) == (524_287, 524_288)
    assert parameter_buffer_size_short(m, params_on_nvme(nvme={"param_buffer_size": 524_288})) is None
    # whatever max_in_cpu says: every partition of 1 MiB or more is placed in one as the model is built
    assert parameter_buffer_size_short(m, dataclasses.replace(
        params_on_nvme(), nvme=NvmeSwapSettings(param_buffer_size=10**5))) == (10**5, 524_288)


def test_stages_1_and_2_offload_to_host_memory_whatever_the_device(gpt2, make_hardware):
    hw = make_hardware(nvme_read_bytes_per_s=40e9, nvme_write_bytes_per_s=20e9)
    for stage in (1, 2):
        cpu = TrainConfig(stage=stage, micro_batch_size=4, dp_degree=8, offload_optimizer=True)
        swapped = dataclasses.replace(cpu, offload_optimizer_nvme=True)
        assert not swapped.swaps_optimizer_states
        assert estimate(gpt2, hw, swapped) == estimate(gpt2, hw, cpu)


def test_a_profile_without_nvme_rates_costs_no_swap_and_says_which_rates_it_lacks(make_hardware):
    c, m = nvme(), model(1_600_000_000)
    s = shards(m, c)
    assert nvme_swap_s(m, s, make_hardware(), c, host_step_s_per_param=1e-9) == 0.0
    assert nvme_rates_missing(make_hardware(), c) == "read and write rates"
    assert nvme_rates_missing(make_hardware(nvme_read_bytes_per_s=28e9), c) == "write rate"
    assert nvme_rates_missing(make_hardware(nvme_read_bytes_per_s=28e9, nvme_write_bytes_per_s=9e9), c) is None
    assert nvme_rates_missing(make_hardware(), dataclasses.replace(c, stage=2)) is None


def test_nvme_is_a_kind_of_offload():
    with pytest.raises(ConfigError, match="set offload_optimizer too"):
        TrainConfig(stage=3, micro_batch_size=1, offload_optimizer_nvme=True)
    with pytest.raises(ConfigError, match="set offload_param too"):
        TrainConfig(stage=3, micro_batch_size=1, offload_param_nvme=True)


def _async_io_unavailable() -> str | None:
    """Why DeepSpeed's async_io op cannot be built here, or None: it compiles against libaio's
    header and links its library (asked without importing DeepSpeed, which would pick this
    process's accelerator)."""
    import ctypes.util
    from pathlib import Path

    if Path("/usr/include/libaio.h").exists() and ctypes.util.find_library("aio"):  # Debian's libaio-dev
        return None
    return "DeepSpeed's async_io op needs libaio (apt-get install libaio-dev; .ci/services/libaio.sh)"


@pytest.mark.slow
@pytest.mark.xdist_group("launches-2")  # nothing timed: beside the timed launches (tests/conftest.py)
def test_deepspeed_swaps_to_nvme_what_the_model_counts(tmp_path):
    """Two CPU ranks train gpt2-tiny-heavy at stage 3 with the optimizer offloaded to NVMe (a folder
    of this machine's disk): each rank's swap files are its fp32 master and two moments over its
    partition, and the gradient fragments of 1 MiB and more (the position table's), as the model
    counts them."""
    import json
    import os
    from pathlib import Path

    from simtune.model.adapters import model_spec
    from simtune.model.nvme_swap import swapped_gradient_elements
    from simtune.runner.launcher import run_on_cpu_ranks
    from simtune.workloads import load_workload

    reason = _async_io_unavailable()
    if reason:
        pytest.skip(reason)
    swap = tmp_path / "nvme"
    swap.mkdir()
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme", "nvme_path": str(swap)}},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}}
    (tmp_path / "ds.json").write_text(json.dumps(config))
    program = Path(__file__).resolve().parents[2] / "simtune" / "workloads" / "train.py"
    done = run_on_cpu_ranks([str(program), "--deepspeed", str(tmp_path / "ds.json"), "--model", "gpt2-tiny-heavy",
                             "--seq-len", "64", "--steps", "2"], 2, timeout_s=300,
                            env={**os.environ, "LOCAL_SIZE": "2"}, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

    m = model_spec(load_workload("gpt2-tiny-heavy", seq_len=64))
    c = TrainConfig(stage=3, micro_batch_size=1, dp_degree=2, precision="fp32", offload_optimizer=True,
                    offload_optimizer_nvme=True)
    s = shards(m, c)
    gradient_elements = swapped_gradient_elements(m, c)
    assert gradient_elements > 0  # the position table's 4,194,304-element fragment
    for rank in (0, 1):
        files = {f.name: f.stat().st_size for f in (swap / "zero_stage_3" / "optimizer" / f"rank{rank}").iterdir()}
        gradients = sum(size for name, size in files.items() if "_gradient_" in name)
        states = {name: size for name, size in files.items() if "_gradient_" not in name}
        assert gradients == 4 * gradient_elements, files
        # the master and each moment: the partition in fp32, aligned to 1 KiB per sub-group
        assert len(states) == 3 and all(abs(size - 4 * s.partition) <= 1024 for size in states.values()), (
            files, s.partition)
        assert optimizer_swap_bytes(m, c) == 3 * 4 * s.partition + gradients


def test_the_swapper_holds_two_plus_s_buffers_per_sub_group_in_flight():
    """2 + S buffers a sub-group (master, states, gradients); a read ahead and a write behind each
    keep one more sub-group in flight (benchmarks/results/nvme_swap_buffers.txt)."""
    m = model(1_600_000_000)
    several = nvme(sub_group_size=10_000_000)
    for read, write, needed in ((False, False, 4), (True, False, 8), (False, True, 8), (True, True, 12)):
        c = dataclasses.replace(several, nvme=NvmeSwapSettings(pipeline_read=read, pipeline_write=write))
        assert swap_buffers_needed(m, c) == needed
    both = dataclasses.replace(several, nvme=NvmeSwapSettings(pipeline_read=True, pipeline_write=True))
    assert swap_buffers_why(m, both) == "16 optimizer sub-groups of 2 + 2 buffers, pipeline_read and pipeline_write"
    # one sub-group: nothing read ahead or written behind
    one = dataclasses.replace(both, sub_group_size=10**9)
    assert swap_buffers_needed(m, one) == 4 and swap_buffers_why(m, one) == "1 optimizer sub-group of 2 + 2 buffers"
    adagrad = dataclasses.replace(both, optimizer=OptimizerChoice("adagrad"))
    assert swap_buffers_needed(m, adagrad) == 9
    # DeepSpeed's 4 buffers fall short of the pipelined swapper, not of the default one
    assert swap_buffers_short(m, both) == (4, 12) and swap_buffers_short(m, several) is None
    enough = dataclasses.replace(both, nvme=dataclasses.replace(both.nvme, optimizer_buffer_count=12))
    assert swap_buffers_short(m, enough) is None
    assert swap_buffers_short(m, dataclasses.replace(both, offload_optimizer_nvme=False)) is None  # host memory


def test_the_traffic_record_gathers_what_a_rank_swaps_and_the_buffers_it_takes():
    m = wide_gpt2()
    released = dataclasses.replace(params_on_nvme(**RELEASE_ALL), offload_optimizer_nvme=True)
    traffic = nvme_traffic(m, released)
    assert (traffic.parameter_read_bytes, traffic.parameter_written_bytes) == parameter_swap_bytes(m, released)
    assert traffic.parameter_partitions == 13 and traffic.parameter_elements == parameters_on_nvme(m, released)
    assert traffic.optimizer_read_bytes == optimizer_swap_bytes(m, released)
    # the step writes master and moments back; the gradients went out at the end of backward
    assert traffic.optimizer_written_bytes == traffic.optimizer_read_bytes
    assert (traffic.optimizer_buffers_needed, traffic.parameter_buffers_needed) == (4, 2)
    assert not traffic.parameter_buffers_exact
    # nothing swapped: nothing counted
    host = nvme_traffic(m, dataclasses.replace(released, offload_optimizer_nvme=False, offload_param_nvme=False))
    assert host == NvmeTraffic(0, 0, 0, 0, 0, 0, 0, 0, False)


def test_where_no_parameter_lands_on_nvme_the_record_says_why():
    m = model(1_600_000_000)
    c = nvme(offload_param=True, offload_param_nvme=True)
    # 200M elements a rank: the default max_in_cpu of 1e9 holds them all
    assert parameters_on_nvme(m, c) == 0
    why = parameters_in_host_why(m, c)
    assert why == ("offload_param.max_in_cpu (1,000,000,000 elements) holds the rank's whole partition "
                   "(200,000,000) in host memory")
    assert nvme_traffic(m, c).parameters_in_host_why == why
    # beyond a max_in_cpu of 0, each of 64 tensors' 125,000-element pieces is under 1 MiB
    small = dataclasses.replace(c, nvme=NvmeSwapSettings(max_in_cpu=0))
    assert parameters_on_nvme(model(64_000_000), small) == 0
    assert parameters_in_host_why(model(64_000_000), small).startswith("each partition beyond offload_param.max_in_cpu "
                                                                     "is under 1 MiB or persistent")
    # some on NVMe, or none offloaded there: nothing to explain
    assert parameters_on_nvme(m, small) > 0 and parameters_in_host_why(m, small) == ""
    assert parameters_in_host_why(m, dataclasses.replace(c, offload_param_nvme=False)) == ""
