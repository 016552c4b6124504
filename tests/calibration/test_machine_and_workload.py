"""The first search's one launch: the machine's quick calibration and the workload's measurement on
2 real CPU processes (DeepSpeed, gloo). Two launches."""

import pytest

from simtune.calibration.machine_and_workload import calibrate_machine_and_workload
from simtune.calibration.workload import (MeasureScope, WorkloadCalibrationError, cache_path, fingerprint,
                                          model_identity, read_cached)
from simtune.hardware import read_profile_file
from simtune.workloads import load_workload

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("launches-2")]  # beside the timed launches (tests/conftest.py)


def test_one_launch_saves_the_profile_and_caches_the_measurement_under_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    tiny = load_workload("gpt2-tiny", seq_len=32)
    # the scope of the README's search: no checkpointing, one gradient bucket in every configuration
    both = calibrate_machine_and_workload(tiny, 2, precision="fp32", micro_batch_sizes=(1, 2), repeats=3,
                                          cache_dir=str(tmp_path / "cache"), profile_out=str(tmp_path / "profiles"),
                                          scope=MeasureScope(checkpointing=False, bucket_engines=False))

    profile = read_profile_file(both.profile_path)
    assert both.profile_path.parent == tmp_path / "profiles" and profile == both.profile
    assert profile.kind == "measured" and profile.device.kind == "cpu" and profile.device.count_per_node == 2
    assert profile.provenance.command == f"simtune calibrate --gpus 2 --out {tmp_path / 'profiles'} --quick"
    assert any("workload measurement of gpt2-tiny" in note for note in profile.provenance.notes)
    assert profile.collectives.applicable and profile.collectives.backend == "gloo"
    assert set(profile.collectives.intra_node) >= {"allreduce", "allgather", "reduce_scatter"}

    key = fingerprint(model_identity(tiny), 32, "fp32", profile.name)
    assert both.cache_path == cache_path(str(tmp_path / "cache"), key)
    cached = read_cached(both.cache_path)
    assert cached is not None and cached.fingerprint == key and cached.profile_name == profile.name
    assert [m.micro_batch_size for m in cached.measurements] == [1, 2]
    assert [(e.stage, e.reduce_bucket_size) for e in cached.engines] == [(0, None), (1, None), (2, None), (3, None)]
    assert cached.checkpointing_skipped and cached.bucket_engines_skipped
    assert all(m.backward_checkpointed is None for m in cached.measurements)
    assert MeasureScope().missing_from(cached) == ["activation checkpointing", "the engines with small buckets"]
    # the program's memory is read before the calibration's benchmarks allocate: its baseline is
    # the profile's fixed overhead (both read at the same point), not that plus their leftovers
    assert cached.base_rss_bytes == pytest.approx(profile.device.fixed_overhead_bytes, rel=0.03)
    assert cached.program_overhead_bytes > 0


def test_a_workload_that_fails_after_the_calibration_keeps_the_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    tiny = load_workload("gpt2-tiny", seq_len=32)
    with pytest.raises(WorkloadCalibrationError, match="Measuring gpt2-tiny in a launch failed: .*failed on rank"):
        calibrate_machine_and_workload(tiny, 2, precision="fp32", micro_batch_sizes=(0,), repeats=1,
                                       cache_dir=str(tmp_path / "cache"), profile_out=str(tmp_path / "profiles"))
    (saved,) = (tmp_path / "profiles").glob("*.json")  # the next search finds the machine calibrated
    assert read_profile_file(saved).kind == "measured"
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("workload-*.json"))
