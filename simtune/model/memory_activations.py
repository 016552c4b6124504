"""Activation and logits memory per rank for one micro-batch.

Per transformer layer and sample (Korthikanti et al. 2022, "Reducing Activation Recomputation in
Large Transformer Models", section 4.1), with s the sequence length, h the hidden size, a the
heads, I the MLP width and t the tensor-parallel degree, 16-bit activations and 1-byte dropout
masks:

    bytes = s*h*(10 + (8 + 4*I/h) / t) + 5*a*s^2 / t

which is the paper's s*h*(34 + 5*a*s/h) for I = 4h and t = 1: layer-norm inputs 4sh, QKV input
2sh, Q and K 4sh, V 2sh, projection input 2sh, MLP input 2sh, GELU input and output 2*2*s*I,
two dropout masks 2sh, softmax output 2as^2, its dropout mask as^2 and output 2as^2. In fp32 the
2-byte items double and the masks stay one byte:

    bytes = s*h*(18 + (16 + 8*I/h) / t) + 9*a*s^2 / t

The s^2 terms are eager attention's: the softmax output, and with dropout on the probabilities
its mask and the dropped output, b + (m + b) bytes per element with b the compute precision's
size and m the mask's (1 on CUDA; torch's CPU dropout keeps its noise in the compute precision,
so m = b there); without attention dropout only the softmax output, b*a*s^2. Fused attention
(torch's scaled_dot_product_attention, the default of transformers 5 where the model supports it,
and FlashAttention) keeps no s x s tensor: its backward recomputes the probabilities from Q, K, V
and a per-row log-sum-exp, 4 bytes per head and position (Dao et al. 2022, "FlashAttention",
section 3.1), so the s^2 terms become

    4*a*s / t

unless dropout on the probabilities sends SDPA to its math kernel, which keeps the same tensors as
eager attention: torch's CPU flash kernel takes no dropout (aten sdp_utils_cpp.cpp,
``use_flash_attention_cpp`` requires ``check_for_dropout``), CUDA's flash and memory-efficient
kernels do (``HardwareSpec.fused_attention_dropout``).

With full activation checkpointing each layer keeps only its input (s*h*b bytes, b the compute
precision's size) and one layer's activations exist again during its recomputation; selective
policies keep more (:mod:`simtune.model.checkpointing`). The loss's tensors below are freed before
the first layer is rebuilt, so under checkpointing the peak holds the larger of the two, not both.

GPT-2's MLP runs the tanh approximation of GELU as eight separate operators
(``0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3)))``, transformers' ``NewGELUActivation``), whose
autograd keeps three more s x I tensors than one fused GELU: the tanh output (its backward needs
it), and both factors of the last product (``0.5*x`` and ``1 + tanh``): 3*s*I*b more bytes.
Compiled by ``torch.compile`` (``"gelu_python_compiled"``), AOTAutograd's min-cut partition keeps
the tanh output beside the product's input and the GELU's output: one s x I tensor more, fp32
under autocast. Measured on GPT-2 XL's layer under bf16 autocast with CUDA's fp32 ``pow``
(benchmarks/results/compiled_activations.txt), the compiled layer keeps 16 bytes per token and
hidden element more with this GELU than with torch's one-op tanh GELU (one fp32 s x 4h tensor),
eager 48 more (three); DDP's graph breaks at its buckets change nothing.
Qwen3 normalises each head's query and key before the rotary embedding: those norms keep their
inputs (:func:`block_build_bytes`). A fused attention kernel also keeps its own output for its
backward (FlashAttention's backward reads O, Dao et al. 2022, algorithm 4), but that output is the
output projection's input, the same storage (torch's flash and memory-efficient kernels return it
in the layout the projection reads, so transformers' ``.contiguous()`` copies nothing; counted on
CPU for GPT-2 and Llama), so it adds nothing beyond the formula's projection input; selective
checkpointing keeps it (:func:`fused_attention_kept_bytes`).

The Llama family as transformers builds it departs from that GPT-style layer where its build
does (:func:`block_build_bytes`): Python RMSNorms that keep an fp32 copy of their input and the
normalised tensor, SwiGLU's four s x I tensors, K and V at the grouped width in a fused kernel,
eager attention's fp32 softmax, and no dropout masks (docs/cost-model.md 2.3, counted on
transformers' LlamaForCausalLM and Qwen3ForCausalLM).

Logits: the loss (transformers' ``ForCausalLMLoss`` and ``ForMaskedLMLoss``) upcasts the logits to
fp32 and takes the cross-entropy; the training program keeps only the loss, so what the backward
holds of them is the fp32 log-softmax (4*s*V) and, while the log-softmax's backward runs, the fp32
gradient coming in from the negative log-likelihood and the one it makes (4*s*V each): 12*s*V
bytes at the start of the backward, whatever the compute precision, divided by t
(vocabulary-parallel head). The forward's peak at the loss is lower: b*s*V logits, 4*s*V for the
upcast copy (none in fp32) and 4*s*V log-softmax. Measured on one H200 (bf16, gpt2, 1024 tokens,
benchmarks/results/gpu): 1.17 GB per sample against 1.19 predicted with these terms and 0.63
without them. A fused cross-entropy kernel (``ModelSpec.loss == "fused"``: flash-attn's, llm.c's)
keeps the logits and a log-sum-exp and makes one gradient of their size: 2*b*s*V. Megatron-LM's
vocabulary-parallel cross-entropy (``"vocab_parallel"``; megatron/mpu/cross_entropy.py, v1.1.5
as DeepSpeed's examples ship it) upcasts the logits, computes the softmax in place on that copy
and keeps it, and its backward turns the softmax into the gradient in place before the upcast's
backward casts it back: (4 + b)*s*V, in the forward (the b-byte logits beside their fp32 copy) as
at the start of the backward. A sequence
classifier's head makes C or s*C logits in place of s*V (``ModelSpec.logits_per_sample``).

Under torch autocast around an fp32 model (``TrainConfig.autocast``) the residual stream is fp32,
so both norms keep fp32 inputs (4*s*h more); every product that casts a norm's output keeps its
own 16-bit copy (q, k and v three, not one: 2*s*h each beyond the shared one); eager attention
keeps its softmax output and dropped probabilities in fp32 and the 16-bit copy the product with V
reads (4 + (m + 4) + b bytes per element); and each linear layer's 16-bit weight copy, cast in the
forward, is kept for its backward (b bytes per weight element of every layer not checkpointed,
and of the head).
"""

