"""Which link a ring crosses and what it costs (simtune.model.links), with hand-derived numbers."""

import pytest

from simtune.errors import ProfileError
from simtune.model.comm_time import allreduce_factor, collective_s
from simtune.model.inputs import CollectiveCost, Collectives
from simtune.model.links import ring_collectives, slower_link, slower_links, spans_nodes

NVLINK = CollectiveCost(latency_s=20e-6, bandwidth_bytes_per_s=240e9)
NETWORK = CollectiveCost(latency_s=50e-6, bandwidth_bytes_per_s=20e9)


def same(cost: CollectiveCost) -> Collectives:
    return Collectives(cost, cost, cost)


def test_a_group_spans_nodes_once_it_holds_more_ranks_than_a_node():
    assert not spans_nodes(8, 8) and spans_nodes(9, 8) and spans_nodes(2, 1)


def test_the_slower_link_takes_the_higher_latency_and_the_lower_bandwidth_of_each():
    odd = CollectiveCost(latency_s=100e-6, bandwidth_bytes_per_s=300e9)  # slower to start, faster per byte
    assert slower_link(NVLINK, odd) == CollectiveCost(latency_s=100e-6, bandwidth_bytes_per_s=240e9)
    mixed = slower_links(Collectives(NVLINK, odd, NETWORK), same(NVLINK))
    assert mixed.allreduce == NVLINK and mixed.reduce_scatter == NETWORK
    assert mixed.allgather == CollectiveCost(100e-6, 240e9)


def test_a_ring_over_two_nodes_of_eight_runs_at_the_network_speed(make_hardware):
    hw = make_hardware(collectives=same(NVLINK), inter_node_collectives=same(NETWORK), ranks_per_node=8, nodes=2)
    assert ring_collectives(hw, 8) == same(NVLINK)
    across = ring_collectives(hw, 16)
    assert across == same(NETWORK)
    # 1 GB of gradients, one call over 16 ranks: 50 us + 2 * 15/16 * 1e9 / 20e9 = 93.8 ms
    assert collective_s(across.allreduce, allreduce_factor(16), 1e9, 1) == pytest.approx(50e-6 + 0.09375)


def test_a_profile_with_only_one_kind_of_link_serves_both(make_hardware):
    one_per_node = make_hardware(collectives=None, inter_node_collectives=same(NETWORK), ranks_per_node=1, nodes=2)
    assert ring_collectives(one_per_node, 2) == same(NETWORK)
    packed = make_hardware(collectives=None, inter_node_collectives=same(NETWORK), ranks_per_node=2, nodes=1)
    assert ring_collectives(packed, 2) == same(NETWORK)  # within a node: the slower link stands in
    one_node = make_hardware(collectives=same(NVLINK), inter_node_collectives=None, ranks_per_node=8, nodes=2)
    assert ring_collectives(one_node, 16) == same(NVLINK)  # not measured over nodes: optimistic
    with pytest.raises(ProfileError, match="no collective costs"):
        ring_collectives(make_hardware(collectives=None), 2)
