"""ZeRO-Infinity's NVMe offload at stage 3: what it swaps each step, and the host memory it holds.

As DeepSpeed 0.19.8 runs it (``deepspeed/runtime/swap_tensor``, ``runtime/zero/stage3.py``), per
rank, with P the rank's partition elements, S the optimizer's fp32 states per element (2 for
Adam) and b the bytes of a 16-bit parameter or gradient element:

- optimizer states (``offload_optimizer.device: nvme``): at the end of the last micro-step's
  backward the partition's gradients are cast to fp32 and written to NVMe; then, one sub-group
  (``sub_group_size`` elements) at a time, the fp32 master weights and states are read, the
  gradients read, the host optimizer steps, and master and states are written back
  (``PartitionedOptimizerSwapper``: each read and write waits, the default without
  ``pipeline_read`` / ``pipeline_write``). Per step:

      read  = 4 (1 + S) P + 4 G        write = 4 (1 + S) P + 4 G

  with G the gradient elements swapped: of each tensor's partition fragment, ceil(n / ranks)
  elements, only those of 1 MiB and more (the aio ``block_size``) go to NVMe, smaller ones stay in
  memory (``optimizer_utils.py``). 32 bytes each way per element for Adam where every fragment
  is that large. The host holds ``buffer_count`` (4) page-locked swap
  buffers of the largest sub-group's fp32 elements, and the b-byte gradient partition
  (``grad_accum_dtype``, the model's dtype by default), instead of the 4 (2 + S) P bytes of
  states that CPU offload keeps:

      host = 4 x 4 min(P, sub_group_size) + b P

- parameters (``offload_param.device: nvme``): the first ``max_in_cpu`` (1e9) partition elements
  are kept in a page-locked host buffer, so only the rest, P_n = max(0, P - 1e9), stays on NVMe.
  Every fetch of one of those reads its b-byte partition (forward and backward of every
  micro-step, and the recomputing forward under activation checkpointing), and the step writes the
  updated ones back once:

      read  = b P_n x passes x micro-steps        write = b P_n

  The host holds min(P, 1e9) b-byte elements and ``buffer_count`` (5) x ``buffer_size`` (1e8)
  b-byte page-locked swap buffers.

The node's ranks share its drives, so each reads and writes at the node's rate over the ranks
(``HardwareSpec.nvme_read_bytes_per_s``); every read and write is counted as exposed (the
default swapper waits on each). Stages 1/2 offload to host memory whatever the device says
(``stage_1_and_2.py``: ``cpu_offload``), so nothing here applies to them.
"""

from __future__ import annotations

from simtune.model.inputs import BYTES_PER_ELEMENT, HardwareSpec, ModelSpec, TrainConfig
from simtune.model.shards import Shards

OPTIMIZER_SWAP_BUFFERS = 4
"""``offload_optimizer.buffer_count`` (deepspeed/runtime/zero/offload_config.py)."""
PARAMETERS_KEPT_ON_HOST = 1_000_000_000
"""``offload_param.max_in_cpu``: partition elements kept in host memory, the rest on NVMe."""
PARAMETER_SWAP_BUFFERS = 5
PARAMETER_SWAP_BUFFER_ELEMENTS = 100_000_000
"""``offload_param.buffer_count`` and ``buffer_size`` (elements)."""
FP32 = BYTES_PER_ELEMENT["fp32"]
SWAP_BLOCK_ELEMENTS = (1 << 20) // FP32
"""The aio ``block_size`` (1 MiB) in fp32 elements: a gradient fragment under it is not swapped."""


def swapped_gradient_elements(m: ModelSpec, c: TrainConfig) -> int:
    """Elements of one rank's fp32 gradients that go to NVMe: its fragments of the tensors
    (ceil(n / ranks) each) of at least :data:`SWAP_BLOCK_ELEMENTS`."""
    ranks = c.dp_degree
    return sum(f for f in (-(-n // ranks) for n in m.layout.numels) if f >= SWAP_BLOCK_ELEMENTS)


def optimizer_swap_bytes(m: ModelSpec, s: Shards, c: TrainConfig) -> int:
    """Bytes one rank reads from NVMe in a step for its optimizer, and as many it writes."""
    if not c.swaps_optimizer_states:
        return 0
    return FP32 * (1 + c.optimizer.states) * s.partition + FP32 * swapped_gradient_elements(m, c)


def parameters_on_nvme(s: Shards, c: TrainConfig) -> int:
    """Partition elements of this rank that live on NVMe."""
    if not c.swaps_parameters:
        return 0
    return max(0, s.partition - PARAMETERS_KEPT_ON_HOST)


def parameter_swap_bytes(s: Shards, c: TrainConfig) -> tuple[int, int]:
    """(read, written) bytes of one rank's NVMe-resident parameters in a step."""
    on_nvme = parameters_on_nvme(s, c)
    passes = 3 if c.activation_checkpointing else 2
    b = c.state_bytes
    return b * on_nvme * passes * c.gradient_accumulation_steps, b * on_nvme


def nvme_host_bytes(s: Shards, c: TrainConfig) -> int:
    """Host memory one rank holds for what it swaps (module docstring), in place of what offload
    to host memory keeps for the same part."""
    total = 0
    if c.swaps_optimizer_states:
        total += OPTIMIZER_SWAP_BUFFERS * FP32 * min(s.partition, c.sub_group_size) + c.state_bytes * s.partition
    if c.swaps_parameters:
        total += c.state_bytes * (min(s.partition, PARAMETERS_KEPT_ON_HOST)
                                  + PARAMETER_SWAP_BUFFERS * PARAMETER_SWAP_BUFFER_ELEMENTS)
    return total


def nvme_swap_s(m: ModelSpec, s: Shards, hw: HardwareSpec, c: TrainConfig) -> float:
    """Seconds one rank spends reading and writing NVMe in a step; 0 where the profile gives no
    NVMe rate."""
    optimizer = optimizer_swap_bytes(m, s, c)
    param_read, param_written = parameter_swap_bytes(s, c)
    read, written = optimizer + param_read, optimizer + param_written
    seconds = 0.0
    if read and hw.nvme_read_bytes_per_s:
        seconds += read * hw.ranks_per_node / hw.nvme_read_bytes_per_s
    if written and hw.nvme_write_bytes_per_s:
        seconds += written * hw.ranks_per_node / hw.nvme_write_bytes_per_s
    return seconds


def nvme_rates_missing(hw: HardwareSpec, c: TrainConfig) -> str | None:
    """Which NVMe rates the configuration's swaps need that the profile does not give ("read
    rate", "write rate", "read and write rates"), or None."""
    if not (c.swaps_optimizer_states or c.swaps_parameters):
        return None
    missing = [what for what, rate in (("read", hw.nvme_read_bytes_per_s), ("write", hw.nvme_write_bytes_per_s))
               if not rate]
    if not missing:
        return None
    return " and ".join(missing) + (" rates" if len(missing) == 2 else " rate")
