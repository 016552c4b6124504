"""Model presets as data, and the :class:`Workload` they load into.

A preset is a JSON file under ``presets/`` holding simtune's metadata (family, task, default
sequence length, published parameter count, source) and, under ``"hf_config"``, the Hugging Face
model configuration exactly as transformers' config classes take it (``model_type`` included).
A local Hugging Face ``config.json`` (or a folder holding one, or a file in the preset layout) is
accepted wherever a preset name is.

Loading is pure JSON (no torch, no transformers), so the cost model can use workloads cheaply;
:func:`build_model` is the only function that imports transformers. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simtune.errors import WorkloadError
from simtune.model.inputs import ATTENTION_KINDS

PRESETS_DIR = Path(__file__).with_name("presets")

TASKS = ("causal-lm", "masked-lm", "sequence-classification")
"""What the model is trained to do: predict the next token (labels = inputs), the masked tokens
(15% of positions carry labels), or one label per sequence (a classification head instead of the
LM head, as ``AutoModelForSequenceClassification`` builds it: fine-tuning)."""

MASKED_FRACTION = 0.15
"""Share of positions that carry a label in a masked-LM batch (BERT's 15%)."""

DEFAULT_NUM_LABELS = 2
"""Labels of a sequence-classification config that names none (transformers' default)."""

#: Default sequence length of a config.json that names none: its positions, capped here.
DEFAULT_SEQ_LEN_CAP = 1024

#: Model types trained with masked language modelling when a config.json names no architecture.
_MASKED_LM_MODEL_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "deberta", "deberta-v2", "albert", "electra",
     "camembert", "mpnet", "megatron-bert", "modernbert"}
)

#: Config keys that carry each structural size, in the spelling of each model family.
_FIELD_KEYS: dict[str, tuple[str, ...]] = {
    "vocab_size": ("vocab_size",),
    "num_layers": ("num_hidden_layers", "n_layer", "n_layers", "num_layers"),
    "hidden_size": ("hidden_size", "n_embd", "dim", "d_model"),
    "num_heads": ("num_attention_heads", "n_head", "n_heads", "num_heads"),
    "intermediate_size": ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim", "d_ff"),
    "max_positions": ("max_position_embeddings", "n_positions", "n_ctx"),
}


@dataclass(frozen=True)
class Workload:
    """A model to train on synthetic tokens: its Hugging Face config and the sizes read from it."""

    name: str
    """Preset name, or the path of the config.json it came from."""
    hf_config: dict[str, Any] = field(hash=False, repr=False)
    """The Hugging Face config as transformers' config classes take it (``model_type`` included)."""
    model_type: str
    task: str
    """One of :data:`TASKS`: ``causal-lm``, ``masked-lm`` or ``sequence-classification``."""
    seq_len: int
    """Tokens per sample."""
    vocab_size: int
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    """Width of the feed-forward block (GPT-2's ``n_inner: null`` means 4 x hidden)."""
    max_positions: int
    """Largest sequence length the position embeddings allow."""
    family: str = ""
    """Display name of the model family, e.g. GPT-2."""
    source: str = ""
    """Where the configuration numbers come from."""
    published_parameters: int | None = None
    """Parameter count the model's authors publish (rounded), when there is one."""
    attention: str = "eager"
    """How attention runs (one of :data:`ATTENTION_KINDS`), as transformers builds the model."""
    attention_dropout: float = 0.0
    """Dropout on the attention probabilities while training."""
    loss: str = "fp32"
    """How the training program's loss holds the logits (one of
    :data:`simtune.model.inputs.LOSS_KINDS`): "fp32" for transformers' loss functions, which upcast
    them; "fused" for a fused cross-entropy kernel; "vocab_parallel" for Megatron-LM's."""

    @property
    def num_labels(self) -> int:
        """Classes of a sequence-classification head (``num_labels``, else the ``id2label``
        entries, else :data:`DEFAULT_NUM_LABELS`); 0 for a language-modelling task."""
        if self.task != "sequence-classification":
            return 0
        named = self.hf_config.get("num_labels")
        if isinstance(named, int) and not isinstance(named, bool) and named > 0:
            return named
        labels = self.hf_config.get("id2label")
        return len(labels) if isinstance(labels, dict) and labels else DEFAULT_NUM_LABELS

    def synthetic_labels(self, tokens: Any, generator: Any) -> Any:
        """Labels for a batch of random ``tokens`` as the training program draws them: the tokens
        (causal LM), the tokens at 15% of positions and -100 elsewhere, at least one per sequence
        (masked LM), or one random class per sequence (classification)."""
        import torch

        if self.task == "causal-lm":
            return tokens.clone()
        if self.task == "sequence-classification":
            return torch.randint(0, self.num_labels, (tokens.shape[0],), generator=generator)
        masked = torch.rand(tokens.shape, generator=generator) < MASKED_FRACTION
        masked[:, 0] |= ~masked.any(dim=1)
        return torch.where(masked, tokens, torch.full_like(tokens, -100))


