"""Workload calibration through real 2-process launches (DeepSpeed on CPU, gloo): model mode (the
model on both ranks, then real engines at every stage) and script mode (an unmodified training
script, measured through its own deepspeed.initialize). Two launches in all; a Hugging Face
Trainer script's measurement: tests/search/test_search_hf_trainer.py."""

import dataclasses
from pathlib import Path

import pytest

from simtune.calibration.workload import LOG_PREFIX
from simtune.calibration.workload_launch import calibrate_workload, failure_reason
from simtune.calibration.workload_script import calibrate_script, stage_zero_config
from simtune.hardware.registry import load_profile
from simtune.prediction.predictor import Predictor
from simtune.space import Trial
from simtune.workloads import TRAIN_PROGRAM, forward_flops, load_workload, parameter_count

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("launches-2")]  # beside the timed launches (tests/conftest.py)


def cpu_profile():
    """A shipped profile relabelled as this 2-process CPU machine (name, kind, ranks, optimizer)."""
    base = load_profile("dgx-a100-80gb")
    device = dataclasses.replace(base.device, kind="cpu", count_per_node=2, name="CPU test")
    fits = {k: dataclasses.replace(f, device="cpu") for k, f in base.optimizer.fits.items()}
    return dataclasses.replace(base, name="cpu-2proc-test", device=device,
                               optimizer=dataclasses.replace(base.optimizer, fits=fits))


