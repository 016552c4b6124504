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

With full activation checkpointing each layer keeps only its input (s*h*b bytes, b the compute
precision's size) and one layer's activations exist again during its recomputation.

Logits: b*s*V for the logits in the compute precision plus 4*s*V for the fp32 log-softmax the loss
keeps for backward, divided by t (vocabulary-parallel head).
"""

from __future__ import annotations

from typing import Optional

from simtune.model.inputs import ModelSpec, TrainConfig


def layer_activation_bytes_per_sample(m: ModelSpec, c: TrainConfig) -> float:
    """One layer, one sample, no checkpointing: the measured value when the model has one."""
    if m.activation_bytes_per_sample_per_layer is not None:
        return m.activation_bytes_per_sample_per_layer
    s, h, a, t = m.seq_len, m.hidden_size, m.num_heads, c.mp_degree
    ratio = m.intermediate_size / h
    if c.precision == "fp32":
        return s * h * (18 + (16 + 8 * ratio) / t) + 9 * a * s * s / t
    return s * h * (10 + (8 + 4 * ratio) / t) + 5 * a * s * s / t


def activation_bytes(m: ModelSpec, c: TrainConfig) -> int:
    per_layer = layer_activation_bytes_per_sample(m, c)
    if c.activation_checkpointing:
        per_sample = m.num_layers * m.seq_len * m.hidden_size * c.bytes_per_element + per_layer
    else:
        per_sample = m.num_layers * per_layer
    return int(c.micro_batch_size * per_sample)


def measured_activation_bytes(m: ModelSpec, c: TrainConfig) -> Optional[int]:
    """The measured peak of forward + backward (logits and loss inside) at this micro-batch size,
    divided by mp; None without a measurement (or without one for checkpointing)."""
    if m.measured_memory is None:
        return None
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


def logits_bytes(m: ModelSpec, c: TrainConfig) -> int:
    return (c.micro_batch_size * m.seq_len * m.vocab_size * (c.bytes_per_element + 4)) // c.mp_degree
