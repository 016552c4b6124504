"""Which link a collective's ring crosses: within a node, or between nodes.

A ring over a group of ranks passes every byte through each member's link (NCCL's rings and
gloo's alike), so a ring that leaves a node runs at the speed of the slowest link it crosses.
nccl-tests (NVIDIA/nccl-tests ``doc/PERFORMANCE.md``) defines the bus bandwidth so that it is
comparable across rank counts and "should reflect the speed of the hardware bottleneck: NVLink,
PCI, QPI, or network": ``busbw = algbw x 2(n-1)/n`` for allreduce and ``(n-1)/n`` for allgather
and reduce-scatter of the total array. A call over ``n`` ranks spanning nodes therefore takes

    t = max(latency_intra, latency_inter) + f(n) * S / min(busbw_intra, busbw_inter)

with ``f(n)`` the group's own ring factor: for ``n = nodes x g`` GPUs the factor of all n ranks,
at the inter-node bus bandwidth (spec profiles: the node's NICs together, since NCCL runs one ring
per NIC with its share of the buffer; a measured profile's inter-node fit comes from a world
spanning nodes, contention of all ranks on the network included).
"""

from __future__ import annotations

import dataclasses

from simtune.errors import ProfileError
from simtune.model.inputs import CollectiveCost, Collectives, HardwareSpec


def spans_nodes(extent: int, ranks_per_node: int) -> bool:
    """Whether a group spread over ``extent`` consecutive ranks (the data-parallel group over
    dp x mp ranks) reaches beyond one node of ``ranks_per_node`` ranks."""
    return extent > ranks_per_node


def slower_link(a: CollectiveCost, b: CollectiveCost) -> CollectiveCost:
    """The cost of a ring through both links: the higher latency and the lower bus bandwidth (with
    that link's large-message regime)."""
    slower = a if a.bandwidth_bytes_per_s <= b.bandwidth_bytes_per_s else b
    return dataclasses.replace(slower, latency_s=max(a.latency_s, b.latency_s))


def slower_links(a: Collectives, b: Collectives) -> Collectives:
    """:func:`slower_link` for each of the collectives ZeRO issues."""
    return Collectives(allreduce=slower_link(a.allreduce, b.allreduce),
                       allgather=slower_link(a.allgather, b.allgather),
                       reduce_scatter=slower_link(a.reduce_scatter, b.reduce_scatter))


def ring_collectives(hw: HardwareSpec, extent: int) -> Collectives:
    """The costs of a ring over a group spread across ``extent`` consecutive ranks.

    - within one node: the intra-node costs (the inter-node ones when only those are known, as
      after a calibration with one rank per node: a pessimistic stand-in);
    - spanning nodes: bound by the slowest link, :func:`slower_links` of both; the inter-node
      costs alone when the profile has no intra-node ones, and the intra-node costs alone when it
      has no inter-node ones (a one-node profile laid out over nodes: optimistic, since the
      network is slower than the node's links; calibrate over nodes to know it).
    """
    intra, inter = hw.collectives, hw.inter_node_collectives
    if spans_nodes(extent, hw.ranks_per_node):
        chosen = slower_links(intra, inter) if intra is not None and inter is not None else (inter or intra)
    else:
        chosen = intra or inter
    if chosen is None:
        raise ProfileError("The hardware profile has no collective costs, so more than one rank "
                           "cannot be estimated (calibrate on several ranks).")
    return chosen