@pytest.fixture(autouse=True)
def cpu_ranks(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")


def test_a_failed_launch_names_the_first_ranks_own_failure():
    output = "\n".join([
        f"{LOG_PREFIX} measuring on 2 ranks",
        f"{LOG_PREFIX} failed on rank 0: ValueError: micro-batch size 0",
        "Traceback (most recent call last):",
        "RuntimeError: Connection closed by peer [127.0.0.1]:29500",  # rank 1, left waiting in a collective
        f"{LOG_PREFIX} failed on rank 1: RuntimeError: Connection closed by peer",
    ])
    assert failure_reason(output, 1) == f"{LOG_PREFIX} failed on rank 0: ValueError: micro-batch size 0"
    assert failure_reason("Traceback\nOSError: no space left\nbye", 1) == "OSError: no space left"
    assert failure_reason("killed", -9) == "exit code -9"


def test_model_mode_measures_both_ranks_and_every_stage(tmp_path):
    tiny = load_workload("gpt2-tiny", seq_len=32)
    profile = cpu_profile()
    c = calibrate_workload(tiny, profile, precision="fp32", micro_batch_sizes=(1, 2), repeats=3,
                           cache_dir=tmp_path, log=None)
    assert c.ranks == 2 and c.mode == "model" and c.parameter_count == parameter_count(tiny)
    assert c.flops_per_sample_forward == pytest.approx(forward_flops(tiny).total(1), rel=0.01)
    default = [e for e in c.engines if e.reduce_bucket_size is None]
    small = [e for e in c.engines if e.reduce_bucket_size is not None]
    # one engine per stage at the middle measured size, and one with small buckets at stages 1-3
    assert [(e.stage, e.micro_batch_size) for e in default] == [(s, 2) for s in range(4)]
    assert [(e.stage, e.micro_batch_size) for e in small] == [(s, 2) for s in (1, 2, 3)]
    assert all(e.reduce_bucket_size < c.parameter_count / 4 for e in small)
    for e in c.engines:
        assert e.world_size == 2 and e.peak_bytes > 0
        assert e.forward.median_s > 0 and e.backward.median_s > 0 and e.step.median_s > 0
        assert e.module_forward.median_s > 0 and e.module_backward.median_s > 0
    assert c.base_rss_bytes > 100 * 2**20  # torch and DeepSpeed are loaded
    assert c.program_overhead_bytes > 0 and c.zero_runtime_bytes > 0
    for m in c.measurements:
        assert m.backward_checkpointed is not None and m.activation_peak_bytes > 0

    again = calibrate_workload(tiny, profile, precision="fp32", micro_batch_sizes=(1, 2), repeats=3,
                               cache_dir=tmp_path, log=None)
    assert again.from_cache and again == c

    p = Predictor.from_parts(None, c, profile, world_size=2, precision="fp32")
    rows = {(o[0], o[1]): o[2:] for o in p.model.measured_compute.stage_overheads}
    assert set(rows) == {(s, 2) for s in range(4)}
    bare = Predictor.from_parts(None, dataclasses.replace(c, engines=()), profile, world_size=2, precision="fp32")
    # without its engines the profile's costs per unit stand in for them
    assert bare.predict(Trial(stage=3, micro_batch_size=2)).time.engine_overhead_s > 0
    # the same model with no engine work at all
    mc = bare.model.measured_compute
    plain = Predictor(dataclasses.replace(bare.model, measured_compute=dataclasses.replace(mc, engines_measured=True)),
                      bare.hardware, dp_degree=2, precision="fp32")
    for mbs in (1, 2, 8):  # the one measured size's values at every size
        trial = Trial(stage=2, micro_batch_size=mbs)
        with_engine, without = p.predict(trial), plain.predict(trial)
        calls = p.model.layout.bucket_count(500_000_000)
        overhead = sum(rows[(2, 2)]) + calls * p.model.measured_compute.reduce_call_overhead(2, 2)
        assert with_engine.time.engine_overhead_s == pytest.approx(overhead)
        assert with_engine.time.step_s == pytest.approx(without.time.step_s + overhead)
        residual = p.model.measured_memory.residual_bytes(2, mbs)
        assert with_engine.memory.runtime_overhead_bytes == c.program_overhead_bytes + c.zero_runtime_bytes + residual
        assert without.memory.runtime_overhead_bytes == c.program_overhead_bytes + c.zero_runtime_bytes
    # the residuals make the model reproduce the engines it was calibrated on
    for e in default:
        replay = p.predict(Trial(stage=e.stage, micro_batch_size=e.micro_batch_size)).time
        assert replay.forward_phase_s - replay.forward_s == pytest.approx(e.forward.median_s - e.module_forward.median_s)
        assert replay.backward_phase_s - replay.backward_s == pytest.approx(
            e.backward.median_s - e.module_backward.median_s)
        assert replay.step_phase_s == pytest.approx(e.step.median_s)
    calls = {(o[0], o[1]): o[2] for o in p.model.measured_compute.reduce_call_overheads}
    assert set(calls) == {(s, 2) for s in (1, 2, 3)} and min(calls.values()) >= 0


def test_script_mode_measures_the_scripts_own_model(tmp_path):
    args = ["--model", "gpt2-tiny", "--seq-len", "32", "--deepspeed", "unused.json"]
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4,
              "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}, "autotuning": {"enabled": True}}
    rendered = stage_zero_config(config)
    assert rendered == {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
                        "zero_optimization": {"stage": 0}}
    profile = cpu_profile()
    c = calibrate_script(str(TRAIN_PROGRAM), args, config, profile, precision="fp32", num_gpus=2,
                         micro_batch_sizes=(1, 2, 4), repeats=3, cache_dir=tmp_path, log=None)
    tiny = load_workload("gpt2-tiny", seq_len=32)
    assert c.mode == "script" and c.seq_len == 32 and c.ranks == 2
    assert c.hf_config is not None and c.hf_config["model_type"] == "gpt2" and c.hf_config["n_layer"] == 2
    assert c.parameter_count == parameter_count(tiny)
    assert c.shape.num_layers == tiny.num_layers and c.shape.hidden_size == tiny.hidden_size
    assert c.flops_per_sample_forward == pytest.approx(forward_flops(tiny).total(1), rel=0.01)
    assert [m.micro_batch_size for m in c.measurements] == [1, 2, 4]
    saved = {m.micro_batch_size: m.saved_bytes for m in c.measurements}
    assert saved[4] == pytest.approx(2 * saved[2], rel=0.05)
    # real engines of copies of the script's model at every stage, as in model mode
    assert sorted({e.stage for e in c.engines}) == [0, 1, 2, 3]
    assert all(e.world_size == 2 and e.forward.median_s > 0 and e.step.median_s > 0 for e in c.engines)
    assert {e.stage for e in c.engines if e.reduce_bucket_size is not None} == {1, 2, 3}
    messages = []
    again = calibrate_script(str(TRAIN_PROGRAM), args, config, profile, precision="fp32", num_gpus=2,
                             cache_dir=tmp_path, log=messages.append)
    assert again.from_cache and "read from the cache" in messages[0]