from __future__ import annotations

from typing import Optional

from simtune.model.checkpointing import checkpointed_layers, kept_bytes_per_sample
from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig
from simtune.model.operators import keeps_attention_scores, linear_elements, model_operators, norm_input_products


GELU_KEPT_TENSORS = {"gelu_python": 3, "gelu_python_compiled": 1}
"""s x I tensors a Python tanh GELU keeps beyond one GELU kernel's (the module docstring), by
``Block.mlp``: eager, the tanh and both factors of the last product; compiled, the tanh."""


def layer_activation_bytes_per_sample(m: ModelSpec, c: TrainConfig, hw: HardwareSpec) -> float:
    """One layer, one sample, no checkpointing: the measured value when the model has one."""
    if m.activation_bytes_per_sample_per_layer is not None:
        return m.activation_bytes_per_sample_per_layer
    s, h, a, t = m.seq_len, m.hidden_size, m.num_heads, c.mp_degree
    ratio = m.intermediate_size / h
    extra = attention_score_bytes(m, c, hw) + block_build_bytes(m, c, hw)
    # under autocast its pow is on the fp32 list, so the chain after it keeps fp32 tensors
    gelu_kept = GELU_KEPT_TENSORS.get(m.block.mlp, 0)
    extra += gelu_kept * s * m.intermediate_size * (4 if c.autocast else c.bytes_per_element) / t
    if c.precision == "fp32":
        return s * h * (18 + (16 + 8 * ratio) / t) + extra
    if c.autocast:
        copies = len(norm_input_products(model_operators(m, hw)))  # the formula has two: QKV and MLP inputs
        extra += 4 * s * h + 2 * s * h * (copies - 2) / t
    return s * h * (10 + (8 + 4 * ratio) / t) + extra


