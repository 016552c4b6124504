"""The operators one training micro-step runs, by class, and what each costs on a device.

A transformer layer (and the model's two ends) is written as the kernels PyTorch eager launches
for it, in two classes (Williams et al. 2009, the roofline: a kernel is bound by its arithmetic
or by the bytes it moves):

- :class:`Matmul`: a matrix product of ``2 * batch * rows * cols * depth`` FLOPs, timed through
  the device's efficiency curve at its own FLOPs (small products fill the device worse); its
  backward is two products of the same size (input and weight gradients; Narayanan et al. 2021,
  section 5.1). A fused attention kernel's backward is 2.5 forwards (it recomputes the scores)
  and runs at the profile's fused attention rate where it has one: FlashAttention-2 reaches
  0.3-0.37 of an H100's dense peak where cuBLAS products reach 0.8 (Shah et al. 2024, FA3 paper,
  Figures 5-6).
- :class:`Streaming`: a memory-bound operator (norms, activations, softmax, dropout, residual adds,
  copies, the loss) moving ``elements x passes`` elements of the compute precision (plus fp32
  passes where it runs in fp32) over the device's achievable memory bandwidth.

Every kernel also costs the host its dispatch (Python, the dispatcher, the launch: 2-20 us per
op in PyTorch eager, see docs/cost-model.md). On a device that runs asynchronously (CUDA) the host
runs ahead of the kernels, so a pass takes the longer of the two; where every op runs on the
calling thread (CPU) they add up:

    pass_s = max(device_s, host_s)   (asynchronous)      device_s + host_s   (synchronous)
    device_s = sum_matmul flop / rate(flop) + sum_streaming bytes / bandwidth
    host_s = kernels x dispatch_s

Attention by implementation: eager runs two batched products and the s x s elementwise chain
(scale, mask, softmax, dropout); fused attention (torch SDPA's flash and memory-efficient kernels,
FlashAttention) is one kernel whose FLOPs run at the profile's fused attention rate (the
matmul curve where it has none) and which streams only Q, K, V and O; a causal fused kernel skips
the masked half of the products (Dao 2023, FlashAttention-2, section 3.1.1). Fused attention
with dropout on a device whose kernels take none runs the math kernel, costed as eager.

The kernel and pass counts are read from the Hugging Face implementations of transformers 5 (one
per op PyTorch launches: a view launches nothing, ``F.linear`` is one GEMM with its bias, its
backward two GEMMs and a bias reduction); they land in the 11-40 forward and 27-90 backward
kernels per layer that published traces show (docs/cost-model.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simtune.model.inputs import Block, HardwareSpec, ModelSpec


FUSED_ATTENTION_BACKWARD = 2.5
"""A fused attention kernel keeps no s x s probabilities, so its backward recomputes the scores
and probabilities before the four gradient products: five products to the forward's two (Dao
2023, FlashAttention-2, Algorithm 2; its benchmarks count the backward as 2.5 forwards)."""


@dataclass(frozen=True)
class Matmul:
    """``batch`` products of [rows, depth] x [depth, cols] per sample; ``rows`` scales with the
    micro-batch (tokens), except for batched attention products, where ``batch`` does."""

    name: str
    rows: int
    cols: int
    depth: int
    batch: int = 1
    share: float = 1.0
    """Fraction of the FLOPs a kernel really runs (0.5 for a causal fused attention kernel)."""
    bias: bool = False
    """Its backward also reduces the output gradient over tokens (one kernel, one pass)."""
    weighted: bool = True
    """A linear layer's product with a ``[cols, depth]`` weight (False for attention's own
    products and the unlisted remainder)."""
    fused_attention: bool = False
    """A fused attention kernel: its backward runs :data:`FUSED_ATTENTION_BACKWARD` times its
    forward FLOPs, at the hardware's fused attention rate where the profile has one."""

    @property
    def backward_products(self) -> float:
        """Backward FLOPs over forward FLOPs."""
        return FUSED_ATTENTION_BACKWARD if self.fused_attention else 2.0

    def flop(self, samples: int) -> float:
        return 2.0 * samples * self.batch * self.rows * self.cols * self.depth * self.share