FUSED_ATTENTION_MODEL_TYPES = frozenset({"gpt2", "bert", "distilbert", "roberta", "llama", "mistral", "qwen2",
                                         "qwen3"})
"""Model types whose transformers classes run torch's SDPA by default (``_supports_sdpa`` in
transformers 5: checked for GPT-2, BERT, DistilBERT and Llama; DeBERTa-v2 has none). Others are
taken as eager unless their config names ``attn_implementation``."""

ATTENTION_DROPOUT_KEYS = ("attn_pdrop", "attention_probs_dropout_prob", "attention_dropout")
ATTENTION_DROPOUT_DEFAULTS = {"gpt2": 0.1, "bert": 0.1, "distilbert": 0.1, "roberta": 0.1, "deberta-v2": 0.1}
"""The attention dropout of a config that does not state it: its transformers config class's default."""


def attention_of(config: dict[str, Any], model_type: str) -> tuple[str, float]:
    """(kind, dropout) of a Hugging Face config's attention: ``attn_implementation`` when given
    (flash_attention_2/3 and other kernels count as "flash"), else SDPA for the types in
    :data:`FUSED_ATTENTION_MODEL_TYPES` and eager otherwise."""
    named = config.get("attn_implementation") or config.get("_attn_implementation")
    if isinstance(named, str) and named:
        kind = named if named in ATTENTION_KINDS else "flash"
    else:
        kind = "sdpa" if model_type in FUSED_ATTENTION_MODEL_TYPES else "eager"
    dropout = _first_present(config, ATTENTION_DROPOUT_KEYS)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool):
        dropout = ATTENTION_DROPOUT_DEFAULTS.get(model_type, 0.0)
    return kind, float(dropout)


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def load_workload(name_or_path: str | os.PathLike[str], seq_len: int | None = None) -> Workload:
    """Load a preset by name, or a local config.json (or its folder), at ``seq_len`` tokens.

    Without ``seq_len`` a preset uses its own default and a config.json uses its positions,
    capped at ``DEFAULT_SEQ_LEN_CAP``.
    """
    text = str(name_or_path)
    preset_path = PRESETS_DIR / f"{text}.json"
    if os.sep not in text and "/" not in text and preset_path.is_file():
        return _from_document(text, _read_json(preset_path), seq_len)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise WorkloadError(
            f"'{text}' is neither a model preset nor a config.json file; "
            f"known presets: {', '.join(list_presets())}."
        )
    return _from_document(str(path), _read_json(path), seq_len)


def build_model(workload: Workload) -> Any:
    """A transformers model with random weights built from the workload's config (never downloaded).

    Causal-LM workloads get ``AutoModelForCausalLM``, masked-LM ones ``AutoModelForMaskedLM``,
    sequence-classification ones ``AutoModelForSequenceClassification`` (with a padding token
    where the config has none: GPT-2 and Llama classify a sequence by its last non-padding
    token); the key-value cache is switched off because the model is trained, not sampled.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification

    config = build_hf_config(workload)
    auto_class = {"causal-lm": AutoModelForCausalLM, "masked-lm": AutoModelForMaskedLM,
                  "sequence-classification": AutoModelForSequenceClassification}[workload.task]
    if workload.task == "sequence-classification":
        config.num_labels = workload.num_labels
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = 0
    try:
        return auto_class.from_config(config)
    except ValueError as exc:
        raise WorkloadError(
            f"transformers has no {workload.task} model for model_type '{workload.model_type}' ({exc})."
        ) from None


def build_hf_config(workload: Workload) -> Any:
    """The transformers config object for the workload (its class chosen by ``model_type``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import CONFIG_MAPPING

    try:
        config_class = CONFIG_MAPPING[workload.model_type]
    except KeyError:
        raise WorkloadError(
            f"transformers {_transformers_version()} does not know model_type '{workload.model_type}'."
        ) from None
    values = {k: v for k, v in workload.hf_config.items() if k != "model_type"}
    config = config_class.from_dict(values)
    if hasattr(config, "use_cache"):
        config.use_cache = False
    return config


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"{path} cannot be read ({exc}).") from None
    if not isinstance(document, dict):
        raise WorkloadError(f"{path} holds a JSON {type(document).__name__}, not an object of config keys.")
    return document