def block_build_bytes(m: ModelSpec, c: TrainConfig, hw: HardwareSpec) -> float:
    """What one layer keeps per sample beyond the formula's GPT-style layer with dropout (module
    docstring), by how it is built (counted on transformers' LlamaForCausalLM and
    Qwen3ForCausalLM): each Python RMSNorm its fp32 input and the normalised copy before the weight
    (4*s*h + 4*s more than a fused norm's input, in every precision: the fp32 input replaces a
    16-bit one, or the normalised fp32 copy is kept beside an fp32 input); Qwen3's norms of each
    head's Q and K their inputs likewise, (b + 4)*s*(h + kv) + 4*s*(a + a_kv); SwiGLU four s x I
    tensors (the gate's output, its SiLU, the up projection's output and the product the down
    projection reads) where a GELU keeps two, 2*b*s*I more; a fused kernel K and V at their own
    width kv (grouped-query attention), 2*b*s*(h - kv) less; and without dropout after attention
    and the MLP, no masks, 2*s*h less, and with it on a device whose dropout keeps its noise in the
    compute precision (torch's CPU dropout: ``HardwareSpec.dropout_mask_bytes`` None), masks of b
    bytes, 2*s*h*(b - 1) more than the formula's 1-byte ones."""
    s, h, t, b = m.seq_len, m.hidden_size, c.mp_degree, c.bytes_per_element
    block = m.block
    extra = 0.0
    if block.norm == "rms_norm":
        extra += 2 * (4 * s * h + 4 * s)
    if block.head_norms:
        rows = m.num_heads + (block.kv_heads or m.num_heads)
        extra += ((b + 4) * s * (h + m.kv_width) + 4 * s * rows) / t
    if block.mlp == "swiglu":
        extra += 2 * b * s * m.intermediate_size / t
    if not keeps_attention_scores(m, hw):
        extra -= 2 * b * s * (h - m.kv_width) / t
    if not block.hidden_dropout:
        extra -= 2 * s * h
    else:  # the formula's masks are 1 byte (CUDA's)
        extra += 2 * s * h * (mask_bytes(hw, b) - 1)
    return extra


def mask_bytes(hw: HardwareSpec, b: int) -> int:
    """Bytes per element of a dropout mask autograd keeps on ``hw``: its own (1 on CUDA), else the
    compute precision's ``b`` (torch's CPU dropout keeps its scaled noise)."""
    return hw.dropout_mask_bytes or b


def autocast_weight_copy_bytes(m: ModelSpec, c: TrainConfig, hw: HardwareSpec, layers: int) -> int:
    """The 16-bit weight copies autocast keeps for the backward: ``layers`` layers' and the
    head's (0 without autocast). A linear layer's backward reads its weight, not its bias, so only
    the weights' copies are kept."""
    if not c.autocast:
        return 0
    ops = model_operators(m, hw)
    weights = (layers * linear_elements(ops.layer_matmuls, biases=False)
               + linear_elements(ops.outer_matmuls, biases=False))
    return int(c.bytes_per_element * weights / c.mp_degree)


def attention_score_bytes(m: ModelSpec, c: TrainConfig, hw: HardwareSpec) -> float:
    """What one layer's attention keeps per sample beyond Q, K, V and the projection's input: the
    s x s probabilities (and their dropout mask and dropped copy), or a fused kernel's log-sum-exp
    (its output is the projection's input: the same storage)."""
    s, a, t, b = m.seq_len, m.num_heads, c.mp_degree, c.bytes_per_element
    if not keeps_attention_scores(m, hw):
        return 4 * a * s / t
    upcast = c.autocast or (m.block.softmax_fp32 and b < 4)  # a 16-bit copy for the product with V
    softmax = 4 if upcast else b  # autocast (or the model's own code) runs the softmax in fp32
    per_element = softmax + (b if upcast else 0)
    if m.attention_dropout:
        per_element += mask_bytes(hw, b) + softmax
    return per_element * a * s * s / t


def fused_attention_kept_bytes(m: ModelSpec, c: TrainConfig, hw: HardwareSpec) -> float:
    """What a fused attention kernel keeps for its backward per layer and sample: its output and
    log-sum-exp (FlashAttention's backward reads O, Dao et al. 2022, algorithm 4), what selective
    checkpointing keeps of attention (the full layer counts the output as the projection's input)."""
    return attention_score_bytes(m, c, hw) + c.bytes_per_element * m.seq_len * m.hidden_size / c.mp_degree


