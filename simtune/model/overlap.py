"""Communication beside compute: what a collective running beside the compute takes from it.

While a collective runs beside the compute (``overlap_comm`` on hardware with streams), the
compute loses the larger of two shares of the device:

- the SMs NCCL's channels hold (``HardwareSpec.collective_compute_share``: a thread block per
  channel; 24 blocks of an H100's 132 SMs, 0.18);
- the memory bandwidth the collective's traffic takes. A ring moves ``busbw`` bytes a second
  in and out of each GPU, and each byte received is stored to memory and read back to be sent on,
  besides the reads and writes of the user's buffers: about three times ``busbw`` of HBM traffic
  (NCCL's maintainer in NVIDIA/nccl issue #1428: "at least 2x ... it can be 3x"). Over the
  bandwidth that kernels reach (the fp32 streaming rate):

      f = max(sm_share, HBM_BYTES_PER_BUS_BYTE x busbw_ring / streaming_bytes_per_s)

The ring's bus bandwidth is that of the links the data-parallel group crosses
(:func:`simtune.model.links.ring_collectives`): a group spanning nodes moves at the slower of the
node's links and the network, and takes that much less of the memory. On a DGX A100 (busbw 240
GB/s, streaming 1.63 TB/s) f = 0.44: compute beside a collective runs 1.79 times as long, where
Echo (arXiv 2412.12487, Figure 3) measured GPT-2's kernels under DDP on one 8-GPU A100 node at 1.70
on average and a user's GPT run on A100-SXM4-80GB (nccl issue #1428) a GEMM at 1.76 (2.08 ms
against 1.18) and attention at 1.83; a DGX H100 (360 GB/s, 2.68 TB/s) gives 0.40 (1.68 times), an
HGX H200 (360 GB/s, 3.84 TB/s) 0.28, a DGX-2 V100 (120 GB/s, 0.72 TB/s) 0.50. Smaller messages
than the large-message bus bandwidth assumes take less: Echo's GEMM beside a 25 MB all-reduce ran
1.27 times as long (Table 2). So each phase's memory share is scaled by the part of its
collectives' time that moves bytes, the rest being per-call latency, which holds the SMs but moves
little (:func:`phase_shares`):

    f_phase = max(sm_share, memory_share x bandwidth_s / (bandwidth_s + calls x latency_s))

The phase time is then :func:`side_by_side`.
"""

from __future__ import annotations

from dataclasses import dataclass

from simtune.model.comm_time import CommTimes, communication
from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig
from simtune.model.links import ring_collectives
from simtune.model.shards import Shards

HBM_BYTES_PER_BUS_BYTE = 3.0
"""Bytes of device memory traffic per byte of bus bandwidth a ring collective moves: the received
data stored and read back (2), and the user's buffers read or written (NVIDIA/nccl issue #1428)."""

LARGEST_SHARE = 0.9
"""The most of the device a collective is taken to hold: the compute beside it still moves."""


def memory_share(hw: HardwareSpec, c: TrainConfig) -> float:
    """The share of the memory bandwidth kernels reach that the data-parallel group's collectives
    take while they run; 0 where the streaming rate is unknown or no collective runs."""
    if c.dp_degree <= 1 or not hw.streaming_bytes_per_s or (hw.collectives is None
                                                          and hw.inter_node_collectives is None):
        return 0.0
    ring = ring_collectives(hw, c.dp_degree * c.mp_degree)
    return min(LARGEST_SHARE, HBM_BYTES_PER_BUS_BYTE * ring.allgather.bandwidth_bytes_per_s / hw.streaming_bytes_per_s)


def collective_share(hw: HardwareSpec, c: TrainConfig, moving: float = 1.0) -> float:
    """f above: the share of the device a collective running beside the compute takes, for
    collectives that spend ``moving`` of their time moving bytes at the bus bandwidth."""
    return max(hw.collective_compute_share, moving * memory_share(hw, c))


@dataclass(frozen=True)
class PhaseShares:
    """The share of the device the collectives beside each phase's compute take."""

    forward: float
    backward: float


def _moving(total_s: float, bandwidth_s: float) -> float:
    return min(1.0, bandwidth_s / total_s) if total_s > 0 else 1.0


def phase_shares(m: ModelSpec, s: Shards, hw: HardwareSpec, c: TrainConfig, comm: CommTimes) -> PhaseShares:
    """:func:`collective_share` of the forward's gathers and of the backward's reductions and
    gathers, each with the part of their time ``comm`` spends moving bytes."""
    sms, memory = hw.collective_compute_share, memory_share(hw, c)
    if memory <= sms:
        return PhaseShares(sms, sms)
    bytes_only = communication(m, s, hw, c, latency=False)
    backward = comm.reduce_per_micro_s + comm.reduce_at_boundary_s + comm.gather_backward_s
    backward_bytes = bytes_only.reduce_per_micro_s + bytes_only.reduce_at_boundary_s + bytes_only.gather_backward_s
    return PhaseShares(
        forward=max(sms, memory * _moving(comm.gather_forward_s, bytes_only.gather_forward_s)),
        backward=max(sms, memory * _moving(backward, backward_bytes)))


def side_by_side(compute_s: float, comm_s: float, last_call_s: float, share: float = 0.0) -> float:
    """One phase's time with ``comm_s`` of collectives beside ``compute_s`` of compute: all but the
    last call run beside it and the compute moves at ``1 - share`` of its speed for as long as they
    run; the last starts when the compute ends. The compute alone would take ``compute_s``; beside
    the collectives it takes up to ``compute_s / (1 - share)``, and each second the collectives run
    while it does costs it ``share`` of a second:

        phase_s = max(compute_s + share x min(beside_s, compute_s / (1 - share)), beside_s) + last_s

    with ``beside_s = comm_s - last_s``.
    """
    if comm_s <= 0.0:
        return compute_s
    last = min(last_call_s, comm_s)
    beside = comm_s - last
    slowed = beside if share >= 1.0 else min(beside, compute_s / (1.0 - share))
    return max(compute_s + share * slowed, beside) + last
