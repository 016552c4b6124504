import pytest

from simtune.model.inputs import Block, TrainConfig
from simtune.model.memory_activations import (activation_bytes, fused_attention_kept_bytes, keeps_attention_scores,
                                             layer_activation_bytes_per_sample, logits_bytes)


ONE_KERNEL_GELU = Block(mlp="gelu")


def test_layer_formula_is_korthikanti_for_16_bit(make_gpt2, hardware):
    gpt2 = make_gpt2(block=ONE_KERNEL_GELU)
    s, h, a = gpt2.seq_len, gpt2.hidden_size, gpt2.num_heads
    config = TrainConfig(stage=0, micro_batch_size=1, precision="bf16")
    assert layer_activation_bytes_per_sample(gpt2, config, hardware) == pytest.approx(s * h * (34 + 5 * a * s / h))


def test_fp32_doubles_all_but_the_dropout_masks(make_gpt2, hardware):
    gpt2 = make_gpt2(block=ONE_KERNEL_GELU)
    s, h, a = gpt2.seq_len, gpt2.hidden_size, gpt2.num_heads
    config = TrainConfig(stage=0, micro_batch_size=1, precision="fp32")
    assert layer_activation_bytes_per_sample(gpt2, config, hardware) == pytest.approx(s * h * 66 + 9 * a * s * s)


def test_tensor_parallel_splits_all_but_the_replicated_10sbh(make_gpt2, hardware):
    gpt2 = make_gpt2(block=ONE_KERNEL_GELU)
    s, h, a = gpt2.seq_len, gpt2.hidden_size, gpt2.num_heads
    config = TrainConfig(stage=0, micro_batch_size=1, mp_degree=4)
    assert layer_activation_bytes_per_sample(gpt2, config, hardware) == pytest.approx(s * h * (10 + 24 / 4) + 5 * a * s * s / 4)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_gpt2s_eight_op_gelu_keeps_three_more_mlp_wide_tensors(make_gpt2, hardware, precision):
    config = TrainConfig(stage=0, micro_batch_size=1, precision=precision)
    python_gelu, one_kernel = make_gpt2(), make_gpt2(block=ONE_KERNEL_GELU)
    extra = layer_activation_bytes_per_sample(python_gelu, config, hardware) - \
        layer_activation_bytes_per_sample(one_kernel, config, hardware)
    assert extra == pytest.approx(3 * one_kernel.seq_len * one_kernel.intermediate_size * config.bytes_per_element)


def test_activations_grow_linearly_with_micro_batch(gpt2, hardware):
    one = activation_bytes(gpt2, TrainConfig(stage=0, micro_batch_size=1), hardware)
    four = activation_bytes(gpt2, TrainConfig(stage=0, micro_batch_size=4), hardware)
    assert four == pytest.approx(4 * one, rel=1e-9) and one > 0


def test_checkpointing_keeps_layer_inputs_and_one_layer(gpt2, hardware):
    config = TrainConfig(stage=0, micro_batch_size=2, activation_checkpointing=True)
    per_layer = layer_activation_bytes_per_sample(gpt2, config, hardware)
    expected = 2 * (gpt2.num_layers * gpt2.seq_len * gpt2.hidden_size * 2 + per_layer)
    assert activation_bytes(gpt2, config, hardware) == pytest.approx(expected, abs=1)
    assert activation_bytes(gpt2, config, hardware) < activation_bytes(gpt2, TrainConfig(stage=0, micro_batch_size=2), hardware) / 4


def test_measured_layer_bytes_replace_the_formula(make_gpt2, hardware):
    model = make_gpt2(activation_bytes_per_sample_per_layer=1e6)
    assert activation_bytes(model, TrainConfig(stage=0, micro_batch_size=3), hardware) == 3 * 12 * 1_000_000


def test_the_loss_holds_three_fp32_logit_sized_tensors_in_any_precision(gpt2):
    """The fp32 log-softmax and, during its backward, the gradient coming in and the one it makes."""
    for precision in ("bf16", "fp32"):
        config = TrainConfig(stage=0, micro_batch_size=2, precision=precision)
        assert logits_bytes(gpt2, config) == 2 * gpt2.seq_len * gpt2.vocab_size * 12


