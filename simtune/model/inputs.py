"""The cost model's inputs: exactly the numbers it needs, as small frozen dataclasses.

Units are in the names. One FLOP convention throughout: a multiply-add is 2 FLOPs.
Bad values raise a :class:`~simtune.errors.SimtuneError` subclass naming the field and value:
:class:`~simtune.errors.WorkloadError` for a model, :class:`~simtune.errors.ProfileError` for
hardware, :class:`~simtune.errors.ConfigError` for a training configuration.
"""

from __future__ import annotations

import dataclasses
import math
import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Optional, Sequence

from simtune.errors import ConfigError, ProfileError, WorkloadError
from simtune.hardware.profile import DTYPE_BYTES
from simtune.knobs import knob
from simtune.model.layout import ParamLayout, transformer_param_numels
from simtune.nvme_settings import NvmeSwapSettings
from simtune.optimizers import ADAMW, ALGORITHMS, OptimizerChoice

PRECISIONS = ("fp32", "fp16", "bf16")
BYTES_PER_ELEMENT = DTYPE_BYTES


def _require(ok: bool, error: type, message: str) -> None:
    if not ok:
        raise error(message)


def _positive(error: type, owner: str, **values: float) -> None:
    for name, value in values.items():
        _require(value is not None and value > 0, error, f"{owner}.{name} must be positive, got {value!r}.")


ATTENTION_KINDS = ("eager", "sdpa", "flash")
"""How attention keeps what its backward needs: "eager" stores the s x s probabilities (softmax
output, dropout mask, dropped output); "sdpa" (torch's scaled_dot_product_attention) and "flash"
(FlashAttention 2/3) recompute them from Q, K, V and a per-row log-sum-exp (Dao et al. 2022)."""


LOSS_KINDS = ("fp32", "fused", "vocab_parallel")
"""How the training program's loss holds the logits for the backward: "fp32" upcasts them and
takes torch's cross-entropy (transformers' loss functions, torchtitan): an fp32 log-softmax is
kept and two fp32 gradients of its size exist during its backward; "fused" runs one
cross-entropy kernel (flash-attn's ``CrossEntropyLoss``, llm.c's fused classifier) that keeps
the logits and a log-sum-exp and makes one gradient of the logits' size; "vocab_parallel" is
Megatron-LM's vocabulary-parallel cross-entropy over logits upcast to fp32, which keeps the fp32
softmax, turns it into the gradient in place, and casts that back to the compute precision
(:func:`simtune.model.memory_activations.logits_bytes`)."""


MLPS = ("gelu", "gelu_python", "gelu_python_compiled", "swiglu")
"""The MLPs :class:`Block` knows (its ``mlp``)."""


NORMS = ("layer_norm", "rms_norm", "rms_norm_fused")
"""The norms :class:`Block` knows (its ``norm``)."""


@dataclass(frozen=True)
class Block:
    """How one transformer layer is built, as far as its kernels differ (the operator list of
    :mod:`simtune.model.operators`). The default is GPT-2's layer."""

    norm: str = "layer_norm"
    """"layer_norm" (one fused kernel), "rms_norm" (Llama's, written in Python) or "rms_norm_fused"
    (an RMSNorm in one kernel each way, as torchtitan's Triton ``fused_rmsnorm``: it runs and keeps
    what a fused LayerNorm does, its input and per-row statistics)."""
    mlp: str = "gelu_python"
    """"gelu" (one kernel), "gelu_python" (GPT-2's tanh approximation in eight ops),
    "gelu_python_compiled" (the same approximation fused into one kernel by ``torch.compile``, which
    keeps its tanh for the backward) or "swiglu"."""
    fused_qkv: bool = True
    """One projection for Q, K and V (GPT-2) rather than three."""
    linear_bias: bool = True
    hidden_dropout: bool = True
    """Dropout after attention and after the MLP."""
    rotary: bool = False
    learned_positions: bool = True
    """A position embedding added to the token embedding (GPT-2, BERT)."""
    causal: bool = True
    """A causal language model (shifted loss; fused attention skips the masked half)."""
    mlm_head: bool = False
    """BERT's masked-LM head: a dense transform, activation and norm before the decoder."""
    kv_heads: int = 0
    """Key/value heads (grouped-query attention); 0 means as many as the query heads."""
    head_norms: bool = False
    """An RMSNorm over each head's query and key before the rotary embedding (Qwen3)."""
    softmax_fp32: bool = False
    """Eager attention takes its softmax in fp32 whatever the compute precision and casts the
    probabilities back (transformers' Llama family: ``softmax(..., dtype=torch.float32)``)."""
    head: str = "lm"
    """What the model ends in: "lm" (the vocabulary projection at every position), or a
    sequence-classification head: "pooled" (a dense layer over the first token, then the
    classifier: BERT, DistilBERT, DeBERTa-v2) or "scored" (the classifier at every position, the
    last one kept: GPT-2, Llama)."""
    num_labels: int = 0
    """Classes of a classification head (0 with an LM head)."""
    head_positions: int = 0
    """Positions per sample an LM head runs on; 0: every position. NVIDIA's BERT computes its
    masked-LM head at the masked positions only (``dense_seq_output``)."""
    tied_head: bool = True
    """The LM head's weight is the token embedding (``tie_word_embeddings``: GPT-2, BERT; not Llama
    3 8B); meaningful with an LM head only (:attr:`sums_tied_gradients`)."""

    @property
    def sums_tied_gradients(self) -> bool:
        """An LM head tied to the token embedding: autograd makes that weight's gradient twice (the
        head's and the embedding's) and adds them out of place in every backward
        (:mod:`simtune.model.operators`, :mod:`simtune.model.fresh_memory`)."""
        return self.head == "lm" and self.tied_head

    def __post_init__(self) -> None:
        _require(self.norm in NORMS, WorkloadError,
                 f"Block.norm must be one of {', '.join(NORMS)}, not {self.norm!r}.")
        _require(self.mlp in MLPS, WorkloadError, f"Block.mlp must be one of {', '.join(MLPS)}, not {self.mlp!r}.")
        _require(self.kv_heads >= 0, WorkloadError, f"Block.kv_heads must be >= 0, got {self.kv_heads!r}.")
        _require(self.head in ("lm", "pooled", "scored"), WorkloadError,
                 f"Block.head must be lm, pooled or scored, not {self.head!r}.")
        _require(self.head_positions >= 0 and (self.head == "lm" or self.head_positions == 0), WorkloadError,
                 f"Block.head_positions must be >= 0 and only with an LM head, got {self.head_positions!r}.")
        _require((self.head == "lm") == (self.num_labels == 0) and self.num_labels >= 0, WorkloadError,
                 f"A classification head needs its number of labels (and an LM head none), got "
                 f"head {self.head!r} with {self.num_labels!r} labels.")