def workload_from_config(name: str, config: dict[str, Any], seq_len: int | None = None) -> Workload:
    """A workload from a Hugging Face config dict (a model's ``config.to_dict()``), named ``name``."""
    return _from_document(name, config, seq_len)


def _from_document(name: str, document: dict[str, Any], seq_len: int | None) -> Workload:
    """A workload from a preset-layout document (``hf_config`` + metadata) or a bare HF config."""
    if "hf_config" in document:
        hf_config = document["hf_config"]
        meta = document
        if not isinstance(hf_config, dict):
            raise WorkloadError(f"{name}: \"hf_config\" must be a JSON object of config keys.")
    else:
        hf_config, meta = document, {}
    model_type = hf_config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise WorkloadError(f"{name} has no \"model_type\", so the model architecture is unknown.")

    sizes = {key: _size(name, hf_config, key) for key in _FIELD_KEYS if key != "intermediate_size"}
    intermediate = _first_present(hf_config, _FIELD_KEYS["intermediate_size"])
    if intermediate is None and model_type == "gpt2":
        intermediate = 4 * sizes["hidden_size"]  # GPT-2's n_inner: null
    sizes["intermediate_size"] = _positive_int(name, "intermediate_size", intermediate)
    if sizes["hidden_size"] % sizes["num_heads"]:
        raise WorkloadError(f"{name}: the hidden size {sizes['hidden_size']} is not divisible by the "
                            f"{sizes['num_heads']} attention heads.")

    task = meta.get("task") or _infer_task(hf_config)
    if task not in TASKS:
        raise WorkloadError(f"{name}: task '{task}' is not one of {', '.join(TASKS)}.")

    default_len = meta.get("seq_len") or min(sizes["max_positions"], DEFAULT_SEQ_LEN_CAP)
    chosen = default_len if seq_len is None else seq_len
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 1:
        raise WorkloadError(f"sequence length must be a positive integer, not {chosen!r}.")
    if chosen > sizes["max_positions"]:
        raise WorkloadError(
            f"sequence length {chosen} exceeds the {sizes['max_positions']} positions of {name}."
        )
    published = meta.get("published_parameters")
    attention, attention_dropout = attention_of(hf_config, model_type)
    return Workload(
        name=name,
        hf_config=dict(hf_config),
        model_type=model_type,
        task=task,
        seq_len=chosen,
        family=str(meta.get("family") or model_type),
        source=str(meta.get("source") or f"Hugging Face config file {name}"),
        published_parameters=int(published) if published else None,
        attention=attention,
        attention_dropout=attention_dropout,
        **sizes,
    )


def _first_present(config: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return None


def _size(name: str, config: dict[str, Any], field_name: str) -> int:
    keys = _FIELD_KEYS[field_name]
    value = _first_present(config, keys)
    if value is None:
        raise WorkloadError(f"{name} gives no {field_name} (looked for {', '.join(keys)}).")
    return _positive_int(name, field_name, value)


def _positive_int(name: str, field_name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkloadError(f"{name}: {field_name} must be a positive integer, not {value!r}.")
    return value


def _infer_task(config: dict[str, Any]) -> str:
    """Sequence classification or masked LM when the architectures say so (or the model type,
    for masked LM), causal LM otherwise."""
    architectures = config.get("architectures") or []
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return "sequence-classification"
    if any(str(a).endswith("ForMaskedLM") for a in architectures):
        return "masked-lm"
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "causal-lm"
    return "masked-lm" if config.get("model_type") in _MASKED_LM_MODEL_TYPES else "causal-lm"
