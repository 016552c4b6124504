import pytest

from simtune.model.inputs import TrainConfig
from simtune.model.memory_activations import activation_bytes, layer_activation_bytes_per_sample, logits_bytes


def test_layer_formula_is_korthikanti_for_16_bit(gpt2):
    s, h, a = gpt2.seq_len, gpt2.hidden_size, gpt2.num_heads
    config = TrainConfig(stage=0, micro_batch_size=1, precision="bf16")
    assert layer_activation_bytes_per_sample(gpt2, config) == pytest.approx(s * h * (34 + 5 * a * s / h))


def test_fp32_doubles_all_but_the_dropout_masks(gpt2):
    s, h, a = gpt2.seq_len, gpt2.hidden_size, gpt2.num_heads
    config = TrainConfig(stage=0, micro_batch_size=1, precision="fp32")
    assert layer_activation_bytes_per_sample(gpt2, config) == pytest.approx(s * h * 66 + 9 * a * s * s)


def test_tensor_parallel_splits_all_but_the_replicated_10sbh(gpt2):
    s, h, a = gpt2.seq_len, gpt2.hidden_size, gpt2.num_heads
    config = TrainConfig(stage=0, micro_batch_size=1, mp_degree=4)
    assert layer_activation_bytes_per_sample(gpt2, config) == pytest.approx(s * h * (10 + 24 / 4) + 5 * a * s * s / 4)


def test_activations_grow_linearly_with_micro_batch(gpt2):
    one = activation_bytes(gpt2, TrainConfig(stage=0, micro_batch_size=1))
    four = activation_bytes(gpt2, TrainConfig(stage=0, micro_batch_size=4))
    assert four == pytest.approx(4 * one, rel=1e-9) and one > 0


def test_checkpointing_keeps_layer_inputs_and_one_layer(gpt2):
    config = TrainConfig(stage=0, micro_batch_size=2, activation_checkpointing=True)
    per_layer = layer_activation_bytes_per_sample(gpt2, config)
    expected = 2 * (gpt2.num_layers * gpt2.seq_len * gpt2.hidden_size * 2 + per_layer)
    assert activation_bytes(gpt2, config) == pytest.approx(expected, abs=1)
    assert activation_bytes(gpt2, config) < activation_bytes(gpt2, TrainConfig(stage=0, micro_batch_size=2)) / 4


def test_measured_layer_bytes_replace_the_formula(make_gpt2):
    model = make_gpt2(activation_bytes_per_sample_per_layer=1e6)
    assert activation_bytes(model, TrainConfig(stage=0, micro_batch_size=3)) == 3 * 12 * 1_000_000


def test_logits_hold_compute_dtype_and_fp32_loss(gpt2):
    bf16 = TrainConfig(stage=0, micro_batch_size=2, precision="bf16")
    fp32 = TrainConfig(stage=0, micro_batch_size=2, precision="fp32")
    assert logits_bytes(gpt2, bf16) == 2 * gpt2.seq_len * gpt2.vocab_size * (2 + 4)
    assert logits_bytes(gpt2, fp32) == 2 * gpt2.seq_len * gpt2.vocab_size * (4 + 4)