def _activations(m: ModelSpec, c: TrainConfig, hw: HardwareSpec) -> tuple[int, int]:
    """(:func:`activation_bytes`, :func:`recomputed_layer_bytes`), one layer's bytes worked out once."""
    per_layer = layer_activation_bytes_per_sample(m, c, hw)
    checkpointed = checkpointed_layers(m, c)
    if not checkpointed:
        copies = autocast_weight_copy_bytes(m, c, hw, m.num_layers)
        return int(c.micro_batch_size * m.num_layers * per_layer) + copies, 0
    kept = kept_bytes_per_sample(m, c, model_operators(m, hw), fused_attention_kept_bytes(m, c, hw))
    per_sample = checkpointed * kept + (m.num_layers - checkpointed) * per_layer + per_layer
    copies = autocast_weight_copy_bytes(m, c, hw, m.num_layers - checkpointed + 1)
    return int(c.micro_batch_size * per_sample) + copies, int(c.micro_batch_size * per_layer)


def activation_bytes(m: ModelSpec, c: TrainConfig, hw: HardwareSpec) -> int:
    """Every layer's activations, or under checkpointing what the checkpointed layers keep
    (:mod:`simtune.model.checkpointing`), the others' activations and one layer recomputing."""
    return _activations(m, c, hw)[0]


def recomputed_layer_bytes(m: ModelSpec, c: TrainConfig, hw: HardwareSpec) -> int:
    """The one layer that checkpointing rebuilds during the backward (inside
    :func:`activation_bytes`); 0 without checkpointing."""
    return _activations(m, c, hw)[1]


def activation_and_loss_bytes(m: ModelSpec, c: TrainConfig, hw: HardwareSpec) -> tuple[int, int]:
    """(:func:`activation_bytes`, :func:`loss_bytes_beyond_recomputation`) in one pass: what the
    backward's peak holds of the layers and of the loss."""
    activations, rebuilt = _activations(m, c, hw)
    return activations, max(0, logits_bytes(m, c) - rebuilt)


def measured_activation_bytes(m: ModelSpec, c: TrainConfig) -> Optional[int]:
    """The measured peak of forward + backward (logits and loss inside) at this micro-batch size,
    divided by mp; None without a measurement (or without one for checkpointing)."""
    if m.measured_memory is None or (c.activation_checkpointing and c.checkpointing_policy != "full"):
        return None  # what was measured is full checkpointing or none
    value = m.measured_memory.activations_bytes(c.micro_batch_size, c.activation_checkpointing)
    return None if value is None else value // c.mp_degree


def runtime_overhead_bytes(m: ModelSpec, c: TrainConfig) -> int:
    """Measured memory beyond the model's terms: the program itself and, at stages 1-3, ZeRO's
    runtime (both only where device memory is the process's memory, i.e. on CPU; the
    calibration leaves them 0 elsewhere), and the engines' residual at this stage and size."""
    mm = m.measured_memory
    if mm is None:
        return 0
    extra = mm.zero_runtime_bytes if c.stage >= 1 else 0
    return mm.process_overhead_bytes + extra + mm.residual_bytes(c.stage, c.micro_batch_size) // c.mp_degree


def loss_bytes_beyond_recomputation(m: ModelSpec, c: TrainConfig, hw: HardwareSpec) -> int:
    """What the loss adds to the backward's peak above :func:`activation_bytes`: its tensors are
    freed before checkpointing rebuilds the first layer, so the two do not live at once and the
    peak holds the larger of them (the loss's share is what exceeds the rebuilt layer)."""
    return activation_and_loss_bytes(m, c, hw)[1]


def logits_bytes(m: ModelSpec, c: TrainConfig) -> int:
    """The loss's peak at the start of the backward, per sample: 12*s*V bytes for torch's
    cross-entropy over upcast logits (module docstring), 2*b*s*V for a fused cross-entropy kernel
    (the logits it keeps and the gradient it makes), (4 + b)*s*V for Megatron-LM's
    vocabulary-parallel one (its fp32 softmax, made the gradient in place, and that gradient cast
    to the compute precision; the forward holds the same: the b-byte logits and their fp32 copy)."""
    per_element = {"fp32": 12, "fused": 2 * c.bytes_per_element, "vocab_parallel": 4 + c.bytes_per_element}[m.loss]
    return (c.micro_batch_size * m.logits_per_sample * per_element) // c.mp_degree