@dataclass(frozen=True)
class Streaming:
    """A memory-bound operator over ``elements`` elements per sample (per micro-batch when
    ``per_batch``): the elements it reads and writes, in units of its output, forward and
    backward, in the compute precision and in fp32."""

    name: str
    elements: int
    forward_passes: float
    backward_passes: float
    forward_kernels: int
    backward_kernels: int
    forward_fp32_passes: float = 0.0
    backward_fp32_passes: float = 0.0
    per_batch: bool = False
    random: bool = False
    """Dropout: its forward draws one random number per element
    (``HardwareSpec.dropout_s_per_element``)."""

    def count(self, samples: int) -> int:
        return self.elements * (1 if self.per_batch else samples)

    def bytes(self, samples: int, element_bytes: int, backward: bool) -> tuple[float, float]:
        """Bytes moved in the compute precision's passes and in the fp32 passes."""
        n = self.count(samples)
        passes, fp32_passes = ((self.backward_passes, self.backward_fp32_passes) if backward
                               else (self.forward_passes, self.forward_fp32_passes))
        return n * passes * element_bytes, n * fp32_passes * 4.0


@dataclass(frozen=True)
class Operators:
    """One transformer layer (repeated ``num_layers`` times) and the model outside its layers."""

    layer_matmuls: tuple[Matmul, ...]
    layer_streaming: tuple[Streaming, ...]
    outer_matmuls: tuple[Matmul, ...]
    outer_streaming: tuple[Streaming, ...]

    def kernels(self, layers: int, backward: bool, outer: bool = True, *, min_elements: float = 0,
                samples: int = 1) -> int:
        """Kernels of ``layers`` layers (and the ends when ``outer``) in one pass; with
        ``min_elements``, only the memory-bound ones over at least that many elements at
        ``samples`` samples (every product counts)."""
        def count(matmuls: tuple[Matmul, ...], streaming: tuple[Streaming, ...]) -> int:
            wide = [s for s in streaming if s.count(samples) >= min_elements] if min_elements else streaming
            if backward:
                return (sum(2 + m.bias for m in matmuls)
                        + sum(s.backward_kernels for s in wide))
            return len(matmuls) + sum(s.forward_kernels for s in wide)
        total = layers * count(self.layer_matmuls, self.layer_streaming)
        return total + (count(self.outer_matmuls, self.outer_streaming) if outer else 0)

    def products(self, layers: int, backward: bool, outer: bool = True) -> int:
        """Of :meth:`kernels`, the BLAS products (a fused attention kernel is not one): one per
        product forward, two backward (the input's and the weight's gradients)."""
        def count(matmuls: tuple[Matmul, ...]) -> int:
            return (2 if backward else 1) * sum(not m.fused_attention for m in matmuls)
        return layers * count(self.layer_matmuls) + (count(self.outer_matmuls) if outer else 0)


def _norm(block: Block, name: str, n: int) -> Streaming:
    """LayerNorm is one fused kernel each way (its backward a second one for the weights);
    Llama's RMSNorm is Python in transformers: to(fp32), pow, mean, add, rsqrt, mul, to, mul."""
    if block.norm == "rms_norm":
        return Streaming(name, n, 3, 5, 8, 12, forward_fp32_passes=5, backward_fp32_passes=8)
    return Streaming(name, n, 2, 3, 1, 2)


GELU_NEW_PASSES = (18, 28, 8, 11)
"""(forward passes, backward passes, forward kernels, backward kernels) of GPT-2's NewGELU,
0.5 x (1 + tanh(c (x + 0.044715 x^3))): forward pow, mul, add, mul, tanh, add, mul, mul (a
product of two tensors reads two and writes one, of a tensor and a scalar reads one); autograd's
backward: the last product's two gradients (3 + 3), tanh_backward (3), the two products by a
constant (2 + 2), pow's 3 x^2 g (pow, mul, mul: 2 + 2 + 3), 0.5 g (2), and two in-place adds
that sum x's three gradients (3 + 3), nothing for the adds of a constant. torch's profiler lists
those eleven kernels (7 mul, pow, tanh_backward, 2 add_; benchmarks/results/operator_breakdown.txt).
The counts are the kernels', not a fit: on one CPU thread over 2^19 and 2^21 fp32 elements the
backward took 0.7-1.1x the forward, where 28 / 18 passes give 1.6 (products by a constant run
faster than a pass at the calibrated bandwidth there)."""


