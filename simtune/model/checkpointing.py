"""What activation checkpointing keeps and what backward recomputes, by policy.

``TrainConfig.checkpointing_policy`` names one, used when ``activation_checkpointing`` is on:

- ``full``: DeepSpeed's activation checkpointing, Hugging Face's ``gradient_checkpointing`` and
  torchtitan's ``mode = "full"``. Every layer keeps its input; backward runs the layer's forward
  again.
- ``selective-op``: torchtitan's ``selective_ac_option = "op"`` (torchtitan
  ``torchtitan/distributed/activation_checkpoint.py``, ``_custom_policy``). Inside each layer it
  saves the output of every op on its save list (``aten.mm`` and the scaled-dot-product attention
  kernels) except every second ``mm``: the 1st, 3rd, 5th ... linear products in execution order
  (Llama: q, v, gate, down). Backward recomputes the other products and every memory-bound
  operator.
- ``every-N-layers``: torchtitan's layer option ``N``. Layers 0, N, 2N ... are checkpointed fully;
  the others keep everything.
- ``first-N-layers``: N layers checkpointed fully, the others keep everything (Megatron-LM's
  ``--recompute-method block --recompute-num-layers N``). Only the count matters to memory and
  time.

Memory per sample, with L layers, n of them checkpointed, ``per_layer`` a layer's activations
without checkpointing (:mod:`simtune.model.memory_activations`), s tokens, h the hidden size, b
the compute precision's bytes:

    full, selective-op: n = L;  every-N-layers: n = ceil(L / N);  first-N-layers: n = min(N, L)
    kept (full)         = s*h*b                                  (the layer's input)
    kept (selective-op) = s*h*b + b * (outputs of the kept linear products)
                          + the attention kernel's output s*h*b and what it keeps (fused: the
                            log-sum-exp, 4*a*s; eager attention runs no saved kernel)
    activations         = n*kept + (L - n)*per_layer + per_layer    (one layer recomputing)

Recomputation per micro-step: ``n / L`` of the layers' forward (full and the layer policies); for
selective-op, the layers' forward less the kept products and the fused attention kernel.
"""

from __future__ import annotations

import math

from simtune.model.inputs import CHECKPOINTING_POLICY, ModelSpec, TrainConfig
from simtune.model.operators import ATTENTION_CORE, Matmul, Operators

SELECTIVE_OP = "selective-op"


def checkpointed_layers(m: ModelSpec, c: TrainConfig) -> int:
    """How many of the model's layers are checkpointed (0 without checkpointing)."""
    if not c.activation_checkpointing:
        return 0
    layers = CHECKPOINTING_POLICY.fullmatch(c.checkpointing_policy)
    if not layers or not layers.group(1):
        return m.num_layers
    n = int(layers.group(2))
    return math.ceil(m.num_layers / n) if layers.group(1) == "every" else min(n, m.num_layers)


def kept_products(ops: Operators) -> tuple[Matmul, ...]:
    """The linear products of a layer whose outputs selective-op keeps: the 1st, 3rd, ... of
    them in execution order (attention's own products are not ``aten.mm``)."""
    linear = [op for op in ops.layer_matmuls if op.name not in ATTENTION_CORE]
    return tuple(linear[0::2])


def kept_bytes_per_sample(m: ModelSpec, c: TrainConfig, ops: Operators, attention_kept_bytes: float) -> float:
    """What one checkpointed layer keeps per sample under ``c``'s policy (see the module
    docstring); ``attention_kept_bytes``: what a fused attention kernel keeps (its output and
    log-sum-exp, :func:`simtune.model.memory_activations.fused_attention_kept_bytes`)."""
    b, t = c.bytes_per_element, c.mp_degree
    layer_input = m.seq_len * m.hidden_size * c.residual_bytes
    if c.checkpointing_policy != SELECTIVE_OP:
        return layer_input
    products = sum(op.rows * op.cols * op.batch for op in kept_products(ops)) * b / t
    fused = any(op.fused_attention for op in ops.layer_matmuls)
    attention = attention_kept_bytes if fused else 0.0
    return layer_input + products + attention


__all__ = ["SELECTIVE_OP", "checkpointed_layers", "kept_bytes_per_sample", "kept_products"]
