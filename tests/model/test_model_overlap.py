"""What a collective beside the compute takes from it: the SMs NCCL holds or the memory bandwidth
its traffic takes, whichever is larger."""

import dataclasses

import pytest

from simtune.model.comm_time import communication
from simtune.model.inputs import CollectiveCost, Collectives, TrainConfig
from simtune.model.overlap import (HBM_BYTES_PER_BUS_BYTE, LARGEST_SHARE, collective_share, memory_share,
                                   phase_shares, side_by_side)
from simtune.model.shards import shards
from simtune.model.step_time import estimate_time

NODE = dict(stage=3, micro_batch_size=4, dp_degree=8, overlap_comm=True)


def links(bandwidth: float, latency_s: float = 20e-6) -> Collectives:
    link = CollectiveCost(latency_s=latency_s, bandwidth_bytes_per_s=bandwidth)
    return Collectives(link, link, link)


def test_the_phase_runs_the_compute_slowed_while_all_but_the_last_call_run_beside_it():
    assert side_by_side(10.0, 4.0, 1.0, 0.2) == pytest.approx(10.0 + 0.2 * 3.0 + 1.0)  # compute-bound
    assert side_by_side(2.0, 9.0, 1.0, 0.2) == pytest.approx(8.0 + 1.0)  # the slowed compute still hides
    assert side_by_side(5.0, 0.0, 0.0, 0.5) == 5.0
    # collectives a little longer than the compute: it runs at half speed for all of their 5 s
    assert side_by_side(4.0, 6.0, 1.0, 0.5) == pytest.approx(4.0 + 0.5 * 5.0 + 1.0)
    assert side_by_side(4.0, 9.0, 0.0, 0.5) == pytest.approx(9.0)  # its 8 s at half speed end first


def test_within_a_node_the_memory_traffic_takes_more_than_the_sms(make_hardware):
    # an A100-like node: 240 GB/s of bus bandwidth against 1.6 TB/s that kernels stream
    hw = make_hardware(collectives=links(240e9), streaming_bytes_per_s=1.6e12, collective_compute_share=24 / 108)
    c = TrainConfig(**NODE)
    assert memory_share(hw, c) == pytest.approx(HBM_BYTES_PER_BUS_BYTE * 240e9 / 1.6e12)
    assert collective_share(hw, c) == pytest.approx(0.45)


def test_a_ring_over_a_slow_network_leaves_the_sms_share(make_hardware):
    hw = make_hardware(collectives=links(240e9), inter_node_collectives=links(12.5e9), ranks_per_node=8, nodes=2,
                       streaming_bytes_per_s=1.6e12, collective_compute_share=24 / 108)
    within, across = TrainConfig(**NODE), TrainConfig(**{**NODE, "dp_degree": 16})
    assert memory_share(hw, across) == pytest.approx(3 * 12.5e9 / 1.6e12)
    assert collective_share(hw, across) == pytest.approx(24 / 108)
    assert collective_share(hw, within) == pytest.approx(0.45)


def test_no_share_without_a_collective_or_a_streaming_rate_and_never_the_whole_device(make_hardware):
    hw = make_hardware(collectives=links(240e9), streaming_bytes_per_s=1.6e12, collective_compute_share=0.1)
    assert memory_share(hw, TrainConfig(**{**NODE, "dp_degree": 1})) == 0.0
    unknown = dataclasses.replace(hw, streaming_bytes_per_s=None)
    assert collective_share(unknown, TrainConfig(**NODE)) == pytest.approx(0.1)
    slow_memory = dataclasses.replace(hw, streaming_bytes_per_s=100e9)  # 3 x 240 GB/s is more than it has
    assert collective_share(slow_memory, TrainConfig(**NODE)) == LARGEST_SHARE


def test_the_memory_share_slows_the_overlapped_step_and_only_where_overlap_runs(gpt2, make_hardware, monkeypatch):
    import simtune.model.overlap as overlap

    hw = make_hardware(collectives=links(240e9, latency_s=0.0), streaming_bytes_per_s=1.6e12,
                       collective_compute_share=24 / 108)
    c, serial = TrainConfig(**NODE), TrainConfig(**{**NODE, "overlap_comm": False})
    memory, memory_serial = estimate_time(gpt2, hw, c), estimate_time(gpt2, hw, serial)
    monkeypatch.setattr(overlap, "HBM_BYTES_PER_BUS_BYTE", 0.0)  # the SMs' share alone
    sms, sms_serial = estimate_time(gpt2, hw, c), estimate_time(gpt2, hw, serial)
    assert memory.step_s > sms.step_s and memory.hidden_comm_s < sms.hidden_comm_s
    # what overlap hides shrinks by no more than the extra share of what ran beside the compute
    assert memory.step_s - sms.step_s <= (0.45 - 24 / 108) * (sms.param_gather_s + sms.grad_reduce_s) + 1e-12
    assert memory_serial.step_s == sms_serial.step_s


def test_collectives_that_mostly_wait_on_latency_take_less_memory(gpt2, make_hardware):
    """GPT-2's ZeRO-3 gathers are one call per tensor of at most a few MB: at 20 us a call their
    time is mostly latency, which holds NCCL's SMs but moves few bytes."""
    c = TrainConfig(**NODE)
    for latency_s, expect_memory in ((0.0, True), (200e-6, False)):
        hw = make_hardware(collectives=links(240e9, latency_s), streaming_bytes_per_s=1.6e12,
                           collective_compute_share=24 / 108)
        comm = communication(gpt2, shards(gpt2, c), hw, c)
        shares = phase_shares(gpt2, shards(gpt2, c), hw, c, comm)
        if expect_memory:
            assert shares.forward == shares.backward == pytest.approx(0.45)
        else:
            assert 24 / 108 <= shares.forward < 0.45 and 24 / 108 <= shares.backward < 0.45
    assert collective_share(hw, c, moving=0.5) == pytest.approx(max(24 / 108, 0.225))