def _mlp(block: Block, s: int, h: int, i: int) -> tuple[tuple[Matmul, ...], tuple[Streaming, ...]]:
    if block.mlp == "swiglu":
        return ((Matmul("mlp.gate", s, i, h), Matmul("mlp.up", s, i, h), Matmul("mlp.down", s, h, i)),
                (Streaming("mlp.silu_mul", s * i, 5, 9, 2, 3),))
    bias = block.linear_bias
    matmuls = (Matmul("mlp.in", s, i, h, bias=bias), Matmul("mlp.out", s, h, i, bias=bias))
    if block.mlp == "gelu_python":
        return matmuls, (Streaming("mlp.gelu_new", s * i, *GELU_NEW_PASSES),)
    if block.mlp == "gelu_python_compiled":  # reads x, writes the output and the tanh it keeps
        return matmuls, (Streaming("mlp.gelu_new_fused", s * i, 2, 3, 1, 1, forward_fp32_passes=1,
                                   backward_fp32_passes=1),)
    return matmuls, (Streaming("mlp.gelu", s * i, 2, 3, 1, 1),)


def _dropout(name: str, n: int) -> Streaming:
    """Output, and a one-byte mask beside it (about half a pass of a two-byte element)."""
    return Streaming(name, n, 2.5, 2.5, 1, 1, random=True)


def _attention(m: ModelSpec, fused: bool) -> tuple[tuple[Matmul, ...], tuple[Streaming, ...]]:
    block = m.block
    s, h, a = m.seq_len, m.hidden_size, m.num_heads
    d = h // a
    if fused:
        share = 0.5 if block.causal else 1.0
        return ((Matmul("attn.fused", s, s, d, batch=2 * a, share=share, weighted=False, fused_attention=True),),
                (Streaming("attn.fused_io", s * h, 4, 8, 0, 2),))
    streaming = [Streaming("attn.scale_mask", a * s * s, 4, 4, 2, 2),
                 Streaming("attn.softmax", a * s * s, 2, 3, 1, 1)]
    if m.attention_dropout:
        streaming.append(_dropout("attn.dropout", a * s * s))
    return ((Matmul("attn.scores", s, s, d, batch=a, weighted=False),
             Matmul("attn.weighted", s, d, s, batch=a, weighted=False)),
            tuple(streaming))


ATTENTION_CORE = ("attn.scores", "attn.weighted", "attn.fused")
"""Attention's own products (batched over heads): the layer's other products are linear layers."""


def keeps_attention_scores(m: ModelSpec, hw: HardwareSpec) -> bool:
    """True when backward finds the s x s attention probabilities stored: eager attention, or
    fused attention with dropout on a device whose fused kernels take none (the math kernel runs)."""
    if m.attention == "eager":
        return True
    return m.attention_dropout and not hw.fused_attention_dropout


def model_operators(m: ModelSpec, hw: HardwareSpec, autocast: bool = False) -> Operators:
    """The model's operators on this device: attention fused unless it keeps its scores there
    (under torch autocast with ``autocast``)."""
    return operators(m, fused_attention=not keeps_attention_scores(m, hw), autocast=autocast)


_CACHE: dict[tuple[object, ...], Operators] = {}


def operators(m: ModelSpec, fused_attention: bool, autocast: bool = False) -> Operators:
    """The operators of ``m`` (``fused_attention``: whether attention runs one fused kernel;
    ``autocast``: under torch autocast, :func:`under_autocast`), built once per shape (the layer
    count and FLOPs included: they size the unlisted product)."""
    key = (m.block, m.num_layers, m.seq_len, m.hidden_size, m.num_heads, m.intermediate_size, m.vocab_size,
           m.flops_per_sample_forward, m.attention_dropout, fused_attention, autocast)
    hit = _CACHE.get(key)
    if hit is None:
        built = _build(m, fused_attention)
        hit = _CACHE[key] = under_autocast(m, built) if autocast else built
    return hit


def linear_elements(products: tuple[Matmul, ...], biases: bool = True) -> int:
    """Parameter elements of the linear layers among ``products``: their weights, and their biases
    with ``biases``."""
    return sum(op.cols * op.depth + (op.cols * op.bias if biases else 0) for op in products if op.weighted)


def linear_parameters(m: ModelSpec) -> int:
    """Parameter elements of the model's linear layers (weights and biases, the head's included):
    what DeepSpeed's autocast communicates in the 16-bit precision."""
    ops = operators(m, fused_attention=False)
    layers = m.num_layers * linear_elements(ops.layer_matmuls)
    return min(m.parameter_count, layers + linear_elements(ops.outer_matmuls))


