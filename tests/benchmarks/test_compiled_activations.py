"""What torch keeps for a GPT-2 layer's backward with GPT-2's Python GELU, eager and compiled
(benchmarks/compiled_activations.py at a small width), against the model's activation rules."""

from __future__ import annotations

import pytest
import torch

from simtune.model.inputs import Block, TrainConfig
from simtune.model.memory_activations import layer_activation_bytes_per_sample
from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script
from tests.model.conftest import gpt2_spec, hardware_spec

script = load_script(BENCHMARKS / "compiled_activations.py", "compiled_activations")

LAYERS, HIDDEN, HEADS, TOKENS = 1, 128, 2, 32


def kept_per_mlp_element(gelu: type[torch.nn.Module], compiled: bool) -> float:
    """Activation bytes one layer keeps (weight copies left out), per token and MLP element."""
    torch.manual_seed(0)
    model = script.Layers(LAYERS, HIDDEN, HEADS, gelu)
    x = torch.randn(1, TOKENS, HIDDEN, requires_grad=True)
    weights = script.weight_shapes(model)
    if compiled:
        kept, graphs = script.compiled_kept(model, x, ddp=False)
        assert graphs >= 1
    else:
        kept = script.eager_kept(model, x)
    activations, _ = script.split_kept(kept, weights)
    return activations / (LAYERS * TOKENS * 4 * HIDDEN)


def model_extra_per_mlp_element(mlp: str) -> float:
    """What the model's layer keeps with ``mlp`` beyond one GELU kernel, per token and MLP element,
    bf16 under autocast."""
    config = TrainConfig(stage=0, micro_batch_size=1, precision="bf16", autocast=True)
    hardware = hardware_spec()
    model, one_kernel = gpt2_spec(block=Block(mlp=mlp)), gpt2_spec(block=Block(mlp="gelu"))
    extra = (layer_activation_bytes_per_sample(model, config, hardware)
             - layer_activation_bytes_per_sample(one_kernel, config, hardware))
    return extra / (model.seq_len * model.intermediate_size)


@pytest.mark.slow
def test_the_python_gelu_keeps_what_the_model_charges_eager_and_compiled():
    one_op_eager = kept_per_mlp_element(script.TorchGELU, compiled=False)
    one_op_compiled = kept_per_mlp_element(script.TorchGELU, compiled=True)
    python_eager = kept_per_mlp_element(script.NewGELU, compiled=False)
    python_compiled = kept_per_mlp_element(script.NewGELU, compiled=True)
    # eager: three fp32 tensors of the MLP's width more; compiled: one, the tanh
    assert python_eager - one_op_eager == pytest.approx(model_extra_per_mlp_element("gelu_python")) == 12.0
    assert python_compiled - one_op_compiled == pytest.approx(model_extra_per_mlp_element("gelu_python_compiled")) == 4.0