@pytest.mark.parametrize("precision,eager_scores", [("bf16", 5), ("fp32", 9)])
def test_fused_attention_keeps_a_log_sum_exp_instead_of_the_s2_scores(make_gpt2, hardware, precision, eager_scores):
    s, a = 1024, 25
    eager = make_gpt2(seq_len=s, num_heads=a, attention="eager", block=ONE_KERNEL_GELU)
    fused = make_gpt2(seq_len=s, num_heads=a, attention="sdpa", block=ONE_KERNEL_GELU)
    config = TrainConfig(stage=0, micro_batch_size=1, precision=precision)
    saved = layer_activation_bytes_per_sample(eager, config, hardware) - \
        layer_activation_bytes_per_sample(fused, config, hardware)
    b = config.bytes_per_element
    # the fused kernel's log-sum-exp; its output is the projection's input, already counted
    assert saved == pytest.approx(eager_scores * a * s * s - 4 * a * s)
    kept = fused_attention_kept_bytes(fused, config, hardware)  # what selective checkpointing keeps
    assert kept == 4 * a * s + b * s * fused.hidden_size
    assert layer_activation_bytes_per_sample(fused, config, hardware) < \
        layer_activation_bytes_per_sample(eager, config, hardware) / 4  # gpt2-xl's shape at 1024 tokens


def test_dropout_sends_fused_attention_to_the_math_kernel_where_kernels_take_none(make_gpt2, make_hardware):
    gpu, cpu = make_hardware(fused_attention_dropout=True), make_hardware(fused_attention_dropout=False)
    with_dropout = make_gpt2(attention="sdpa", attention_dropout=True)
    without = make_gpt2(attention="sdpa", attention_dropout=False)
    assert not keeps_attention_scores(with_dropout, gpu) and keeps_attention_scores(with_dropout, cpu)
    assert not keeps_attention_scores(without, cpu)
    assert keeps_attention_scores(make_gpt2(attention="eager"), gpu)
    config = TrainConfig(stage=0, micro_batch_size=1)
    assert layer_activation_bytes_per_sample(with_dropout, config, cpu) == \
        layer_activation_bytes_per_sample(make_gpt2(attention="eager"), config, cpu)


def test_without_attention_dropout_eager_attention_keeps_only_the_softmax_output(make_gpt2, make_hardware):
    s, a = 1024, 12
    config = TrainConfig(stage=0, micro_batch_size=1, precision="bf16")
    gpu, cpu = make_hardware(), make_hardware(dropout_mask_bytes=None, fused_attention_dropout=False)
    plain = make_gpt2(attention="eager", attention_dropout=False)
    dropped = make_gpt2(attention="eager", attention_dropout=True)
    assert layer_activation_bytes_per_sample(dropped, config, gpu) - \
        layer_activation_bytes_per_sample(plain, config, gpu) == pytest.approx(3 * a * s * s)  # 1-byte mask, copy
    assert layer_activation_bytes_per_sample(dropped, config, cpu) - \
        layer_activation_bytes_per_sample(plain, config, cpu) == pytest.approx(4 * a * s * s)  # mask in bf16 on CPU



def test_a_fused_cross_entropy_keeps_the_logits_and_makes_one_gradient(make_gpt2):
    fused = make_gpt2(loss="fused")
    for precision, b in (("bf16", 2), ("fp32", 4)):
        config = TrainConfig(stage=0, micro_batch_size=3, precision=precision)
        assert logits_bytes(fused, config) == 3 * fused.seq_len * fused.vocab_size * 2 * b


def test_megatrons_vocabulary_parallel_loss_keeps_an_fp32_softmax_and_a_16_bit_gradient(make_gpt2):
    megatron, hf = make_gpt2(loss="vocab_parallel"), make_gpt2()
    for precision, b in (("fp16", 2), ("fp32", 4)):
        config = TrainConfig(stage=0, micro_batch_size=3, precision=precision)
        assert logits_bytes(megatron, config) == 3 * megatron.seq_len * megatron.vocab_size * (4 + b)
        assert logits_bytes(megatron, config) < logits_bytes(hf, config)


def test_an_unknown_loss_is_one_clear_sentence(make_gpt2):
    from simtune.errors import WorkloadError

    with pytest.raises(WorkloadError, match="ModelSpec.loss must be one of fp32, fused, vocab_parallel"):
        make_gpt2(loss="chunked")


