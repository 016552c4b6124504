"""A report's profile section says where the engine costs a prediction used came from."""

from __future__ import annotations

from pathlib import Path

from simtune.hardware.registry import load_profile
from simtune.report.profiles import profile_facts

CALIBRATED_H200 = (Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "gpu" / "h200-2026-12-04-kit"
                   / "h200-141gb-1gpu.json")


def test_a_gpu_profile_without_engine_costs_says_the_spec_estimates_stand_in():
    calibrated = " ".join(profile_facts(load_profile(str(CALIBRATED_H200))))
    assert "measured by `simtune calibrate`" in calibrated
    assert "the spec profiles' published estimates stand in" in calibrated
    spec = " ".join(profile_facts(load_profile("hgx-h200-141gb")))
    assert "stand in" not in spec and "spec: derived from vendor numbers" in spec