@dataclass(frozen=True)
class ModelSpec:
    """What the model needs to know about the network being trained (whole model, before any
    parallelism). A transformer shape drives the activation formulas; the parameter tensor sizes
    drive partition padding, ZeRO-3 persistence and bucket counts."""

    parameter_count: int
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    seq_len: int
    flops_per_sample_forward: float
    """Forward FLOPs for one sample of seq_len tokens (multiply-add = 2 FLOPs)."""
    largest_layer_params: int
    """Largest parameter count held directly by one module (DeepSpeed's largest_layer_params)."""
    activation_bytes_per_sample_per_layer: Optional[float] = None
    """Measured activation bytes of one layer for one sample, at the training precision; None
    means the Korthikanti et al. (2022) closed form is used."""
    param_tensor_numels: Optional[tuple[int, ...]] = None
    """Element count of every parameter tensor in registration order; None derives a GPT-2-like
    list from the transformer shape."""
    measured_compute: Optional["MeasuredCompute"] = None
    """Forward and backward seconds measured for this model on the hardware being estimated, in
    the training precision; None computes them from FLOPs and the hardware's efficiency curve."""
    measured_memory: Optional["MeasuredMemory"] = None
    """Activation peaks (and, on CPU, process overheads) measured on the hardware being estimated;
    None uses the activation formulas."""
    attention: str = "eager"
    """"eager" keeps the s x s attention probabilities for backward; "sdpa" and "flash" do not
    (unless dropout sends them to the math kernel: :func:`~simtune.model.operators.keeps_attention_scores`)."""
    attention_dropout: bool = True
    """Dropout on the attention probabilities while training (Korthikanti's layer has it)."""
    loss: str = "fp32"
    """How the loss holds the logits for the backward (one of :data:`LOSS_KINDS`)."""
    block: Block = Block()
    """How a layer is built: which kernels it launches (:mod:`simtune.model.operators`)."""
    parameter_modules: int = 0
    """Modules that hold parameters (ZeRO-3 fetches and releases each in every pass); 0 derives
    GPT-2's count from the shape (six per layer and four outside)."""
    idle_elements: int = 0
    """Parameter elements no training sample gives a gradient (learned position rows beyond the
    sequence, token-type rows beyond the first, ...: :func:`simtune.workloads.analysis.idle_elements`):
    their Adam moments stay exactly 0, which costs a CPU step more (:mod:`simtune.model.optimizer_time`)."""
    construction_gathers: tuple[tuple[int, ...], ...] = ()
    """Element counts of the parameter tensors gathered together while the model's weights are
    initialised under ZeRO-3 (:func:`simtune.workloads.analysis.construction_gathers`); empty
    where unknown (one tensor at a time)."""

    def __post_init__(self) -> None:
        _positive(WorkloadError, "ModelSpec", parameter_count=self.parameter_count,
                  num_layers=self.num_layers, hidden_size=self.hidden_size, num_heads=self.num_heads,
                  intermediate_size=self.intermediate_size, vocab_size=self.vocab_size,
                  seq_len=self.seq_len, flops_per_sample_forward=self.flops_per_sample_forward,
                  largest_layer_params=self.largest_layer_params)
        _require(self.attention in ATTENTION_KINDS, WorkloadError,
                 f"ModelSpec.attention must be one of {', '.join(ATTENTION_KINDS)}, not {self.attention!r}.")
        _require(self.loss in LOSS_KINDS, WorkloadError,
                 f"ModelSpec.loss must be one of {', '.join(LOSS_KINDS)}, not {self.loss!r}.")
        if self.activation_bytes_per_sample_per_layer is not None:
            _positive(WorkloadError, "ModelSpec",
                      activation_bytes_per_sample_per_layer=self.activation_bytes_per_sample_per_layer)
        _require(0 <= self.idle_elements <= self.parameter_count, WorkloadError,
                 f"ModelSpec.idle_elements must be between 0 and the parameter count, got {self.idle_elements!r}.")
        if self.param_tensor_numels is not None:
            _require(len(self.param_tensor_numels) > 0 and all(n >= 0 for n in self.param_tensor_numels),
                     WorkloadError, "ModelSpec.param_tensor_numels must be a non-empty list of "
                     "non-negative sizes.")

    @property
    def hooked_modules(self) -> int:
        return self.parameter_modules or 6 * self.num_layers + 4

    @property
    def kv_width(self) -> int:
        """Width of the key (and of the value) projection: h x kv_heads / heads under grouped-query
        attention (:attr:`Block.kv_heads`), else h."""
        return self.hidden_size * self.block.kv_heads // self.num_heads if self.block.kv_heads else self.hidden_size

    @property
    def logits_per_sample(self) -> int:
        """Logits one sample's head makes: s x V for an LM head, C for a pooled classifier, s x C
        for one that scores every position (:attr:`Block.head`)."""
        head = self.block.head
        if head == "lm":
            return (self.block.head_positions or self.seq_len) * self.vocab_size
        return self.block.num_labels * (self.seq_len if head == "scored" else 1)

    @cached_property
    def layout(self) -> ParamLayout:
        """Per-tensor facts, computed once per model and cached per knob value."""
        numels = self.param_tensor_numels or transformer_param_numels(
            self.num_layers, self.hidden_size, self.intermediate_size, self.vocab_size, self.seq_len)
        return ParamLayout(tuple(numels))


def least_squares_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) of the ordinary least-squares line through the points (at least two
    different x values)."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def linear_in_mbs(sizes: tuple[int, ...], values: tuple[float, ...], micro_batch_size: float) -> float:
    """Piecewise-linear interpolation of values measured at increasing micro-batch sizes; beyond
    the ends the nearest segment's slope continues (per extra sample), and with one point the
    value is proportional to the micro-batch size. A flat or falling end segment (noise) falls
    back to proportional scaling, so one more sample never costs nothing."""
    if len(sizes) == 1:
        return values[0] * micro_batch_size / sizes[0]
    i = min(max(bisect_right(sizes, micro_batch_size), 1), len(sizes) - 1)
    m0, m1, y0, y1 = sizes[i - 1], sizes[i], values[i - 1], values[i]
    value = y0 + (y1 - y0) * (micro_batch_size - m0) / (m1 - m0)
    if micro_batch_size > m1 and y1 <= y0:
        return values[-1] * micro_batch_size / sizes[-1]
    if value <= 0.0:
        return values[0] * micro_batch_size / sizes[0]
    return value


def clamped_in_mbs(rows: list[tuple[int, tuple[float, ...]]], micro_batch_size: float) -> tuple[float, ...]:
    """Values measured at a few micro-batch sizes (sorted): linear between them, the nearest
    end's values beyond (a correction measured at two sizes is not extrapolated)."""
    if micro_batch_size <= rows[0][0] or len(rows) == 1:
        return rows[0][1] if micro_batch_size <= rows[0][0] else rows[-1][1]
    if micro_batch_size >= rows[-1][0]:
        return rows[-1][1]
    i = bisect_right([r[0] for r in rows], micro_batch_size)
    (m0, v0), (m1, v1) = rows[i - 1], rows[i]
    w = (micro_batch_size - m0) / (m1 - m0)
    return tuple(a + (b - a) * w for a, b in zip(v0, v1))


def _by_stage(rows: tuple[tuple[Any, ...], ...]) -> dict[int, list[tuple[int, tuple[float, ...]]]]:
    """(stage, mbs, values...) rows grouped by stage and sorted by micro-batch size."""
    grouped: dict[int, list[tuple[int, tuple[float, ...]]]] = {}
    for stage, mbs, *values in rows:
        grouped.setdefault(stage, []).append((mbs, tuple(values)))
    return {stage: sorted(items) for stage, items in grouped.items()}


def _sorted_sizes(owner: str, sizes: list[int]) -> None:
    _require(len(sizes) > 0, WorkloadError, f"{owner} must hold at least one point.")
    _require(all(m > 0 for m in sizes), WorkloadError, f"{owner} micro-batch sizes must be positive, got {sizes}.")
    _require(all(a < b for a, b in zip(sizes, sizes[1:])), WorkloadError,
             f"{owner} must be sorted by increasing micro-batch size, got {sizes}.")


