"""benchmarks/carry_zero_state.py: an older profile gets a newer calibration's zero-moment step."""

import json

import pytest

from simtune.hardware import SHIPPED_DIR, load_profile
from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script

carry = load_script(BENCHMARKS / "carry_zero_state.py", "carry_zero_state")


def _fit(points, zero=None):
    def point(size, seconds):
        return {"size": size, "stats": {"min_s": seconds, "median_s": seconds, "max_s": seconds, "repeats": 3}}

    fit = {"impl": "torch_adamw_for_loop", "device": "cpu", "intercept_s": 0.0, "s_per_param": 2e-9, "r2": 0.99,
           "points": [point(size, seconds) for size, seconds in points]}
    if zero is not None:
        fit["zero_state"] = point(*zero)
    return fit


def test_the_newer_calibrations_ratio_is_carried_to_the_older_largest_step(tmp_path):
    old_path, new_path, out = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "out" / "old.json"
    profile = json.loads((SHIPPED_DIR / "dgx-a100-80gb.json").read_text())
    profile["optimizer"]["fits"] = {"torch_adamw_for_loop": _fit([(2**20, 2e-3), (2**22, 8e-3)])}
    old_path.write_text(json.dumps(profile))
    newer = json.loads(json.dumps(profile))
    newer["optimizer"]["fits"] = {"torch_adamw_for_loop": _fit([(2**22, 12e-3)], zero=(2**22, 30e-3))}
    new_path.write_text(json.dumps(newer))
    assert carry.main([str(old_path), str(new_path), str(out)]) == 0
    fit = load_profile(out).optimizer.fits["torch_adamw_for_loop"]
    assert fit.zero_state is not None and fit.zero_state.size == 2**22
    assert fit.zero_state_s_per_param == pytest.approx(8e-3 * 1.5 / 2**22)  # the newer ratio, 30/12 - 1
    assert carry.main([str(old_path), str(old_path), str(tmp_path / "none.json")]) == 1
    assert not (tmp_path / "none.json").exists()
