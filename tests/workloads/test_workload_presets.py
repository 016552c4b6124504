"""Presets as data: loading, validation and building models with random weights."""

import dataclasses
import json
import os

import pytest
import torch

from simtune.errors import SimtuneError, WorkloadError
from simtune.workloads import Workload, build_model, list_presets, load_workload
from simtune.workloads.presets import PRESETS_DIR, TASKS, _from_document, attention_of

EXPECTED_PRESETS = {
    "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "bert-base", "bert-large", "distilbert",
    "deberta-v2-xxlarge", "gpt2-tiny", "gpt2-tiny-heavy", "bert-tiny",
}

# (layers, hidden, heads, positions, vocabulary) of the published configs.
PUBLISHED_SHAPES = {
    "gpt2": (12, 768, 12, 1024, 50257),
    "gpt2-medium": (24, 1024, 16, 1024, 50257),
    "gpt2-large": (36, 1280, 20, 1024, 50257),
    "gpt2-xl": (48, 1600, 25, 1024, 50257),
    "bert-base": (12, 768, 12, 512, 30522),
    "bert-large": (24, 1024, 16, 512, 30522),
    "distilbert": (6, 768, 12, 512, 30522),
    "deberta-v2-xxlarge": (48, 1536, 24, 512, 128100),
    "gpt2-tiny": (2, 128, 4, 128, 1024),
    "gpt2-tiny-heavy": (2, 128, 4, 65536, 1024),
    "bert-tiny": (2, 128, 2, 128, 1024),
}


def test_every_expected_preset_ships_as_json():
    assert set(list_presets()) == EXPECTED_PRESETS
    assert list_presets() == sorted(list_presets())


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_preset_loads_with_its_published_shape(name):
    workload = load_workload(name)
    shape = (workload.num_layers, workload.hidden_size, workload.num_heads, workload.max_positions,
             workload.vocab_size)
    assert shape == PUBLISHED_SHAPES[name]
    assert workload.hf_config["model_type"] == workload.model_type
    assert workload.task in TASKS
    assert workload.task == ("causal-lm" if name.startswith("gpt2") else "masked-lm")
    assert 1 <= workload.seq_len <= workload.max_positions
    assert workload.hidden_size % workload.num_heads == 0
    assert workload.source and workload.family


def test_preset_files_keep_metadata_apart_from_the_hf_config():
    for path in PRESETS_DIR.glob("*.json"):
        document = json.loads(path.read_text())
        assert {"family", "task", "seq_len", "source", "hf_config"} <= set(document), path.name
        assert "task" not in document["hf_config"], path.name


def test_gpt2_feed_forward_width_defaults_to_four_times_hidden():
    assert load_workload("gpt2").intermediate_size == 4 * 768