@dataclass(frozen=True)
class MeasuredCompute:
    """Times of one model measured on the hardware being estimated (one rank, mp 1), from the
    workload calibration. Per micro-step, at a few micro-batch sizes (interpolated with
    :func:`linear_in_mbs`): forward and backward seconds, and the backward with activation
    checkpointing. Per ZeRO stage, what DeepSpeed's engine adds to the model's own work that the
    cost model's terms do not hold (Python hooks, bookkeeping, synchronisation between ranks),
    measured with real engines at one micro-batch size and taken as independent of it."""

    points: tuple[tuple[int, float, float], ...]
    """(micro_batch_size, forward_s, backward_s), strictly increasing in micro_batch_size."""
    checkpointed_backward: Optional[tuple[tuple[int, float], ...]] = None
    """(micro_batch_size, backward_s) with activation checkpointing (recomputation included)."""
    stage_overheads: tuple[tuple[int, int, float, float, float, float], ...] = ()
    """(stage, micro_batch_size, per forward call, per backward call, per step call, per
    micro-step outside the engine's calls) seconds, measured at one or more sizes per stage."""
    reduce_call_overheads: tuple[tuple[int, int, float], ...] = ()
    """(stage, micro_batch_size, seconds): what one more gradient-reduction call (one more bucket)
    costs the engine beyond the collective's own time (its Python work, the wait for the other
    ranks), from engines with small buckets; the per-backward overhead above excludes it."""
    engines_measured: bool = True
    """False when no engine of this model was measured: the engine's work then comes from the
    hardware's :class:`FrameworkCosts` times this model's counts, as for a model not measured
    (the rows above then hold only the loop around the calls, if anything)."""
    threads: Optional[int] = None
    """CPU: the threads the rank ran with (another layout scales the times, see
    ``compute_time.measured_scale``); None on accelerators or when not recorded."""

    def __post_init__(self) -> None:
        _sorted_sizes("MeasuredCompute.points", [p[0] for p in self.points])
        for mbs, fwd, bwd in self.points:
            _positive(WorkloadError, "MeasuredCompute.points", forward_s=fwd, backward_s=bwd)
        if self.checkpointed_backward is not None:
            _sorted_sizes("MeasuredCompute.checkpointed_backward", [p[0] for p in self.checkpointed_backward])

    @cached_property
    def _columns(self) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]:
        return (tuple(p[0] for p in self.points), tuple(p[1] for p in self.points), tuple(p[2] for p in self.points))

    @cached_property
    def _overheads(self) -> dict[int, list[tuple[int, tuple[float, ...]]]]:
        return _by_stage(self.stage_overheads)

    def forward_s(self, micro_batch_size: float) -> float:
        sizes, fwd, _ = self._columns
        return linear_in_mbs(sizes, fwd, micro_batch_size)

    def backward_s(self, micro_batch_size: float) -> float:
        sizes, _, bwd = self._columns
        return linear_in_mbs(sizes, bwd, micro_batch_size)

    def recompute_s(self, micro_batch_size: float) -> Optional[float]:
        """Checkpointed backward minus plain backward (at least 0); None when not measured."""
        if not self.checkpointed_backward:
            return None
        sizes = tuple(p[0] for p in self.checkpointed_backward)
        ckpt = linear_in_mbs(sizes, tuple(p[1] for p in self.checkpointed_backward), micro_batch_size)
        return max(0.0, ckpt - self.backward_s(micro_batch_size))

    @cached_property
    def _call_overheads(self) -> dict[int, list[tuple[int, tuple[float, ...]]]]:
        return _by_stage(self.reduce_call_overheads)

    def reduce_call_overhead(self, stage: int, micro_batch_size: float = 1) -> float:
        """Seconds per reduction call at a stage (linear in the micro-batch size between the
        measured sizes, constant beyond); 0 when not measured."""
        rows = self._call_overheads.get(stage)
        return 0.0 if not rows else clamped_in_mbs(rows, micro_batch_size)[0]

    def overheads(self, stage: int, micro_batch_size: float = 1) -> tuple[float, ...]:
        """(forward, backward, step, loop) engine seconds at a stage, linear in the micro-batch
        size between the measured sizes and constant beyond them; zeros when not measured."""
        rows = self._overheads.get(stage)
        return (0.0, 0.0, 0.0, 0.0) if not rows else clamped_in_mbs(rows, micro_batch_size)


@dataclass(frozen=True)
class MeasuredMemory:
    """Memory of one model measured on the hardware being estimated (workload calibration)."""

    activation_peaks: tuple[tuple[int, int, Optional[int]], ...]
    """(micro_batch_size, peak bytes of forward + backward above what was held before, gradients
    left out, the same with activation checkpointing or None). The logits and loss are inside.
    Empty when only the process's memory applies (measured with another workload)."""
    process_overhead_bytes: int = 0
    """Where device memory is the process's memory (CPU): what the training program's code and
    libraries hold above the profile's fixed overhead."""
    zero_runtime_bytes: int = 0
    """Where device memory is the process's memory (CPU): what ZeRO's runtime (stages 1-3) loads
    on first use."""
    stage_residuals: tuple[tuple[int, int, int], ...] = ()
    """(stage, micro_batch_size, bytes): what real engines held at their peak beyond the cost
    model's terms (allocator growth, temporaries), measured at one or more sizes per stage."""

    @cached_property
    def _residuals(self) -> dict[int, list[tuple[int, tuple[float, ...]]]]:
        return _by_stage(self.stage_residuals)

    def residual_bytes(self, stage: int, micro_batch_size: float) -> int:
        """Linear in the micro-batch size between the measured sizes, constant beyond; 0 when
        not measured."""
        rows = self._residuals.get(stage)
        return 0 if not rows else int(clamped_in_mbs(rows, micro_batch_size)[0])

    def __post_init__(self) -> None:
        if self.activation_peaks:  # none: only the process's memory was measured (another workload's)
            _sorted_sizes("MeasuredMemory.activation_peaks", [p[0] for p in self.activation_peaks])
        _require(self.process_overhead_bytes >= 0 and self.zero_runtime_bytes >= 0, WorkloadError,
                 "MeasuredMemory overheads must be >= 0.")

    def activations_bytes(self, micro_batch_size: int, checkpointing: bool) -> Optional[int]:
        """Interpolated peak; None without peaks, or with checkpointing when that was not measured."""
        pts = self.activation_peaks
        if not pts:
            return None
        if checkpointing:
            if any(p[2] is None for p in pts):
                return None
            values = tuple(float(p[2]) for p in pts if p[2] is not None)
        else:
            values = tuple(float(p[1]) for p in pts)
        if min(values) <= 0:
            return None
        return int(linear_in_mbs(tuple(p[0] for p in pts), values, micro_batch_size))


def _interpolate_log10(points: Sequence[tuple[float, ...]], logs: Sequence[float], x: float, column: int) -> float:
    """``points[i][column]`` piecewise linear in log10 of ``points[i][0]`` (whose log10s are
    ``logs``, increasing), constant beyond the end points."""
    if x <= points[0][0]:
        return points[0][column]
    if x >= points[-1][0]:
        return points[-1][column]
    lx = math.log10(x)
    i = bisect_right(logs, lx)
    x0, x1 = logs[i - 1], logs[i]
    y0, y1 = points[i - 1][column], points[i][column]
    return y0 + (y1 - y0) * (lx - x0) / (x1 - x0)


@dataclass(frozen=True)
class EfficiencyCurve:
    """Achieved FLOP/s as a function of work size (FLOPs of one matmul): piecewise linear in
    log10(work size) between the points, constant beyond the end points."""

    points: tuple[tuple[float, float], ...]
    """(work_flop, achieved_flop_per_s) pairs, strictly increasing in work_flop."""

    def __post_init__(self) -> None:
        _require(len(self.points) > 0, ProfileError, "EfficiencyCurve.points must hold at least one point.")
        for work, rate in self.points:
            _positive(ProfileError, "EfficiencyCurve.points", work_flop=work, achieved_flop_per_s=rate)
        works = [w for w, _ in self.points]
        _require(all(a < b for a, b in zip(works, works[1:])), ProfileError,
                 f"EfficiencyCurve.points must be sorted by increasing work size, got {works}.")

    @cached_property
    def _log_works(self) -> tuple[float, ...]:
        return tuple(math.log10(w) for w, _ in self.points)

    def flop_per_s(self, work_flop: float) -> float:
        return _interpolate_log10(self.points, self._log_works, work_flop, 1)


