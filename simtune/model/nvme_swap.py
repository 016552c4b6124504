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
- parameters (``offload_param.device: nvme``): the host keeps a page-locked buffer of
  ``max_in_cpu`` partition elements, given to the optimizer's sub-groups in order while their
  running total fits (stage3.py ``_create_fp16_partitions_with_defragmentation``); from the first
  sub-group that does not fit, every tensor partition of at least 1 MiB (2^20 / b elements) lives
  on NVMe and smaller ones in host memory (:func:`nvme_parameter_partitions`). Each such
  partition p_i is read at its forward fetch and again at its backward fetch unless it stays
  gathered in between (``stage3_max_reuse_distance``, the rule DeepSpeed releases by:
  :meth:`simtune.model.layout.ParamLayout.kept_after_forward`); a tied LM head's table, released,
  is read at each of its two uses per pass. The step writes the updated ones back once:

      read  = b (sum_i p_i (2 - kept_i) + 2 p_table) x micro-steps        write = b sum_i p_i

  The host holds min(P, max_in_cpu) b-byte elements and ``buffer_count`` x ``buffer_size``
  b-byte page-locked swap buffers. Parameter reads and writes are counted as waited for.
- parameter swap buffers (``partitioned_param_swapper.py``): a partition on NVMe occupies one
  buffer from its read until it is released, and every partition of 1 MiB or more is placed in
  one as the model is partitioned, whatever ``max_in_cpu`` says. So ``buffer_size`` must hold the
  largest such partition (:func:`parameter_buffer_size_short`), and ``buffer_count`` must cover
  the partitions held at once (:func:`parameter_buffers_needed`). Short of either DeepSpeed
  stops: "More elements ... than buffer size" as it starts, "Not enough buffers ... for
  swapping" in the second step (the first, recording the trace, releases every parameter after
  its use): benchmarks/results/nvme_param_buffers.txt.

Stages 1/2 offload to host memory whatever the device says (``stage_1_and_2.py``:
``cpu_offload``), so nothing here applies to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from simtune.model.inputs import BYTES_PER_ELEMENT, HardwareSpec, ModelSpec, TrainConfig
from simtune.model.shards import Shards

FP32 = BYTES_PER_ELEMENT["fp32"]
MIN_SWAP_BYTES = 1 << 20
"""The smallest tensor DeepSpeed swaps (``MIN_AIO_BYTES`` in swap_tensor/utils.py, 1 MiB): a
smaller gradient fragment or parameter partition stays in host memory."""
SWAP_BLOCK_ELEMENTS = MIN_SWAP_BYTES // FP32
""":data:`MIN_SWAP_BYTES` in fp32 elements."""


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


def nvme_parameter_partitions(m: ModelSpec, c: TrainConfig) -> tuple[tuple[int, int, bool], ...]:
    """(tensor index, partition elements, kept gathered from forward to backward) of each of one
    rank's parameter tensors whose partition lives on NVMe (module docstring): in a sub-group
    beyond ``max_in_cpu``, not persistent, and of at least 1 MiB
    (:meth:`simtune.model.layout.ParamLayout.nvme_partitions`)."""
    if not c.swaps_parameters:
        return ()
    return m.layout.nvme_partitions(c.dp_degree, c.mp_degree, c.sub_group_size, c.nvme.max_in_cpu,
                                    c.stage3_param_persistence_threshold, c.stage3_max_reuse_distance,
                                    _smallest_swapped_partition(c))


def _partitions(m: ModelSpec, c: TrainConfig) -> tuple[int, ...]:
    """One rank's partition elements of every tensor (:func:`_partition`)."""
    return m.layout.pieces(c.dp_degree, c.mp_degree)


