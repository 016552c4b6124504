import pytest

from simtune.model.adapters import model_spec
from simtune.model.operators import operators
from simtune.workloads.analysis import forward_flops
from simtune.workloads.presets import list_presets, load_workload


@pytest.mark.parametrize("name", list_presets())
def test_the_operator_list_counts_the_workloads_matmul_flops(name):
    workload = load_workload(name)
    m = model_spec(workload)
    ops = operators(m, fused_attention=False)
    listed = (m.num_layers * sum(op.flop(3) for op in ops.layer_matmuls)
              + sum(op.flop(3) for op in ops.outer_matmuls))
    # the model carries one sample's count (DeBERTa's per-batch products counted per sample)
    assert listed == pytest.approx(3 * forward_flops(workload).total(1), rel=0.01)


@pytest.mark.parametrize("name", list_presets())
def test_kernels_per_layer_are_in_the_range_traces_show(name):
    m = model_spec(load_workload(name))
    ops = operators(m, fused_attention=True)
    forward = ops.kernels(1, backward=False, outer=False)
    backward = ops.kernels(1, backward=True, outer=False)
    assert 11 <= forward <= 40 and 27 <= backward <= 90 and backward > forward


def test_a_causal_fused_kernel_skips_the_masked_half_of_attention():
    m = model_spec(load_workload("gpt2"))
    eager = operators(m, fused_attention=False)
    fused = operators(m, fused_attention=True)
    s, h = m.seq_len, m.hidden_size
    eager_attention = sum(op.flop(1) for op in eager.layer_matmuls if op.name.startswith("attn.") and op.batch > 1)
    fused_attention = sum(op.flop(1) for op in fused.layer_matmuls if op.name == "attn.fused")
    assert eager_attention == 4 * s * s * h and fused_attention == eager_attention / 2


def test_each_family_launches_its_own_kernels():
    gpt2 = model_spec(load_workload("gpt2")).block
    bert = model_spec(load_workload("bert-base")).block
    assert gpt2.mlp == "gelu_python" and gpt2.causal and gpt2.fused_qkv
    assert bert.mlp == "gelu" and not bert.causal and bert.mlm_head and not bert.fused_qkv


def test_models_of_one_shape_with_other_counts_get_their_own_operators():
    import dataclasses

    m = model_spec(load_workload("gpt2-tiny"))
    more = dataclasses.replace(m, flops_per_sample_forward=2 * m.flops_per_sample_forward)
    assert not any(op.name == "unlisted" for op in operators(m, fused_attention=True).outer_matmuls)
    assert any(op.name == "unlisted" for op in operators(more, fused_attention=True).outer_matmuls)


def test_autocast_casts_every_linear_weight_once_each_way():
    workload = load_workload("gpt2")
    m = model_spec(workload)
    ops = operators(m, fused_attention=True, autocast=True)
    named = {op.name: op for op in ops.layer_streaming + ops.outer_streaming}
    casts = m.num_layers * named["autocast.weight_casts"].elements + named["autocast.head_weight_casts"].elements
    # every parameter but the position embedding and the norms sits in a linear layer (the tied
    # token embedding is cast for the head)
    norms = (2 * m.num_layers + 1) * 2 * m.hidden_size
    assert casts == m.parameter_count - m.seq_len * m.hidden_size - norms
    weights = named["autocast.weight_casts"]
    assert weights.per_batch and weights.forward_passes == weights.forward_fp32_passes == 1
    assert weights.forward_kernels == 8  # four linear layers, each a weight and a bias


@pytest.mark.parametrize("name, casts", [("gpt2", 2), ("bert-base", 4)])
def test_autocast_moves_norms_to_fp32_and_casts_their_outputs_per_product(name, casts):
    m = model_spec(load_workload(name))
    plain = {op.name: op for op in operators(m, fused_attention=False).layer_streaming}
    cast = {op.name: op for op in operators(m, fused_attention=False, autocast=True).layer_streaming}
    for norm in ("norm_1", "norm_2", "residual_adds", "attn.softmax"):
        assert cast[norm].forward_passes == 0
        assert cast[norm].forward_fp32_passes == plain[norm].forward_passes + plain[norm].forward_fp32_passes
    # GPT-2's fused qkv and its MLP cast a norm's output twice; BERT's separate q, k, v four times
    assert cast["autocast.input_casts"].forward_kernels == casts
    assert cast["autocast.input_casts"].elements == casts * m.seq_len * m.hidden_size
    assert cast["autocast.score_casts"].elements == 2 * m.num_heads * m.seq_len ** 2
    assert "autocast.score_casts" not in {op.name for op in operators(m, fused_attention=True, autocast=True).layer_streaming}
    more = operators(m, fused_attention=False, autocast=True).kernels(1, backward=False)
    assert more > operators(m, fused_attention=False).kernels(1, backward=False)


def _classifier(name):
    import dataclasses

    workload = load_workload(name)
    return dataclasses.replace(workload, task="sequence-classification",
                               hf_config={**workload.hf_config, "num_labels": 3})


@pytest.mark.parametrize("name, head", [("gpt2", "scored"), ("bert-base", "pooled"), ("distilbert", "pooled"),
                                        ("deberta-v2-xxlarge", "pooled")])
