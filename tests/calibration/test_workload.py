"""Workload calibration of gpt2-tiny, measured for real in this process: counts, FLOPs, saved
bytes, timings, the cache, and the Predictor built from it."""

import dataclasses
import json

import pytest

from simtune.calibration.workload import (DEFAULT_MICRO_BATCH_SIZES, MeasureScope, TimeStats, WorkloadCalibration,
                                          WorkloadCalibrationError, cache_path, fingerprint, larger_micro_batch_sizes,
                                          model_identity, script_identity)
from simtune.calibration.workload_launch import calibrate_workload
from simtune.errors import WorkloadError
from simtune.hardware.registry import load_profile
from simtune.prediction.predictor import Predictor
from simtune.space import Trial
from simtune.workloads import forward_flops, load_workload, parameter_count, parameter_tensor_numels
from simtune.workloads.analysis import largest_layer_params

SIZES = (1, 2, 4)


def cpu_profile(name="cpu-2proc-test"):
    """A shipped profile relabelled as a 2-process CPU machine (only the name, kind and ranks matter here)."""
    base = load_profile("dgx-a100-80gb")
    device = dataclasses.replace(base.device, kind="cpu", count_per_node=2, name="CPU test")
    fits = {k: dataclasses.replace(f, device="cpu") for k, f in base.optimizer.fits.items()}
    optimizer = dataclasses.replace(base.optimizer, fits=fits)
    return dataclasses.replace(base, name=name, device=device, optimizer=optimizer)


@pytest.fixture(scope="module")
def tiny():
    return load_workload("gpt2-tiny", seq_len=64)


