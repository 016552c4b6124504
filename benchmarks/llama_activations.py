"""What a Llama-family layer keeps for its backward, counted, against the activation formula.

Run from the repository root (CPU, no launch; a few seconds):

    python benchmarks/llama_activations.py > benchmarks/results/llama_activations.txt

transformers' own ``LlamaForCausalLM`` and ``Qwen3ForCausalLM`` (a small grouped-query shape:
hidden 256, 8 heads of 32, 2 key/value heads, MLP 896, 256 tokens, micro-batch 2) run one forward
and loss in training mode under ``torch.autograd.graph.saved_tensors_hooks``, in bf16 and fp32,
with eager attention and with SDPA: every tensor autograd saves is counted once by its storage
(:func:`simtune.calib.workload_measure.saved_tensor_bytes`, as the workload calibration counts
them), and the layers' share (the model less one without layers)
per layer and sample is printed beside :func:`simtune.model.memory_activations.layer_activation_bytes_per_sample`
on the H200 profile's hardware, with and without the Llama family's own terms
(:func:`simtune.model.memory_activations.block_build_bytes` and eager attention's fp32 softmax;
"GPT-style": Korthikanti's layer with the attention kernel's terms alone), in units of ``2*s*h``
bytes.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from simtune.calib.workload_measure import saved_tensor_bytes
from simtune.hardware import load_profile
from simtune.model.adapters import hardware_spec, model_spec
from simtune.model.inputs import HardwareSpec, TrainConfig
from simtune.model.memory_activations import block_build_bytes, layer_activation_bytes_per_sample
from simtune.workloads.presets import Workload, build_model, load_workload

SHAPE = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
         "head_dim": 32, "intermediate_size": 896, "vocab_size": 1000, "max_position_embeddings": 4096,
         "tie_word_embeddings": False}
SEQ_LEN, MICRO_BATCH = 256, 2
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def workload(model_type: str, attention: str, folder: Path) -> Workload:
    config = {"model_type": model_type, "architectures": [ARCHITECTURES[model_type]], **SHAPE,
              "attn_implementation": attention}
    path = folder / f"{model_type}-{attention}.json"
    path.write_text(json.dumps(config))
    return load_workload(str(path), SEQ_LEN)


def per_layer_sample(wl: Workload, precision: str) -> float:
    """Measured bytes one layer saves for one sample: (model - model without layers) / (L * mbs)."""
    results = []
    for layers in (wl.num_layers, 0):
        variant = dataclasses.replace(wl, hf_config={**wl.hf_config, "num_hidden_layers": layers}, num_layers=layers)
        torch.manual_seed(0)
        model = build_model(variant).train().to(DTYPES[precision])
        tokens = torch.randint(0, wl.vocab_size, (MICRO_BATCH, SEQ_LEN))
        results.append(saved_tensor_bytes(model, lambda: model(input_ids=tokens, labels=tokens).loss, [])[0])
    return (results[0] - results[1]) / (wl.num_layers * MICRO_BATCH)


def main() -> int:
    hw: HardwareSpec = hardware_spec(load_profile("hgx-h200-141gb"))
    unit = 2 * SEQ_LEN * SHAPE["hidden_size"]
    print(f"# command: python benchmarks/llama_activations.py; torch {torch.__version__}, {platform.machine()}; "
          f"{SEQ_LEN} tokens, micro-batch {MICRO_BATCH}; units of 2*s*h = {unit} bytes per layer and sample")
    print(f"{'model':<7}{'attention':<10}{'precision':<10}{'measured':>10}{'formula':>10}{'error':>8}"
          f"{'GPT-style':>11}{'error':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for model_type in ARCHITECTURES:
            for attention in ("eager", "sdpa"):
                wl = workload(model_type, attention, Path(folder))
                m = model_spec(wl)
                for precision in DTYPES:
                    c = TrainConfig(stage=0, micro_batch_size=1, precision=precision)
                    measured = per_layer_sample(wl, precision)
                    formula = layer_activation_bytes_per_sample(m, c, hw)
                    plain = dataclasses.replace(m, block=dataclasses.replace(m.block, softmax_fp32=False))
                    gpt_style = layer_activation_bytes_per_sample(plain, c, hw) - block_build_bytes(m, c, hw)
                    print(f"{model_type:<7}{attention:<10}{precision:<10}{measured / unit:>10.2f}{formula / unit:>10.2f}"
                          f"{formula / measured - 1:>+8.1%}{gpt_style / unit:>11.2f}{gpt_style / measured - 1:>+8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
