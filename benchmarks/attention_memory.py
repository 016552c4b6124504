"""What attention keeps for its backward, counted, against the activation formula.

Run from the repository root (CPU, no launch; a few seconds):

    python benchmarks/attention_memory.py > benchmarks/results/attention_memory.txt

For a GPT-2 preset built by transformers with eager attention and with SDPA, attention dropout on
and off, one forward in training mode is run under ``torch.autograd.graph.saved_tensors_hooks``:
every tensor autograd saves for the backward is counted once (by its storage), which is exactly
the activation memory the backward holds, without allocator noise. The transformer layers' share
(the whole minus a model with no layers) per layer and sample is printed beside the formula of
:func:`simtune.model.memory_activations.layer_activation_bytes_per_sample` for the CPU profile's
hardware (fused attention takes no dropout there), in fp32.
"""

from __future__ import annotations

import dataclasses
import platform
import sys

import torch

from simtune.model.adapters import model_spec
from simtune.model.inputs import HardwareSpec, TrainConfig
from simtune.model.memory_activations import layer_activation_bytes_per_sample
from simtune.workloads.presets import build_model, load_workload

PRESET, SEQ_LEN, MICRO_BATCH = "gpt2-tiny", 128, 4


def saved_bytes(model: torch.nn.Module, tokens: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves during one forward (loss included), the
    parameters' own storages left out."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    return sum(seen.values())


def per_layer_sample(attention: str, dropout: float) -> float:
    """Measured bytes one layer saves for one sample: (model - model without layers) / (L * mbs)."""
    workload = load_workload(PRESET, SEQ_LEN)
    config = {**workload.hf_config, "attn_pdrop": dropout, "attn_implementation": attention}
    results = []
    for layers in (workload.num_layers, 0):
        variant = dataclasses.replace(workload, hf_config={**config, "n_layer": layers}, num_layers=layers)
        torch.manual_seed(0)
        model = build_model(variant).train()
        tokens = torch.randint(0, workload.vocab_size, (MICRO_BATCH, SEQ_LEN))
        results.append(saved_bytes(model, tokens))
    return (results[0] - results[1]) / (workload.num_layers * MICRO_BATCH)


def predicted(attention: str, dropout: float, cpu: HardwareSpec) -> float:
    workload = dataclasses.replace(load_workload(PRESET, SEQ_LEN), attention=attention, attention_dropout=dropout)
    return layer_activation_bytes_per_sample(model_spec(workload), TrainConfig(stage=0, micro_batch_size=1,
                                                                               precision="fp32"), cpu)


def main() -> int:
    from simtune.hardware import load_profile
    from simtune.model.adapters import hardware_spec

    # the formula reads one fact of the hardware here: whether fused attention takes dropout (not on CPU)
    cpu = dataclasses.replace(hardware_spec(load_profile("dgx-a100-80gb")), fused_attention_dropout=False,
                              dropout_mask_bytes=None)
    print(f"# command: python benchmarks/attention_memory.py; torch {torch.__version__}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads; {PRESET} at {SEQ_LEN} tokens, micro-batch {MICRO_BATCH}, fp32")
    print("# bytes saved for backward per transformer layer and sample (autograd's saved tensors, counted once)")
    print("# 'attention part': the layer's bytes beyond SDPA without dropout (which keeps no s x s tensor)")
    print(f"{'attention':<10}{'dropout':>8}{'measured':>12}{'formula':>12}{'error':>9}"
          f"{'attention part measured':>26}{'formula':>10}")
    rows = [(attention, dropout, per_layer_sample(attention, dropout), predicted(attention, dropout, cpu))
            for attention in ("eager", "sdpa") for dropout in (0.1, 0.0)]
    base_measured, base_formula = rows[-1][2], rows[-1][3]
    for attention, dropout, measured, formula in rows:
        print(f"{attention:<10}{dropout:>8.1f}{measured:>12.0f}{formula:>12.0f}{formula / measured - 1:>+9.1%}"
              f"{measured - base_measured:>26.0f}{formula - base_formula:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