FP32_UNDER_AUTOCAST = ("norm_1", "norm_2", "final_norm", "residual_adds", "embedding", "embedding.grad",
                       "embedding.tied_grad_sum", "embedding.dropout", "mlm.gelu_norm", "attn.softmax", "attn.dropout",
                       "mlp.gelu_new")
"""Memory-bound operators that run in fp32 under CUDA's torch autocast: the norms (``layer_norm``
is on autocast's fp32 list, RMSNorm upcasts itself) and whatever reads their output or the fp32
residual stream (residual adds, the embeddings' look-ups of fp32 weights, their dropout), eager
attention's softmax (on the fp32 list) with the dropout on its fp32 probabilities, and GPT-2's
eight-operator GELU (its ``pow`` is on the fp32 list: the chain after it is fp32, and the MLP's
second product casts its fp32 output). CPU autocast's lists differ (softmax and layer norm keep
their input's dtype there); the model follows CUDA's."""


def _cast(name: str, elements: int, kernels: int, per_batch: bool = False) -> Streaming:
    """``kernels`` casts between fp32 and the compute precision over ``elements`` elements in all,
    each way: read one precision, write the other (the backward casts the gradient back)."""
    return Streaming(name, elements, 1, 1, kernels, kernels, forward_fp32_passes=1, backward_fp32_passes=1,
                     per_batch=per_batch)


NORM_INPUT_PRODUCTS = frozenset({"attn.qkv", "attn.q", "attn.k", "attn.v", "mlp.in", "mlp.gate", "mlp.up"})
"""The layer's products that read a norm's output (GPT-2's fused qkv or q, k and v each; the MLP's
first product, or gate and up each): under autocast each casts its fp32 input itself."""


def norm_input_products(ops: Operators) -> tuple[Matmul, ...]:
    """The layer's products of :data:`NORM_INPUT_PRODUCTS`."""
    return tuple(op for op in ops.layer_matmuls if op.name in NORM_INPUT_PRODUCTS)


def under_autocast(m: ModelSpec, ops: Operators) -> Operators:
    """The same operators under torch autocast around an fp32 model (``torch.autocast``'s op lists,
    PyTorch docs "Automatic Mixed Precision package"):

    - :data:`FP32_UNDER_AUTOCAST` move every pass to fp32;
    - every linear layer casts its fp32 weight to the compute precision once per forward (autocast
      caches the copy for the forward) and its backward casts the weight gradient to fp32: one
      kernel each way per weight, ``cols x depth`` elements per micro-batch;
    - a product whose input is a norm's fp32 output casts that input, one copy per product (q, k
      and v each cast their own; GPT-2's fused qkv one), and casts its input gradient back;
    - eager attention casts the scores to fp32 for the softmax and the probabilities back for the
      product with V (two casts of ``a s^2`` elements each way);
    - GPT-2's MLP casts its fp32 GELU output for the second product (``s x I`` elements)."""
    s, h = m.seq_len, m.hidden_size

    def streaming(items: tuple[Streaming, ...]) -> list[Streaming]:
        out = []
        for op in items:
            if op.name in FP32_UNDER_AUTOCAST:
                op = replace(op, forward_passes=0.0, backward_passes=0.0,
                             forward_fp32_passes=op.forward_fp32_passes + op.forward_passes,
                             backward_fp32_passes=op.backward_fp32_passes + op.backward_passes)
            out.append(op)
        return out

    def weights(products: tuple[Matmul, ...], name: str) -> Streaming:
        kernels = sum(1 + op.bias for op in products if op.weighted)
        return _cast(name, linear_elements(products), kernels, per_batch=True)

    layer = streaming(ops.layer_streaming)
    inputs = norm_input_products(ops)
    layer += [weights(ops.layer_matmuls, "autocast.weight_casts"),
              _cast("autocast.input_casts", len(inputs) * s * h, len(inputs))]
    if any(op.name == "mlp.gelu_new" for op in ops.layer_streaming):
        layer.append(_cast("autocast.gelu_output_cast", s * m.intermediate_size, 1))
    if any(op.name == "attn.scores" for op in ops.layer_matmuls):
        layer.append(_cast("autocast.score_casts", 2 * m.num_heads * s * s, 2))
    outer = streaming(ops.outer_streaming)
    head_inputs = [op for op in ops.outer_matmuls if op.weighted]
    outer += [weights(ops.outer_matmuls, "autocast.head_weight_casts"),
              _cast("autocast.head_input_casts", sum(op.rows * op.depth for op in head_inputs), len(head_inputs))]
    return replace(ops, layer_streaming=tuple(layer), outer_streaming=tuple(outer))


