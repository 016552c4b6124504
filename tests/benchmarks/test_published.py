"""benchmarks/published.py: what a source states about its hardware and batch is what is predicted."""

from __future__ import annotations

import copy
import json

import pytest

from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script

DATA = BENCHMARKS / "published"


def _published():
    return load_script(BENCHMARKS / "published.py", "published_benchmark")


def _row(source: str, row_id: str) -> tuple[dict, dict]:
    data = json.loads((DATA / f"{source}.json").read_text())
    return data, next(r for r in data["measurements"] if r["id"] == row_id)


def _without(source: dict, key: str) -> dict:
    """A copy of a source without one of its software settings."""
    copied = copy.deepcopy(source)
    del copied["software"][key]
    return copied


def test_a_stated_hbm_bandwidth_scales_the_memory_bound_kernels():
    from simtune.hardware import load_profile
    from simtune.model.adapters import streaming_bandwidth

    published = _published()
    h100 = load_profile("dgx-h100-80gb")
    stated = published.as_stated(h100, {"hbm_bytes_per_s": 2.4e12})
    for dtype in ("fp32", "bf16"):
        assert streaming_bandwidth(stated, dtype) == pytest.approx(streaming_bandwidth(h100, dtype) * 2.4 / 3.35)
    assert stated.device.memory_bandwidth_bytes_per_s == pytest.approx(0.8 * 2.4e12)
    assert published.as_stated(h100, {}) is h100
    source, row = _row("torchtitan_h100", "titan-h100-l31-8b-g8-fsdp")
    plain = copy.deepcopy(source)
    del plain["hardware"]["hbm_bytes_per_s"]
    assert published.predict(row, source).tokens_per_s < published.predict(row, plain).tokens_per_s


def test_a_row_that_gives_its_best_batch_is_predicted_at_the_models_best():
    published = _published()
    source, row = _row("deepspeed_v100_docs", "ds-bert-kernels-v100x1-seq128")
    assert row["micro_batch_size"] is None and row["micro_batch_size_basis"] == "best"
    best = published.predict(row, source)
    at_one = published.predict({**row, "micro_batch_size_basis": None}, source)
    assert at_one.micro_batch_size == 1 and 1 < best.micro_batch_size <= best.largest_micro_batch
    assert best.tokens_per_s > at_one.tokens_per_s


def test_stated_memory_and_dropout_are_what_is_predicted():
    from simtune.hardware import load_profile

    published = _published()
    a100 = load_profile("dgx-a100-80gb")
    forty = published.as_stated(a100, {"memory_gib": 40, "hbm_bytes_per_s": 1.555e12})
    assert forty.device.memory_bytes == 40 * 2**30
    assert forty.device.usable_memory_bytes == 40 * 2**30 - a100.device.fixed_overhead_bytes
    shape = {"name": "mpt-1b", "layers": 24, "hidden": 2048, "heads": 16, "intermediate": 8192, "vocab": 50368,
             "seq_len": 2048}
    default, none = published.workload_of(shape, "flash"), published.workload_of(shape, "flash", 0.0)
    assert default.attention_dropout > 0 and none.attention_dropout == 0  # transformers' GPT-2 default: 0.1
    source, row = _row("llm_foundry_a100_80gb", "mpt-a100-80-7b-s2048-g8")
    assert source["software"]["dropout"] == 0.0
    with_dropout = _without(source, "dropout")
    assert published.predict(row, source).tokens_per_s > published.predict(row, with_dropout).tokens_per_s


def test_an_autocast_source_is_predicted_under_autocast_in_16_bit_only():
    published = _published()
    source, fp16 = _row("hf_perf_train_gpu_one_v100_16gb", "hf-v100-bertl-fp16-b4")
    _, fp32 = _row("hf_perf_train_gpu_one_v100_16gb", "hf-v100-bertl-fp32-b4")
    assert source["software"]["autocast"] is True and source["software"]["autocast_basis"]
    plain = _without(source, "autocast")
    assert published.predict(fp16, source).tokens_per_s < published.predict(fp16, plain).tokens_per_s
    assert published.predict(fp16, source).peak_gib > published.predict(fp16, plain).peak_gib
    assert published.predict(fp32, source).tokens_per_s == published.predict(fp32, plain).tokens_per_s


def test_a_row_whose_source_runs_shorter_sequences_is_kept_out_with_its_basis():
    published = _published()
    source, row = _row("nvidia_bert_a100_80gb", "bert-a100-s512-g1-fp16")
    _, phase1 = _row("nvidia_bert_a100_80gb", "bert-a100-s128-g1-fp16")
    assert "bin size 64" in row["sequence_length_basis"] and "sequence_length_basis" not in phase1
    assert "shorter sequences" in published.throughput_doubt(row, source, 0.5)
    assert published.throughput_doubt(phase1, source, 0.5) is None
    assert "peak" in published.throughput_doubt(phase1, source, 1.2)


