"""ONE real calibration: `simtune calibrate --gpus 2 --quick` on two CPU processes (gloo)."""

import glob
import re
import time

import pytest

from simtune.cli import main
from simtune.hardware import COLLECTIVE_OPS, load_profile


@pytest.mark.slow
def test_quick_two_process_calibration_writes_a_valid_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # also on a GPU machine: this test is about CPU ranks
    out = tmp_path / "profiles"
    started = time.perf_counter()
    assert main(["calibrate", "--gpus", "2", "--quick", "--out", str(out), "--name", "ci-cpu-2proc"]) == 0
    wall_s = time.perf_counter() - started
    stdout = capsys.readouterr().out
    assert f"Saved ci-cpu-2proc to {out / 'ci-cpu-2proc.json'}" in stdout

    profile = load_profile(out / "ci-cpu-2proc.json")  # loading validates every field
    assert profile.kind == "measured" and profile.device.kind == "cpu"
    assert profile.device.count == 2 and profile.device.usable_memory_bytes > 0
    assert "--gpus 2" in profile.provenance.command and "--quick" in profile.provenance.command
    assert profile.provenance.torch_version and profile.provenance.deepspeed_version
    assert profile.collectives.applicable and profile.collectives.backend == "gloo"
    assert set(profile.collectives.intra_node) == set(COLLECTIVE_OPS)
    for op, fit in profile.collectives.intra_node.items():
        assert fit.ranks == 2
        assert fit.latency_s >= 0, op
        assert fit.bandwidth_bytes_per_s > 0, op
        assert fit.r2 is not None and fit.r2 <= 1.0
        assert len(fit.points) >= 4
        smallest, largest = fit.points[0], fit.points[-1]
        assert largest.bytes >= 16 * smallest.bytes
        assert largest.stats.min_s > smallest.stats.min_s, op  # measured time grows with size
        assert fit.time_s(largest.bytes) > fit.time_s(smallest.bytes)
    assert "fp32" in profile.compute.curves
    assert "torch_adamw_foreach" in profile.optimizer.fits
    assert "deepspeed_cpu_adam" in profile.optimizer.fits or "deepspeed_cpu_adam" in profile.optimizer.unavailable
    assert profile.offload.kind == "cpu_memcpy" and profile.offload.cpu_adam_s_per_param > 0

    port = re.search(r"--master_port (\d+)", " ".join(profile.provenance.notes)).group(1)
    assert glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_*_{port}_*") == []
    assert wall_s < 180  # target 20 s; generous for a loaded CI machine
