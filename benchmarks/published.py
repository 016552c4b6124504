"""The cost model against GPU training measurements others published (benchmarks/published/).

Run from the repository root (pure prediction, no torch, a few seconds):

    python benchmarks/published.py > benchmarks/results/published.txt

Each measurement of ``benchmarks/published/*.json`` (one file per source: the paper, docs page,
blog post or table, its hardware, software and the quoted row; benchmarks/published/README.md
lists them) is predicted the way simtune predicts hardware it has not measured: the shipped spec
profile of that GPU, the closed-form workload of the stated shape (a Hugging Face config of its
model type: Qwen3 for Qwen3 models, Llama for other Llama-shaped ones, BERT, else GPT-2), the stated ZeRO stage (PyTorch FSDP
full and hybrid sharding as stage 3), micro-batch size, accumulation, checkpointing, precision
and GPU count, through :class:`simtune.prediction.predictor.Predictor`. Printed per row: the
published and predicted tokens/s per GPU and the error; for "fits" statements, whether the
prediction fits; published peak memory per GPU against the predicted peak (a loop on one GPU
outside DeepSpeed without the engine's reduction scratch, PyTorch DDP with its buckets' copy of
the gradients: :func:`under_ddp`); a published largest
micro-batch against the largest the model says fits; per source, whether each pair of rows of one model and GPU count is ordered the
same way. Rows the model cannot describe are listed with the reason (tensor or pipeline
parallelism, FP8 training, TF32 matmuls: no profile has a TF32 curve yet, no throughput given, a
GPU without a spec profile).

A published throughput is printed but kept out of the targets and the orderings when it cannot
test the model, for a reason that does not look at the prediction: the source does not identify
its GPU, its own code runs shorter sequences than the row's length and counts each as whole
(``sequence_length_basis``, quoting the source: NVIDIA's BERT phase 2 on length-binned data), or
the throughput would need more than the GPU's dense peak at the row's precision with
the model's FLOP count (:func:`throughput_doubt`). The summary says what every row together gives.

A row without its micro-batch size whose source gives the best throughput over the sizes it ran
(``micro_batch_size_basis: best``: "as high as") is predicted at the model's best micro-batch
size that fits.

A source that states its parts' HBM bandwidth or memory (``hardware.hbm_bytes_per_s``,
``hardware.memory_gib``) is predicted with them (:func:`as_stated`); a stated power limit is not
modelled.

What each source ran is taken from its own description: the attention implementation
(``software.attention``: eager, sdpa or flash, with its basis) and, where its fused kernel is
older than the FlashAttention-2 the spec profiles carry, that kernel (``software.attention_kernel``
with its basis: llm-foundry's MPT tables ran FlashAttention-1-era Triton kernels,
:data:`KERNEL_SPEED`), the dropout its models train with
(``software.dropout``, with its basis; else the model type's default), the loss
(``software.loss``: fp32 where torch's cross-entropy runs over upcast logits, the default; fused
for a fused cross-entropy kernel, with its basis), whether it trains an fp32 model under torch
autocast (``software.autocast``, with its basis: the Hugging Face Trainer's fp16 without DeepSpeed,
llm.c's PyTorch reference), the positions an LM head runs on where the source's model computes it
at the masked positions only (``model.head_positions``, with ``software.head_positions_basis``:
NVIDIA's BERT), the task where it is not language modelling (``software.task``:
``sequence-classification`` for a classifier head in place of the LM head, with its basis), the
precision gradients are reduced in where it is not the compute precision (``software.reduce_dtype``,
with its basis: torchtitan's and Composer's fp32 FSDP reductions, predicted as DeepSpeed's
``communication_data_type``), the optimizer implementation where it is not a fused one
(``software.optimizer``, a spec profile's optimizer fit, with its basis: the Hugging Face
Trainer's per-tensor AdamW), whether a loop outside DeepSpeed clips gradients
(``software.gradient_clipping``, with its basis: the Trainer's ``max_grad_norm``) and,
for PyTorch FSDP, one fetch unit per
transformer block (FSDP wraps each block: ``parameter_modules`` = layers + 1) instead of
DeepSpeed's one per module holding parameters, and one optimizer sub-group per tensor (FSDP steps
each flat parameter, or each parameter, on its own, where DeepSpeed groups a billion elements).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from simtune.errors import SimtuneError
from simtune.hardware import HardwareProfile, load_profile
from simtune.hardware.spec import SHEETS, build
from simtune.prediction.predictor import Predictor
from simtune.space import Trial
from simtune.workloads.presets import Workload, _from_document

DATA = Path(__file__).parent / "published"

PROFILES = (("H200", "hgx-h200-141gb"), ("H100", "dgx-h100-80gb"), ("A100", "dgx-a100-80gb"),
            ("V100", "dgx2-v100-32gb"))
"""The spec profile of each GPU generation (first match of the GPU's name)."""


def profile_of(gpu: str) -> str | None:
    return next((name for prefix, name in PROFILES if prefix in gpu.upper()), None)


def precision_of(text: str) -> str:
    text = text.lower()
    return "bf16" if "bf16" in text else "fp16" if "fp16" in text else "fp32"


DROPOUT_KEYS = {"llama": ("attention_dropout",), "qwen3": ("attention_dropout",),
                "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
                "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
"""The config keys of each model type's dropout probabilities."""


CLASSIFIERS = {"llama": "LlamaForSequenceClassification", "qwen3": "Qwen3ForSequenceClassification",
               "bert": "BertForSequenceClassification",
               "gpt2": "GPT2ForSequenceClassification"}
"""The sequence-classification architecture of each model type a published shape maps to."""


def workload_of(model: dict[str, Any], attention: str | None = None, dropout: float | None = None,
                task: str | None = None) -> Workload:
    """The closed-form workload of a published shape (with the source's attention, dropout and task
    when given; else the model type's defaults and its language-modelling head)."""
    name = str(model.get("name") or "model").lower()
    layers, hidden, heads = int(model["layers"]), int(model["hidden"]), int(model["heads"])
    intermediate, vocab, seq = int(model["intermediate"]), int(model["vocab"]), int(model["seq_len"])
    if model.get("kv_heads") or "llama" in name or "granite" in name or "qwen3" in name:
        config = {"model_type": "qwen3" if "qwen3" in name else "llama", "hidden_size": hidden,
                  "num_hidden_layers": layers,
                  "num_attention_heads": heads, "num_key_value_heads": int(model.get("kv_heads") or heads),
                  "intermediate_size": intermediate, "vocab_size": vocab,
                  "max_position_embeddings": max(seq, 4096), "tie_word_embeddings": False}
    elif "bert" in name:
        config = {"model_type": "bert", "hidden_size": hidden, "num_hidden_layers": layers,
                  "num_attention_heads": heads, "intermediate_size": intermediate, "vocab_size": vocab,
                  "max_position_embeddings": max(seq, 512)}
    else:  # MPT, llm.c and Megatron's GPT-2: one GELU kernel, not transformers' eight-op gelu_new
        config = {"model_type": "gpt2", "n_embd": hidden, "n_layer": layers, "n_head": heads, "n_inner": intermediate,
                  "vocab_size": vocab, "n_positions": max(seq, 1024), "activation_function": "gelu"}
    if attention:
        config["attn_implementation"] = attention
    if dropout is not None:
        config.update({key: float(dropout) for key in DROPOUT_KEYS[str(config["model_type"])]})
    if task == "sequence-classification":
        config["architectures"] = [CLASSIFIERS[str(config["model_type"])]]
    return _from_document(str(model.get("name")), config, seq)


def skip_reason(row: dict[str, Any], source: dict[str, Any]) -> str | None:
    parallel = row.get("parallel") or {}
    if int(parallel.get("tp") or 1) > 1 or int(parallel.get("pp") or 1) > 1:
        return "tensor or pipeline parallel"
    if "fp8" in str(row.get("precision", "")).lower():
        return "FP8 training"
    if "tf32" in str(row.get("precision", "")).lower():
        return "TF32 matmuls (no profile has a TF32 curve)"
    if profile_of(source["hardware"]["gpu"]) is None:
        return f"no spec profile for {source['hardware']['gpu']}"
    if not all(row["model"].get(k) for k in ("layers", "hidden", "heads", "intermediate", "vocab", "seq_len")):
        return "model shape not given"
    if published_tokens(row) is None and "fits" not in row["measured"]:
        return "no throughput or fit given"
    return None


def throughput_doubt(row: dict[str, Any], source: dict[str, Any], fraction_of_peak: float) -> str | None:
    """Why a published throughput cannot test the cost model, or None: the source does not
    identify its GPU (``hardware.identified`` false), its own code runs sequences shorter than the
    row's length and counts them whole (``sequence_length_basis``, with the source's lines), or the
    throughput would need more than the GPU's dense peak at the stated precision with the model's
    FLOP count (its precision, units or batch are then not what the row says)."""
    if source["hardware"].get("identified") is False:
        return "the source does not identify its GPU"
    if row.get("sequence_length_basis"):
        return "the source runs shorter sequences than the row's length and counts them whole (sequence_length_basis)"
    if fraction_of_peak > 1:
        return (f"needs {fraction_of_peak:.0%} of the GPU's peak at this precision with the model's "
                f"FLOP count: not a run of what the row describes")
    return None


def published_tokens(row: dict[str, Any]) -> float | None:
    """Tokens per second per GPU, as published or derived from the published totals."""
    m, gpus, seq = row["measured"], int(row["gpus"]), int(row["model"]["seq_len"])
    if m.get("tokens_per_s_per_gpu"):
        return float(m["tokens_per_s_per_gpu"])
    if m.get("tokens_per_s"):
        return float(m["tokens_per_s"]) / gpus
    if m.get("samples_per_s"):
        return float(m["samples_per_s"]) * seq / gpus
    return None


CHECKPOINTING_MODES = {"selective (op)": "selective-op", "selective": "selective-op",
                       "selective (layer)": "every-2-layers"}
"""Published activation-checkpointing modes and the cost model's policies (simtune.model.checkpointing):
torchtitan's "selective op"; its plain "selective" (the H100 rows: its llama3_8b.toml of that time
set selective_ac_option = "op"); "selective layer", assumed at option 2 (every other layer: the
table does not give N). Every other mode (full, or none with activation_checkpointing false) is
full checkpointing."""


def checkpointing_policy(row: dict[str, Any]) -> str:
    """The row's activation-checkpointing policy (see :data:`CHECKPOINTING_MODES`)."""
    return CHECKPOINTING_MODES.get(str(row.get("activation_checkpointing_mode") or ""), "full")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What the cost model predicts for one published row."""

    tokens_per_s: float
    """Per GPU."""
    fits: bool
    profile: str
    peak_gib: float
    """Per GPU."""
    largest_micro_batch: int
    micro_batch_size: int
    """The row's, or the model's best where the row gives its best over sizes it ran."""
    flop_per_token: float
    """Model FLOPs per token of training: 3 x the forward's (recomputation left out)."""
    peak_flop_per_s: float
    """The spec profile's dense peak at the row's precision."""
    communication_share: float = 0.0
    """The collectives' time (parameter gathers and gradient reductions, hidden or not) over the
    compute's (forward, backward, recomputation) in the predicted step."""
    fixed_overhead_gib: float = 0.0
    """The profile's fixed overhead inside ``peak_gib``: the CUDA context, NCCL's buffers and the
    allocator's slack."""

    def implied_fraction_of_peak(self, published_tokens_per_s: float) -> float:
        """The fraction of the GPU's peak the published throughput would need at this FLOP count."""
        return published_tokens_per_s * self.flop_per_token / self.peak_flop_per_s


def without_engine_reduction(m: Any) -> int:
    """The peak without the reduction's scratch copy: a training loop on one GPU outside DeepSpeed
    (the Hugging Face Trainer without it) reduces nothing, where DeepSpeed's engine flattens its
    gradients whatever the world size."""
    return m.total_bytes - max(m.backward_phase_bytes, m.step_transient_bytes) + max(
        m.backward_phase_bytes - m.comm_scratch_bytes, m.step_transient_bytes)


def under_ddp(m: Any) -> int:
    """The peak of the same training under PyTorch's DistributedDataParallel (alone, or around
    torch's ZeroRedundancyOptimizer, which shards the optimizer states as stage 1 does): DDP's
    reducer allocates its buckets when it wraps the model, a second copy of every gradient held
    from then on unless ``gradient_as_bucket_view`` is set (PyTorch's DDP docs: setting it saves
    "the total gradients size"; it defaults to off), while DeepSpeed's own reduction scratch,
    buckets and step transients are not there (torch's fused AdamW and ZeroRedundancyOptimizer
    update in place):

        parameters + 2 x gradients + optimizer states + activations + logits + fixed
    """
    return (m.parameters_bytes + 2 * m.gradients_bytes + m.master_weights_bytes + m.optimizer_states_bytes
            + m.gathered_parameters_bytes + m.activations_bytes + m.logits_bytes + m.fixed_overhead_bytes
            + m.runtime_overhead_bytes)


def as_stated(profile: HardwareProfile, hardware: dict[str, Any]) -> HardwareProfile:
    """The spec profile built again from its sheet with what a source states for its parts where
    they differ from the sheet's GPU: the HBM bandwidth (``hardware.hbm_bytes_per_s``: Meta's 96
    GB HBM2e H100s run 2.4 TB/s, not the SXM part's 3.35; an A100 40 GB 1.555, not the 80 GB
    part's 2.039) and the memory (``hardware.memory_gib``). Everything the sheet derives from them
    follows: the memory bandwidth, the memory-bound kernels' rates, the optimizer step."""
    stated, gib = hardware.get("hbm_bytes_per_s"), hardware.get("memory_gib")
    if not stated and not gib:
        return profile
    sheet = next(sheet for sheet in SHEETS if sheet.name == profile.name)
    if stated:
        sheet = dataclasses.replace(sheet, hbm_bytes_per_s=float(stated))
    if gib:
        sheet = dataclasses.replace(sheet, memory_bytes=int(float(gib) * 2**30))
    return build(sheet)


KERNEL_SPEED = {
    "flash-attn-1-triton": {"dgx-a100-80gb": {64: 79 / 140, 128: 68 / 155},
                            "dgx-h100-80gb": {64: 136 / 232, 128: 108 / 265}},
}
"""Fused attention kernels older than the FlashAttention-2 the spec profiles carry, as a fraction
of FlashAttention-2's speed on the same GPU, by head dimension: the forward+backward TFLOPS with
a causal mask at 2k tokens in the FlashAttention-2 paper's benchmark figures (Dao 2023, arXiv
2307.08691, Figures 4 and 7; Dao-AILab/flash-attention assets/flash2_a100_fwd_bwd_benchmark.png
and flash2_h100_fwd_bwd_benchmark.png). A100: FlashAttention Triton 79 and 68 against 140 and
155 at head dimension 64 and 128 (FlashAttention-1's CUDA kernel 77 and 69). H100: the figure has
no Triton bar; FlashAttention-1's 136 and 108 against 232 and 265 stand for it."""


def with_attention_kernel(profile: HardwareProfile, kernel: str | None, head_dim: int) -> HardwareProfile:
    """``profile`` with its fused attention rates scaled to the kernel a source ran
    (``software.attention_kernel``, :data:`KERNEL_SPEED`) at the head dimension nearest the
    row's; unchanged where the source ran no older kernel."""
    if not kernel:
        return profile
    speeds = KERNEL_SPEED[kernel][profile.name]
    ratio = speeds[min(speeds, key=lambda dim: abs(dim - head_dim))]
    attention = {dtype: dataclasses.replace(
        rate, forward_flop_per_s=rate.forward_flop_per_s * ratio, backward_flop_per_s=rate.backward_flop_per_s * ratio,
        basis=f"{rate.basis}; x {ratio:.2f} for {kernel} at head dimension {head_dim}")
        for dtype, rate in profile.compute.attention.items()}
    return dataclasses.replace(profile, compute=dataclasses.replace(profile.compute, attention=attention))


ZERO_KNOBS = {"sub_group_size": int, "overlap_comm": bool}
"""DeepSpeed ZeRO settings a row's ``parallel`` may carry where the source's config sets them,
with their types."""


HIDING_NOTHING = 1.0 - 1e-9
"""A collective's share of the device that leaves overlap nothing to hide: the compute beside it
runs as much longer as the collective lasts (docs/cost-model.md 3.3), the ablation ``main`` prints."""


def predict(row: dict[str, Any], source: dict[str, Any], compute_share: float | None = None) -> Prediction:
    """The cost model's prediction of one row (with ``compute_share``, a collective's share of the
    device set to it on every profile that overlaps)."""
    profile = as_stated(load_profile(str(profile_of(source["hardware"]["gpu"]))), source["hardware"])
    software = source.get("software") or {}
    profile = with_attention_kernel(profile, software.get("attention_kernel"),
                                    int(row["model"]["hidden"]) // int(row["model"]["heads"]))
    workload = dataclasses.replace(workload_of(row["model"], software.get("attention"), software.get("dropout"),
                                               software.get("task")), loss=row.get("loss") or software.get("loss") or "fp32")
    parallel = row.get("parallel") or {}
    gpus = int(row["gpus"])
    framework = str(parallel.get("framework", "")).lower()
    knobs = {key: kind(parallel[key]) for key, kind in ZERO_KNOBS.items() if parallel.get(key) is not None}
    if "fsdp" in framework:
        knobs.setdefault("sub_group_size", 1)  # FSDP steps each flat parameter (or parameter) on its own
    trial = Trial(stage=int(parallel.get("zero_stage") or 0), micro_batch_size=int(row.get("micro_batch_size") or 1),
                  gradient_accumulation_steps=int(row.get("gradient_accumulation") or 1), zero_knobs=tuple(knobs.items()),
                  offload_optimizer="cpu" if parallel.get("offload_optimizer") else "none",
                  offload_param="cpu" if parallel.get("offload_param") else "none",
                  activation_checkpointing=bool(row.get("activation_checkpointing")))
    precision = precision_of(str(row.get("precision", "")))
    reduce_dtype = software.get("reduce_dtype")
    predictor = Predictor.from_parts(None, workload, profile, world_size=gpus, precision=precision,
                                     checkpointing_policy=checkpointing_policy(row),
                                     autocast=bool(software.get("autocast")) and precision != "fp32",
                                     communication_precision=precision_of(reduce_dtype) if reduce_dtype else None,
                                     optimizer_impl=software.get("optimizer"),
                                     gradient_clipping=software.get("gradient_clipping"))
    if compute_share is not None and predictor.hardware.collective_compute_share:
        predictor = predictor.with_hardware(dataclasses.replace(predictor.hardware, collective_compute_share=compute_share))
    if "fsdp" in framework:
        predictor = predictor.with_model(dataclasses.replace(predictor.model, parameter_modules=workload.num_layers + 1))
    built = {key: str(value) for key in ("mlp", "norm") if (value := row.get(key) or software.get(key))}
    if built:  # how the source's code builds its MLP or norms, where the model type's default is not it
        model = predictor.model
        predictor = predictor.with_model(dataclasses.replace(model, block=dataclasses.replace(model.block, **built)))
    positions = int(row["model"].get("head_positions") or 0)
    if positions:
        predictor = with_head_positions(predictor, positions)
    largest = predictor.max_micro_batch_size(
        trial.stage, gradient_accumulation_steps=trial.gradient_accumulation_steps,
        offload_optimizer=trial.offload_optimizer, offload_param=trial.offload_param,
        activation_checkpointing=trial.activation_checkpointing)
    if row.get("micro_batch_size") is None and row.get("micro_batch_size_basis") == "best":
        # the source gives its best throughput over the micro-batch sizes it ran: so does the model
        trial = max((dataclasses.replace(trial, micro_batch_size=mbs) for mbs in range(1, max(1, largest) + 1)),
                    key=lambda t: predictor.predict(t).metrics.throughput_samples_per_s)
    estimate = predictor.predict(trial)
    tokens = estimate.metrics.throughput_samples_per_s * workload.seq_len / gpus
    flops = estimate.metrics.flops_per_gpu or 0.0
    peak, fits = estimate.memory.total_bytes, bool(estimate.feasible)
    if gpus == 1 and "deepspeed" not in framework:
        peak = without_engine_reduction(estimate.memory)
    elif gpus > 1 and re.search(r"\bddp\b", framework):
        peak = under_ddp(estimate.memory)
        fits = peak <= estimate.memory.limit_bytes
    t = estimate.time
    share = (t.param_gather_s + t.grad_reduce_s) / max(t.forward_s + t.backward_s + t.recompute_s, 1e-12)
    return Prediction(tokens, fits, profile.name, peak / 2**30, largest, trial.micro_batch_size,
                      flops / tokens, profile.device.peak_flop_per_s[predictor.precision], share,
                      profile.device.fixed_overhead_bytes / 2**30)


MEMORY_KINDS = ("allocated", "reserved", "device", "unknown")
"""What a source's peak memory counts (its file's ``memory_basis.kind``): torch's allocated peak
(``max_memory_allocated``: tensors only), the caching allocator's reserved peak (its slack too),
the device's use (nvidia-smi, ``cudaMemGetInfo``: the CUDA context and NCCL's buffers too), or
not said."""


def compared_peak_gib(prediction: Prediction, source: dict[str, Any], name: str) -> tuple[float, str]:
    """The predicted peak as the source measured its own, and the kind: against an allocated peak
    the total less the profile's fixed overhead (the context, NCCL's buffers and the allocator's
    slack it stands for hold no tensor; the GPU kit compares so too), against any other the whole
    total: a reserved peak holds the allocator's slack but not the context or NCCL's buffers, and
    the profiles do not split their overhead between them, so there the total is an upper bound.
    A source that gives memory must say what it counts."""
    kind = (source.get("memory_basis") or {}).get("kind")
    if kind not in MEMORY_KINDS:
        raise SystemExit(f"{name}: a row gives memory_gib but the file's memory_basis.kind is {kind!r}, "
                         f"not one of {', '.join(MEMORY_KINDS)}.")
    less = prediction.fixed_overhead_gib if kind == "allocated" else 0.0
    return prediction.peak_gib - less, kind


COMMUNICATION_BANDS = (0.1, 0.3)
"""Bounds of the communication-share bands the summary gives the multi-GPU rows' error in."""


def by_communication(rows: list[tuple[int, float, float]]) -> list[str]:
    """Lines of the median error of the multi-GPU rows (gpus, communication share, error) in each
    band of :data:`COMMUNICATION_BANDS`: whether the error grows with what the model overlaps."""
    lines = []
    bounds = (0.0,) + COMMUNICATION_BANDS + (math.inf,)
    for low, high in zip(bounds, bounds[1:]):
        errors = [e for gpus, share, e in rows if gpus > 1 and low <= share < high]
        if errors:
            band = f">= {low:g}" if high == math.inf else f"{low:g}-{high:g}"
            lines.append(f"  {band}: {len(errors)} rows, median error {statistics.median(errors):+.0%}, "
                         f"from {min(errors):+.0%} to {max(errors):+.0%}")
    return lines


def with_head_positions(predictor: Predictor, positions: int) -> Predictor:
    """``predictor`` with its LM head at ``positions`` positions per sample instead of all (a model
    that computes its masked-LM head at the masked positions only): the head's products (the LM
    head and an MLM head's transform, as the operator list has them), logits and FLOPs shrink by
    (s - positions) / s."""
    from simtune.model.operators import operators

    m = predictor.model
    head = sum(op.flop(1) for op in operators(m, fused_attention=True).outer_matmuls
               if op.name in ("lm_head", "mlm.transform"))
    model = dataclasses.replace(m, block=dataclasses.replace(m.block, head_positions=positions),
                                flops_per_sample_forward=m.flops_per_sample_forward
                                - head * (m.seq_len - positions) / m.seq_len)
    return predictor.with_model(model)


def ordered_pairs(entries: list[tuple[str, dict[str, Any], float, float]]) -> dict[str, tuple[int, int]]:
    """Source -> (pairs ordered as published, pairs), over pairs of (source, row, published,
    predicted) entries with the same model and GPU count whose published values differ by more
    than 1%."""
    counts: dict[str, tuple[int, int]] = {}
    for i, (name, a, published_a, predicted_a) in enumerate(entries):
        for other, b, published_b, predicted_b in entries[i + 1:]:
            if other != name or a["model"].get("name") != b["model"].get("name") or a["gpus"] != b["gpus"]:
                continue
            if math.isclose(published_a, published_b, rel_tol=0.01):
                continue
            agree, total = counts.get(name, (0, 0))
            counts[name] = (agree + ((published_a > published_b) == (predicted_a > predicted_b)), total + 1)
    return counts


def main() -> int:
    print("# command: python benchmarks/published.py")
    print("# predicted with the shipped spec profiles and closed-form workloads; tokens/s per GPU")
    rows, skipped, fits, memories, largest = [], [], [], [], []
    doubted: list[tuple[str, dict[str, Any], str, float, float]] = []
    sources: dict[str, dict[str, Any]] = {}
    for path in sorted(DATA.glob("*.json")):
        source = sources[path.stem] = json.loads(path.read_text())
        for row in source["measurements"]:
            reason = skip_reason(row, source)
            if reason is not None:
                skipped.append((path.stem, row["id"], reason))
                continue
            try:
                p = predict(row, source)
            except SimtuneError as exc:
                skipped.append((path.stem, row["id"], f"not predictable: {exc}"))
                continue
            if row["measured"].get("memory_gib"):
                compared, kind = compared_peak_gib(p, source, path.stem)
                memories.append((path.stem, row["id"], kind, float(row["measured"]["memory_gib"]), compared))
            if row["measured"].get("largest_micro_batch"):
                largest.append((path.stem, row["id"], int(row["measured"]["largest_micro_batch"]), p.largest_micro_batch))
            if "fits" in row["measured"]:
                fits.append((path.stem, row["id"], bool(row["measured"]["fits"]), p.fits))
            published = published_tokens(row)
            if published is None:
                continue
            doubt = throughput_doubt(row, source, p.implied_fraction_of_peak(published))
            if doubt is not None:
                doubted.append((path.stem, row, doubt, published, p.tokens_per_s))
            else:
                rows.append((path.stem, row, source["hardware"]["gpu"], p, published))

    print(f"\n{'source':<34}{'id':<34}{'GPU':<16}{'n':>4}{'z':>3}{'mbs':>5}{'ck':>4}"
          f"{'published':>11}{'predicted':>11}{'error':>9}")
    errors: dict[str, list[float]] = {}
    for name, row, gpu, p, published in rows:
        error = p.tokens_per_s / published - 1
        errors.setdefault(p.profile, []).append(error)
        ck = "y" if row.get("activation_checkpointing") else "n"
        stage = (row.get("parallel") or {}).get("zero_stage") or 0
        note = "" if p.fits else "  (predicted not to fit)"
        mbs = f"{p.micro_batch_size}{'' if row.get('micro_batch_size') else '*'}"
        print(f"{name[:33]:<34}{row['id'][:33]:<34}{gpu[:15]:<16}{row['gpus']:>4}{stage:>3}"
              f"{mbs:>5}{ck:>4}{published:>11.0f}{p.tokens_per_s:>11.0f}{error:>+9.0%}{note}")
    if any(not r[1].get("micro_batch_size") for r in rows):
        print("  (mbs *: the model's best micro-batch size, for a row that gives its best over the sizes it ran)")
    everything = [e for es in errors.values() for e in es]
    if everything:
        print(f"\nthroughput: {len(everything)} rows, median |error| {statistics.median(abs(e) for e in everything):.1%}, "
              f"MAPE {statistics.mean(abs(e) for e in everything):.1%} (targets: median <= 15%, MAPE <= 25%)")
        for profile, es in sorted(errors.items()):
            print(f"  {profile}: {len(es)} rows, median error {statistics.median(es):+.0%}, "
                  f"MAPE {statistics.mean(abs(e) for e in es):.0%}")
        print("  multi-GPU rows by the collectives' predicted time over the compute's:")
        for line in by_communication([(int(row["gpus"]), p.communication_share, p.tokens_per_s / published - 1)
                                      for _, row, _, p, published in rows]):
            print(line)
        hiding_nothing = [(p.profile, int(row["gpus"]), p.communication_share,
                           predict(row, sources[name], HIDING_NOTHING).tokens_per_s / published - 1)
                          for name, row, _, p, published in rows]
        exposed = [e for *_, e in hiding_nothing]
        print(f"\nablation, not a fit: the same rows with overlap hiding nothing (a collective's share of the device "
              f"at 1: the compute beside it waits for it): median |error| {statistics.median(abs(e) for e in exposed):.1%}, "
              f"MAPE {statistics.mean(abs(e) for e in exposed):.1%}")
        for profile in sorted(errors):
            es = [e for name, *_, e in hiding_nothing if name == profile]
            print(f"  {profile}: {len(es)} rows, median error {statistics.median(es):+.0%}, "
                  f"MAPE {statistics.mean(abs(e) for e in es):.0%}")
        for line in by_communication([entry[1:] for entry in hiding_nothing]):
            print(line)
    if doubted:
        everything_too = everything + [t / m - 1 for *_, m, t in doubted]
        print(f"\nthroughput rows kept out of the targets ({len(doubted)}; all {len(everything_too)} rows together: "
              f"median |error| {statistics.median(abs(e) for e in everything_too):.0%}, "
              f"MAPE {statistics.mean(abs(e) for e in everything_too):.0%}):")
        for name, row, doubt, published, tokens in doubted:
            print(f"  {name} {row['id']}: published {published:.0f}, predicted {tokens:.0f} "
                  f"({tokens / published - 1:+.0%}): {doubt}")
    print("\nordering within a source (pairs of rows with the same model and GPU count):")
    scored = ordered_pairs([(r[0], r[1], r[4], r[3].tokens_per_s) for r in rows])
    every = ordered_pairs([(r[0], r[1], r[4], r[3].tokens_per_s) for r in rows] + [(d[0], d[1], d[3], d[4]) for d in doubted])
    for name, (agree, total) in sorted(every.items()):
        kept = scored.get(name, (0, 0))
        if kept == (agree, total):
            print(f"  {name}: {agree} of {total} pairs ordered as published")
        else:
            print(f"  {name}: {kept[0]} of {kept[1]} pairs ordered as published; "
                  f"{agree} of {total} with the rows kept out of the targets")
    if fits:
        print("\nfits statements:")
        for name, row_id, published_fit, predicted_fit in fits:
            verdict = "agrees" if published_fit == predicted_fit else "DISAGREES"
            print(f"  {name} {row_id}: published {'fits' if published_fit else 'does not fit'}, "
                  f"predicted {'fits' if predicted_fit else 'does not fit'}: {verdict}")
    if memories:
        print("\npeak memory per GPU, published (as each source measured it: torch's allocated or reserved peak, "
              "or the device's use) and predicted (against an allocated peak less the profile's fixed overhead, "
              "which holds no tensor):")
        for name, row_id, kind, published_gib, predicted_gib in memories:
            print(f"  {name:<34}{row_id:<40}{kind:<10}{published_gib:8.1f} GiB {predicted_gib:8.1f} GiB "
                  f"{(predicted_gib / published_gib - 1) * 100:+6.0f}%")
        memory_errors = [abs(p / m - 1) for _, _, _, m, p in memories]
        print(f"  {len(memories)} rows: median |error| {statistics.median(memory_errors) * 100:.0f}%, "
              f"MAPE {statistics.fmean(memory_errors) * 100:.0f}%")
    if largest:
        print("\nlargest micro-batch that fits, published and predicted (target: within one power-of-two step):")
        for name, row_id, published_mbs, predicted_mbs in largest:
            ok = published_mbs / 2 < predicted_mbs < published_mbs * 2
            print(f"  {name} {row_id}: published {published_mbs}, predicted {predicted_mbs}: "
                  f"{'within' if ok else 'OUTSIDE'}")
    print(f"\nleft out ({len(skipped)}):")
    for name, row_id, reason in skipped:
        print(f"  {name} {row_id}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