@pytest.fixture(scope="module")
def measured(tiny, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    messages = []
    calibration = calibrate_workload(tiny, cpu_profile(), precision="fp32", micro_batch_sizes=SIZES, repeats=3,
                                     cache_dir=cache, in_process=True, log=messages.append)
    return calibration, cache, messages


def test_counts_match_the_closed_form(tiny, measured):
    c, _, _ = measured
    assert c.parameter_count == parameter_count(tiny)
    assert c.param_tensor_numels == parameter_tensor_numels(tiny)
    assert c.largest_layer_params == largest_layer_params(tiny)
    assert c.flops_counter == "fvcore"
    assert c.flops_per_sample_forward == pytest.approx(forward_flops(tiny).total(1), rel=0.01)
    assert dict(c.flops_by_micro_batch)[2] == pytest.approx(forward_flops(tiny).total(2), rel=0.01)
    assert c.shape.num_layers == 2 and c.shape.hidden_size == 128 and c.seq_len == 64
    assert c.mode == "model" and c.precision == "fp32" and c.threads == 1 and not c.from_cache


def test_timings_are_positive_medians_at_every_size(measured):
    c, _, _ = measured
    assert [m.micro_batch_size for m in c.measurements] == list(SIZES)
    for m in c.measurements:
        for stats in (m.forward, m.backward):
            assert 0 < stats.min_s <= stats.median_s <= stats.max_s and stats.repeats == 3
        assert m.peak_bytes > 0
    first, last = c.measurements[0], c.measurements[-1]
    assert last.forward.median_s + last.backward.median_s > first.forward.median_s + first.backward.median_s


def test_saved_bytes_grow_linearly_with_the_micro_batch(measured):
    c, _, _ = measured
    saved = {m.micro_batch_size: m.saved_bytes for m in c.measurements}
    assert saved[1] > 0
    assert saved[4] == pytest.approx(2 * saved[2], rel=0.02)
    assert saved[2] == pytest.approx(2 * saved[1], rel=0.10)  # one sample may take another kernel path
    layers = {m.micro_batch_size: dict(m.saved_bytes_by_layer) for m in c.measurements}
    assert set(layers[1]) == {"transformer.h.0", "transformer.h.1", "other"}
    assert layers[4]["transformer.h.0"] == layers[4]["transformer.h.1"]
    assert sum(layers[4].values()) == saved[4]
    assert c.saved_bytes_per_sample == pytest.approx(saved[4] / 4, rel=0.05)
    assert c.saved_bytes_per_sample_per_layer == pytest.approx(layers[4]["transformer.h.0"] / 4, rel=0.05)


def test_the_second_call_reads_the_cache(tiny, measured):
    c, cache, messages = measured
    again_messages = []
    again = calibrate_workload(tiny, cpu_profile(), precision="fp32", micro_batch_sizes=SIZES, repeats=3,
                               cache_dir=cache, in_process=True, log=again_messages.append)
    assert again.from_cache and again == c
    assert len(again_messages) == 1 and "read from the cache" in again_messages[0]
    assert any("measuring" in m for m in messages)
    other = fingerprint(model_identity(tiny), 64, "bf16", "cpu-2proc-test")
    assert not cache_path(cache, other).exists()


def test_a_search_without_checkpointing_skips_it_and_one_with_it_measures_again(tiny, tmp_path):
    c0 = calibrate_workload(tiny, cpu_profile(), precision="fp32", micro_batch_sizes=(1, 2), repeats=2,
                            cache_dir=tmp_path, in_process=True, log=None, scope=MeasureScope(checkpointing=False))
    assert c0.checkpointing_skipped
    assert all(m.backward_checkpointed is None and m.activation_peak_checkpointed_bytes is None
               for m in c0.measurements)
    assert calibrate_workload(tiny, cpu_profile(), precision="fp32", micro_batch_sizes=(1, 2), repeats=2,
                              cache_dir=tmp_path, in_process=True, log=None, scope=MeasureScope(checkpointing=False)).from_cache
    messages = []
    c1 = calibrate_workload(tiny, cpu_profile(), precision="fp32", micro_batch_sizes=(1, 2), repeats=2,
                            cache_dir=tmp_path, in_process=True, log=messages.append, scope=MeasureScope())
    assert not c1.from_cache and not c1.checkpointing_skipped
    assert any("no numbers for activation checkpointing" in m for m in messages)
    assert all(m.backward_checkpointed is not None for m in c1.measurements)
    # the fuller measurement now serves both kinds of search
    assert calibrate_workload(tiny, cpu_profile(), precision="fp32", micro_batch_sizes=(1, 2), repeats=2,
                              cache_dir=tmp_path, in_process=True, log=None, scope=MeasureScope(checkpointing=False)).from_cache


def test_larger_micro_batches_are_powers_of_two_up_to_the_first_that_reaches_the_largest():
    assert larger_micro_batch_sizes(DEFAULT_MICRO_BATCH_SIZES[-1]) == ()
    assert larger_micro_batch_sizes(12) == larger_micro_batch_sizes(16) == (16,)
    assert larger_micro_batch_sizes(1024) == (16, 32)


def test_a_search_that_reaches_a_larger_micro_batch_measures_it_and_measures_again_for_it(tiny, tmp_path,
                                                                                         monkeypatch):
    # micro-batch 16 is measured however slow a busy machine makes it (the next test skips it)
    monkeypatch.setattr("simtune.calib.workload_measure.EXTRA_SIZE_SECONDS", float("inf"))

    def measure(largest, log=None):
        return calibrate_workload(tiny, cpu_profile(), precision="fp32", micro_batch_sizes=(1, 2), repeats=2,
                                  cache_dir=tmp_path, in_process=True, log=log,
                                  scope=MeasureScope(checkpointing=False, largest_micro_batch_size=largest))

    small = measure(8)
    assert small.micro_batch_sizes_asked == (1, 2) and [m.micro_batch_size for m in small.measurements] == [1, 2]
    messages: list[str] = []
    larger = measure(16, messages.append)
    assert not larger.from_cache and any("no numbers for micro-batch sizes up to 16" in m for m in messages)
    assert larger.micro_batch_sizes_asked == (1, 2, 16)
    assert [m.micro_batch_size for m in larger.measurements] == [1, 2, 16]
    assert measure(12).from_cache and measure(8).from_cache  # the fuller measurement serves both
    # a measurement saved before the sizes were kept was asked for the defaults
    data = larger.to_dict()
    del data["micro_batch_sizes_asked"]
    assert WorkloadCalibration.from_dict(data).micro_batch_sizes_asked == DEFAULT_MICRO_BATCH_SIZES


def test_a_larger_micro_batch_too_slow_to_measure_is_skipped_and_said(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr("simtune.calib.workload_measure.EXTRA_SIZE_SECONDS", 0.0)
    c = calibrate_workload(tiny, cpu_profile(), precision="fp32", micro_batch_sizes=(1, 2), repeats=2,
                           cache_dir=tmp_path, in_process=True, log=None,
                           scope=MeasureScope(checkpointing=False, largest_micro_batch_size=16))
    assert [m.micro_batch_size for m in c.measurements] == [1, 2]  # the defaults are always measured
    assert any(n.startswith("micro-batch 16 skipped: one forward and backward would take about") for n in c.notes)
    assert c.micro_batch_sizes_asked == (1, 2, 16)  # asked for: a search that wants it does not measure again


def test_a_measurement_without_engines_serves_only_searches_that_need_none(tiny, tmp_path):
    def measure(scope, log=None):
        return calibrate_workload(tiny, cpu_profile(), precision="fp32", micro_batch_sizes=(1, 2), repeats=2,
                                  cache_dir=tmp_path, in_process=True, log=log, scope=scope)

    bare = measure(MeasureScope(checkpointing=False, engines=False))
    assert bare.engines_skipped and bare.bucket_engines_skipped and not bare.engines
    assert measure(MeasureScope(checkpointing=False, bucket_engines=True, engines=False)).from_cache
    messages: list[str] = []
    again = measure(MeasureScope(checkpointing=False), messages.append)
    assert not again.from_cache and not again.engines_skipped
    assert any("no numbers for the engines" in m for m in messages)


def test_fingerprint_changes_with_every_input(tiny, tmp_path):
    base = fingerprint(model_identity(tiny), 64, "fp32", "p")
    assert fingerprint(model_identity(tiny), 64, "fp32", "p") == base
    assert len({base, fingerprint(model_identity(tiny), 32, "fp32", "p"),
                fingerprint(model_identity(tiny), 64, "bf16", "p"), fingerprint(model_identity(tiny), 64, "fp32", "q"),
                fingerprint(model_identity(load_workload("bert-tiny", seq_len=64)), 64, "fp32", "p")}) == 5
    script = tmp_path / "train.py"
    script.write_text("print(1)\n")
    first = script_identity(str(script), ["--a", "1"])
    assert script_identity(str(script), ["--a", "2"]) != first
    with pytest.raises(WorkloadError, match="does not exist"):
        script_identity(str(tmp_path / "missing.py"), [])


def test_json_round_trip_and_schema_check(measured, tmp_path):
    c, _, _ = measured
    data = json.loads(json.dumps(c.to_dict()))
    assert WorkloadCalibration.from_dict(data) == c
    with pytest.raises(WorkloadCalibrationError, match="schema version"):
        WorkloadCalibration.from_dict({**data, "schema_version": 99})


def test_predictor_from_the_calibration_uses_its_numbers(measured):
    c, _, _ = measured
    profile = cpu_profile()
    p = Predictor.from_parts(None, c, profile, world_size=2, precision="fp32")
    assert p.measured_compute_used
    e = p.predict(Trial(stage=0, micro_batch_size=2))
    two = next(m for m in c.measurements if m.micro_batch_size == 2)
    assert e.time.forward_s == pytest.approx(two.forward.median_s)
    assert e.time.backward_s == pytest.approx(two.backward.median_s)
    assert p.model.parameter_count == c.parameter_count
    elsewhere = Predictor.from_parts(None, c, cpu_profile("another-machine"), world_size=2, precision="fp32")
    assert not elsewhere.measured_compute_used


def test_a_scripts_own_work_is_added_to_every_step_at_every_stage(measured):
    c, _, _ = measured
    profile = cpu_profile()
    own = TimeStats(min_s=0.002, median_s=0.003, max_s=0.004, repeats=6)
    scripted = dataclasses.replace(c, mode="script", script_overhead=own, script_overhead_micro_batch_size=1)
    assert WorkloadCalibration.from_dict(json.loads(json.dumps(scripted.to_dict()))) == scripted
    plain = Predictor.from_parts(None, c, profile, world_size=2, precision="fp32")
    with_own = Predictor.from_parts(None, scripted, profile, world_size=2, precision="fp32")
    for stage in range(4):
        for gas in (1, 3):
            trial = Trial(stage=stage, micro_batch_size=4, gradient_accumulation_steps=gas)
            added = with_own.predict(trial).time.step_s - plain.predict(trial).time.step_s
            assert added == pytest.approx(gas * 0.003)  # once per micro-step, whatever the stage and size


def test_under_deepspeeds_autocast_an_fp32_model_is_measured_with_its_forward_in_bf16(tiny, tmp_path):
    import torch

    from simtune.calib.engines import engine_config
    from simtune.calib.workload_measure import build_measured_model

    model = build_measured_model(tiny, "bf16+autocast", torch.device("cpu"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    batch = {"input_ids": torch.zeros(1, 8, dtype=torch.long), "labels": torch.zeros(1, 8, dtype=torch.long)}
    output = model(**batch)
    assert output.logits.dtype == torch.bfloat16  # the forward ran under autocast
    output.loss.backward()
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.float32}
    config = engine_config(1, 2, 2, "bf16+autocast", "cpu")
    assert config["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and "bf16" not in config

    profile = cpu_profile()
    calibration = calibrate_workload(tiny, profile, precision="bf16+autocast", micro_batch_sizes=(1, 2), repeats=1,
                                     cache_dir=tmp_path, in_process=True, log=None,
                                     scope=MeasureScope(checkpointing=False))
    assert calibration.precision == "bf16+autocast"
    assert calibration.matches(profile.name, "bf16+autocast") and not calibration.matches(profile.name, "bf16")
    assert calibration.fingerprint != fingerprint(model_identity(tiny), 64, "bf16", profile.name)
    predictor = Predictor.from_parts(None, calibration, profile, world_size=2, precision="bf16+autocast")
    assert predictor.measured_compute_used and predictor.deepspeed_autocast
    assert not Predictor.from_parts(None, calibration, profile, world_size=2, precision="bf16").measured_compute_used