def _build(m: ModelSpec, fused_attention: bool) -> Operators:
    block = m.block
    s, h, i, v = m.seq_len, m.hidden_size, m.intermediate_size, m.vocab_size
    kv = m.kv_width
    bias = block.linear_bias
    sh = s * h
    if block.fused_qkv:
        qkv: tuple[Matmul, ...] = (Matmul("attn.qkv", s, h + 2 * kv, h, bias=bias),)
    else:
        qkv = (Matmul("attn.q", s, h, h, bias=bias), Matmul("attn.k", s, kv, h, bias=bias),
               Matmul("attn.v", s, kv, h, bias=bias))
    attn_mm, attn_stream = _attention(m, fused_attention)
    mlp_mm, mlp_stream = _mlp(block, s, h, i)
    streaming: list[Streaming] = [_norm(block, "norm_1", sh), *attn_stream,
                                  Streaming("attn.merge_heads", sh, 2, 2, 1, 1),
                                  _norm(block, "norm_2", sh), *mlp_stream,
                                  Streaming("residual_adds", sh, 6, 6, 2, 2)]
    if block.rotary:
        streaming.append(Streaming("attn.rotary", s * (h + kv), 10, 12, 8, 10))
    if block.head_norms:
        streaming += [_norm(block, "attn.q_norm", sh), _norm(block, "attn.k_norm", s * kv)]
    if block.hidden_dropout:
        streaming.append(_dropout("dropouts", 2 * sh))  # after attention and after the MLP
    layer_mm = qkv + attn_mm + (Matmul("attn.out", s, h, h, bias=bias),) + mlp_mm

    if block.head == "pooled":  # a dense layer over the first token, then the classifier
        outer_mm = [Matmul("head.pooler", 1, h, h, bias=True), Matmul("head.classifier", 1, block.num_labels, h,
                                                                      bias=True)]
    elif block.head == "scored":  # the classifier at every position
        outer_mm = [Matmul("head.score", s, block.num_labels, h)]
    else:  # at every position, or at the positions the head runs on (Block.head_positions)
        outer_mm = [Matmul("lm_head", block.head_positions or s, v, h)]
    if block.mlm_head:
        outer_mm.insert(0, Matmul("mlm.transform", block.head_positions or s, h, h, bias=True))
    listed = m.num_layers * sum(op.flop(1) / op.share for op in layer_mm) + sum(op.flop(1) for op in outer_mm)
    unlisted = m.flops_per_sample_forward - listed
    if unlisted > 0.01 * m.flops_per_sample_forward:
        # products the list does not name (DeBERTa's relative-position attention): the FLOP count
        # of the workload's analysis is the reference
        outer_mm.append(Matmul("unlisted", s, h, max(1, round(unlisted / (2 * s * h))), weighted=False))
    lookups = 3 if block.learned_positions else 1  # a position embedding adds a look-up and an add
    outer: list[Streaming] = [Streaming("embedding", sh, lookups, 2, lookups, 2),
                              Streaming("embedding.grad", v * h, 0, 1, 0, 1, per_batch=True),
                              _norm(block, "final_norm", sh)]
    if block.sums_tied_gradients:
        # the head's weight gradient and the embedding's arrive apart; autograd adds them out of
        # place (aten::add of two [V, h] tensors in every backward; the head's is a transposed view)
        outer.append(Streaming("embedding.tied_grad_sum", v * h, 0, 3, 0, 1, per_batch=True))
    if block.hidden_dropout:
        outer.append(_dropout("embedding.dropout", sh))
    if block.mlm_head:
        outer.append(Streaming("mlm.gelu_norm", (block.head_positions or s) * h, 4, 6, 2, 3))
    # The loss upcasts the logits to fp32 (transformers' loss functions), shifts them for a
    # causal language model (a copy), then log-softmax and its backward.
    shift = int(block.causal and block.head == "lm")
    outer.append(Streaming("loss", m.logits_per_sample, 1, 1, 3 + shift, 3 + shift,
                           forward_fp32_passes=3 + 2 * shift, backward_fp32_passes=5 + 2 * shift))
    return Operators(layer_matmuls=layer_mm, layer_streaming=tuple(streaming),
                     outer_matmuls=tuple(outer_mm), outer_streaming=tuple(outer))
