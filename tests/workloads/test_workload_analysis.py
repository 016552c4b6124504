"""Closed-form parameter and FLOP counts against the built models and torch's FLOP counter."""

import subprocess
import sys
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from simtune.errors import WorkloadError
from simtune.workloads import (
    build_hf_config,
    build_model,
    flops_per_sample,
    forward_flops,
    idle_elements,
    largest_layer_params,
    list_presets,
    load_workload,
    module_parameters,
    parameter_count,
    parameter_tensor_numels,
)
from simtune.workloads.presets import _from_document
from simtune.workloads.analysis import construction_gathers
from simtune.workloads.train import enable_activation_checkpointing

# The counts the models' authors publish (model cards and papers; see docs/workloads.md).
PUBLISHED_PARAMETERS = {
    "gpt2": 124e6,
    "gpt2-medium": 355e6,
    "gpt2-large": 774e6,
    "gpt2-xl": 1.5e9,
    "bert-base": 110e6,
    "bert-large": 340e6,
    "distilbert": 66e6,
    "deberta-v2-xxlarge": 1.5e9,
}

# Small configs of every covered family, including the DeBERTa variants the presets do not use.
EXTRA_CONFIGS = {
    "distilbert-small": {"model_type": "distilbert", "vocab_size": 512, "dim": 64, "n_layers": 2,
                         "n_heads": 4, "hidden_dim": 192, "max_position_embeddings": 64},
    "deberta-shared-keys": {
        "model_type": "deberta-v2", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 64,
        "relative_attention": True, "position_buckets": 16, "norm_rel_ebd": "layer_norm",
        "share_att_key": True, "pos_att_type": "p2c|c2p", "position_biased_input": False,
        "conv_kernel_size": 3, "type_vocab_size": 0},
    "deberta-own-keys": {
        "model_type": "deberta-v2", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 64,
        "relative_attention": True, "share_att_key": False, "pos_att_type": ["c2p"],
        "type_vocab_size": 2, "embedding_size": 32},
    "deberta-new-head": {
        "model_type": "deberta-v2", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 64,
        "relative_attention": True, "position_buckets": 8, "share_att_key": True,
        "pos_att_type": "p2c|c2p", "legacy": False},
    "llama-gqa": {"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160,
                  "max_position_embeddings": 128, "attention_bias": True},
    "llama-tied": {"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "intermediate_size": 160, "max_position_embeddings": 128,
                   "head_dim": 32, "mlp_bias": True, "tie_word_embeddings": True},
    "mistral-gqa": {"model_type": "mistral", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160,
                    "max_position_embeddings": 128},
    "qwen2-gqa": {"model_type": "qwen2", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160,
                  "max_position_embeddings": 128, "tie_word_embeddings": True},
    "qwen3-gqa": {"model_type": "qwen3", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 160,
                  "max_position_embeddings": 128},
    "bert-untied": {"model_type": "bert", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 64,
                    "type_vocab_size": 1, "tie_word_embeddings": False},
    "deberta-untied": {"model_type": "deberta-v2", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 64,
                       "tie_word_embeddings": False},
    "distilbert-untied": {"model_type": "distilbert", "vocab_size": 512, "dim": 64, "n_layers": 2, "n_heads": 4,
                          "hidden_dim": 128, "max_position_embeddings": 64, "tie_word_embeddings": False},
    "gpt2-untied": {"model_type": "gpt2", "vocab_size": 512, "n_embd": 64, "n_layer": 2, "n_head": 4,
                    "n_inner": 96, "n_positions": 64, "tie_word_embeddings": False},
}

FLOP_TOLERANCE = 0.01  # relative; the counts agree exactly with transformers 5.23 and torch 2.13

# Sequence-classification heads of every family (architectures say so; 3 labels)
CLASSIFIER_ARCHITECTURES = {"gpt2": "GPT2ForSequenceClassification", "bert": "BertForSequenceClassification",
                            "distilbert": "DistilBertForSequenceClassification",
                            "deberta-v2": "DebertaV2ForSequenceClassification",
                            "llama": "LlamaForSequenceClassification",
                            "mistral": "MistralForSequenceClassification",
                            "qwen2": "Qwen2ForSequenceClassification",
                            "qwen3": "Qwen3ForSequenceClassification"}
CLASSIFIER_BASES = ("distilbert-small", "deberta-shared-keys", "deberta-own-keys", "llama-gqa", "bert-untied",
                    "gpt2-untied", "mistral-gqa", "qwen2-gqa", "qwen3-gqa")


def _workload(name, seq_len=None):
    if name in EXTRA_CONFIGS:
        return _from_document(name, EXTRA_CONFIGS[name], seq_len)
    return load_workload(name, seq_len=seq_len)


