"""A hardware profile: what the cost model knows about one machine layout.

Every fitted number sits next to the raw measurements it was fitted from (``points``), and the
``provenance`` says whether the profile was measured by ``simtune calibrate`` or derived from
vendor specifications (``kind = "spec"``, with the sources and the assumed efficiencies).

Conventions: one FLOP convention, 2 FLOPs per multiply-add; times in seconds (``_s``), sizes in
bytes (``_bytes``), rates per second (``_per_s``). Collective bandwidths are NCCL *bus*
bandwidths (nccl-tests ``doc/PERFORMANCE.md``): a collective on ``n`` ranks over a total array of
``S`` bytes takes ``latency_s + bus_factor(op, n) * S / bandwidth_bytes_per_s``.

This module is pure: no torch, no I/O.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Optional, TypeVar

SCHEMA_VERSION = 1

COLLECTIVE_OPS = ("allreduce", "allgather", "reduce_scatter", "broadcast")
DTYPES = ("fp32", "bf16", "fp16")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
"""Bytes of one element of each dtype."""
DEVICE_KINDS = ("cuda", "cpu")
PROFILE_KINDS = ("spec", "measured")

_Entry = TypeVar("_Entry")


def bus_factor(op: str, ranks: int) -> float:
    """Bytes each rank's busiest link carries per byte of the total array (ring algorithms).

    From nccl-tests ``doc/PERFORMANCE.md``: allreduce 2(n-1)/n; allgather and reduce-scatter
    (n-1)/n of the total array; broadcast 1. With one rank nothing moves (0).
    """
    if ranks < 1:
        raise ValueError(f"ranks must be at least 1, got {ranks}")
    if ranks == 1:
        return 0.0
    if op == "allreduce":
        return 2.0 * (ranks - 1) / ranks
    if op in ("allgather", "reduce_scatter"):
        return (ranks - 1) / ranks
    if op == "broadcast":
        return 1.0
    raise ValueError(f"unknown collective {op!r}; expected one of {', '.join(COLLECTIVE_OPS)}")


def interpolate_log(points: tuple[tuple[float, float], ...], x: float) -> float:
    """Piecewise-linear interpolation in log(x) through sorted (x, y) points, clamped at the ends."""
    if not points:
        raise ValueError("no points to interpolate")
    if x <= points[0][0]:
        return points[0][1]
    if x >= points[-1][0]:
        return points[-1][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            w = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + w * (y1 - y0)
    return points[-1][1]  # unreachable for sorted points


def _entry(table: Mapping[str, _Entry], key: str, what: str) -> _Entry:
    """``table[key]``, else a KeyError that names ``what`` and the keys the profile has."""
    if key not in table:
        raise KeyError(f"no {what} {key!r}; the profile has {', '.join(sorted(table)) or 'none'}")
    return table[key]


@dataclass(frozen=True)
class Stats:
    """Seconds of one call: min, median and max over ``repeats`` timed repeats."""

    min_s: float
    median_s: float
    max_s: float
    repeats: int


@dataclass(frozen=True)
class DeviceInfo:
    """The accelerator (or CPU process) and its memory, per device."""

    name: str
    """As the runtime reports it (``torch.cuda.get_device_name``), or "CPU <model>"."""
    kind: str
    """"cuda" or "cpu"."""
    count_per_node: int
    """Devices (ranks) per node."""
    nodes: int
    memory_bytes: int
    """Memory of one device; on CPU, the RAM share of one rank (total RAM / ranks per node)."""
    usable_memory_bytes: int
    """What training can allocate: memory_bytes - fixed_overhead_bytes."""
    fixed_overhead_bytes: int
    """CUDA context, communicator buffers and allocator slack; on CPU the baseline RSS of a rank."""
    memory_bandwidth_bytes_per_s: float
    """Device memory bandwidth (HBM for spec profiles, a measured device-to-device copy otherwise)."""
    peak_flop_per_s: Mapping[str, float]
    """Peak dense FLOP/s per dtype (vendor number; on CPU the highest rate measured)."""
    cache_bytes: int = 0
    """On CPU, one rank's share of the host's last-level cache (its instances summed, over the
    ranks on the host; the ``host_memcpy_cached`` copy is measured inside it); 0 where not measured."""

    @property
    def count(self) -> int:
        """All devices: count_per_node * nodes."""
        return self.count_per_node * self.nodes


@dataclass(frozen=True)
class RatePoint:
    """Achieved FLOP/s for a matmul of ``work_flop`` FLOPs."""

    work_flop: float
    flop_per_s: float


@dataclass(frozen=True)
class ComputeCurve:
    """Achieved FLOP/s as a function of work size, for one dtype."""

    dtype: str
    points: tuple[RatePoint, ...]

    def flop_per_s(self, work_flop: float) -> float:
        """Interpolated piecewise-linearly in log(work_flop), clamped to the measured range."""
        return interpolate_log(tuple((p.work_flop, p.flop_per_s) for p in self.points), work_flop)


@dataclass(frozen=True)
class MatmulMeasurement:
    """One measured linear layer ``[tokens, hidden] x [hidden, out_features]``."""

    dtype: str
    tokens: int
    hidden: int
    out_features: int
    fwd_flop: float
    """2 * tokens * hidden * out_features; the backward is twice this."""
    fwd: Stats
    bwd: Stats


@dataclass(frozen=True)
class ElementwisePoint:
    elements: int
    fwd: Stats
    bwd: Stats


@dataclass(frozen=True)
class ElementwiseFit:
    """Forward + backward time of a memory-bound op: ``intercept_s + s_per_element * elements``."""

    op: str
    dtype: str
    intercept_s: float
    s_per_element: float
    r2: Optional[float]
    points: tuple[ElementwisePoint, ...]

    def time_s(self, elements: float) -> float:
        return self.intercept_s + self.s_per_element * elements


@dataclass(frozen=True)
class AttentionRate:
    """Achieved FLOP/s of one fused attention kernel (flash or memory-efficient), forward and
    backward, for one dtype. FLOPs as FlashAttention's benchmarks count them: forward
    ``4 * batch * heads * seq^2 * head_dim`` (half that when causal), backward 2.5 times the
    forward (it recomputes the scores: five products to the forward's two)."""

    dtype: str
    forward_flop_per_s: float
    backward_flop_per_s: float
    basis: str
    """What the rates are: the shape measured, or the published figure and its source."""


def _wake_s(alone: Stats, throttled: Stats) -> float:
    """What a throttled pool adds to a call: the medians' difference (0 if negative)."""
    return max(0.0, throttled.median_s - alone.median_s)


@dataclass(frozen=True)
class ProductWake:
    """A matrix product of [rows, depth] by the transpose of [cols, depth] (a linear layer's
    forward), timed at the pool's threads alone and throttled (:class:`ThreadPoolWake`)."""

    rows: int
    depth: int
    cols: int
    alone: Stats
    throttled: Stats

    @property
    def wake_s(self) -> float:
        """The medians' difference (0 if negative)."""
        return _wake_s(self.alone, self.throttled)


@dataclass(frozen=True)
class ThreadPoolWake:
    """A parallel kernel of a CPU rank with ``threads`` intra-op threads (a copy of ``elements``
    fp32 elements, above torch's grain size), timed with its OpenMP pool alone and after a gloo
    all-gather ran on the process group's own thread: that collective gives the group's thread an
    OpenMP team of its own, the process then has more OpenMP threads than CPUs, and libgomp lets
    its idle workers spin 100 iterations before they sleep (config/linux/wait.h), so every parallel
    kernel after it wakes its workers (:mod:`simtune.model.thread_pool`)."""

    threads: int
    elements: int
    alone: Stats
    throttled: Stats
    products: tuple[ProductWake, ...] = ()
    """Matrix products timed the same way (empty: not measured; products then pay ``wake_s``)."""

    @property
    def wake_s(self) -> float:
        """What the wake-up adds to one parallel kernel: the medians' difference (0 if negative)."""
        return _wake_s(self.alone, self.throttled)

    @property
    def product_wake_s(self) -> Optional[float]:
        """What it adds to one matrix product: the median over the products timed of their
        medians' difference (None: none timed)."""
        if not self.products:
            return None
        return statistics.median(p.wake_s for p in self.products)


@dataclass(frozen=True)
class ComputeProfile:
    curves: Mapping[str, ComputeCurve]
    """Per dtype; the x axis is the FLOPs of one matmul, the y axis FLOP/s over forward+backward."""
    elementwise: tuple[ElementwiseFit, ...]
    matmul_points: tuple[MatmulMeasurement, ...]
    """The raw measurements the curves come from (empty for spec profiles)."""
    unsupported_dtypes: Mapping[str, str]
    """dtype -> why it was not measured."""
    weight_points: tuple[MatmulMeasurement, ...] = ()
    """CPU: pairs of fp32 linear layers of equal FLOPs, few tokens over a large weight and many
    over a small one, timed in turn; their difference per weight byte is the model's weight term
    (empty: none measured)."""
    attention: Mapping[str, AttentionRate] = dataclasses.field(default_factory=dict)
    """Per dtype, the fused attention kernel's rates (empty: fused attention runs at the matmul
    curve's rate)."""
    thread_pool: Optional[ThreadPoolWake] = None
    """CPU: what waking a throttled OpenMP pool adds to a parallel kernel (None: not measured;
    accelerators, one core, older calibrations)."""

    def flop_per_s(self, dtype: str, work_flop: float) -> float:
        return _entry(self.curves, dtype, "compute curve for dtype").flop_per_s(work_flop)

    def elementwise_fit(self, op: str, dtype: str) -> Optional[ElementwiseFit]:
        for fit in self.elementwise:
            if fit.op == op and fit.dtype == dtype:
                return fit
        return None


@dataclass(frozen=True)
class SizePoint:
    """A timing at one size (parameters for the optimizer)."""

    size: int
    stats: Stats


@dataclass(frozen=True)
class OptimizerFit:
    """Time of one optimizer step: ``intercept_s + s_per_param * params`` (memory-bound)."""

    impl: str
    device: str
    """Where the step runs: "cuda" or "cpu" (the host, as with optimizer offload)."""
    intercept_s: float
    s_per_param: float
    r2: Optional[float]
    points: tuple[SizePoint, ...]
    zero_state: Optional[SizePoint] = None
    """The step at the largest size with every gradient 0 from the start, so that both moments
    stay exactly 0, timed in turn with ``points`` (host only; None where not measured)."""

    def step_s(self, params: float) -> float:
        return self.intercept_s + self.s_per_param * params

    @property
    def zero_state_s_per_param(self) -> float:
        """What an element whose moments are exactly 0 adds to the step, from ``zero_state`` and
        the ordinary point of its size: (zero - ordinary) / size, fastest repeats, at least 0;
        0 where not measured."""
        if self.zero_state is None:
            return 0.0
        same = next((p for p in self.points if p.size == self.zero_state.size), None)
        if same is None:
            return 0.0
        return max(0.0, (self.zero_state.stats.min_s - same.stats.min_s) / self.zero_state.size)


@dataclass(frozen=True)
class OptimizerProfile:
    fits: Mapping[str, OptimizerFit]
    """Per implementation, e.g. torch_adamw_foreach, torch_adamw_fused, deepspeed_cpu_adam."""
    unavailable: Mapping[str, str]
    """Implementation -> why it was not measured."""

    def step_s(self, impl: str, params: float) -> float:
        return _entry(self.fits, impl, "optimizer fit for").step_s(params)


@dataclass(frozen=True)
class CollectivePoint:
    """One measured message size: the total array in elements and bytes."""

    elements: int
    bytes: int
    stats: Stats


@dataclass(frozen=True)
class CollectiveFit:
    """``t = latency_s + bus_factor(op, n) * total_bytes / bandwidth_bytes_per_s``."""

    op: str
    ranks: int
    """Ranks the points were measured on (spec profiles: the ranks of one node)."""
    dtype: str
    latency_s: float
    bandwidth_bytes_per_s: float
    """Bus bandwidth (nccl-tests busbw)."""
    r2: Optional[float]
    """Coefficient of determination of the fit (on the fastest repeat per size); None for spec profiles."""
    points: tuple[CollectivePoint, ...]
    tail_points: tuple[CollectivePoint, ...] = ()
    """CPU: larger messages timed beyond the fitted sizes, not in the line: what a byte costs
    there (empty: none measured)."""

    def time_s(self, total_bytes: float, ranks: Optional[int] = None) -> float:
        """Time of one call over a total array of ``total_bytes`` on ``ranks`` ranks (default: as measured)."""
        n = self.ranks if ranks is None else ranks
        if n <= 1:
            return 0.0
        return self.latency_s + bus_factor(self.op, n) * total_bytes / self.bandwidth_bytes_per_s


@dataclass(frozen=True)
class CollectivesProfile:
    applicable: bool
    """False when calibrated on one rank (nothing to communicate)."""
    note: str
    backend: Optional[str]
    """"nccl", "gloo", ... (None for spec profiles: NCCL is assumed)."""
    intra_node: Mapping[str, CollectiveFit]
    """Collectives among the devices of one node."""
    inter_node: Mapping[str, CollectiveFit]
    """Collectives spanning nodes (empty when not known)."""
    compute_share: Optional[float] = None
    """The share of the device's compute a running collective takes from the kernels beside it
    (each NCCL channel is a thread block holding an SM: its blocks over the device's SMs); None
    when not known (read as 0)."""

    def fit_for(self, op: str, nodes: int = 1) -> CollectiveFit:
        """The inter-node fit for a group over several nodes, the intra-node one within a node;
        the other table when a profile has only one (one node measured, or one rank per node)."""
        inter = bool(self.inter_node) and (nodes > 1 or not self.intra_node)
        table = self.inter_node if inter else self.intra_node
        return _entry(table, op, f"{'inter' if inter else 'intra'}-node collective fit for")

    def time_s(self, op: str, total_bytes: float, ranks: int, nodes: int = 1) -> float:
        if ranks <= 1:
            return 0.0
        return self.fit_for(op, nodes).time_s(total_bytes, ranks)


@dataclass(frozen=True)
class CopyPoint:
    direction: str
    """"h2d", "d2h", "d2d", "h2d_pageable", "d2h_pageable" (CUDA) or "host_memcpy", "host_fresh",
    "host_memcpy_cached" (CPU)."""
    bytes: int
    stats: Stats


@dataclass(frozen=True)
class OffloadProfile:
    """Host<->device copies and the host optimizer, for optimizer and parameter offload."""

    kind: str
    """"pinned_host_device" (CUDA, measured), "cpu_memcpy" (CPU: there is no host-device link, so
    h2d and d2h are the rate of a RAM-to-RAM copy) or "spec"."""
    h2d_bytes_per_s: float
    d2h_bytes_per_s: float
    host_memcpy_bytes_per_s: Optional[float]
    """Bytes a copy from host memory to host memory moves per second (each read once and written
    once): the host's side of offload (DeepSpeed casts the updated fp32 partition to 16 bits on
    the host before it goes back). None where not measured."""
    cpu_adam_s_per_param: Optional[float]
    """Host optimizer step per parameter of a rank's shard (None when unknown)."""
    cpu_adam_impl: Optional[str]
    """Which optimizer fit cpu_adam_s_per_param comes from (DeepSpeedCPUAdam when it was built),
    or "spec" for a derived number."""
    host_memory_bytes: Optional[int]
    """Host RAM of one node (None when unknown)."""
    points: tuple[CopyPoint, ...]
    h2d_pageable_bytes_per_s: Optional[float] = None
    d2h_pageable_bytes_per_s: Optional[float] = None
    """The same copies from and to pageable host memory, which CUDA stages through pinned buffers
    of its own: DeepSpeed's offload buffers where a config sets ``pin_memory: false``, and the
    copies that cast on the host before they upload. None where not measured (spec profiles,
    CPU profiles: there is no link to stage for)."""
    nvme_read_bytes_per_s: Optional[float] = None
    nvme_write_bytes_per_s: Optional[float] = None
    """Sequential reads and writes of the node's NVMe storage (all its drives, shared by its
    ranks), what ZeRO-Infinity swaps to at stage 3; None where unknown."""


@dataclass(frozen=True)
class FrameworkProfile:
    """Host-side seconds per call of the software stack (PyTorch eager dispatch, DeepSpeed's
    hooks and bookkeeping): the cost model's :class:`simtune.model.inputs.FrameworkCosts`.
    ``kind`` says where they come from: "spec" (published figures, cited in the provenance) or
    "measured" (calibration's element-wise microbenchmarks give the dispatch cost)."""

    kind: str
    forward_kernel_s: float
    backward_kernel_s: float
    zero3_module_s: float
    reduce_bucket_s: float
    gradient_hook_s: float
    engine_step_s: float
    engine_micro_step_s: float = 0.0
    forward_module_s: float = 0.0
    gather_call_s: float = 0.0
    zero3_module_backward_s: float = 0.0
    """Stage 3's cost per module in a backward pass (``zero3_module_s`` is the forward's); a
    profile written before the two were apart held one cost for both, which is read for both."""
    param_pass_s: tuple[tuple[float, float, float], ...] = ()
    """Per stage 0-3, (forward, backward, step) seconds per parameter (empty: not learnt)."""
    engine_boundary_s: float = 0.0
    """The engine's backward work where the ranks meet (``FrameworkCosts.engine_boundary_s``); 0 in
    a profile written before it was kept apart from ``engine_micro_step_s``."""


_FRAMEWORK_FIELDS = {f.name: f for f in dataclasses.fields(FrameworkProfile) if f.name not in ("kind", "param_pass_s")}
FRAMEWORK_COSTS = tuple(_FRAMEWORK_FIELDS)
"""The costs per call (seconds each)."""
OPTIONAL_FRAMEWORK_COSTS = tuple(name for name, f in _FRAMEWORK_FIELDS.items() if f.default is not dataclasses.MISSING)
"""Costs added after the section first shipped: a profile written before them lacks them (0)."""


@dataclass(frozen=True)
class Provenance:
    kind: str
    """"spec" (from vendor numbers and stated assumptions) or "measured" (simtune calibrate)."""
    date: str
    command: str
    host: Optional[str]
    device_name: str
    device_count: int
    torch_version: Optional[str]
    cuda_version: Optional[str]
    nccl_version: Optional[str]
    deepspeed_version: Optional[str]
    sources: tuple[str, ...]
    assumptions: Mapping[str, str]
    """Name -> value and reason, e.g. "link_efficiency": "0.8 of the per-direction link bandwidth"."""
    notes: tuple[str, ...]


@dataclass(frozen=True)
class HardwareProfile:
    schema_version: int
    name: str
    device: DeviceInfo
    compute: ComputeProfile
    optimizer: OptimizerProfile
    collectives: CollectivesProfile
    offload: OffloadProfile
    provenance: Provenance
    framework: Optional[FrameworkProfile] = None
    """None in profiles made before it was measured: the model then leaves these costs out."""

    @property
    def kind(self) -> str:
        return self.provenance.kind

    def efficiency(self, dtype: str, work_flop: float) -> float:
        """Achieved over peak FLOP/s for a matmul of ``work_flop`` FLOPs."""
        return self.compute.flop_per_s(dtype, work_flop) / self.device.peak_flop_per_s[dtype]