def test_under_checkpointing_the_loss_and_the_rebuilt_layer_do_not_add(gpt2, hardware):
    """The loss's tensors are freed before the first layer is rebuilt: the peak holds the larger."""
    from simtune.model.memory_activations import loss_bytes_beyond_recomputation, recomputed_layer_bytes

    plain = TrainConfig(stage=0, micro_batch_size=4, precision="bf16")
    ckpt = TrainConfig(stage=0, micro_batch_size=4, precision="bf16", activation_checkpointing=True)
    assert recomputed_layer_bytes(gpt2, plain, hardware) == 0
    assert loss_bytes_beyond_recomputation(gpt2, plain, hardware) == logits_bytes(gpt2, plain)
    layer = recomputed_layer_bytes(gpt2, ckpt, hardware)
    assert layer == int(4 * layer_activation_bytes_per_sample(gpt2, ckpt, hardware))
    assert loss_bytes_beyond_recomputation(gpt2, ckpt, hardware) == logits_bytes(gpt2, ckpt) - layer
    tiny_vocab = gpt2.__class__(**{**gpt2.__dict__, "vocab_size": 8})
    assert loss_bytes_beyond_recomputation(tiny_vocab, ckpt, hardware) == 0


def test_autocast_keeps_fp32_norm_inputs_and_each_layers_16_bit_weight_copy(hardware):
    from simtune.model.adapters import model_spec
    from simtune.model.operators import operators
    from simtune.workloads.presets import load_workload

    m = model_spec(load_workload("gpt2"))

    def at(mbs, autocast):
        return activation_bytes(m, TrainConfig(stage=0, micro_batch_size=mbs, precision="bf16", autocast=autocast),
                                hardware)

    per_sample = at(2, True) - at(1, True)
    copies = at(1, True) - per_sample
    ops = operators(m, fused_attention=True)
    weights = (m.num_layers * sum(op.cols * op.depth for op in ops.layer_matmuls if op.weighted)
               + sum(op.cols * op.depth for op in ops.outer_matmuls if op.weighted))
    assert copies == pytest.approx(2 * weights, abs=4)  # weights only: a linear's backward reads no bias
    assert per_sample - (at(2, False) - at(1, False)) >= 4 * m.seq_len * m.hidden_size * m.num_layers

    def checkpointed(mbs):
        return activation_bytes(m, TrainConfig(stage=0, micro_batch_size=mbs, precision="bf16", autocast=True,
                                               activation_checkpointing=True), hardware)

    # under checkpointing only the recomputing layer's weight copies and the head's are held
    layer = sum(op.cols * op.depth for op in ops.layer_matmuls if op.weighted)
    assert 2 * checkpointed(1) - checkpointed(2) == pytest.approx(2 * (weights - (m.num_layers - 1) * layer), abs=4)


def saved_bytes(model, vocab_size, micro_batch_size, seq_len):
    """Bytes of the distinct storages autograd saves in one forward and loss of ``model``, its
    parameters' own left out, as the workload calibration counts them: what the backward holds,
    without allocator noise."""
    import torch

    from simtune.calib.workload_measure import saved_tensor_bytes

    tokens = torch.randint(0, vocab_size, (micro_batch_size, seq_len))
    total, _, _ = saved_tensor_bytes(model, lambda: model(input_ids=tokens, labels=tokens).loss, [])
    return total


def test_autocasts_weight_copies_are_what_autograd_saves_for_a_real_model(hardware):
    """On CPU too autocast caches each weight's 16-bit copy and the product saves it: the bytes a
    transformers GPT-2 saves under ``torch.autocast`` beyond what grows with the micro-batch, per
    layer, are the model's weight copies (biases not among them)."""
    import dataclasses

    import torch

    from simtune.model.adapters import model_spec
    from simtune.model.memory_activations import autocast_weight_copy_bytes
    from simtune.workloads.presets import build_model, load_workload

    workload = load_workload("gpt2-tiny", seq_len=32)

    def saved(layers, mbs):
        variant = dataclasses.replace(workload, hf_config={**workload.hf_config, "n_layer": layers}, num_layers=layers)
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return saved_bytes(build_model(variant).train(), workload.vocab_size, mbs, workload.seq_len)

    layers = workload.num_layers
    grows = (saved(layers, 4) - saved(layers, 2)) - (saved(0, 4) - saved(0, 2))
    per_layer_copies = (saved(layers, 2) - saved(0, 2) - grows) / layers
    m = model_spec(workload)
    c = TrainConfig(stage=0, micro_batch_size=1, precision="bf16", autocast=True)
    predicted = autocast_weight_copy_bytes(m, c, hardware, 1) - autocast_weight_copy_bytes(m, c, hardware, 0)
    assert per_layer_copies == pytest.approx(predicted, rel=1e-3)  # with the biases it would be 0.6% more