def test_a_head_at_the_masked_positions_only_is_predicted_so():
    published = _published()
    source, row = _row("nvidia_bert_a100_80gb", "bert-a100-s128-g1-fp16")
    assert row["model"]["head_positions"] == 20 and source["software"]["head_positions_basis"]
    everywhere = copy.deepcopy(row)
    del everywhere["model"]["head_positions"]
    assert published.predict(row, source).tokens_per_s > published.predict(everywhere, source).tokens_per_s


def test_an_older_attention_kernel_slows_the_fused_attention_and_the_row_that_ran_it():
    from simtune.hardware import load_profile

    published = _published()
    a100 = load_profile("dgx-a100-80gb")
    older = published.with_attention_kernel(a100, "flash-attn-1-triton", 112)  # nearest: head dimension 128
    for dtype, rate in a100.compute.attention.items():
        slowed = older.compute.attention[dtype]
        assert slowed.forward_flop_per_s == pytest.approx(rate.forward_flop_per_s * 68 / 155)
        assert slowed.backward_flop_per_s == pytest.approx(rate.backward_flop_per_s * 68 / 155)
    assert older.compute.curves == a100.compute.curves
    assert published.with_attention_kernel(a100, None, 128) is a100
    source, row = _row("llm_foundry_h100", "mpt-h100-7b-s4096-g8")
    assert source["software"]["attention_kernel"] == "flash-attn-1-triton"
    as_run = published.predict(row, source)
    with_fa2 = published.predict(row, {**source, "software": {**source["software"], "attention_kernel": None}})
    assert as_run.tokens_per_s < 0.9 * with_fa2.tokens_per_s


def test_pytorch_ddp_holds_a_second_copy_of_the_gradients_and_no_deepspeed_scratch():
    published = _published()
    source, z0 = _row("llmc_pytorch_zero1_a100", "llmc-pt-gpt2xl-a100x8-z0")
    _, z1 = _row("llmc_pytorch_zero1_a100", "llmc-pt-gpt2xl-a100x8-z1")
    assert z0["parallel"]["framework"] == "ddp" and z1["parallel"]["framework"].startswith("ddp+")
    as_deepspeed = copy.deepcopy(z0)
    as_deepspeed["parallel"]["framework"] = "deepspeed"
    ddp, ds = published.predict(z0, source), published.predict(as_deepspeed, source)
    assert ddp.tokens_per_s == ds.tokens_per_s and ddp.peak_gib > ds.peak_gib
    # torch's ZeroRedundancyOptimizer keeps 1/8 of AdamW's two fp32 moments; the rest is DDP's as at stage 0
    moments = 2 * 4 * z0["model"]["parameters"] / 2**30
    assert ddp.peak_gib - published.predict(z1, source).peak_gib == pytest.approx(moments * 7 / 8, rel=0.02)


def test_a_qwen3_row_is_predicted_with_its_head_norms():
    published = _published()
    source, row = _row("ds_verify_loss_qwen3_h200", "dsvl-qwen3-14b-h200-deepspeed")
    assert published.workload_of(row["model"]).model_type == "qwen3"
    as_llama = copy.deepcopy(row)
    as_llama["model"]["name"] = "llama-shaped"
    assert published.workload_of(as_llama["model"]).model_type == "llama"
    # two more norms a layer, and two more modules whose ZeRO-3 hooks fire in each pass
    assert published.predict(row, source).tokens_per_s < published.predict(as_llama, source).tokens_per_s


def test_the_error_is_given_by_band_of_communication_for_multi_gpu_rows_only():
    published = _published()
    lines = published.by_communication([(8, 0.05, 0.1), (8, 0.05, 0.3), (1, 0.0, 5.0), (8, 0.5, 0.4)])
    assert lines == ["  0-0.1: 2 rows, median error +20%, from +10% to +30%",
                     "  >= 0.3: 1 rows, median error +40%, from +40% to +40%"]
    source, row = _row("ds_verify_loss_qwen3_h100", "dsvl-qwen3-14b-h100-fsdp")
    _, single = _row("hf_perf_train_gpu_one_v100_16gb", "hf-v100-bertl-fp32-b4")
    hf = json.loads((DATA / "hf_perf_train_gpu_one_v100_16gb.json").read_text())
    assert published.predict(row, source).communication_share > 0.3
    assert published.predict(single, hf).communication_share == 0.0


def test_a_source_that_reduces_in_fp32_is_predicted_with_fp32_gradient_reductions():
    published = _published()
    source, row = _row("torchtitan_a100_80gb", "titan-a100-l2-13b-noac")
    assert source["software"]["reduce_dtype"] == "fp32" and "mixed_precision_reduce" in source["software"][
        "reduce_dtype_basis"]
    wide, narrow = published.predict(row, source), published.predict(row, _without(source, "reduce_dtype"))
    assert wide.tokens_per_s < narrow.tokens_per_s
    assert wide.communication_share > narrow.communication_share


