"""The GPU kit's configurations, plan and largest-size search (pure parts; no engine runs)."""

from __future__ import annotations

import os

import pytest

from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script

KIT = BENCHMARKS / "gpu"


def _load(name: str):
    return load_script(KIT / f"{name}.py", name)


cases = _load("cases")


def test_gpu_cases_cover_what_the_kit_must_show():
    all_cases = cases.gpu_cases()
    fixed = [c for c in all_cases if not c.largest]
    assert len(fixed) >= 20
    assert len({c.key for c in all_cases}) == len(all_cases)
    assert {c.preset for c in fixed} == {"gpt2", "gpt2-medium", "gpt2-large", "bert-large"}
    assert {c.stage for c in fixed} == {0, 1, 2, 3}
    assert {c.checkpointing for c in fixed} == {True, False}
    assert {c.offload_optimizer for c in fixed} == {"none", "cpu"}
    assert all(c.offload_optimizer == "none" or c.stage > 0 for c in all_cases)
    assert any(c.largest for c in all_cases)
    # micro-batch sweeps: some preset and stage measured at three sizes
    sizes = {}
    for c in fixed:
        sizes.setdefault((c.preset, c.stage, c.checkpointing, c.offload_optimizer), set()).add(c.micro_batch_size)
    assert max(len(s) for s in sizes.values()) >= 3


def test_stage_three_runs_in_a_process_of_its_own():
    for case in cases.gpu_cases() + cases.rehearsal_cases():
        assert case.group == ("stage3" if case.stage == 3 else "main")


def test_plan_renders_the_configuration_simtune_would_run():
    from simtune.hardware.registry import load_profile

    planner = cases.Planner(load_profile("hgx-h200-141gb"), "bf16", torch_adam=False, max_micro_batch_size=4096)
    case = cases.Case("gpt2-medium", 1024, 2, 16, checkpointing=True, offload_optimizer="cpu")
    row = planner.plan(case)
    config = row["ds_config"]
    assert config["zero_optimization"]["stage"] == 2
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["bf16"] == {"enabled": True}
    assert config["train_micro_batch_size_per_gpu"] == 16 and "train_batch_size" not in config
    assert "autotuning" not in config
    largest = planner.plan(cases.Case("gpt2-medium", 1024, 0, 0, largest=True))
    assert largest["micro_batch_size"] == largest["predicted_largest"] > 16
    wider = cases.render_for(config, 40)
    assert wider["train_micro_batch_size_per_gpu"] == 40 and "train_batch_size" not in wider
    assert config["train_micro_batch_size_per_gpu"] == 16  # the plan's copy is left alone


def test_torch_adam_fallback_reaches_every_configuration():
    from simtune.hardware.registry import load_profile

    planner = cases.Planner(load_profile("hgx-h200-141gb"), "bf16", torch_adam=True, max_micro_batch_size=64)
    row = planner.plan(cases.Case("gpt2", 1024, 1, 8))
    assert row["ds_config"]["optimizer"]["params"]["torch_adam"] is True


@pytest.mark.parametrize("fits_up_to, predicted, expected_low, expected_high", [
    (100, 64, 96, 104),   # predicted too low: doubling, then bisection
    (40, 64, 40, 42),     # predicted too high: halving, then bisection
    (10**6, 64, 16384, None),  # never fails within the attempts: the largest tried
])
def test_largest_size_search(monkeypatch, fits_up_to, predicted, expected_low, expected_high):
    sweep = _load("sweep")

    def fake_measure(workload, row, size, args, device, sync, steps=None, warmup=None):
        return {"status": "ok" if size <= fits_up_to else "oom", "step_s": 0.1, "peak": None,
                "micro_batch_size": size}

    monkeypatch.setattr(sweep, "measure", fake_measure)
    args = type("Args", (), {"largest_attempts": 9})()
    result = sweep.find_largest(None, {"key": "k", "micro_batch_size": predicted}, args, None, None)
    assert result["measured_largest"] <= fits_up_to
    assert expected_low <= result["measured_largest"]
    if expected_high is None:
        assert result["smallest_failing"] is None
    else:
        assert result["smallest_failing"] <= expected_high and result["smallest_failing"] > fits_up_to
    assert len(result["attempts"]) <= 9


def test_a_failure_that_is_not_memory_ends_the_search(monkeypatch):
    sweep = _load("sweep")
    calls = []

    def fake_measure(workload, row, size, args, device, sync, steps=None, warmup=None):
        calls.append(size)
        return {"status": "failed", "reason": "AssertionError: x", "micro_batch_size": size}

    monkeypatch.setattr(sweep, "measure", fake_measure)
    args = type("Args", (), {"largest_attempts": 6})()
    result = sweep.find_largest(None, {"key": "k", "micro_batch_size": 8}, args, None, None)
    assert calls == [8]
    assert result["status"] == "failed" and result["measured_largest"] == 0