def test_workload_is_frozen_and_hashable():
    workload = load_workload("gpt2-tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        workload.seq_len = 3
    assert hash(workload) == hash(load_workload("gpt2-tiny"))


def test_seq_len_override_and_its_limits():
    assert load_workload("gpt2", seq_len=256).seq_len == 256
    with pytest.raises(WorkloadError, match="2048 exceeds the 1024 positions"):
        load_workload("gpt2", seq_len=2048)
    with pytest.raises(WorkloadError, match="positive integer"):
        load_workload("gpt2", seq_len=0)


def test_unknown_preset_names_every_known_preset_in_one_sentence():
    with pytest.raises(WorkloadError) as caught:
        load_workload("gpt5-huge")
    message = str(caught.value)
    assert isinstance(caught.value, SimtuneError)
    assert "gpt5-huge" in message and "\n" not in message and message.endswith(".")
    for name in EXPECTED_PRESETS:
        assert name in message


def _write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_local_config_json_file_or_folder(tmp_path):
    hf_config = json.loads((PRESETS_DIR / "gpt2-tiny.json").read_text())["hf_config"]
    path = _write(tmp_path / "config.json", hf_config)
    for given in (path, str(path), str(tmp_path)):
        workload = load_workload(given)
        assert workload.task == "causal-lm"
        assert (workload.num_layers, workload.hidden_size) == (2, 128)
        assert workload.seq_len == 128  # its positions, under the cap
        assert workload.name == str(path)


def test_task_of_a_config_json_follows_architectures_then_model_type(tmp_path):
    bert = json.loads((PRESETS_DIR / "bert-tiny.json").read_text())["hf_config"]
    bert.pop("architectures")
    assert load_workload(_write(tmp_path / "bert.json", bert)).task == "masked-lm"
    bert["architectures"] = ["BertLMHeadModel"]
    assert load_workload(_write(tmp_path / "bert_lm.json", bert)).task == "causal-lm"
    bert["architectures"] = ["BertForSequenceClassification"]
    classifier = load_workload(_write(tmp_path / "bert_cls.json", bert))
    assert classifier.task == "sequence-classification" and classifier.num_labels == 2  # transformers' default
    bert["id2label"] = {"0": "a", "1": "b", "2": "c"}
    assert load_workload(_write(tmp_path / "bert_cls3.json", bert)).num_labels == 3
    bert["num_labels"] = 5
    assert load_workload(_write(tmp_path / "bert_cls5.json", bert)).num_labels == 5
    assert load_workload("bert-tiny").num_labels == 0


def test_config_json_default_seq_len_is_capped(tmp_path):
    config = {"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 131072}
    workload = load_workload(_write(tmp_path / "long.json", config))
    assert workload.seq_len == 1024
    assert workload.max_positions == 131072


def test_preset_layout_file_is_accepted_as_a_path(tmp_path):
    document = json.loads((PRESETS_DIR / "bert-tiny.json").read_text())
    document["seq_len"] = 64
    workload = load_workload(_write(tmp_path / "mine.json", document))
    assert workload.seq_len == 64 and workload.family == "BERT"


@pytest.mark.parametrize(
    "content, pattern",
    [
        ('{"model_type": "gpt2", ', "not valid JSON"),
        ({"n_layer": 2, "n_embd": 64}, "no \"model_type\""),
        ([1, 2], "not an object"),
        ({"model_type": "gpt2", "n_embd": 64, "n_head": 2, "n_positions": 32, "vocab_size": 10},
         "no num_layers"),
        ({"model_type": "gpt2", "n_layer": "2", "n_embd": 64, "n_head": 2, "n_positions": 32,
          "vocab_size": 10}, "num_layers must be a positive integer"),
    ],
)
def test_bad_config_files_raise_workload_error(tmp_path, content, pattern):
    path = _write(tmp_path / "config.json", content)
    with pytest.raises(WorkloadError, match=pattern) as caught:
        load_workload(path)
    assert "\n" not in str(caught.value)


def test_missing_path_is_reported_like_an_unknown_preset(tmp_path):
    with pytest.raises(WorkloadError, match="neither a model preset nor a config.json"):
        load_workload(tmp_path / "absent.json")


def test_build_model_gives_the_task_head_with_random_weights():
    gpt = build_model(load_workload("gpt2-tiny"))
    bert = build_model(load_workload("bert-tiny"))
    assert type(gpt).__name__ == "GPT2LMHeadModel"
    assert type(bert).__name__ == "BertForMaskedLM"
    assert gpt.config.use_cache is False
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    weights = gpt.transformer.h[0].attn.c_attn.weight
    assert 0.01 < float(weights.detach().std()) < 0.03  # initializer_range 0.02, not zeros or a checkpoint
    config = {**load_workload("gpt2-tiny").hf_config, "architectures": ["GPT2ForSequenceClassification"],
              "num_labels": 3}
    classifier = build_model(_from_document("gpt2-tiny-cls", config, 16))
    assert type(classifier).__name__ == "GPT2ForSequenceClassification"
    assert classifier.config.num_labels == 3 and classifier.config.pad_token_id is not None
    tokens = torch.randint(1, 64, (2, 16))
    assert classifier(input_ids=tokens, labels=torch.tensor([0, 2])).logits.shape == (2, 3)


def test_build_model_rejects_a_model_type_transformers_does_not_know(tmp_path):
    config = {"model_type": "no-such-model", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 8}
    workload = load_workload(_write(tmp_path / "config.json", config))
    assert isinstance(workload, Workload)
    with pytest.raises(WorkloadError, match="does not know model_type 'no-such-model'"):
        build_model(workload)


def test_attention_is_how_transformers_builds_the_model():
    gpt2 = load_workload("gpt2-tiny")
    assert (gpt2.attention, gpt2.attention_dropout) == ("sdpa", 0.1)
    assert build_model(gpt2).config._attn_implementation == "sdpa"  # what the closed form assumes
    assert load_workload("deberta-v2-xxlarge").attention == "eager"  # no fused attention in its class
    assert attention_of({"attn_implementation": "flash_attention_2", "attention_dropout": 0.0}, "llama") == ("flash", 0.0)
    assert attention_of({"attn_implementation": "eager"}, "gpt2") == ("eager", 0.1)
    assert attention_of({}, "some-new-model") == ("eager", 0.0)