def _classifier(name, seq_len=None):
    """The workload ``name`` with its family's sequence-classification head (3 labels)."""
    base = _workload(name, seq_len)
    config = {**base.hf_config, "architectures": [CLASSIFIER_ARCHITECTURES[base.model_type]], "num_labels": 3}
    return _from_document(f"{name}-classifier", config, seq_len)


def _counts_of(model):
    """Total and largest-layer counts the way DeepSpeed's ``model_to_params`` takes them."""
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def _eager_model(workload):
    """The model with attention written as matrix products, which the FLOP counter sees."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    auto = AutoModelForCausalLM if workload.task == "causal-lm" else AutoModelForMaskedLM
    return auto.from_config(build_hf_config(workload), attn_implementation="eager").train()


def test_analysis_module_does_not_import_torch():
    code = ("import sys, simtune.workloads.analysis as a, simtune.workloads as w; "
            "a.parameter_count(w.load_workload('gpt2')); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", list_presets() + sorted(EXTRA_CONFIGS))
def test_closed_form_counts_equal_the_built_model(name):
    workload = _workload(name)
    with torch.device("meta"):
        model = build_model(workload)
    assert (parameter_count(workload), largest_layer_params(workload)) == _counts_of(model)
    assert parameter_tensor_numels(workload) == tuple(p.numel() for p in model.parameters())
    layer_modules = [m for m in module_parameters(workload) if m.repeats > 1]
    assert layer_modules and all(m.repeats == workload.num_layers for m in layer_modules)


@pytest.mark.parametrize("name", list_presets() + sorted(EXTRA_CONFIGS))
def test_the_tensors_gathered_together_at_construction_are_the_built_models(name):
    """transformers' ZeRO-3 weight initialisation gathers each module's own parameters with its
    direct children's (those of nested pretrained models apart): the same groups as the closed form."""
    from transformers import PreTrainedModel

    workload = _workload(name)
    with torch.device("meta"):
        model = build_model(workload)
    built = set()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        for child in module.children():
            if not isinstance(child, PreTrainedModel):
                params.extend(child.parameters(recurse=False))
        unique = {id(p): p for p in params}.values()
        if unique:
            built.add(tuple(sorted(p.numel() for p in unique)))
    assert {tuple(sorted(group)) for group in construction_gathers(workload)} == built


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_closed_form_count_is_within_five_percent_of_the_published_one(name):
    workload = load_workload(name)
    assert parameter_count(workload) == pytest.approx(PUBLISHED_PARAMETERS[name], rel=0.05)
    assert workload.published_parameters == PUBLISHED_PARAMETERS[name]


IDLE_CASES = [("gpt2-tiny-heavy", 64), ("gpt2-tiny", 96), ("bert-tiny", 32), ("distilbert-small", 48),
              ("deberta-own-keys", 40), ("deberta-shared-keys", 40), ("deberta-new-head", 3), ("gpt2-untied", 64),
              ("llama-gqa", 32)]


@pytest.mark.parametrize("name,seq_len", IDLE_CASES)
def test_the_idle_elements_are_the_rows_one_backward_leaves_at_exactly_zero(name, seq_len):
    """One step's batch as the training program makes it (random tokens, no token types): the
    closed form's idle elements are the rows of the tables whose gradient is exactly 0. An untied
    token table's rows that its few tokens miss are not counted (idle only until a token reaches
    them), so it is left out; single elements that happen to be 0 (a key bias, which softmax
    cannot see; dropout of both samples) are not rows."""
    workload = _workload(name, seq_len)
    torch.manual_seed(0)
    model = build_model(workload).train()
    tokens = torch.randint(0, workload.vocab_size, (2, seq_len))
    model(input_ids=tokens, labels=tokens).loss.backward()
    tokens_table = model.get_input_embeddings().weight
    untied = None if tokens_table is model.get_output_embeddings().weight else tokens_table
    idle = sum(int((p.grad == 0).all(dim=1).sum()) * p.shape[1] for p in model.parameters()
               if p.grad is not None and p.dim() == 2 and p is not untied)
    assert idle == idle_elements(workload)
    assert (idle > 0) == (workload.model_type != "llama")


def test_the_relative_position_rows_of_a_long_deberta_are_read_almost_all():
    """deberta-v2-xxlarge at 512 tokens: 256 log buckets each side reach every row but the first."""
    assert idle_elements(load_workload("deberta-v2-xxlarge", seq_len=512)) == 1536


def test_real_gpt2_with_random_weights_has_the_closed_form_count():
    started = time.perf_counter()
    model = build_model(load_workload("gpt2"))
    assert time.perf_counter() - started < 10
    assert _counts_of(model) == (124_439_808, 50257 * 768)
    assert parameter_count(load_workload("gpt2")) == 124_439_808


