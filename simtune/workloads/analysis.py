"""Closed-form parameter and FLOP counts of a workload, read from its Hugging Face config.

Pure arithmetic: no torch, no I/O. Covered model types: gpt2, bert, distilbert, deberta-v2 and
llama (the Hugging Face implementations as of transformers 5, with the LM head the workload
trains: ``GPT2LMHeadModel``, ``BertForMaskedLM``, ``DistilBertForMaskedLM``,
``DebertaV2ForMaskedLM``, ``LlamaForCausalLM``; or, for a sequence-classification workload, the
``...ForSequenceClassification`` head in its place: BERT, DistilBERT and DeBERTa-v2 pool the
first token through a dense layer (``2*h^2``) before the classifier (``2*h*C``, C labels); GPT-2
and Llama score every position (``2*s*h*C``, no bias) and keep the last one).

Notation: V vocabulary, P positions, h hidden size, L layers, i feed-forward width, s sequence
length, b micro-batch size.

FLOP convention
---------------
* A multiply-add is 2 FLOPs; only matrix products (linear layers, attention products,
  convolutions) are counted. Embedding look-ups, layer norms, softmax, activations and the loss
  are not (they are O(s*h), negligible next to O(s*h^2)). This is what
  ``torch.utils.flop_counter.FlopCounterMode`` counts.
* Attention scores and the attention-weighted sum are counted in full (4*s^2*h per layer per
  sample), causal mask or not, as in Narayanan et al. 2021 ("Efficient Large-Scale Language
  Model Training on GPU Clusters Using Megatron-LM", SC'21, section 5.1, eq. 3), whose GPT
  forward count is ``24*b*s*L*h^2 * (1 + s/(6h)) + 2*b*s*h*V``, i.e. per sample
  ``L*(24*s*h^2 + 4*s^2*h) + 2*s*h*V`` with i = 4h. The per-layer terms here keep i general:
  ``L*(8*s*h^2 + 4*s*h*i + 4*s^2*h)`` plus the head.
* Training = forward + backward = 3 x forward (the backward computes gradients for both inputs
  and weights: 2 x forward; same source). With activation checkpointing the transformer layers
  are run forward a second time during the backward: + 1 x the layers' forward. These are
  model FLOPs (DeepSpeed's autotuner reports its profiler's forward count x 3 the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from simtune.errors import WorkloadError
from simtune.workloads.presets import Workload


@dataclass(frozen=True)
class ModuleParams:
    """The parameter tensors one kind of module holds directly (not those of its children)."""

    name: str
    tensors: tuple[int, ...]
    """Element counts of the parameters first registered here, in registration order."""
    shared: tuple[int, ...] = ()
    """Element counts of tied parameters it also holds, registered by an earlier module."""
    repeats: int = 1
    """How many such modules the model has (one per layer: L)."""
    idle: int = 0
    """Elements of its tensors no training sample gives a gradient (:func:`idle_elements`)."""
    head: bool = False
    """Registered on the task model (its LM head or classifier), outside the base model."""

    @property
    def own_params(self) -> int:
        """Parameters registered on the module itself, tied ones included (DeepSpeed's per-module count)."""
        return sum(self.tensors) + sum(self.shared)


@dataclass(frozen=True)
class _ParamPlan:
    """Modules in the order ``model.named_modules()`` visits them: before the layers, one layer
    (repeated), after the layers."""

    before: tuple[ModuleParams, ...]
    layer: tuple[ModuleParams, ...]
    num_layers: int
    after: tuple[ModuleParams, ...]


@dataclass(frozen=True)
class ForwardFlops:
    """Forward FLOPs of one micro-batch, split the way batch size and checkpointing act on them."""

    num_layers: int
    layer_per_sample: int
    """One transformer layer, one sample."""
    layer_per_batch: int = 0
    """One transformer layer, once per micro-batch whatever its size (DeBERTa's projections of
    the relative-position embeddings)."""
    other_per_sample: int = 0
    """Outside the layers, per sample: the LM head, DeBERTa's convolution, embedding projections."""

    def layers(self, batch_size: int) -> int:
        """FLOPs of all transformer layers for ``batch_size`` samples."""
        return self.num_layers * (self.layer_per_sample * batch_size + self.layer_per_batch)

    def total(self, batch_size: int) -> int:
        """FLOPs of a whole forward over ``batch_size`` samples."""
        return self.layers(batch_size) + self.other_per_sample * batch_size


def module_parameters(workload: Workload) -> tuple[ModuleParams, ...]:
    """Every kind of parameter-holding module of the workload's model, layer modules once with
    ``repeats`` = number of layers."""
    plan = _param_plan(workload)
    layer = tuple(replace(m, repeats=plan.num_layers) for m in plan.layer)
    return plan.before + layer + plan.after


def parameter_tensor_numels(workload: Workload) -> tuple[int, ...]:
    """Element count of every parameter tensor in ``model.parameters()`` order (tied ones once).

    ZeRO-1/2 flatten the parameters in this order and partition the flat buffer; ZeRO-3 keeps
    tensors of at most ``stage3_param_persistence_threshold`` elements whole on every rank.
    """
    plan = _param_plan(workload)

    def flat(modules: tuple[ModuleParams, ...]) -> tuple[int, ...]:
        return tuple(n for m in modules for n in m.tensors)

    return flat(plan.before) + flat(plan.layer) * plan.num_layers + flat(plan.after)


def construction_gathers(workload: Workload) -> tuple[tuple[int, ...], ...]:
    """Element counts of the parameter tensors transformers gathers together as it initialises
    the weights of a model built from its config under ZeRO-3 (``initialize_weights_zero3`` in
    transformers/integrations/deepspeed.py: each module's own parameters with its direct
    children's, outside nested pretrained models), one group per kind of module that holds or
    parents parameters; a tied tensor once per group. Modules named without a parent path are
    the base model's (the layer's, within a layer; the task model's, for a head)."""
    plan = _param_plan(workload)
    groups: dict[tuple[str, str], list[ModuleParams]] = {}
    for section, modules in (("model", plan.before + plan.after), ("layer", plan.layer)):
        for module in modules:
            where = "head" if module.head else section
            parent = module.name.rpartition(".")[0]
            groups.setdefault((where, module.name), []).append(module)
            groups.setdefault((where, parent), []).append(module)
    gathered = []
    for members in groups.values():
        own = [n for m in dict.fromkeys(members) for n in m.tensors]
        shared = [n for m in dict.fromkeys(members) for n in m.shared if n not in own]
        if own or shared:
            gathered.append(tuple(own + shared))
    return tuple(dict.fromkeys(gathered))


def idle_elements(workload: Workload) -> int:
    """Parameter elements no training sample gives a gradient, so that their Adam moments stay
    exactly 0: a learned position table's rows beyond the sequence, and a causal LM's last one
    (GPT-2, BERT, DistilBERT, DeBERTa-v2 with ``position_biased_input``), a token-type table's
    rows beyond the first, and the rows of DeBERTa-v2's relative-position table that no pair of
    the s tokens reads. Rotary models (Llama) have none. Tied token embeddings get the LM head's
    gradient on every row; an untied one's rows that no token has reached yet are not counted
    (they are idle only until one does)."""
    return sum(m.idle * m.repeats for m in module_parameters(workload))


def parameter_count(workload: Workload) -> int:
    """Total parameters, tied weights counted once (equals ``sum(p.numel())`` of the built model)."""
    return sum(parameter_tensor_numels(workload))


def largest_layer_params(workload: Workload) -> int:
    """The largest parameter count any single module holds directly.

    DeepSpeed's ZeRO-3 memory estimator (``deepspeed.runtime.zero.stage3.model_to_params``)
    defines the "largest layer" as the maximum over ``model.modules()`` of the module's
    non-recursive parameter count, a tied weight counting for each module that holds it; for
    these models it is the embedding or the LM head's decoder (V*h, plus V with a bias).
    """
    return max(m.own_params for m in module_parameters(workload))


def forward_flops(workload: Workload) -> ForwardFlops:
    """Forward FLOPs of the workload at its sequence length (convention in the module docstring)."""
    return _family(workload)[1](workload)


def flops_per_sample(
    workload: Workload, *, micro_batch_size: int = 1, activation_checkpointing: bool = False
) -> float:
    """Training FLOPs (forward + backward) per sample: 3 x forward, + the layers' forward again
    with activation checkpointing.

    Per-micro-batch terms (DeBERTa only) are shared by the ``micro_batch_size`` samples; at the
    default of 1 the count is that of a single-sample batch, an upper bound for larger batches.
    """
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be at least 1, not {micro_batch_size}")
    fwd = forward_flops(workload)
    total = 3 * fwd.total(micro_batch_size)
    if activation_checkpointing:
        total += fwd.layers(micro_batch_size)
    return total / micro_batch_size


# --- The head: the family's LM head, or a sequence classifier in its place -------------------

POOLED_HEADS = {"bert": ("pooler.dense", "classifier"), "distilbert": ("pre_classifier", "classifier"),
                "deberta-v2": ("pooler.dense", "classifier")}
"""Families whose classifier reads the first token through a dense layer: (that layer, the classifier)."""


def classification_pooled(workload: Workload) -> bool:
    """Whether the workload's classification head pools the first token through a dense layer
    (BERT, DistilBERT, DeBERTa-v2) rather than scoring every position (GPT-2, Llama)."""
    return workload.model_type in POOLED_HEADS


def _head(w: Workload, lm: tuple[ModuleParams, ...]) -> tuple[ModuleParams, ...]:
    """The model's head modules: the family's LM head ``lm``, or for a sequence-classification
    workload its classifier (a pooler, or the score at every position)."""
    if w.task != "sequence-classification":
        return tuple(replace(m, head=True) for m in lm)
    h, c = w.hidden_size, w.num_labels
    if classification_pooled(w):
        pool, classifier = POOLED_HEADS[w.model_type]
        return (ModuleParams(pool, _linear(h, h), head=True), ModuleParams(classifier, _linear(h, c), head=True))
    return (ModuleParams("score", _linear(h, c, bias=False), head=True),)


def _head_flops(w: Workload, lm: int) -> int:
    """Forward FLOPs of one sample's head: the family's LM head's ``lm``, or the classifier's."""
    if w.task != "sequence-classification":
        return lm
    h, c = w.hidden_size, w.num_labels
    return 2 * h * h + 2 * h * c if classification_pooled(w) else 2 * w.seq_len * h * c


# --- GPT-2 (GPT2LMHeadModel: Conv1D layers hold a weight and a bias) -------------------------


def _linear(n_in: int, n_out: int, bias: bool = True) -> tuple[int, ...]:
    """A linear (or GPT-2 Conv1D) layer's tensors: weight, then bias."""
    return (n_in * n_out, n_out) if bias else (n_in * n_out,)


def _norm(h: int, bias: bool = True) -> tuple[int, ...]:
    """LayerNorm (weight and bias) or RMSNorm (weight only)."""
    return (h, h) if bias else (h,)


def _head_weight(name: str, size: int, tied: bool, bias: tuple[int, ...] = ()) -> ModuleParams:
    """An output projection whose weight is the word embedding when tied."""
    return ModuleParams(name, bias, shared=(size,)) if tied else ModuleParams(name, (size,) + bias)


def _decoder_with_shared_bias(weight: int, bias: int, tied: bool) -> ModuleParams:
    """BERT-style MLM decoder. Tied, its weight is the word embedding and its bias the
    predictions module's; untied, transformers 5 gives it a weight and a bias of its own."""
    if tied:
        return ModuleParams("cls.predictions.decoder", (), shared=(weight, bias))
    return ModuleParams("cls.predictions.decoder", (weight, bias))


def _positions(name: str, w: Workload, width: int) -> ModuleParams:
    """A learned position table of P rows: a sample of s tokens reads rows 0..s-1, so the
    other P - s rows never get a gradient; nor, in a causal LM, does row s-1, whose token only its
    own output sees, and that output predicts nothing (the loss shifts the labels)."""
    unread = w.max_positions - w.seq_len + (1 if w.task == "causal-lm" else 0)
    return ModuleParams(name, (w.max_positions * width,), idle=unread * width)


def _token_types(types: int, width: int) -> ModuleParams:
    """A token-type table: the training script passes no ``token_type_ids``, so every token is
    type 0 and the other rows never get a gradient."""
    return ModuleParams("embeddings.token_type_embeddings", (types * width,), idle=(types - 1) * width)


def _gpt2_params(w: Workload) -> _ParamPlan:
    h, i, v = w.hidden_size, w.intermediate_size, w.vocab_size
    return _ParamPlan(
        before=(ModuleParams("wte", (v * h,)), _positions("wpe", w, h)),
        layer=(
            ModuleParams("ln_1", _norm(h)),
            ModuleParams("attn.c_attn", _linear(h, 3 * h)),
            ModuleParams("attn.c_proj", _linear(h, h)),
            ModuleParams("ln_2", _norm(h)),
            ModuleParams("mlp.c_fc", _linear(h, i)),
            ModuleParams("mlp.c_proj", _linear(i, h)),
        ),
        num_layers=w.num_layers,
        after=(
            ModuleParams("ln_f", _norm(h)),
            *_head(w, (_head_weight("lm_head", v * h, bool(w.hf_config.get("tie_word_embeddings", True))),)),
        ),
    )


def _gpt2_flops(w: Workload) -> ForwardFlops:
    s, h, i = w.seq_len, w.hidden_size, w.intermediate_size
    return ForwardFlops(
        num_layers=w.num_layers,
        layer_per_sample=_block_flops(s, h, i, qkv_width=3 * h, attn_width=h),
        other_per_sample=_head_flops(w, 2 * s * h * w.vocab_size),
    )


def _block_flops(s: int, h: int, i: int, *, qkv_width: int, attn_width: int) -> int:
    """One pre- or post-norm transformer block with a 2-matrix MLP.

    Q/K/V projections ``2*s*h*qkv_width``, output projection ``2*s*attn_width*h``, scores and
    weighted sum ``2 * 2*s^2*attn_width``, MLP ``2 * 2*s*h*i``. With qkv_width = 3h and
    attn_width = h: ``8*s*h^2 + 4*s*h*i + 4*s^2*h``.
    """
    return 2 * s * h * qkv_width + 2 * s * attn_width * h + 4 * s * s * attn_width + 4 * s * h * i


# --- BERT (BertForMaskedLM: no pooler; decoder tied to the word embeddings) ------------------


def _bert_params(w: Workload) -> _ParamPlan:
    h, i, v = w.hidden_size, w.intermediate_size, w.vocab_size
    type_vocab = int(w.hf_config.get("type_vocab_size", 2))
    tied = bool(w.hf_config.get("tie_word_embeddings", True))
    return _ParamPlan(
        before=(
            ModuleParams("embeddings.word_embeddings", (v * h,)),
            _positions("embeddings.position_embeddings", w, h),
            _token_types(type_vocab, h),
            ModuleParams("embeddings.LayerNorm", _norm(h)),
        ),
        layer=(
            ModuleParams("attention.self.query", _linear(h, h)),
            ModuleParams("attention.self.key", _linear(h, h)),
            ModuleParams("attention.self.value", _linear(h, h)),
            ModuleParams("attention.output.dense", _linear(h, h)),
            ModuleParams("attention.output.LayerNorm", _norm(h)),
            ModuleParams("intermediate.dense", _linear(h, i)),
            ModuleParams("output.dense", _linear(i, h)),
            ModuleParams("output.LayerNorm", _norm(h)),
        ),
        num_layers=w.num_layers,
        after=_head(w, (
            ModuleParams("cls.predictions", (v,)),
            ModuleParams("cls.predictions.transform.dense", _linear(h, h)),
            ModuleParams("cls.predictions.transform.LayerNorm", _norm(h)),
            _decoder_with_shared_bias(v * h, v, tied),
        )),
    )


def _bert_flops(w: Workload) -> ForwardFlops:
    """Encoder blocks, then the MLM head: transform ``2*s*h^2`` and decoder ``2*s*h*V``."""
    s, h, i = w.seq_len, w.hidden_size, w.intermediate_size
    return ForwardFlops(
        num_layers=w.num_layers,
        layer_per_sample=_block_flops(s, h, i, qkv_width=3 * h, attn_width=h),
        other_per_sample=_head_flops(w, 2 * s * h * h + 2 * s * h * w.vocab_size),
    )


# --- DistilBERT (DistilBertForMaskedLM) -------------------------------------------------------


def _distilbert_params(w: Workload) -> _ParamPlan:
    h, i, v = w.hidden_size, w.intermediate_size, w.vocab_size
    tied = bool(w.hf_config.get("tie_word_embeddings", w.hf_config.get("tie_weights_", True)))
    return _ParamPlan(
        before=(
            ModuleParams("embeddings.word_embeddings", (v * h,)),
            _positions("embeddings.position_embeddings", w, h),
            ModuleParams("embeddings.LayerNorm", _norm(h)),
        ),
        layer=(
            ModuleParams("attention.q_lin", _linear(h, h)),
            ModuleParams("attention.k_lin", _linear(h, h)),
            ModuleParams("attention.v_lin", _linear(h, h)),
            ModuleParams("attention.out_lin", _linear(h, h)),
            ModuleParams("sa_layer_norm", _norm(h)),
            ModuleParams("ffn.lin1", _linear(h, i)),
            ModuleParams("ffn.lin2", _linear(i, h)),
            ModuleParams("output_layer_norm", _norm(h)),
        ),
        num_layers=w.num_layers,
        after=_head(w, (
            ModuleParams("vocab_transform", _linear(h, h)),
            ModuleParams("vocab_layer_norm", _norm(h)),
            _head_weight("vocab_projector", v * h, tied, bias=(v,)),
        )),
    )


# --- DeBERTa-v2 (DebertaV2ForMaskedLM, disentangled attention) --------------------------------


@dataclass(frozen=True)
class _DebertaShape:
    embedding: int
    attn_width: int
    relative: bool
    span: int
    """Relative positions on each side; the table holds 2*span rows."""
    buckets: int
    """``position_buckets`` (log-bucketed relative positions), or 0 without."""
    max_relative: int
    shared_keys: bool
    c2p: bool
    p2c: bool
    conv_kernel: int
    conv_groups: int
    rel_norm: bool


def _deberta_shape(w: Workload) -> _DebertaShape:
    cfg, h = w.hf_config, w.hidden_size
    pos_types = cfg.get("pos_att_type") or []
    if isinstance(pos_types, str):
        pos_types = [p.strip() for p in pos_types.lower().split("|")]
    max_relative = int(cfg.get("max_relative_positions", -1))
    if max_relative < 1:
        max_relative = w.max_positions
    buckets = int(cfg.get("position_buckets", -1))
    head_size = int(cfg.get("attention_head_size") or h // w.num_heads)
    norms = [p.strip() for p in str(cfg.get("norm_rel_ebd", "none")).lower().split("|")]
    return _DebertaShape(
        embedding=int(cfg.get("embedding_size") or h),
        attn_width=w.num_heads * head_size,
        relative=bool(cfg.get("relative_attention", False)),
        span=buckets if buckets > 0 else max_relative,
        buckets=max(buckets, 0),
        max_relative=max_relative,
        shared_keys=bool(cfg.get("share_att_key", False)),
        c2p="c2p" in pos_types,
        p2c="p2c" in pos_types,
        conv_kernel=int(cfg.get("conv_kernel_size", 0)),
        conv_groups=int(cfg.get("conv_groups", 1)),
        rel_norm="layer_norm" in norms,
    )


def _relative_bucket(r: int, buckets: int, max_relative: int) -> int:
    """DeBERTa-v2's bucket of relative position r (``make_log_bucket_position``): r itself within
    half the buckets, log-spaced beyond."""
    mid = buckets // 2
    if abs(r) <= mid:
        return r
    far = math.ceil(math.log(abs(r) / mid) / math.log((max_relative - 1) / mid) * (mid - 1)) + mid
    return far if r > 0 else -far


def _relative_rows_used(shape: _DebertaShape, seq_len: int) -> int:
    """Rows of the relative-position table that s tokens read: each relative position
    r in -(s-1)..s-1, bucketed when ``position_buckets`` is set, indexes row r + span clamped to the
    table (``DisentangledSelfAttention.disentangled_attention_bias``; the position-to-content
    term reads -r, the same set)."""
    rows = set()
    for r in range(-(seq_len - 1), seq_len):
        bucket = _relative_bucket(r, shape.buckets, shape.max_relative) if shape.buckets else r
        rows.add(min(max(bucket + shape.span, 0), 2 * shape.span - 1))
    return len(rows)


def _deberta_params(w: Workload) -> _ParamPlan:
    h, i, v = w.hidden_size, w.intermediate_size, w.vocab_size
    cfg, shape = w.hf_config, _deberta_shape(w)
    e, a = shape.embedding, shape.attn_width
    type_vocab = int(cfg.get("type_vocab_size", 0))
    before = [ModuleParams("embeddings.word_embeddings", (v * e,))]
    if cfg.get("position_biased_input", True):
        before.append(_positions("embeddings.position_embeddings", w, e))
    if type_vocab > 0:
        before.append(_token_types(type_vocab, e))
    if e != h:
        before.append(ModuleParams("embeddings.embed_proj", _linear(e, h, bias=False)))
    before.append(ModuleParams("embeddings.LayerNorm", _norm(h)))

    layer = [ModuleParams(f"attention.self.{n}_proj", _linear(h, a)) for n in ("query", "key", "value")]
    if shape.relative and not shape.shared_keys:
        if shape.c2p:
            layer.append(ModuleParams("attention.self.pos_key_proj", _linear(h, a)))
        if shape.p2c:
            layer.append(ModuleParams("attention.self.pos_query_proj", _linear(h, a)))
    layer += [
        ModuleParams("attention.output.dense", _linear(h, h)),
        ModuleParams("attention.output.LayerNorm", _norm(h)),
        ModuleParams("intermediate.dense", _linear(h, i)),
        ModuleParams("output.dense", _linear(i, h)),
        ModuleParams("output.LayerNorm", _norm(h)),
    ]

    after = []
    if shape.relative:
        unused = 2 * shape.span - _relative_rows_used(shape, w.seq_len)
        after.append(ModuleParams("encoder.rel_embeddings", (2 * shape.span * h,), idle=unused * h))
    if shape.rel_norm:
        after.append(ModuleParams("encoder.LayerNorm", _norm(h)))
    if shape.conv_kernel > 0:
        after += [
            ModuleParams("encoder.conv.conv", (h * (h // shape.conv_groups) * shape.conv_kernel, h)),
            ModuleParams("encoder.conv.LayerNorm", _norm(h)),
        ]
    if cfg.get("legacy", True):
        tied = bool(cfg.get("tie_word_embeddings", True))
        lm: tuple[ModuleParams, ...] = (
            ModuleParams("cls.predictions", (v,)),
            ModuleParams("cls.predictions.transform.dense", _linear(h, e)),
            ModuleParams("cls.predictions.transform.LayerNorm", _norm(e)),
            _decoder_with_shared_bias(e * v, v, tied),
        )
    else:  # the head multiplies by the word embeddings directly; only the bias is its own
        lm = (
            ModuleParams("lm_predictions.lm_head", (v,)),
            ModuleParams("lm_predictions.lm_head.dense", _linear(h, h)),
            ModuleParams("lm_predictions.lm_head.LayerNorm", _norm(h)),
        )
    return _ParamPlan(tuple(before), tuple(layer), w.num_layers, tuple(after) + _head(w, lm))


def _deberta_flops(w: Workload) -> ForwardFlops:
    """Disentangled attention (He et al. 2021, eq. 4) on top of the BERT-like block.

    Content-to-position and position-to-content scores are each a product of the s queries (or
    keys) with the 2*span projected relative embeddings: ``2*s*(2*span)*a`` per kind and layer.
    Projecting the relative embeddings (``2*(2*span)*h*a`` per projection: both with shared keys,
    else one per kind) happens once per micro-batch. The first layer's output goes through a
    convolution of kernel k: ``2*s*h*(h/groups)*k``.
    """
    s, h, i, v = w.seq_len, w.hidden_size, w.intermediate_size, w.vocab_size
    shape = _deberta_shape(w)
    e, a = shape.embedding, shape.attn_width
    layer = 2 * s * h * 3 * a + 4 * s * s * a + 2 * s * h * h + 4 * s * h * i
    per_batch = 0
    if shape.relative:
        kinds = int(shape.c2p) + int(shape.p2c)
        layer += kinds * 2 * s * (2 * shape.span) * a
        projections = 2 if shape.shared_keys else kinds
        per_batch = projections * 2 * (2 * shape.span) * h * a
    other = _head_flops(w, 2 * s * h * e + 2 * s * e * v if w.hf_config.get("legacy", True)
                        else 2 * s * h * h + 2 * s * h * v)
    if e != h:
        other += 2 * s * e * h
    if shape.conv_kernel > 0:
        other += 2 * s * h * (h // shape.conv_groups) * shape.conv_kernel
    return ForwardFlops(w.num_layers, layer, per_batch, other)


# --- Llama (LlamaForCausalLM: grouped-query attention, gated MLP, RMSNorm) --------------------


def _llama_widths(w: Workload) -> tuple[int, int]:
    head_dim = int(w.hf_config.get("head_dim") or w.hidden_size // w.num_heads)
    kv_heads = int(w.hf_config.get("num_key_value_heads") or w.num_heads)
    return w.num_heads * head_dim, kv_heads * head_dim


def _llama_params(w: Workload) -> _ParamPlan:
    """Llama's layer, and its relatives': Mistral's is the same; Qwen2's query, key and value
    projections carry biases (its output projection none); Qwen3 normalises each head's query and
    key (``q_norm``, ``k_norm``: an RMSNorm weight of the head dimension each, registered after the
    output projection)."""
    h, i, v = w.hidden_size, w.intermediate_size, w.vocab_size
    q, kv = _llama_widths(w)
    attn_bias = bool(w.hf_config.get("attention_bias", False))
    qkv_bias = attn_bias or w.model_type == "qwen2"
    mlp_bias = bool(w.hf_config.get("mlp_bias", False))
    head_norms = (ModuleParams("self_attn.q_norm", _norm(q // w.num_heads, bias=False)),
                  ModuleParams("self_attn.k_norm", _norm(q // w.num_heads, bias=False))
                  ) if w.model_type == "qwen3" else ()
    return _ParamPlan(
        before=(ModuleParams("embed_tokens", (v * h,)),),
        layer=(
            ModuleParams("self_attn.q_proj", _linear(h, q, qkv_bias)),
            ModuleParams("self_attn.k_proj", _linear(h, kv, qkv_bias)),
            ModuleParams("self_attn.v_proj", _linear(h, kv, qkv_bias)),
            ModuleParams("self_attn.o_proj", _linear(q, h, attn_bias)),
            *head_norms,
            ModuleParams("mlp.gate_proj", _linear(h, i, mlp_bias)),
            ModuleParams("mlp.up_proj", _linear(h, i, mlp_bias)),
            ModuleParams("mlp.down_proj", _linear(i, h, mlp_bias)),
            ModuleParams("input_layernorm", _norm(h, bias=False)),
            ModuleParams("post_attention_layernorm", _norm(h, bias=False)),
        ),
        num_layers=w.num_layers,
        after=(
            ModuleParams("norm", _norm(h, bias=False)),
            *_head(w, (_head_weight("lm_head", v * h, bool(w.hf_config.get("tie_word_embeddings", False))),)),
        ),
    )


def _llama_flops(w: Workload) -> ForwardFlops:
    """Q/K/V ``2*s*h*(q + 2*kv)``, output ``2*s*q*h``, scores and sum ``4*s^2*q``, gated MLP
    ``3 * 2*s*h*i``, head ``2*s*h*V`` (q, kv: query and key/value widths)."""
    s, h, i = w.seq_len, w.hidden_size, w.intermediate_size
    q, kv = _llama_widths(w)
    layer = 2 * s * h * (q + 2 * kv) + 2 * s * q * h + 4 * s * s * q + 6 * s * h * i
    return ForwardFlops(w.num_layers, layer, 0, _head_flops(w, 2 * s * h * w.vocab_size))


_FAMILIES: dict[str, tuple[Callable[[Workload], _ParamPlan], Callable[[Workload], ForwardFlops]]] = {
    "gpt2": (_gpt2_params, _gpt2_flops),
    "bert": (_bert_params, _bert_flops),
    "distilbert": (_distilbert_params, _bert_flops),
    "deberta-v2": (_deberta_params, _deberta_flops),
    "llama": (_llama_params, _llama_flops),
    "mistral": (_llama_params, _llama_flops),
    "qwen2": (_llama_params, _llama_flops),
    "qwen3": (_llama_params, _llama_flops),
}

SUPPORTED_MODEL_TYPES = tuple(_FAMILIES)


def _param_plan(workload: Workload) -> _ParamPlan:
    return _family(workload)[0](workload)


def _family(workload: Workload):
    try:
        return _FAMILIES[workload.model_type]
    except KeyError:
        raise WorkloadError(
            f"closed-form counts cover model types {', '.join(SUPPORTED_MODEL_TYPES)}, "
            f"not '{workload.model_type}'."
        ) from None
