"""benchmarks/transfer.py: a stage swap is marked unresolved only where the rounds overlap."""

from __future__ import annotations

from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script


def _transfer():
    return load_script(BENCHMARKS / "transfer.py", "transfer_benchmark")


def _row(t, stage: int, measured: float, low: float, high: float, predicted: float) -> dict:
    return {"case": t.Case(world=2, stage=stage, mbs=4), "meas_step_s": measured, "meas_min_s": low,
            "meas_max_s": high, "pred_step_s": predicted}


def test_a_swap_between_overlapping_rounds_is_unresolved_and_a_clear_one_is_not():
    t = _transfer()
    close = [_row(t, 0, 40, 39, 41, 38), _row(t, 1, 49.3, 47, 52, 43), _row(t, 2, 48.1, 46, 50, 45)]
    ((group, same, measured, predicted, resolved),) = t.orderings(close)
    assert group == (2, 4, False) and not same and not resolved
    assert measured == "z0 < z2 < z1" and predicted == "z0 < z1 < z2"
    apart = [_row(t, 0, 40, 39, 41, 38), _row(t, 1, 60, 59, 61, 43), _row(t, 2, 48, 47, 49, 45)]
    assert t.orderings(apart)[0][1:] == (False, "z0 < z2 < z1", "z0 < z1 < z2", True)
    ordered = [_row(t, 0, 40, 39, 41, 38), _row(t, 1, 45, 44, 46, 43)]
    assert t.orderings(ordered)[0][1] and t.orderings(ordered)[0][4]