def _partition(elements: int, c: TrainConfig) -> int:
    """One rank's partition of a tensor: ceil(ceil(n / dp) / mp) elements."""
    return -(-(-(-elements // c.dp_degree)) // c.mp_degree)


def _smallest_swapped_partition(c: TrainConfig) -> int:
    """Elements of the smallest parameter partition DeepSpeed swaps: 1 MiB of b-byte elements."""
    return -(-MIN_SWAP_BYTES // c.state_bytes)


def parameters_on_nvme(m: ModelSpec, c: TrainConfig) -> int:
    """Partition elements of this rank that live on NVMe (:func:`nvme_parameter_partitions`)."""
    return sum(piece for _, piece, _ in nvme_parameter_partitions(m, c))


def parameters_in_host_why(m: ModelSpec, c: TrainConfig) -> str:
    """Why none of one rank's parameter partitions lives on NVMe although its parameters are
    offloaded there (:func:`nvme_parameter_partitions` empty); "" where some do, or where they are
    not offloaded to NVMe. Either the rank's whole partition fits ``max_in_cpu`` (no sub-group
    goes beyond it), or every partition beyond it is persistent or under 1 MiB."""
    if not c.swaps_parameters or nvme_parameter_partitions(m, c):
        return ""
    if not any(m.layout.beyond_host_buffer(c.sub_group_size, c.dp_degree, c.nvme.max_in_cpu)):
        return (f"offload_param.max_in_cpu ({c.nvme.max_in_cpu:,} elements) holds the rank's whole partition "
                f"({m.layout.partition_numel(c.dp_degree):,}) in host memory")
    return ("each partition beyond offload_param.max_in_cpu is under 1 MiB or persistent "
            "(stage3_param_persistence_threshold), and DeepSpeed keeps those in host memory")


def _tied_table_index(m: ModelSpec) -> int | None:
    """Index of a tied LM head's table (the token embedding) among the tensors, or None."""
    if not m.block.sums_tied_gradients:
        return None
    table = m.vocab_size * m.hidden_size
    return m.layout.numels.index(table) if table in m.layout.numels else None


def parameter_swap_bytes(m: ModelSpec, c: TrainConfig) -> tuple[int, int]:
    """(read, written) bytes of one rank's NVMe-resident parameters in a step (module docstring):
    a tied table released after forward is read at both of its uses in each pass."""
    parts = nvme_parameter_partitions(m, c)
    if not parts:
        return 0, 0
    b = c.state_bytes
    table = _tied_table_index(m)
    per_micro_step = sum(piece * (1 if kept else 4 if i == table else 2) for i, piece, kept in parts)
    return b * per_micro_step * c.gradient_accumulation_steps, b * sum(piece for _, piece, _ in parts)


def parameter_buffers_needed(m: ModelSpec, c: TrainConfig) -> int:
    """Parameter swap buffers (``offload_param.buffer_count``) DeepSpeed's swapper holds at once
    (module docstring): the NVMe partitions kept gathered from forward to backward, all held as
    forward ends, and one more where a tied table released after its first use comes back for
    the head; one at a time where none is kept. As the model is built, every partition of 1 MiB
    or more is on NVMe, and the tensors initialised together
    (:attr:`~simtune.model.inputs.ModelSpec.construction_gathers`) are read together.
    0 where nothing is swapped."""
    if not c.swaps_parameters:
        return 0
    smallest = _smallest_swapped_partition(c)
    if max(_partitions(m, c)) < smallest:
        return 0
    built = max((sum(_partition(n, c) >= smallest for n in group) for group in m.construction_gathers), default=0)
    parts = nvme_parameter_partitions(m, c)
    kept = sum(1 for _, _, k in parts if k)
    table = _tied_table_index(m)
    tied = kept > 0 and any(i == table and not k for i, _, k in parts)
    return max(1, built, kept + int(tied))


def parameter_buffers_exact(m: ModelSpec, c: TrainConfig) -> bool:
    """Whether DeepSpeed 0.19.8 runs only with exactly :func:`parameter_buffers_needed` parameter
    swap buffers: where every NVMe partition stays gathered from forward to backward and stage 3
    prefetches (``stage3_prefetch_bucket_size`` > 0), a spare buffer lets the NVMe prefetcher
    list forward's last partition twice (its forward use and, right after, its backward use) in
    one read, which stops the second step ("param ... already assigned swap buffer id ...":
    benchmarks/results/nvme_param_buffers.txt)."""
    parts = nvme_parameter_partitions(m, c)
    return bool(parts) and c.stage3_prefetch_bucket_size > 0 and all(kept for _, _, kept in parts)


def parameter_buffers_short(m: ModelSpec, c: TrainConfig) -> tuple[int, int] | None:
    """(given, needed) where the configuration's ``offload_param.buffer_count`` is under
    :func:`parameter_buffers_needed`, or over it where DeepSpeed needs it exact
    (:func:`parameter_buffers_exact`), else None."""
    needed = parameter_buffers_needed(m, c)
    given = c.nvme.param_buffer_count
    wrong = given < needed or (given > needed and parameter_buffers_exact(m, c))
    return (given, needed) if wrong else None


def parameter_buffers_why(m: ModelSpec, c: TrainConfig) -> str:
    """Why the configuration's ``offload_param.buffer_count`` is too few or too many, and the count
    to set, as the rest of a sentence that names the setting and its value."""
    return _count_clause(c.nvme.param_buffer_count, parameter_buffers_needed(m, c))


def _count_clause(given: int, needed: int) -> str:
    if given < needed:
        return (f"is too few: DeepSpeed's parameter swapper holds {needed} partitions at once here "
                f"and stops, so set it to at least {needed}")
    return ("is too many: with every partition on NVMe kept gathered from forward to backward and "
            "prefetch on, DeepSpeed's NVMe prefetch reads forward's last partition twice when a buffer is "
            f"spare and stops in the second step, so set it to exactly {needed} (or "
            f"stage3_prefetch_bucket_size to 0 and it to at least {needed})")


def parameter_buffer_size_short(m: ModelSpec, c: TrainConfig) -> tuple[int, int] | None:
    """(given, needed) where ``offload_param.buffer_size`` (elements) is under the largest
    parameter partition the swapper places in a buffer (one of 1 MiB or more), else None."""
    if not c.swaps_parameters:
        return None
    largest = max(_partitions(m, c))
    given = c.nvme.param_buffer_size
    return (given, largest) if largest >= _smallest_swapped_partition(c) and given < largest else None


def parameter_buffer_problem(m: ModelSpec, c: TrainConfig) -> tuple[str, int, str] | None:
    """Where DeepSpeed's parameter swapper cannot run with the ``offload_param`` buffers: (the
    setting, ``buffer_size`` or ``buffer_count``; its value; the rest of a sentence that names
    them, saying why and what to set), the size first; else None."""
    small = parameter_buffer_size_short(m, c)
    if small is not None:
        given, needed = small
        return ("buffer_size", given, f"is too small: the largest parameter partition DeepSpeed's swapper places "
                                      f"in a buffer has {needed:,} elements here, and it stops as it starts, so "
                                      f"set it to at least {needed}")
    short = parameter_buffers_short(m, c)
    if short is not None:
        return ("buffer_count", short[0], _count_clause(*short))
    return None


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
                host_step_s_per_param: float) -> float:
    """Seconds one rank waits for NVMe in a step: the optimizer's sub-groups through
    :func:`exposed_swap_s` (their steps at ``host_step_s_per_param``), its gradients' write, and
    its parameters' reads and write (:func:`parameter_swap_bytes`); 0 for a transfer whose rate
    the profile does not give."""
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
    param_read, param_written = parameter_swap_bytes(m, c)
    return seconds + read_s(param_read) + write_s(param_written)


@dataclass(frozen=True)
class NvmeTraffic:
    """What one rank swaps through NVMe in a step, and the swap buffers that takes."""

    optimizer_read_bytes: int
    optimizer_written_bytes: int
    """Its fp32 master and states of every sub-group, and its gradients' write at the end of backward."""
    parameter_partitions: int
    parameter_elements: int
    """Its parameter partitions on NVMe (:func:`nvme_parameter_partitions`) and their elements."""
    parameter_read_bytes: int
    parameter_written_bytes: int
    optimizer_buffers_needed: int
    """``offload_optimizer.buffer_count`` at least (:func:`swap_buffers_needed`; 0 where not swapped)."""
    parameter_buffers_needed: int
    parameter_buffers_exact: bool
    """``offload_param.buffer_count`` at least, or exactly (:func:`parameter_buffers_needed`)."""
    parameters_in_host_why: str = ""
    """Where parameters are offloaded to NVMe and none lives there, why (:func:`parameters_in_host_why`)."""


def nvme_traffic(m: ModelSpec, c: TrainConfig) -> NvmeTraffic:
    """One rank's NVMe swaps in a step (module docstring), in one record."""
    optimizer = c.swaps_optimizer_states
    transfers = sub_group_transfers(m, c) if optimizer else ()
    parts = nvme_parameter_partitions(m, c)
    read, written = parameter_swap_bytes(m, c)
    return NvmeTraffic(
        optimizer_read_bytes=sum(r for r, _ in transfers),
        optimizer_written_bytes=sum(w for _, w in transfers) + (FP32 * swapped_gradient_elements(m, c)
                                                                if optimizer else 0),
        parameter_partitions=len(parts), parameter_elements=sum(piece for _, piece, _ in parts),
        parameter_read_bytes=read, parameter_written_bytes=written,
        optimizer_buffers_needed=swap_buffers_needed(m, c) if optimizer else 0,
        parameter_buffers_needed=parameter_buffers_needed(m, c),
        parameter_buffers_exact=parameter_buffers_exact(m, c),
        parameters_in_host_why=parameters_in_host_why(m, c))


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
