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
