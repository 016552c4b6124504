"""Activation checkpointing policies: what each keeps and what backward recomputes."""

import json

import pytest

from simtune.errors import ConfigError
from simtune.hardware import load_profile
from simtune.model import compute_time
from simtune.model.adapters import hardware_spec, model_spec
from simtune.model.checkpointing import checkpointed_layers, kept_products
from simtune.model.operators import model_operators
from simtune.model.inputs import TrainConfig
from simtune.model.memory_activations import activation_bytes, layer_activation_bytes_per_sample
from simtune.prediction.predictor import Predictor
from simtune.space import Trial
from simtune.workloads import load_workload

LAYERS, HIDDEN, HEADS, KV_HEADS, MLP, SEQ = 5, 256, 8, 2, 688, 128


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A small Llama (grouped-query attention, SwiGLU) run with SDPA."""
    path = tmp_path_factory.mktemp("llama") / "config.json"
    path.write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "intermediate_size": MLP, "vocab_size": 1000, "max_position_embeddings": SEQ,
        "tie_word_embeddings": False, "attn_implementation": "sdpa"}))
    return model_spec(load_workload(str(path), seq_len=SEQ))


@pytest.fixture(scope="module")
def a100():
    return hardware_spec(load_profile("dgx-a100-80gb"))


def config(policy="full", checkpointing=True, mbs=2):
    return TrainConfig(stage=3, micro_batch_size=mbs, precision="bf16", activation_checkpointing=checkpointing,
                       checkpointing_policy=policy)


def test_full_checkpointing_keeps_each_layers_input_and_one_layer_recomputing(llama, a100):
    per_layer = layer_activation_bytes_per_sample(llama, config(), a100)
    assert activation_bytes(llama, config(), a100) == int(2 * (LAYERS * SEQ * HIDDEN * 2 + per_layer))
    assert activation_bytes(llama, config(checkpointing=False), a100) == int(2 * LAYERS * per_layer)


def test_selective_op_keeps_every_other_linear_output_and_the_attention_kernels(llama, a100):
    ops = model_operators(llama, a100)
    assert [op.name for op in kept_products(ops)] == ["attn.q", "attn.v", "mlp.gate", "mlp.down"]
    kv = HIDDEN * KV_HEADS // HEADS
    kept = 2 * SEQ * (HIDDEN + HIDDEN + kv + MLP + HIDDEN + HIDDEN) + 4 * HEADS * SEQ  # input, q, v, gate, down, out, lse
    per_layer = layer_activation_bytes_per_sample(llama, config(), a100)
    assert activation_bytes(llama, config("selective-op"), a100) == int(2 * (LAYERS * kept + per_layer))
    full, none = activation_bytes(llama, config(), a100), activation_bytes(llama, config(checkpointing=False), a100)
    assert full < activation_bytes(llama, config("selective-op"), a100) < none + 2 * per_layer


def test_every_n_layers_checkpoints_layers_zero_n_2n(llama, a100):
    assert checkpointed_layers(llama, config("every-2-layers")) == 3  # layers 0, 2, 4 of 5
    assert checkpointed_layers(llama, config("every-1-layers")) == LAYERS
    assert checkpointed_layers(llama, config("every-2-layers", checkpointing=False)) == 0
    per_layer = layer_activation_bytes_per_sample(llama, config(), a100)
    expected = 3 * SEQ * HIDDEN * 2 + 2 * per_layer + per_layer
    assert activation_bytes(llama, config("every-2-layers"), a100) == int(2 * expected)


def test_first_n_layers_checkpoints_n_of_them(llama, a100):
    assert checkpointed_layers(llama, config("first-2-layers")) == 2
    assert checkpointed_layers(llama, config("first-9-layers")) == LAYERS  # no more than there are
    per_layer = layer_activation_bytes_per_sample(llama, config(), a100)
    expected = 2 * SEQ * HIDDEN * 2 + 3 * per_layer + per_layer
    assert activation_bytes(llama, config("first-2-layers"), a100) == int(2 * expected)
    full = compute_time.micro_recompute_s(llama, a100, config())
    assert compute_time.micro_recompute_s(llama, a100, config("first-2-layers")) == pytest.approx(full * 2 / LAYERS)


def test_recomputation_follows_the_policy(llama, a100):
    full = compute_time.micro_recompute_s(llama, a100, config())
    assert full == pytest.approx(compute_time.pass_time(llama, a100, config(), backward=False,
                                                        layers_only=True).total_s)
    assert compute_time.micro_recompute_s(llama, a100, config("every-2-layers")) == pytest.approx(full * 3 / LAYERS)
    selective = compute_time.micro_recompute_s(llama, a100, config("selective-op"))
    ops = model_operators(llama, a100)
    kept_s = sum(2 * 2 * op.rows * op.cols * op.depth / a100.compute.for_precision("bf16").flop_per_s(
        2 * 2 * op.rows * op.cols * op.depth) for op in kept_products(ops))
    assert 0 < selective < full - LAYERS * kept_s * 0.99  # at least the kept products are not run again
    assert compute_time.micro_recompute_s(llama, a100, config("selective-op", checkpointing=False)) == 0.0


def test_an_unknown_policy_is_refused():
    for name in ("selective", "every-0-layers", "every-two-layers"):
        with pytest.raises(ConfigError, match="checkpointing policy"):
            config(name)
    with pytest.raises(ConfigError, match="checkpointing policy"):
        Predictor.from_parts(None, load_workload("gpt2-tiny"), "dgx-a100-80gb", world_size=8, precision="bf16",
                             checkpointing_policy="sometimes")


def test_the_predictor_passes_its_policy_to_every_trial():
    p = Predictor.from_parts(None, load_workload("gpt2-tiny"), "dgx-a100-80gb", world_size=8, precision="bf16",
                             checkpointing_policy="selective-op")
    trial = Trial(stage=3, micro_batch_size=4, activation_checkpointing=True)
    assert p.config(trial).checkpointing_policy == "selective-op"
    full = Predictor.from_parts(None, load_workload("gpt2-tiny"), "dgx-a100-80gb", world_size=8, precision="bf16")
    assert p.predict(trial).memory.activations_bytes > full.predict(trial).memory.activations_bytes
