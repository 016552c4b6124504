"""ZeRO-Infinity's NVMe offload at stage 3: what it swaps each step, what of that the step waits
for, and the host memory it holds.

As DeepSpeed 0.19.8 runs it (``deepspeed/runtime/swap_tensor``, ``runtime/zero/stage3.py``), per
rank, with P the rank's partition elements, S the optimizer's fp32 states per element (2 for
Adam), b the bytes of a 16-bit parameter or gradient element, and the offload sections' settings
(:class:`simtune.nvme_settings.NvmeSwapSettings`):

- optimizer states (``offload_optimizer.device: nvme``): at the end of the last micro-step's
  backward the partition's gradients are cast to fp32 and written to NVMe; then the step takes
  the partition's sub-groups (``sub_group_size`` elements or more, grouped tensor by tensor:
  :meth:`simtune.model.layout.ParamLayout.sub_groups`) one at a time: it reads the sub-group's
  fp32 master weights, states and gradients, the host optimizer steps it, and it writes master
  and states back. Sub-group i of n_i elements, g_i of them gradients that were swapped:

      read_i = 4 (1 + S) n_i + 4 g_i        write_i = 4 (1 + S) n_i        gradients: 4 sum g_i

  Of each tensor's partition fragment (ceil(n / ranks) elements) only those of 1 MiB and more
  (the aio ``block_size``) go to NVMe, smaller ones stay in memory (``optimizer_utils.py``).
  32 bytes each way per element for Adam where every fragment is that large.
- what the step waits for (:func:`exposed_swap_s`): the default swapper
  (``PartitionedOptimizerSwapper``) waits on every read and write. With ``pipeline_read`` the
  pipelined swapper (``PipelinedOptimizerSwapper``) starts reading sub-group i + 1 once i is
  in, so that read runs while i steps and is written; with ``pipeline_write`` the write of i runs
  while i + 1 is read and stepped, and is waited for before i + 1 is written. The last
  sub-group's write is always waited for, so a partition in one sub-group (P below
  ``sub_group_size``, 1e9 by default) overlaps nothing. The node's drives serve one transfer
  at a time at their rate, shared by the node's ranks. The gradients' write at the end of
  backward is counted as waited for.
- host memory: ``buffer_count`` page-locked fp32 swap buffers of the largest sub-group, and the
  b-byte gradient partition (``grad_accum_dtype``, the model's dtype by default), instead of the
  4 (2 + S) P bytes of states that CPU offload keeps:

      host = 4 x buffer_count x largest sub-group + b P

  With DeepSpeed's defaults (4 buffers, sub-groups of 1e9) that is as much as offload to host
  memory keeps: NVMe saves host memory only with smaller sub-groups.
- parameters (``offload_param.device: nvme``): the first ``max_in_cpu`` partition elements are
  kept in a page-locked host buffer, so only the rest, P_n = max(0, P - max_in_cpu), stays on
  NVMe. Every fetch reads its share of them: with F the elements stage 3 gathers in a
  micro-step (forward, and backward for those released after forward:
  :func:`simtune.model.memory_buffers.fetched_elements`, no more under activation
  checkpointing), and the step writes the updated ones back once:

      read  = b P_n (F / ranks) / P x micro-steps        write = b P_n

  The host holds min(P, max_in_cpu) b-byte elements and ``buffer_count`` x ``buffer_size``
  b-byte page-locked swap buffers. Parameter reads and writes are counted as waited for.

Stages 1/2 offload to host memory whatever the device says (``stage_1_and_2.py``:
``cpu_offload``), so nothing here applies to them.
"""

from __future__ import annotations

from typing import Sequence

from simtune.model.inputs import BYTES_PER_ELEMENT, HardwareSpec, ModelSpec, TrainConfig
from simtune.model.shards import Shards