def test_a_source_outside_deepspeed_is_predicted_with_its_optimizer_and_its_clipping():
    """The Hugging Face Trainer of the V100 table steps transformers' per-tensor AdamW and clips at
    max_grad_norm 1.0: each costs its step time, in fp32 and fp16 alike."""
    published = _published()
    source, row = _row("hf_perf_train_gpu_one_v100_16gb", "hf-v100-bertl-fp16-b4")
    software = source["software"]
    assert software["optimizer"] == "torch_adamw_for_loop" and "adamw_hf" in software["optimizer_basis"]
    assert software["gradient_clipping"] is True and "max_grad_norm" in software["gradient_clipping_basis"]
    fused, unclipped = _without(source, "optimizer"), _without(source, "gradient_clipping")
    own = published.predict(row, source).tokens_per_s
    assert own < published.predict(row, fused).tokens_per_s and own < published.predict(row, unclipped).tokens_per_s
    _, fp32 = _row("hf_perf_train_gpu_one_v100_16gb", "hf-v100-bertl-fp32-b4")
    assert published.predict(fp32, source).tokens_per_s < published.predict(fp32, unclipped).tokens_per_s


def test_a_source_with_a_torch_client_optimizer_and_sub_groups_is_predicted_with_them():
    """ds_verify_loss hands torch's AdamW (foreach) to DeepSpeed and FSDP: three times the fused
    kernel's bytes at the step; its Llama-3 config steps ZeRO-3 in sub-groups of 1e8 elements,
    so the step's fp32 gradients and the optimizer's temporaries are one sub-group's."""
    published = _published()
    source, row = _row("ds_verify_loss_qwen3_h100", "dsvl-qwen3-14b-h100-fsdp")
    assert source["software"]["optimizer"] == "torch_adamw_foreach" and "torch.optim.AdamW" in source["software"][
        "optimizer_basis"]
    assert published.predict(row, source).tokens_per_s < published.predict(row, _without(source, "optimizer")).tokens_per_s
    source, row = _row("ds_verify_loss_llama3_8b", "dsvl-llama3-8b-z3")
    assert row["parallel"]["sub_group_size"] == 100_000_000
    whole = copy.deepcopy(row)
    del whole["parallel"]["sub_group_size"]
    # the step's transient is the whole partition's without sub-groups: its peak passes the backward's
    assert published.predict(row, source).peak_gib < published.predict(whole, source).peak_gib - 2


def test_memory_is_compared_as_each_source_counted_it():
    published = _published()
    for path in sorted(DATA.glob("*.json")):
        data = json.loads(path.read_text())
        if any(r["measured"].get("memory_gib") for r in data["measurements"]):
            assert data["memory_basis"]["kind"] in published.MEMORY_KINDS and data["memory_basis"]["basis"], path.name
    source, row = _row("ds_verify_loss_llama3_8b", "dsvl-llama3-8b-z1")
    prediction = published.predict(row, source)
    assert source["memory_basis"]["kind"] == "allocated" and prediction.fixed_overhead_gib == 2.0
    # torch's allocated peak holds no CUDA context, NCCL buffer or allocator slack
    assert published.compared_peak_gib(prediction, source, "x") == (prediction.peak_gib - 2.0, "allocated")
    device = {**source, "memory_basis": {"kind": "device", "basis": "nvidia-smi"}}
    assert published.compared_peak_gib(prediction, device, "x") == (prediction.peak_gib, "device")
    with pytest.raises(SystemExit, match="^x: a row gives memory_gib but the file's memory_basis.kind is None"):
        published.compared_peak_gib(prediction, {k: v for k, v in source.items() if k != "memory_basis"}, "x")


def test_a_row_run_with_a_fused_rmsnorm_is_predicted_with_it():
    """torchtitan's Llama 2 13B table ran its Triton ``fused_rmsnorm`` (the row's ``norm``): one
    kernel each way that keeps its input, where transformers' Python RMSNorm runs eight ops and
    keeps an fp32 copy of its input and the normalised tensor too. Without checkpointing the
    Python norms' memory would not fit the 80 GB the run had."""
    published = _published()
    source, row = _row("torchtitan_a100_80gb", "titan-a100-l2-13b-noac")
    assert row["norm"] == "rms_norm_fused" and "fused_rmsnorm" in row["norm_basis"]
    python_norms = {k: v for k, v in row.items() if k not in ("norm", "norm_basis")}
    fused, python = published.predict(row, source), published.predict(python_norms, source)
    assert fused.fits and not python.fits
    assert fused.peak_gib < python.peak_gib and fused.tokens_per_s > python.tokens_per_s
    # the 70B rows ran the Python norm (llama2_70b.toml: norm_type = "rmsnorm")
    assert "norm" not in _row("torchtitan_a100_80gb", "titan-a100-l2-70b-full-mbs2")[1]


def test_a_source_that_turns_overlap_on_at_stage_2_is_predicted_with_it():
    """The ml-engineering H200 run sets overlap_comm at ZeRO-2, where DeepSpeed's default is off:
    the row's ``parallel.overlap_comm`` reaches the prediction, and hides some of the reduction."""
    published = _published()
    source, row = _row("ml_engineering_h200", "mleng-h200-llama31-8b-z2-s8192")
    assert row["parallel"]["overlap_comm"] is True and row["parallel"]["zero_stage"] == 2
    default = copy.deepcopy(row)
    del default["parallel"]["overlap_comm"]
    assert published.predict(row, source).tokens_per_s > published.predict(default, source).tokens_per_s