@pytest.mark.parametrize("model_type, attention, precision", [
    ("llama", "eager", "bf16"), ("llama", "eager", "fp32"), ("qwen3", "eager", "bf16"), ("llama", "sdpa", "bf16")])
def test_a_llama_family_layer_keeps_what_autograd_saves_in_transformers_model(hardware, model_type, attention, precision):
    """transformers' Llama and Qwen3 layers, counted by storage under ``saved_tensors_hooks``: the
    Python RMSNorms' fp32 inputs and normalised copies, SwiGLU's four s x I tensors, K and V at
    the grouped width in a fused kernel, the fp32 softmax of eager attention, no dropout masks.
    Eager attention and SDPA match to 0.5% (the rotary cos and sin aside)."""
    import dataclasses

    import torch

    from simtune.model.adapters import model_spec
    from simtune.model.memory_activations import layer_activation_bytes_per_sample
    from simtune.workloads.presets import _from_document, build_model

    config = {"model_type": model_type, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 448, "vocab_size": 512, "head_dim": 32,
              "max_position_embeddings": 512, "tie_word_embeddings": False, "attn_implementation": attention}
    workload = _from_document(model_type, config, 128)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]

    def saved(layers):
        variant = dataclasses.replace(workload, hf_config={**workload.hf_config, "num_hidden_layers": layers},
                                      num_layers=layers)
        torch.manual_seed(0)
        return saved_bytes(build_model(variant).train().to(dtype), workload.vocab_size, 2, workload.seq_len)

    measured = (saved(2) - saved(0)) / (2 * 2)
    m = model_spec(workload)
    predicted = layer_activation_bytes_per_sample(m, TrainConfig(stage=0, micro_batch_size=1, precision=precision),
                                                  hardware)
    assert predicted == pytest.approx(measured, rel=5e-3)


def test_a_fused_rmsnorm_keeps_what_a_fused_layernorm_keeps(hardware):
    """One kernel each way (torchtitan's Triton ``fused_rmsnorm``) keeps its input and per-row
    statistic: 4*s*h + 4*s fewer bytes per norm than transformers' Python RMSNorm."""
    import dataclasses

    from simtune.model.adapters import model_spec
    from simtune.workloads.presets import _from_document

    shape = {"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 448, "vocab_size": 512, "max_position_embeddings": 512}
    python = model_spec(_from_document("llama", shape, 128))
    fused = dataclasses.replace(python, block=dataclasses.replace(python.block, norm="rms_norm_fused"))
    c = TrainConfig(stage=0, micro_batch_size=1, precision="bf16")
    saved = layer_activation_bytes_per_sample(python, c, hardware) - layer_activation_bytes_per_sample(fused, c, hardware)
    assert saved == 2 * (4 * 128 * 128 + 4 * 128)


def test_hidden_dropout_masks_take_the_devices_mask_bytes(make_gpt2, make_hardware):
    """CUDA's dropout keeps a 1-byte mask (the formula's); torch's CPU dropout keeps its scaled
    noise in the compute precision, so each of the two masks after attention and the MLP costs
    b bytes an element there (benchmarks/results/attention_memory.txt)."""
    m = make_gpt2(seq_len=128, attention="eager")
    cuda, cpu = make_hardware(), make_hardware(dropout_mask_bytes=None)
    for precision, b in (("fp32", 4), ("bf16", 2)):
        config = TrainConfig(stage=0, micro_batch_size=1, precision=precision)
        extra = layer_activation_bytes_per_sample(m, config, cpu) - layer_activation_bytes_per_sample(m, config, cuda)
        attention_masks = (b - 1) * m.num_heads * m.seq_len ** 2  # the probabilities' mask, counted before
        assert extra == pytest.approx(attention_masks + 2 * m.seq_len * m.hidden_size * (b - 1))