@dataclass(frozen=True)
class WeightCost:
    """What a linear layer costs per byte of its weight beyond its FLOPs at the efficiency curve's
    rate: a CPU GEMM reads and packs the whole weight (and, backward, writes its gradient) whatever
    the tokens, which few tokens do not hide. Points (weight bytes, forward s/byte, backward
    s/byte), piecewise linear in log10(bytes) between them, constant beyond the ends."""

    points: tuple[tuple[float, float, float], ...]

    def __post_init__(self) -> None:
        _require(len(self.points) > 0, ProfileError, "WeightCost.points must hold at least one point.")
        sizes = [p[0] for p in self.points]
        _require(all(a < b for a, b in zip(sizes, sizes[1:])) and sizes[0] > 0, ProfileError,
                 f"WeightCost.points must be sorted by increasing positive size, got {sizes}.")
        _require(all(f >= 0 and b >= 0 for _, f, b in self.points), ProfileError,
                 "WeightCost.points must hold costs >= 0.")

    @cached_property
    def _log_sizes(self) -> tuple[float, ...]:
        return tuple(math.log10(p[0]) for p in self.points)

    def s_per_byte(self, weight_bytes: float, backward: bool) -> float:
        return _interpolate_log10(self.points, self._log_sizes, weight_bytes, 2 if backward else 1)

    def scaled(self, k: float) -> "WeightCost":
        """The same with ``k`` times the threads: every cost divided by ``k``."""
        return WeightCost(tuple((w, f / k, b / k) for w, f, b in self.points))


@dataclass(frozen=True)
class CollectiveCost:
    """t(bytes) = latency_s + bytes * ring_factor / bandwidth_bytes_per_s, where
    bandwidth_bytes_per_s is the bus bandwidth in the nccl-tests sense; a call larger than
    ``beyond_bytes`` (total array) pays its bytes beyond that at ``beyond_bandwidth_bytes_per_s``
    (measured on CPU, where large messages leave the caches and the shared-memory buffers)."""

    latency_s: float
    bandwidth_bytes_per_s: float
    beyond_bytes: Optional[float] = None
    beyond_bandwidth_bytes_per_s: Optional[float] = None

    def __post_init__(self) -> None:
        _require(self.latency_s >= 0, ProfileError, f"CollectiveCost.latency_s must be >= 0, got {self.latency_s!r}.")
        _positive(ProfileError, "CollectiveCost", bandwidth_bytes_per_s=self.bandwidth_bytes_per_s)
        _require((self.beyond_bytes is None) == (self.beyond_bandwidth_bytes_per_s is None), ProfileError,
                 "CollectiveCost.beyond_bytes and beyond_bandwidth_bytes_per_s come together.")
        if self.beyond_bytes is not None and self.beyond_bandwidth_bytes_per_s is not None:
            _positive(ProfileError, "CollectiveCost", beyond_bytes=self.beyond_bytes,
                      beyond_bandwidth_bytes_per_s=self.beyond_bandwidth_bytes_per_s)

    def call_s(self, total_bytes: float, factor: float) -> float:
        """One call over a total array of ``total_bytes`` with the ring factor ``factor``."""
        seconds = self.latency_s + total_bytes * factor / self.bandwidth_bytes_per_s
        if self.beyond_bytes is not None and self.beyond_bandwidth_bytes_per_s is not None \
                and total_bytes > self.beyond_bytes:
            seconds += (total_bytes - self.beyond_bytes) * factor * (
                1.0 / self.beyond_bandwidth_bytes_per_s - 1.0 / self.bandwidth_bytes_per_s)
        return seconds


@dataclass(frozen=True)
class Collectives:
    """The three collectives ZeRO issues, for one process layout."""

    allreduce: CollectiveCost
    allgather: CollectiveCost
    reduce_scatter: CollectiveCost


@dataclass(frozen=True)
class FusedAttentionRate:
    """What one fused attention kernel (flash or memory-efficient) achieves, in FLOP/s as
    FlashAttention counts them: forward ``4 * heads * s^2 * head_dim`` per sample (half when
    causal), backward 2.5 times that (:data:`~simtune.model.operators.FUSED_ATTENTION_BACKWARD`)."""

    forward_flop_per_s: float
    backward_flop_per_s: float

    def __post_init__(self) -> None:
        _positive(ProfileError, "FusedAttentionRate", forward_flop_per_s=self.forward_flop_per_s,
                  backward_flop_per_s=self.backward_flop_per_s)

    def flop_per_s(self, backward: bool) -> float:
        return self.backward_flop_per_s if backward else self.forward_flop_per_s


@dataclass(frozen=True)
class ComputeCurves:
    """Achieved FLOP/s curves per compute precision; fp16/bf16 may be absent on hardware
    without them. ``attention``: per precision, the fused attention kernel's rates where the
    profile has them (else that kernel runs at the curve's rate)."""

    fp32: EfficiencyCurve
    bf16: Optional[EfficiencyCurve] = None
    fp16: Optional[EfficiencyCurve] = None
    attention: tuple[tuple[str, FusedAttentionRate], ...] = ()

    def for_precision(self, precision: str) -> EfficiencyCurve:
        curve: Optional[EfficiencyCurve] = getattr(self, precision)
        if curve is None:
            raise ProfileError(f"The hardware profile has no {precision} compute curve.")
        return curve

    def attention_for(self, precision: str) -> Optional[FusedAttentionRate]:
        return next((rate for name, rate in self.attention if name == precision), None)

    def scaled(self, k: float) -> "ComputeCurves":
        """Every rate times ``k`` (a CPU rank with ``k`` times the threads)."""
        def curve(c: Optional[EfficiencyCurve]) -> Optional[EfficiencyCurve]:
            return None if c is None else EfficiencyCurve(tuple((w, r * k) for w, r in c.points))
        fp32 = curve(self.fp32)
        assert fp32 is not None
        return ComputeCurves(fp32=fp32, bf16=curve(self.bf16), fp16=curve(self.fp16), attention=tuple(
            (name, FusedAttentionRate(r.forward_flop_per_s * k, r.backward_flop_per_s * k))
            for name, r in self.attention))