def test_a_classification_head_replaces_the_lm_head_in_the_operator_list(name, head):
    workload = _classifier(name)
    m = model_spec(workload)
    assert m.block.head == head and m.block.num_labels == 3 and not m.block.mlm_head
    ops = operators(m, fused_attention=False)  # every attention FLOP listed (a causal fused kernel skips half)
    names = {op.name for op in ops.outer_matmuls}
    assert "lm_head" not in names and "mlm.transform" not in names
    listed = (m.num_layers * sum(op.flop(2) for op in ops.layer_matmuls) + sum(op.flop(2) for op in ops.outer_matmuls))
    assert listed == pytest.approx(2 * forward_flops(workload).total(1), rel=0.01)
    assert m.logits_per_sample == 3 * (m.seq_len if head == "scored" else 1)
    loss = next(op for op in ops.outer_streaming if op.name == "loss")
    assert loss.elements == m.logits_per_sample


def test_an_lm_head_at_some_positions_only_costs_those():
    import dataclasses

    m = model_spec(load_workload("bert-base"))
    masked = dataclasses.replace(m, block=dataclasses.replace(m.block, head_positions=20))
    outer = {op.name: op for op in operators(masked, fused_attention=True).outer_matmuls}
    assert outer["lm_head"].rows == outer["mlm.transform"].rows == 20
    assert masked.logits_per_sample == 20 * m.vocab_size and m.logits_per_sample == m.seq_len * m.vocab_size


def test_gpt2s_python_gelu_launches_the_kernels_the_model_counts():
    """The counts of GELU_NEW_PASSES are transformers' NewGELU's kernels, forward and backward, as
    torch's profiler lists them (views, scalar wrapping and the gradient's seed left out)."""
    import collections

    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers.activations import NewGELUActivation

    from simtune.model.operators import GELU_NEW_PASSES

    def kernels(events) -> int:
        skip = {"aten::to", "aten::_to_copy", "aten::copy_", "aten::empty_strided", "aten::empty_like",
                "aten::result_type", "aten::detach", "aten::lift_fresh", "aten::empty"}
        return sum(n for name, n in collections.Counter(e.name for e in events).items()
                   if name.startswith("aten::") and name not in skip)

    x, grad = torch.randn(4096, requires_grad=True), torch.randn(4096)
    with profile(activities=[ProfilerActivity.CPU]) as forward:
        y = NewGELUActivation()(x)
    with profile(activities=[ProfilerActivity.CPU]) as backward:
        y.backward(grad)
    assert (kernels(forward.events()), kernels(backward.events())) == GELU_NEW_PASSES[2:]


def test_qwen3_normalises_each_heads_query_and_key_and_zero3_hooks_those_norms():
    from simtune.model.memory_activations import layer_activation_bytes_per_sample
    from simtune.model.inputs import TrainConfig
    from simtune.workloads.presets import _from_document

    shape = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 160, "max_position_embeddings": 128}
    llama = model_spec(_from_document("llama", {"model_type": "llama", **shape}, 64))
    qwen3 = model_spec(_from_document("qwen3", {"model_type": "qwen3", "head_dim": 16, **shape}, 64))
    assert qwen3.block.head_norms and not llama.block.head_norms
    assert qwen3.parameter_modules == llama.parameter_modules + 2 * 2  # q_norm and k_norm in each layer
    names = [op.name for op in operators(qwen3, fused_attention=True).layer_streaming]
    assert names.count("attn.q_norm") == names.count("attn.k_norm") == 1
    assert "attn.q_norm" not in [op.name for op in operators(llama, fused_attention=True).layer_streaming]
    config = TrainConfig(stage=0, micro_batch_size=1, precision="bf16")
    extra = (layer_activation_bytes_per_sample(qwen3, config, None)
             - layer_activation_bytes_per_sample(llama, config, None))
    # the norms' inputs, the query (s x h) and the key (s x kv), as fp32 copies beside the 16-bit
    # normalised ones (2 + 4 bytes an element), and each row's fp32 reciprocal norm (4 heads, 2 keys)
    assert extra == 64 * (64 + 32) * (2 + 4) + 64 * (4 + 2) * 4


@pytest.mark.parametrize("preset, tied", [("gpt2-tiny", True), ("gpt2-tiny", False), ("bert-tiny", True)])
def test_a_tied_lm_head_sums_two_gradients_of_the_embedding_in_every_backward(preset, tied):
    """The operator list adds the sum where the head's weight is the token embedding, as torch's
    profiler shows it: one out-of-place ``aten::add`` of two [V, h] tensors per backward."""
    import dataclasses

    import torch
    from torch.profiler import ProfilerActivity, profile

    from simtune.workloads.train import SyntheticTokens, build_model

    loaded = load_workload(preset)
    workload = dataclasses.replace(loaded, hf_config={**loaded.hf_config, "tie_word_embeddings": tied})
    m = model_spec(workload)
    assert m.block.tied_head is tied
    summed = [op for op in operators(m, fused_attention=True).outer_streaming if op.name == "embedding.tied_grad_sum"]
    assert [(op.elements, op.backward_passes, op.backward_kernels) for op in summed] == (
        [(m.vocab_size * m.hidden_size, 3, 1)] if tied else [])

    torch.manual_seed(0)
    model = build_model(workload)
    loss = model(**SyntheticTokens(workload, 2, torch.device("cpu"), seed=1).next()).loss
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        loss.backward()
    table = [m.vocab_size, m.hidden_size]
    adds = [e for e in prof.events() if e.name == "aten::add" and e.input_shapes[:2] == [table, table]]
    assert len(adds) == len(summed)
