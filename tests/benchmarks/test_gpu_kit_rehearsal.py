"""The GPU kit end to end, in its CPU rehearsal: every phase runs for real (the carried wheels
checked against the GPU machine's Python, op builds under a deadline, a calibration, real engines
in two processes, a launch through the runner, a search, the report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simtune.runner.build_locks import build_locks, files_open_by_live_processes

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "benchmarks" / "gpu"
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gpu-kit")]  # one process: it may run beside the launches

OUT_FILES = {"kit.json", "kit.log", "plan.json", "measurements.jsonl", "launches.json", "search.txt", "summary.md",
             "cpu-1proc-kit-rehearsal.json"}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """The wheel set the GPU machine is sent, made as prepare_wheels.sh makes it."""
    folder = tmp_path_factory.mktemp("wheels")
    done = subprocess.run(["bash", str(KIT / "prepare_wheels.sh"), str(folder)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    if done.returncode != 0 and "Could not find a version" not in done.stderr:
        pytest.fail(f"prepare_wheels.sh failed: {done.stderr[-2000:]}")
    return folder


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, wheels) -> Path:
    out = tmp_path_factory.mktemp("kit-out")
    work = tmp_path_factory.mktemp("kit-work")
    done = subprocess.run([sys.executable, str(KIT / "kit.py"), "--rehearse", "--time-scale", "2", "--out", str(out),
                           "--work", str(work), "--wheels", str(wheels)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return out


def _kit(out: Path) -> dict:
    return json.loads((out / "kit.json").read_text())


def _measurements(out: Path) -> dict[str, dict]:
    return {m["key"]: m for m in map(json.loads, (out / "measurements.jsonl").read_text().splitlines())}


def test_wheels_cover_what_the_gpu_machine_lacks(wheels):
    names = {w.name.split("-")[0].lower() for w in wheels.glob("*.whl")}
    assert {"deepspeed", "optuna", "xgboost_cpu", "fvcore", "iopath", "pydantic", "sqlalchemy"} <= names
    assert "xgboost" not in names  # the CPU-only build: no 469 MB NCCL dependency
    assert sum(w.stat().st_size for w in wheels.glob("*.whl")) < 48 * 2**20  # the device call carries 64 MiB


def test_rehearsal_writes_at_most_eight_files(rehearsal):
    assert {p.name for p in rehearsal.iterdir()} == OUT_FILES


def test_every_phase_ran_within_its_budget(rehearsal):
    phases = _kit(rehearsal)["phases"]
    assert list(phases) == ["install", "ops", "calibrate", "plan", "measure", "launches", "search", "autotuner",
                            "report"]
    for name, phase in phases.items():
        if name == "autotuner":
            assert phase["status"] == "skipped"
            continue
        assert phase["status"] in ("ok", "partial"), (name, phase)
        assert phase["seconds"] <= phase["budget_s"] * 2 + 15, (name, phase)
    assert phases["install"]["dry_run"] and phases["install"]["wheels"]


def test_op_builds_are_recorded_and_leave_no_lock(rehearsal):
    ops = _kit(rehearsal)["ops"]
    for name in ("fused_adam", "cpu_adam"):
        assert ops[name]["built"] or ops[name]["reason"]
    if not ops["fused_adam"]["built"]:
        assert ops["optimizer"] == "torch_adam" and "FusedAdam not built" in ops["fallback_reason"]
    held = files_open_by_live_processes()  # a launch beside this test may be loading an op right now
    assert [lock for lock in build_locks(os.environ) if os.path.realpath(lock) not in held] == []


def test_every_planned_configuration_was_measured(rehearsal):
    plan = json.loads((rehearsal / "plan.json").read_text())
    measured = _measurements(rehearsal)
    assert set(measured) == {row["key"] for row in plan["cases"]}
    cpu_adam = _kit(rehearsal)["ops"]["cpu_adam"]["built"]
    for row in plan["cases"]:
        m = measured[row["key"]]
        if row["case"]["offload_optimizer"] != "none" and not cpu_adam:
            assert m["status"] == "skipped" and "CPUAdam" in m["reason"]
        elif row["case"]["largest"]:
            assert m["measured_largest"] >= row["micro_batch_size"] and m["attempts"]
        else:
            assert m["status"] == "ok", m
            assert 0 < m["step_s"] < 10 and len(m["step_times_s"]) == 5
            assert m["peak"]["allocated_bytes"] > 0
            assert set(m["split_s"]) == {"forward", "backward", "step"} and all(v > 0 for v in m["split_s"].values())
    assert any(r["case"]["stage"] == 3 and measured[r["key"]]["status"] == "ok" for r in plan["cases"])


def test_the_first_configuration_of_each_process_is_profiled(rehearsal):
    plan = json.loads((rehearsal / "plan.json").read_text())
    measured = _measurements(rehearsal)
    for group in ("main", "stage3"):
        first = next(r["key"] for r in plan["cases"] if r["group"] == group and not r["case"]["largest"])
        profile = measured[first]["profile"]
        assert set(profile["phases"]) == {"forward", "backward", "step"}
        assert all(phase["host_ms"] > 0 for phase in profile["phases"].values())
        assert profile["operators_per_step"] > 100 and profile["top_host"][0]["ms_per_step"] > 0
    profiled = [key for key, m in measured.items() if m.get("profile")]
    assert len(profiled) == 2
    assert "## Where a step's time goes" in (rehearsal / "summary.md").read_text()


def test_launch_through_the_runner_and_the_report(rehearsal):
    launches = json.loads((rehearsal / "launches.json").read_text())["launches"]
    assert len(launches) == 1 and launches[0]["status"] == "ok" and launches[0]["launch_step_s"] > 0
    assert "exit 0" in (rehearsal / "search.txt").read_text()
    summary = (rehearsal / "summary.md").read_text()
    for key in _measurements(rehearsal):
        assert f"| {key} |" in summary
    assert "step time: MAPE" in summary and "predicted to fit but out of memory:" in summary
    assert "## Calibrated kernels" in summary and "| fp32 | measured |" in summary
    profile = json.loads((rehearsal / "cpu-1proc-kit-rehearsal.json").read_text())
    assert profile["provenance"]["kind"] == "measured"
    if _kit(rehearsal)["gpu_samples"].get("skipped"):  # no nvidia-smi here: said, not silently left out
        assert "GPU clocks: not sampled" in summary