@dataclass(frozen=True)
class FrameworkCosts:
    """Host-side seconds the software stack (PyTorch eager, DeepSpeed) spends per call, which no
    FLOP or byte count holds; they make small micro-batches slow and stage 3 expensive. Zero where
    unknown. docs/cost-model.md gives the sources of the spec profiles' values."""

    forward_kernel_s: float = 0.0
    """Dispatching one kernel in a forward pass (Python, the dispatcher, the launch)."""
    backward_kernel_s: float = 0.0
    """Dispatching one kernel in a backward pass (autograd's C++ engine: no Python per op)."""
    forward_module_s: float = 0.0
    """The model's own Python per parameter-holding module in a forward pass, beyond its kernels'
    dispatch (module calls, argument checks, mask building); backward runs no Python per module."""
    zero3_module_s: float = 0.0
    """Stage 3: one parameter-holding module's fetch and release in a forward pass (the pre and
    post hooks, the coordinator's bookkeeping, wrapping the module's outputs for the backward's
    hooks, the allgather's launch and wait, beyond the collective's own latency and bytes)."""
    zero3_module_backward_s: float = 0.0
    """Stage 3: the same in a backward pass (the hooks on the wrapped outputs fetch, those on the
    inputs release), also per recomputed module under checkpointing. Read apart from the forward's:
    the two passes run different hooks."""
    reduce_bucket_s: float = 0.0
    """Stages 1-3: one gradient-reduction bucket's Python work beyond the collective."""
    gather_call_s: float = 0.0
    """Stage 3: one allgather of a persistent parameter after the optimizer step (one call per
    such tensor), beyond the collective's own latency and bytes."""
    gradient_hook_s: float = 0.0
    """Stages 2-3: one parameter's gradient hook in a backward (the copy into the bucket)."""
    engine_step_s: float = 0.0
    """The engine's step call beyond the optimizer arithmetic (gradient norm, overflow check,
    bookkeeping)."""
    engine_micro_step_s: float = 0.0
    """The engine's own work in every micro-step (its forward call, the backward's prologue, the
    training loop around the calls), at every stage."""
    engine_boundary_s: float = 0.0
    """The engine's backward work where the ranks meet, beyond the collectives' own time: the
    gradient reduction's Python, flattening and copies back, and the wait for the slowest rank.
    Once per optimizer step at stages 0/1 (they reduce at the accumulation boundary only), every
    micro-step at stages 2/3 (:func:`simtune.model.step_time.backward_engine_work_per_step`)."""
    param_pass_s: tuple[tuple[float, float, float], ...] = ()
    """Per ZeRO stage 0-3, (forward, backward, step) seconds per parameter that the engine spends
    in proportion to the model's size beyond the cost model's terms (stages 1-2's flat partitions:
    gradient copies, norms, overflow checks, the fp32-to-parameter copy; stage 3's gathered copies).
    Forward and backward are per parameter of the replica, the forward only where parameters are
    gathered (more than one data-parallel rank); the step is per parameter of the replica at stages
    0-2 (the updated partition is copied back into the whole model) and of the rank's shard at
    stage 3 (parameters stay partitioned). Empty where not learnt; the gradient copies of
    ``step_time.gradient_copy_s`` stand in."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if name == "param_pass_s":
                _require(value == () or (len(value) == 4 and all(len(row) == 3 and min(row) >= 0 for row in value)),
                         ProfileError, f"FrameworkCosts.param_pass_s must be empty or 4 rows of 3 costs >= 0, "
                                       f"got {value!r}.")
                continue
            _require(value >= 0, ProfileError, f"FrameworkCosts.{name} must be >= 0, got {value!r}.")


@dataclass(frozen=True)
class AlgorithmRate:
    """Another optimizer algorithm than AdamW, timed on the device in the implementation of the
    device's AdamW fit, or on the host in DeepSpeed's CPU kernel (:mod:`simtune.optimizers`)."""

    algorithm: str
    s_per_param: float
    """Seconds per parameter of its step."""
    zero_state_s_per_param: float = 0.0
    """What its step adds per element whose states stay exactly 0 (measured on the host; 0 else)."""


@dataclass(frozen=True)
class HardwareSpec:
    """What the model needs to know about one device, its host and its interconnect."""

    device_memory_bytes: int
    usable_memory_bytes: int
    """What training may use: device memory less what the runtime reserves."""
    fixed_overhead_bytes: int
    """Allocated before any model state: context, workspaces, allocator slack."""
    compute: ComputeCurves
    optimizer_s_per_param: float
    """AdamW's step on the device, seconds per parameter of the local shard (another algorithm's:
    :meth:`simtune.optimizers.OptimizerChoice.relative_cost` times it)."""
    optimizer_impl: Optional[str] = dataclasses.field(default=None, kw_only=True)
    """The implementation that rate was measured for (the profile's optimizer fit name), which
    says what its step moves, launches and allocates (:data:`~simtune.optimizers.ADAM_KERNELS`)."""
    algorithm_rates: tuple["AlgorithmRate", ...] = dataclasses.field(default=(), kw_only=True)
    """Other algorithms than AdamW measured on the device in the implementation of
    ``optimizer_impl`` (:func:`simtune.model.adapters.algorithm_rates`); an algorithm not here
    steps at the AdamW rate scaled to its bytes."""
    zero_state_s_per_param: float = dataclasses.field(default=0.0, kw_only=True)
    """What that step adds per element whose Adam moments are exactly 0 (a parameter no sample
    has given a gradient: ``ModelSpec.idle_elements``): measured on CPU, where torch's ``sqrt``
    runs several times slower on zeros (``OptimizerFit.zero_state_s_per_param``); 0 elsewhere."""
    collectives: Optional[Collectives]
    """Costs within a node; None when unknown (a calibration on one rank, or one rank per node)."""
    h2d_bandwidth_bytes_per_s: float
    d2h_bandwidth_bytes_per_s: float
    """Copies between pinned host memory and the device (CPU: a copy within RAM)."""
    h2d_pageable_bytes_per_s: Optional[float] = dataclasses.field(default=None, kw_only=True)
    d2h_pageable_bytes_per_s: Optional[float] = dataclasses.field(default=None, kw_only=True)
    """The same from and to pageable host memory; None where not measured (the pinned rate
    stands in: :meth:`link_rate`)."""
    host_copy_bytes_per_s: Optional[float] = dataclasses.field(default=None, kw_only=True)
    """Bytes a copy within host memory moves per second (read once, written once): the casts
    offload runs on the host. None leaves them uncosted."""
    cpu_adam_s_per_param: Optional[float]
    """Host Adam step (optimizer offload), seconds per parameter; None when unknown."""
    host_algorithm_rates: tuple[AlgorithmRate, ...] = dataclasses.field(default=(), kw_only=True)
    """Other algorithms than AdamW timed on the host in the DeepSpeed CPU kernel that steps them
    offloaded (:data:`simtune.optimizers.HOST_KERNEL_FITS`); an algorithm not here steps at the CPU
    Adam rate scaled to its bytes."""
    host_torch_adamw_s_per_param: Optional[float] = dataclasses.field(default=None, kw_only=True)
    """torch's AdamW stepping host tensors, seconds per parameter: what DeepSpeed runs for an
    offloaded optimizer with ``torch_adam`` (:meth:`host_optimizer_rate`); None when not measured."""
    ranks_per_node: int = 1
    nodes: int = 1
    inter_node_collectives: Optional[Collectives] = None
    """Costs of a group spanning nodes; None when unknown (``links.ring_collectives`` says which
    costs a group uses)."""
    overlap_capable: bool = True
    """False where communication cannot run beside compute (DeepSpeed on CPU has no streams)."""
    collective_compute_share: float = 0.0
    """The share of the device's SMs a collective running beside the compute holds (NCCL's channels
    are thread blocks); overlapped compute runs slower by the larger of it and the share of the
    memory bandwidth the collective's traffic takes (:func:`simtune.model.overlap.collective_share`)."""
    host_memory_bytes: Optional[int] = None
    """Host memory per node, checked against offloaded states when given."""
    nvme_read_bytes_per_s: Optional[float] = None
    nvme_write_bytes_per_s: Optional[float] = None
    """Sequential reads and writes of the node's NVMe storage that ZeRO-Infinity swaps to, shared
    by the node's ranks; None where unknown (swaps are then not costed)."""
    dropout_mask_bytes: Optional[int] = 1
    """Bytes per element of a dropout mask autograd keeps: 1 on CUDA (a bool mask); None where
    dropout keeps its scaled noise in the compute precision (torch's CPU dropout)."""
    fused_attention_dropout: bool = True
    """The device's fused attention kernels take dropout (CUDA's flash and memory-efficient
    kernels do; torch's CPU flash kernel does not, so SDPA with dropout runs the math kernel there)."""
    streaming_bytes_per_s: Optional[float] = None
    """Achievable memory bandwidth of memory-bound kernels over fp32 elements (bytes read plus
    written per second); None leaves memory-bound operators uncosted."""
    streaming_by_precision: tuple[tuple[str, float], ...] = ()
    """The same over 16-bit elements, per precision where it differs (PyTorch's 16-bit kernels
    move fewer bytes per thread: on an H200 its bf16 GELU reached 0.65 of HBM where fp32 reached
    0.88); :meth:`streaming_for` falls back to ``streaming_bytes_per_s``."""
    plain_bytes_per_s: Optional[float] = None
    """The same for a kernel without arithmetic (norms, casts, in-place scaling): twice the rate of
    the calibration's copy within the device's memory (:func:`simtune.model.adapters.plain_bandwidth`).
    On CPU GELU's arithmetic makes the streaming rate 1.5-1.8x slower per byte.
    :meth:`plain_bandwidth` falls back to the fp32 streaming rate."""
    cache_bytes: int = 0
    """One rank's share of the last-level cache (CPU: the host's over its ranks); 0 where unknown."""
    cached_plain_bytes_per_s: Optional[float] = None
    """:attr:`plain_bytes_per_s` over data that stays in that cache (the calibration's copy inside
    it); None where not measured. :meth:`plain_bandwidth_within` says when it applies."""
    threads_per_rank: Optional[int] = None
    """Where a rank is a share of the node's cores (CPU): the threads each rank ran with when the
    profile was measured; :meth:`with_ranks_per_node` rescales the rates when fewer or more ranks
    share the node. None on accelerators."""
    dropout_s_per_element: float = 0.0
    """What drawing one dropout element's random number costs beyond its bytes (measured: large on
    CPU, where torch's generator is not bandwidth-bound; 0 on CUDA's Philox kernels)."""
    framework: FrameworkCosts = FrameworkCosts()
    first_touch_s_per_byte: Optional[float] = None
    """What writing a freshly mapped byte costs beyond writing one already mapped (its page
    fault): measured on CPU, where allocations of 32 MiB and more are mapped afresh each time
    (:mod:`simtune.model.fresh_memory`); None where the allocator keeps its memory (CUDA)."""
    reduce_scatter_staging: bool = False
    """True where the backend's reduce-scatter stages its input in new buffers ((1 + 1/n) times the
    input on gloo, measured by benchmarks/collective_memory.py); False where it reduces in place
    (NCCL)."""
    resident_on_touch: bool = False
    """True where memory is counted as the process's resident set (CPU): an allocation counts only
    as far as it is written, so a gradient bucket larger than the gradients it receives costs
    only what they fill."""
    matmul_weights: Optional[WeightCost] = None
    """A linear layer's cost per weight byte beyond its FLOPs (measured on CPU); None: FLOPs alone."""
    pool_wake_s: Optional[float] = None
    """What a parallel kernel of a CPU rank with two or more threads pays to wake its OpenMP
    workers once the pool is throttled (measured: ``ThreadPoolWake``); None where not measured
    (accelerators, older calibrations). :mod:`simtune.model.thread_pool` says when it applies."""
    pool_product_wake_s: Optional[float] = None
    """What a matrix product pays for the same wake-up (measured: ``ThreadPoolWake.product_wake_s``);
    None: products pay ``pool_wake_s``."""
    calibrated: Optional["HardwareSpec"] = dataclasses.field(default=None, repr=False, compare=False)
    """The layout the profile was measured in, which :meth:`with_ranks_per_node` starts from
    (None: this is it)."""

    def __post_init__(self) -> None:
        _positive(ProfileError, "HardwareSpec", device_memory_bytes=self.device_memory_bytes,
                  usable_memory_bytes=self.usable_memory_bytes,
                  optimizer_s_per_param=self.optimizer_s_per_param,
                  h2d_bandwidth_bytes_per_s=self.h2d_bandwidth_bytes_per_s,
                  d2h_bandwidth_bytes_per_s=self.d2h_bandwidth_bytes_per_s,
                  ranks_per_node=self.ranks_per_node, nodes=self.nodes)
        if self.cpu_adam_s_per_param is not None:
            _positive(ProfileError, "HardwareSpec", cpu_adam_s_per_param=self.cpu_adam_s_per_param)
        _require(self.zero_state_s_per_param >= 0, ProfileError,
                 f"HardwareSpec.zero_state_s_per_param must be >= 0, got {self.zero_state_s_per_param!r}.")
        for field, rates in (("algorithm_rates", self.algorithm_rates),
                             ("host_algorithm_rates", self.host_algorithm_rates)):
            for rate in rates:
                _require(rate.algorithm in ALGORITHMS and rate.algorithm != "adamw", ProfileError,
                         f"HardwareSpec.{field} names {rate.algorithm!r}, not another algorithm than AdamW.")
                _positive(ProfileError, "HardwareSpec", **{f"{field}[{rate.algorithm}].s_per_param": rate.s_per_param})
                _require(rate.zero_state_s_per_param >= 0, ProfileError,
                         f"HardwareSpec.{field}[{rate.algorithm}].zero_state_s_per_param must be >= 0.")
        for name in ("h2d_pageable_bytes_per_s", "d2h_pageable_bytes_per_s", "host_copy_bytes_per_s"):
            if getattr(self, name) is not None:
                _positive(ProfileError, "HardwareSpec", **{name: getattr(self, name)})
        _require(self.usable_memory_bytes <= self.device_memory_bytes, ProfileError,
                 f"HardwareSpec.usable_memory_bytes ({self.usable_memory_bytes}) exceeds "
                 f"device_memory_bytes ({self.device_memory_bytes}).")
        _require(self.fixed_overhead_bytes >= 0, ProfileError,
                 f"HardwareSpec.fixed_overhead_bytes must be >= 0, got {self.fixed_overhead_bytes!r}.")
        if self.host_memory_bytes is not None:
            _positive(ProfileError, "HardwareSpec", host_memory_bytes=self.host_memory_bytes)
        _require(0.0 <= self.collective_compute_share < 1.0, ProfileError,
                 f"HardwareSpec.collective_compute_share must be in [0, 1), got {self.collective_compute_share!r}.")
        if self.streaming_bytes_per_s is not None:
            _positive(ProfileError, "HardwareSpec", streaming_bytes_per_s=self.streaming_bytes_per_s)
        if self.plain_bytes_per_s is not None:
            _positive(ProfileError, "HardwareSpec", plain_bytes_per_s=self.plain_bytes_per_s)
        if self.cached_plain_bytes_per_s is not None:
            _positive(ProfileError, "HardwareSpec", cached_plain_bytes_per_s=self.cached_plain_bytes_per_s)
        _require(self.cache_bytes >= 0, ProfileError, f"HardwareSpec.cache_bytes must be >= 0, got {self.cache_bytes!r}.")
        for name, bw in self.streaming_by_precision:
            _positive(ProfileError, "HardwareSpec.streaming_by_precision", **{name: bw})

    def streaming_for(self, precision: str) -> Optional[float]:
        """The memory-bound kernels' bandwidth over elements of ``precision``."""
        return next((bw for name, bw in self.streaming_by_precision if name == precision), self.streaming_bytes_per_s)

    def plain_bandwidth(self) -> Optional[float]:
        """Bytes per second a memory-bound kernel without arithmetic moves (``plain_bytes_per_s``,
        else the fp32 streaming rate)."""
        return self.plain_bytes_per_s if self.plain_bytes_per_s is not None else self.streaming_bytes_per_s

    def with_host_s(self, device_s: float, host_s: float) -> float:
        """Seconds of work that takes ``device_s`` on the device and ``host_s`` of host dispatch: the
        larger where the device runs asynchronously of the host (``overlap_capable``: CUDA), their
        sum where every op runs on the calling thread (CPU)."""
        return max(device_s, host_s) if self.overlap_capable else device_s + host_s

    def plain_bandwidth_within(self, working_set_bytes: float) -> Optional[float]:
        """The cached rate where a kernel's data (``working_set_bytes``: what it reads and writes,
        counted once) fits in the rank's share of the cache, else None."""
        if self.cached_plain_bytes_per_s is None or not 0 < working_set_bytes <= self.cache_bytes:
            return None
        return self.cached_plain_bytes_per_s

    @property
    def ranks(self) -> int:
        """Every rank of this layout: ranks_per_node * nodes."""
        return self.ranks_per_node * self.nodes

    def with_ranks_per_node(self, per_node: int, nodes: int) -> "HardwareSpec":
        """This hardware laid out with ``per_node`` ranks on each of ``nodes`` nodes, from the
        layout it was measured in. Where ranks share the node's cores (``threads_per_rank``), each
        gets cores / ranks threads, and the compute curves (fused attention's rates with them), streaming bandwidth,
        the page faults of fresh memory and the engine's work per parameter
        (``FrameworkCosts.param_pass_s``: copies, norms and updates over the flat partitions) scale
        with its threads, as do the matmul weights' cost (torch's CPU kernels split their work over
        OpenMP threads; dispatch, the engine's per-call costs and dropout's random numbers do not:
        torch's CPU generator draws them in order, so dropout ran 1.13x and ``bernoulli_`` 1.09x
        faster with two threads than with one where GELU ran 1.8x, on 262k elements on the 2-core
        VM), and its memory and last-level cache are the node's shared by that many ranks."""
        root = self.calibrated or self
        spec = dataclasses.replace(root, ranks_per_node=per_node, nodes=nodes, calibrated=root)
        if root.threads_per_rank is None or per_node == root.ranks_per_node:
            return spec
        threads = max(1, root.threads_per_rank * root.ranks_per_node // per_node)
        k = threads / root.threads_per_rank

        memory = root.device_memory_bytes * root.ranks_per_node // per_node
        cached = root.cached_plain_bytes_per_s
        fw = root.framework
        passes = tuple((f / k, b / k, s / k) for f, b, s in fw.param_pass_s)
        return dataclasses.replace(
            spec, threads_per_rank=threads, device_memory_bytes=memory,
            usable_memory_bytes=memory - (root.device_memory_bytes - root.usable_memory_bytes),
            compute=root.compute.scaled(k),
            streaming_bytes_per_s=None if root.streaming_bytes_per_s is None else root.streaming_bytes_per_s * k,
            plain_bytes_per_s=None if root.plain_bytes_per_s is None else root.plain_bytes_per_s * k,
            cache_bytes=root.cache_bytes * root.ranks_per_node // per_node,
            cached_plain_bytes_per_s=None if cached is None else cached * k,
            streaming_by_precision=tuple((name, bw * k) for name, bw in root.streaming_by_precision),
            first_touch_s_per_byte=None if root.first_touch_s_per_byte is None else root.first_touch_s_per_byte / k,
            matmul_weights=None if root.matmul_weights is None else root.matmul_weights.scaled(k),
            framework=dataclasses.replace(fw, param_pass_s=passes))

    def with_threads_per_rank(self, threads: int) -> Optional["HardwareSpec"]:
        """This hardware laid out so that each rank has ``threads`` threads (cores / threads ranks
        per node), or None where ranks do not share cores or no layout gives that many."""
        root = self.calibrated or self
        if root.threads_per_rank is None:
            return None
        cores = root.threads_per_rank * root.ranks_per_node
        if threads < 1 or cores % threads:
            return None
        return root.with_ranks_per_node(cores // threads, self.nodes)

    def link_rate(self, upload: bool, pinned: bool) -> float:
        """Bytes per second of a copy to the device (``upload``) or from it, from pinned or pageable
        host memory; a pageable copy the profile did not measure runs at the pinned rate."""
        rate = self.h2d_bandwidth_bytes_per_s if upload else self.d2h_bandwidth_bytes_per_s
        pageable = self.h2d_pageable_bytes_per_s if upload else self.d2h_pageable_bytes_per_s
        return rate if pinned or pageable is None else pageable

    def cpu_adam_rate(self) -> float:
        if self.cpu_adam_s_per_param is None:
            raise ProfileError("The hardware profile has no CPU Adam rate, so optimizer offload "
                               "cannot be estimated.")
        return self.cpu_adam_s_per_param

    def algorithm_rate(self, algorithm: str, host: bool = False) -> Optional[AlgorithmRate]:
        """The measured rate of ``algorithm`` on the device (:attr:`algorithm_rates`) or, ``host``,
        of its DeepSpeed CPU kernel (:attr:`host_algorithm_rates`); None where not measured."""
        rates = self.host_algorithm_rates if host else self.algorithm_rates
        return next((rate for rate in rates if rate.algorithm == algorithm), None)

    def host_optimizer_rate(self, torch_adamw: bool) -> tuple[float, str]:
        """Seconds per parameter of an offloaded AdamW step, and how that step launches
        (:data:`simtune.optimizers.IMPLEMENTATIONS`): torch's AdamW on host tensors, a for-loop,
        where DeepSpeed runs it (``torch_adam``: runtime/engine.py ``get_optimizer_configuration``
        returns torch's AdamW before it considers DeepSpeedCPUAdam) and the profile measured it,
        else the profile's CPU Adam rate, one fused loop."""
        if torch_adamw and self.host_torch_adamw_s_per_param is not None:
            return self.host_torch_adamw_s_per_param, "for_loop"
        return self.cpu_adam_rate(), "fused"


CHECKPOINTING_POLICY = re.compile(r"full|selective-op|(every|first)-([1-9][0-9]*)-layers")
"""The activation checkpointing policies (:mod:`simtune.model.checkpointing`); the groups are the
kind of layer policy and its N."""


def check_checkpointing_policy(name: str) -> None:
    """Refuse a name that is none of :data:`CHECKPOINTING_POLICY`'s, in one sentence."""
    _require(bool(CHECKPOINTING_POLICY.fullmatch(name)), ConfigError,
             f"The activation checkpointing policy must be full, selective-op, every-N-layers or first-N-layers "
             f"(N a positive integer), not {name!r}.")


@dataclass(frozen=True)
class TrainConfig:
    """One training configuration, with DeepSpeed 0.19.8's defaults for every ZeRO knob
    (:data:`simtune.knobs.KNOBS`)."""

    stage: int
    micro_batch_size: int
    gradient_accumulation_steps: int = 1
    dp_degree: int = 1
    mp_degree: int = 1
    precision: str = "bf16"
    reduce_bucket_size: int = int(knob("reduce_bucket_size").default)
    allgather_bucket_size: int = int(knob("allgather_bucket_size").default)
    overlap_comm: Optional[bool] = None
    """None is DeepSpeed's default: on for stage 3, off otherwise."""
    contiguous_gradients: bool = bool(knob("contiguous_gradients").default)
    reduce_scatter: bool = bool(knob("reduce_scatter").default)
    stage3_prefetch_bucket_size: int = int(knob("stage3_prefetch_bucket_size").default)
    stage3_param_persistence_threshold: int = int(knob("stage3_param_persistence_threshold").default)
    stage3_max_live_parameters: int = int(knob("stage3_max_live_parameters").default)
    stage3_max_reuse_distance: int = int(knob("stage3_max_reuse_distance").default)
    sub_group_size: int = int(knob("sub_group_size").default)
    """ZeRO-3 steps its optimizer over sub-groups of about this many partition elements."""
    offload_optimizer: bool = False
    offload_param: bool = False
    offload_optimizer_nvme: bool = False
    offload_param_nvme: bool = False
    """The offload section's ``device`` is ``"nvme"`` (ZeRO-Infinity). Only stage 3 swaps to NVMe:
    DeepSpeed 0.19.8's stages 1/2 take it as ``"cpu"`` (stage_1_and_2.py ``cpu_offload``), and
    the model does too (:attr:`swaps_optimizer_states`, :attr:`swaps_parameters`)."""
    nvme: NvmeSwapSettings = NvmeSwapSettings()
    """The offload sections' swap settings (read where the configuration swaps)."""
    offload_optimizer_pinned: bool = True
    offload_param_pinned: bool = True
    """Each offload section's ``pin_memory`` (DeepSpeed 0.19.8's default: true): its host buffers
    are page-locked, else pageable (:func:`simtune.model.optimizer_time.offload_transfer_s`)."""
    activation_checkpointing: bool = False
    checkpointing_policy: str = "full"
    """What checkpointing keeps when it is on (:mod:`simtune.model.checkpointing`): ``full``
    (DeepSpeed's and Hugging Face's), ``selective-op`` or ``every-N-layers`` (torchtitan's), or
    ``first-N-layers`` (N layers: Megatron-LM's block method)."""
    autocast: bool = False
    """torch autocast around an fp32 model (the Hugging Face Trainer's fp16 and bf16 without
    DeepSpeed, llm.c's PyTorch reference): parameters, gradients and their reduction stay fp32;
    matrix products run in ``precision`` on copies cast per forward, normalisation and softmax in
    fp32 (:mod:`simtune.model.operators`)."""
    deepspeed_autocast: bool = False
    """With ``autocast``: DeepSpeed's own (its ``torch_autocast`` config section). Its engines keep
    DeepSpeed's fp32 states (an fp32 master partition at stages 1-3) and communicate linear
    layers' gradients and gathered parameters in ``precision`` (``comm_dtype``,
    deepspeed/runtime/torch_autocast.py), the other parameters in fp32."""
    communication_precision: Optional[str] = None
    """DeepSpeed's ``communication_data_type``: the precision gradients are reduced in ("fp32",
    "fp16" or "bf16"); None is DeepSpeed's default, the gradients' own (engine.py
    ``communication_data_type``). DeepSpeed's autocast ignores it (each parameter's gradients are
    reduced in that parameter's communication dtype: ``get_all_comm_dtypes``)."""
    gradient_clipping: bool = False
    """The config's ``gradient_clipping`` is above 0 (:func:`simtune.model.step_time.clipping_s`)."""
    fused_adam: bool = True
    """DeepSpeed runs its own Adam: FusedAdam on the device, DeepSpeedCPUAdam for an offloaded
    optimizer. False where it runs torch's AdamW (``torch_adam``, and always on CPU): wrapped per
    tensor at stage 0 in 16 bits (:func:`simtune.model.step_time.unfused_wrapper_s`), and stepped
    on the host's torch rate when offloaded (:meth:`HardwareSpec.host_optimizer_rate`)."""
    optimizer: OptimizerChoice = ADAMW
    """The algorithm it trains with (:mod:`simtune.optimizers`): its states and its step's bytes."""

    def __post_init__(self) -> None:
        _require(self.stage in (0, 1, 2, 3), ConfigError, f"TrainConfig.stage must be 0, 1, 2 or 3, got {self.stage!r}.")
        _positive(ConfigError, "TrainConfig", micro_batch_size=self.micro_batch_size,
                  gradient_accumulation_steps=self.gradient_accumulation_steps,
                  dp_degree=self.dp_degree, mp_degree=self.mp_degree,
                  reduce_bucket_size=self.reduce_bucket_size,
                  allgather_bucket_size=self.allgather_bucket_size, sub_group_size=self.sub_group_size)
        _require(self.precision in PRECISIONS, ConfigError,
                 f"TrainConfig.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        for name in ("stage3_prefetch_bucket_size", "stage3_param_persistence_threshold",
                     "stage3_max_live_parameters", "stage3_max_reuse_distance"):
            value = getattr(self, name)
            _require(value >= 0, ConfigError, f"TrainConfig.{name} must be >= 0, got {value!r}.")
        _require(not self.offload_param or self.stage == 3, ConfigError,
                 f"Parameter offload needs ZeRO stage 3, got stage {self.stage}.")
        _require(not self.offload_optimizer or self.stage >= 1, ConfigError,
                 "Optimizer offload needs ZeRO stage 1, 2 or 3, got stage 0.")
        _require(self.offload_optimizer or not self.offload_optimizer_nvme, ConfigError,
                 "Optimizer offload to NVMe is optimizer offload: set offload_optimizer too.")
        _require(self.offload_param or not self.offload_param_nvme, ConfigError,
                 "Parameter offload to NVMe is parameter offload: set offload_param too.")
        check_checkpointing_policy(self.checkpointing_policy)
        _require(not self.autocast or self.precision != "fp32", ConfigError,
                 "Autocast needs a 16-bit precision (fp16 or bf16), got fp32.")
        _require(self.autocast or not self.deepspeed_autocast, ConfigError,
                 "DeepSpeed's autocast is autocast: set autocast too.")
        _require(self.communication_precision is None or self.communication_precision in PRECISIONS, ConfigError,
                 f"TrainConfig.communication_precision must be one of {', '.join(PRECISIONS)} or None, "
                 f"got {self.communication_precision!r}.")

    @property
    def bytes_per_element(self) -> int:
        """Bytes of one element in the compute precision (activations, matrix-product inputs)."""
        return BYTES_PER_ELEMENT[self.precision]

    @property
    def state_bytes(self) -> int:
        """Bytes of one parameter or gradient element as the model keeps and communicates them:
        fp32 under autocast, else the compute precision."""
        return BYTES_PER_ELEMENT["fp32"] if self.autocast else self.bytes_per_element

    @property
    def state_precision(self) -> str:
        """The precision parameters, gradients and the optimizer's inputs are kept in."""
        return "fp32" if self.autocast else self.precision

    @property
    def gradient_comm_bytes(self) -> Optional[int]:
        """Bytes of one gradient element as DeepSpeed reduces it where ``communication_precision``
        sets a precision that applies (not under DeepSpeed's autocast), else None: the engine's
        own element size (:func:`simtune.model.comm_time.element_bytes`)."""
        if self.communication_precision is None or self.deepspeed_autocast:
            return None
        return BYTES_PER_ELEMENT[self.communication_precision]

    @property
    def swaps_optimizer_states(self) -> bool:
        """Whether the offloaded optimizer's fp32 states live on NVMe and are swapped through host
        buffers every step (stage 3 with ``offload_optimizer_nvme``)."""
        return self.stage == 3 and self.offload_optimizer_nvme

    @property
    def swaps_parameters(self) -> bool:
        """Whether offloaded parameters beyond the host's share (``offload_param.max_in_cpu``) live
        on NVMe (stage 3 with ``offload_param_nvme``)."""
        return self.stage == 3 and self.offload_param_nvme

    @property
    def allreduces_gradients(self) -> bool:
        """Whether the engine allreduces its gradient buckets: stages 0-2 always (stage_1_and_2.py's
        multi-rank bucket allreduce included), stage 3 with ``reduce_scatter`` off and contiguous
        gradients (stage3.py ``__avg_scatter_contiguous_grads``); else stage 3 reduce-scatters."""
        return self.stage < 3 or (not self.reduce_scatter and self.contiguous_gradients)

    @property
    def residual_bytes(self) -> int:
        """Bytes of one element of the residual stream between layers: fp32 under autocast (a
        norm's fp32 output, or a 16-bit product's output added to it, promotes to fp32)."""
        return self.state_bytes

    @property
    def overlap(self) -> bool:
        """overlap_comm as DeepSpeed resolves it."""
        return self.stage == 3 if self.overlap_comm is None else self.overlap_comm

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps * self.dp_degree


__all__ = [
    "BYTES_PER_ELEMENT", "PRECISIONS", "Block", "CollectiveCost", "FrameworkCosts", "Collectives", "ComputeCurves",
    "EfficiencyCurve", "HardwareSpec", "MeasuredCompute", "MeasuredMemory", "ModelSpec", "TrainConfig",
    "least_squares_line", "linear_in_mbs",
]