FP32 = BYTES_PER_ELEMENT["fp32"]
SWAP_BLOCK_ELEMENTS = (1 << 20) // FP32
"""The aio ``block_size`` (1 MiB) in fp32 elements: a gradient fragment under it is not swapped."""


def sub_groups(m: ModelSpec, c: TrainConfig) -> tuple[tuple[int, int], ...]:
    """One rank's optimizer sub-groups as (elements, swapped fp32 gradient elements), each
    divided by the model-parallel degree like the partition."""
    groups = m.layout.sub_groups(c.sub_group_size, c.dp_degree, SWAP_BLOCK_ELEMENTS)
    mp = c.mp_degree
    return tuple((-(-n // mp), -(-g // mp)) for n, g in groups)


def swapped_gradient_elements(m: ModelSpec, c: TrainConfig) -> int:
    """Elements of one rank's fp32 gradients that go to NVMe: its fragments of the tensors
    (ceil(n / ranks) each) of at least :data:`SWAP_BLOCK_ELEMENTS`."""
    return sum(g for _, g in sub_groups(m, c))


def sub_group_transfers(m: ModelSpec, c: TrainConfig) -> tuple[tuple[int, int], ...]:
    """Per optimizer sub-group of one rank, the bytes the step reads (fp32 master, states and
    swapped gradients) and writes back (master and states)."""
    state = FP32 * (1 + c.optimizer.states)
    return tuple((state * n + FP32 * g, state * n) for n, g in sub_groups(m, c))


def optimizer_swap_bytes(m: ModelSpec, c: TrainConfig) -> int:
    """Bytes one rank reads from NVMe in a step for its optimizer, and as many it writes
    (its states in the step, its gradients at the end of backward)."""
    if not c.swaps_optimizer_states:
        return 0
    return sum(read for read, _ in sub_group_transfers(m, c))


def parameters_on_nvme(s: Shards, c: TrainConfig) -> int:
    """Partition elements of this rank that live on NVMe."""
    if not c.swaps_parameters:
        return 0
    return max(0, s.partition - c.nvme.max_in_cpu)


def parameter_swap_bytes(s: Shards, c: TrainConfig, fetched: int) -> tuple[int, int]:
    """(read, written) bytes of one rank's NVMe-resident parameters in a step, with ``fetched``
    the elements stage 3 gathers in a micro-step."""
    on_nvme = parameters_on_nvme(s, c)
    if not on_nvme:
        return 0, 0
    b = c.state_bytes
    read = b * on_nvme * fetched / (c.dp_degree * s.partition) * c.gradient_accumulation_steps
    return round(read), b * on_nvme


def nvme_host_bytes(s: Shards, c: TrainConfig) -> int:
    """Host memory one rank holds for what it swaps (module docstring), in place of what offload
    to host memory keeps for the same part."""
    total = 0
    settings = c.nvme
    if c.swaps_optimizer_states:
        total += settings.optimizer_buffer_count * FP32 * s.step_group + c.state_bytes * s.partition
    if c.swaps_parameters:
        total += c.state_bytes * (min(s.partition, settings.max_in_cpu)
                                  + settings.param_buffer_count * settings.param_buffer_size)
    return total


def swap_buffers_needed(m: ModelSpec, c: TrainConfig) -> int:
    """Optimizer swap buffers (``offload_optimizer.buffer_count``) DeepSpeed's swapper holds at once:
    2 + S per sub-group in flight (its fp32 master, its S states and its gradients), one sub-group
    without a pipeline or where the partition is one sub-group, one more with ``pipeline_read``
    (the next sub-group read ahead) and one more with ``pipeline_write`` (the last one's write).
    Short of them DeepSpeed stops in the first step ("ran out of swap buffers"):
    benchmarks/results/nvme_swap_buffers.txt."""
    per_group = 2 + c.optimizer.states
    if len(sub_groups(m, c)) < 2:
        return per_group
    return per_group * (1 + int(c.nvme.pipeline_read) + int(c.nvme.pipeline_write))


def swap_buffers_short(m: ModelSpec, c: TrainConfig) -> tuple[int, int] | None:
    """(given, needed) where the configuration swaps its optimizer to NVMe with fewer
    ``buffer_count`` buffers than :func:`swap_buffers_needed`, else None."""
    if not c.swaps_optimizer_states:
        return None
    needed = swap_buffers_needed(m, c)
    given = c.nvme.optimizer_buffer_count
    return (given, needed) if given < needed else None


def swap_buffers_why(m: ModelSpec, c: TrainConfig) -> str:
    """Why :func:`swap_buffers_needed` says what it says, in words ("7 optimizer sub-groups of
    2 + 2 buffers, pipeline_read and pipeline_write")."""
    groups = len(sub_groups(m, c))
    flags = [name for name, on in (("pipeline_read", c.nvme.pipeline_read), ("pipeline_write", c.nvme.pipeline_write))
             if on]
    what = f"{groups} optimizer sub-group{'s' if groups != 1 else ''} of 2 + {c.optimizer.states} buffers"
    return what + (", " + " and ".join(flags) if flags and groups > 1 else "")


def exposed_swap_s(reads: Sequence[float], writes: Sequence[float], steps: Sequence[float], *,
                   read_ahead: bool, write_behind: bool) -> float:
    """Seconds the sub-groups' swaps add to their host steps (module docstring): sub-group i's read
    takes ``reads[i]`` s of the drive, its step ``steps[i]`` s of the host, its write ``writes[i]``
    s of the drive; the drive serves one transfer at a time, in the order the swapper issues them.

    Without either flag this is sum(reads) + sum(writes); with both and steps longer than the
    transfers, about the first read and the last write."""
    drive = now = 0.0
    pending_write = 0.0
    prefetched: float | None = None
    count = len(reads)
    for i in range(count):
        if prefetched is None:
            drive = max(now, drive) + reads[i]
            prefetched = drive
        now = max(now, prefetched)
        prefetched = None
        if read_ahead and i + 1 < count:
            drive = max(now, drive) + reads[i + 1]
            prefetched = drive
        now = max(now + steps[i], pending_write)
        drive = max(now, drive) + writes[i]
        if write_behind and i + 1 < count:
            pending_write = drive
        else:
            now, pending_write = drive, 0.0
    return now - sum(steps)


def nvme_swap_s(m: ModelSpec, s: Shards, hw: HardwareSpec, c: TrainConfig, *,
                host_step_s_per_param: float, fetched: int) -> float:
    """Seconds one rank waits for NVMe in a step: the optimizer's sub-groups through
    :func:`exposed_swap_s` (their steps at ``host_step_s_per_param``), its gradients' write, and
    its parameters' reads and write (``fetched``: :func:`parameter_swap_bytes`); 0 for a
    transfer whose rate the profile does not give."""
    ranks = hw.ranks_per_node
    read_rate = hw.nvme_read_bytes_per_s / ranks if hw.nvme_read_bytes_per_s else None
    write_rate = hw.nvme_write_bytes_per_s / ranks if hw.nvme_write_bytes_per_s else None

    def read_s(nbytes: float) -> float:
        return nbytes / read_rate if read_rate else 0.0

    def write_s(nbytes: float) -> float:
        return nbytes / write_rate if write_rate else 0.0

    seconds = 0.0
    if c.swaps_optimizer_states:
        transfers = sub_group_transfers(m, c)
        seconds += exposed_swap_s([read_s(read) for read, _ in transfers],
                                  [write_s(written) for _, written in transfers],
                                  [host_step_s_per_param * n for n, _ in sub_groups(m, c)],
                                  read_ahead=c.nvme.pipeline_read, write_behind=c.nvme.pipeline_write)
        seconds += write_s(FP32 * swapped_gradient_elements(m, c))
    param_read, param_written = parameter_swap_bytes(s, c, fetched)
    return seconds + read_s(param_read) + write_s(param_written)


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