def test_gpu_samples_are_summarised_per_phase(tmp_path):
    kit = _load("kit")
    import datetime

    def line(seconds: float, sm: int, power: float, temp: int, util: int) -> str:
        when = datetime.datetime.fromtimestamp(1_800_000_000 + seconds).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        return f"{when}, {sm}, 3201, {power}, {temp}, {util}"

    csv = tmp_path / "samples.csv"
    csv.write_text("\n".join([line(0.0, 345, 80.0, 40, 0), line(0.5, 1980, 650.0, 60, 100),
                              line(1.0, 1755, 700.0, 66, 100), line(1.5, 1830, 690.0, 65, 97),
                              "2026/12/04 17:30:02.000, [N/A], 3201, 80, 40, 0",  # unreadable: skipped
                              line(5.0, 1980, 90.0, 50, 10)]) + "\n")
    sampler = kit.GpuSampler(csv)
    phases = {"measure": {"wall_start": 1_800_000_000.4, "wall_end": 1_800_000_001.6},
              "search": {"wall_start": 1_800_000_004.0, "wall_end": 1_800_000_006.0},
              "plan": {"status": "skipped"}}
    summary = sampler.summary(phases)
    assert summary["samples"] == 5
    measure = summary["phases"]["measure"]
    assert measure["samples"] == 3 and measure["busy_samples"] == 3
    assert measure["sm_mhz_busy_p5"] == 1755 and measure["sm_mhz_busy_p50"] == 1830
    assert measure["power_w_max"] == 700.0 and measure["temperature_c_max"] == 66
    assert summary["phases"]["search"]["busy_samples"] == 0 and "plan" not in summary["phases"]


def test_without_nvidia_smi_the_sampler_says_why(tmp_path, monkeypatch):
    kit = _load("kit")
    monkeypatch.setattr(kit.shutil, "which", lambda name: None)
    sampler = kit.GpuSampler(tmp_path / "samples.csv")
    sampler.start()
    sampler.stop()
    assert sampler.summary({}) == {"skipped": "no nvidia-smi on this machine"}


def test_the_sampler_runs_nvidia_smi_in_the_background_and_stops_it(tmp_path, monkeypatch):
    """A stand-in nvidia-smi that prints a busy sample every 50 ms, as ``-lms`` does."""
    import time

    kit = _load("kit")
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nwhile true; do\n  echo \"$(date '+%Y/%m/%d %H:%M:%S.%3N'), 1755, 3201, 650.5, 61, 100\"\n"
                    "  sleep 0.05\ndone\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    sampler = kit.GpuSampler(tmp_path / "samples.csv")
    started = time.time()
    sampler.start()
    time.sleep(1.0)
    sampler.stop()
    summary = sampler.summary({"measure": {"wall_start": started - 1, "wall_end": time.time() + 1}})
    assert sampler.process is None and summary["samples"] >= 3
    assert summary["phases"]["measure"]["sm_mhz_busy_p50"] == 1755
    size = (tmp_path / "samples.csv").stat().st_size
    time.sleep(0.3)
    assert (tmp_path / "samples.csv").stat().st_size == size  # stopped: nothing more is written


def test_an_autocast_case_runs_an_fp32_engine_predicted_under_autocast():
    from simtune.hardware.registry import load_profile

    planner = cases.Planner(load_profile("hgx-h200-141gb"), "bf16", torch_adam=False, max_micro_batch_size=4096)
    autocast = next(c for c in cases.gpu_cases() if c.autocast)
    row = planner.plan(autocast)
    assert row["key"].endswith("_autocast") and row["autocast_dtype"] == "bf16"
    assert "bf16" not in row["ds_config"] and "fp16" not in row["ds_config"]
    plain = cases.Case(autocast.preset, autocast.seq_len, autocast.stage, autocast.micro_batch_size)
    assert planner.plan(plain)["ds_config"]["bf16"] == {"enabled": True}
    predicted, bf16 = (planner.prediction(c, autocast.micro_batch_size) for c in (autocast, plain))
    assert predicted["step_s"] > bf16["step_s"] and predicted["total_bytes"] > bf16["total_bytes"]
    assert any(c.autocast for c in cases.rehearsal_cases())


def test_a_torch_adam_case_runs_torchs_adamw_beside_the_plans_fused_adam():
    from simtune.hardware.registry import load_profile

    planner = cases.Planner(load_profile("hgx-h200-141gb"), "bf16", torch_adam=False, max_micro_batch_size=4096)
    torch_case = next(c for c in cases.gpu_cases() if c.torch_adam)
    plain = cases.Case(torch_case.preset, torch_case.seq_len, torch_case.stage, torch_case.micro_batch_size)
    assert plain in cases.gpu_cases() and torch_case.stage == 0 and torch_case.key.endswith("_torchadam")
    assert planner.plan(torch_case)["ds_config"]["optimizer"]["params"]["torch_adam"] is True
    assert "torch_adam" not in planner.plan(plain)["ds_config"]["optimizer"]["params"]
    wrapped, fused = (planner.prediction(c, plain.micro_batch_size)["step_s"] for c in (torch_case, plain))
    assert wrapped > fused  # stage 0's per-tensor wrapper around torch's AdamW