def test_largest_layer_is_the_embedding_or_the_decoder():
    assert largest_layer_params(load_workload("gpt2")) == 50257 * 768
    assert largest_layer_params(load_workload("bert-base")) == 30522 * 768 + 30522


def test_gpt2_forward_matches_the_megatron_expression():
    workload = load_workload("gpt2-medium", seq_len=1024)
    s, h, layers, vocab = 1024, 1024, 24, 50257
    expected = layers * (24 * s * h * h + 4 * s * s * h) + 2 * s * h * vocab
    assert forward_flops(workload).total(1) == expected
    assert flops_per_sample(workload) == 3 * expected


@pytest.mark.parametrize("name", ["gpt2-tiny", "bert-tiny"] + sorted(EXTRA_CONFIGS))
@pytest.mark.parametrize("batch_size", [1, 3])
def test_flops_match_torch_flop_counter(name, batch_size):
    workload = _workload(name, seq_len=32)
    model = _eager_model(workload)
    tokens = torch.randint(0, workload.vocab_size, (batch_size, workload.seq_len))
    forward_counter = FlopCounterMode(display=False)
    with forward_counter:
        model(input_ids=tokens, labels=tokens)
    training_counter = FlopCounterMode(display=False)
    with training_counter:
        model(input_ids=tokens, labels=tokens).loss.backward()
    predicted_forward = forward_flops(workload).total(batch_size)
    assert forward_counter.get_total_flops() == pytest.approx(predicted_forward, rel=FLOP_TOLERANCE)
    measured_per_sample = training_counter.get_total_flops() / batch_size
    predicted = flops_per_sample(workload, micro_batch_size=batch_size)
    assert measured_per_sample == pytest.approx(predicted, rel=FLOP_TOLERANCE)


@pytest.mark.parametrize("name", ["gpt2-tiny", "bert-tiny"])
def test_checkpointing_adds_one_forward_of_the_layers(name):
    workload = load_workload(name, seq_len=32)
    model = _eager_model(workload)
    enable_activation_checkpointing(model)
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    tokens = torch.randint(0, workload.vocab_size, (2, workload.seq_len))
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=tokens, labels=tokens).loss.backward()
    predicted = flops_per_sample(workload, micro_batch_size=2, activation_checkpointing=True)
    assert counter.get_total_flops() / 2 == pytest.approx(predicted, rel=FLOP_TOLERANCE)
    layers = forward_flops(workload).layers(1)
    assert predicted == flops_per_sample(workload, micro_batch_size=2) + layers


def test_per_batch_terms_are_shared_by_the_micro_batch():
    deberta = load_workload("deberta-v2-xxlarge")
    gpt2 = load_workload("gpt2")
    assert forward_flops(deberta).layer_per_batch > 0
    assert flops_per_sample(deberta, micro_batch_size=4) < flops_per_sample(deberta)
    assert flops_per_sample(gpt2, micro_batch_size=4) == flops_per_sample(gpt2)
    with pytest.raises(ValueError):
        flops_per_sample(gpt2, micro_batch_size=0)


def test_model_types_without_a_closed_form_are_refused():
    workload = _from_document("t5", {"model_type": "t5", "vocab_size": 100, "d_model": 16, "num_layers": 2,
                                     "num_heads": 2, "d_ff": 32, "n_positions": 64}, None)
    with pytest.raises(WorkloadError, match="not 't5'"):
        parameter_count(workload)


@pytest.mark.parametrize("name", ("gpt2-tiny", "bert-tiny") + CLASSIFIER_BASES)
def test_a_classification_heads_counts_equal_the_built_model(name):
    workload = _classifier(name)
    assert workload.task == "sequence-classification" and workload.num_labels == 3
    with torch.device("meta"):
        model = build_model(workload)
    assert type(model).__name__.endswith("ForSequenceClassification")
    assert (parameter_count(workload), largest_layer_params(workload)) == _counts_of(model)
    assert parameter_tensor_numels(workload) == tuple(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ("gpt2-tiny", "bert-tiny") + CLASSIFIER_BASES)
def test_a_classification_heads_flops_match_torch_flop_counter(name):
    from transformers import AutoModelForSequenceClassification

    workload = _classifier(name, seq_len=32)
    config = build_hf_config(workload)
    config.num_labels, config.pad_token_id = 3, 0
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").train()
    tokens = torch.randint(1, workload.vocab_size, (3, workload.seq_len))
    labels = torch.randint(0, 3, (3,))
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=tokens, labels=labels).loss.backward()
    assert counter.get_total_flops() / 3 == pytest.approx(flops_per_sample(workload, micro_batch_size=3),
                                                         rel=FLOP_TOLERANCE)
    assert forward_flops(workload).other_per_sample < forward_flops(_workload(name, seq_len=32)).other_per_sample
