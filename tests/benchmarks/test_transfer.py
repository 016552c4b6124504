"""benchmarks/transfer.py: stages are ordered by their per-round differences; a pair the rounds do
not resolve is a tie the prediction must fall inside."""

from __future__ import annotations

import math

import pytest

from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script


def _transfer():
    return load_script(BENCHMARKS / "transfer.py", "transfer_benchmark")


def _row(t, stage: int, rounds: list[float], predicted: float) -> dict:
    return {"case": t.Case(world=2, stage=stage, mbs=4), "meas_step_s": sorted(rounds)[len(rounds) // 2],
            "meas_rounds_s": rounds, "pred_step_s": predicted}


def test_paired_difference_is_the_mean_with_a_student_t_interval():
    accuracy = _transfer().accuracy
    mean, low, high = accuracy.paired_difference([3.0, 5.0, 4.0], [1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    # differences 2, 3, 1: sd 1, t(0.975, 2) = 4.303
    assert (low, high) == pytest.approx((2.0 - 4.303 / math.sqrt(3), 2.0 + 4.303 / math.sqrt(3)), abs=1e-3)
    assert accuracy.paired_difference([2.0], [1.0]) == (1.0, -math.inf, math.inf)


def test_a_drift_common_to_both_stages_cancels_in_the_rounds():
    t = _transfer()
    # the machine slows by 10 ms a round; stage 1 is 2 ms slower than stage 0 in every round
    rows = [_row(t, 0, [40.0, 50.0, 60.0, 45.0], 38.0), _row(t, 1, [42.0, 52.0, 62.1, 46.9], 39.0)]
    (order,) = t.orderings(rows)
    (pair,) = order.pairs
    assert (pair.faster, pair.slower) == (0, 1) and pair.resolved and pair.right and order.right
    # the ranges of the rounds overlap throughout, and the same pair predicted the other way is wrong
    (swapped,) = t.orderings([_row(t, 0, [40.0, 50.0, 60.0, 45.0], 40.0), _row(t, 1, [42.0, 52.0, 62.1, 46.9], 39.0)])
    assert not swapped.right and swapped.measured == "z0 < z1" and swapped.predicted == "z1 < z0"


def test_a_tie_as_measured_takes_a_prediction_inside_its_interval_only():
    t = _transfer()
    z1, z2 = [49.3, 48.9, 50.2], [48.1, 52.6, 47.0]  # differences -1.2, +3.7, -3.2: no order
    near = t.orderings([_row(t, 1, z1, 47.6), _row(t, 2, z2, 47.9)])[0]
    (pair,) = near.pairs
    assert not pair.resolved and pair.low_s < 0 < pair.high_s
    assert near.measured == "z2 < z1" and near.predicted == "z1 < z2" and not near.same and near.right
    far = t.orderings([_row(t, 1, z1, 40.0), _row(t, 2, z2, 60.0)])[0]
    assert not far.pairs[0].resolved and not far.right  # a 20 ms gap where the rounds find none


def test_the_summary_counts_groups_right_by_the_rounds_beside_the_medians():
    t = _transfer()
    rows = [_row(t, 0, [40.0, 41.0, 40.5], 38.0), _row(t, 1, [49.3, 48.9, 50.2], 47.6),
            _row(t, 2, [48.1, 52.6, 47.0], 47.9), _row(t, 3, [90.0, 92.0, 91.0], 88.0)]
    for row in rows:
        row.update(pred_mem=1.0, meas_mem=1.0, pred_tp=1 / row["pred_step_s"], meas_tp=1 / row["meas_step_s"])
    s = t.summary(rows)
    assert (s["ordered"], s["right"], s["groups"], s["pairs"], s["resolved"]) == (0, 1, 1, 6, 5)
    assert t.ordering_text(s) == "ordering 0/1 (1/1 by the rounds)"


def test_the_rounds_rank_themselves_against_the_others_median():
    accuracy = _transfer().accuracy

    def measured(rounds: list[float], samples: int = 8) -> tuple[None, dict, None]:
        median = sorted(rounds)[1]
        return None, {"step_rounds_s": rounds, "step_time_s": median, "throughput": samples / median}, None

    # three configurations, each round the same order: every round agrees with the others
    steady = [measured([1.0, 1.1, 1.05]), measured([2.0, 2.1, 2.05]), measured([3.0, 3.2, 3.1])]
    assert accuracy.rounds_ranking_line(steady).endswith("1.000, 1.000, 1.000 (round order)")
    # the last round swaps the two fastest, which turns the median of any two rounds with it: each
    # round agrees with the rest on two of the three pairs
    swapped = [measured([1.0, 1.0, 2.2]), measured([2.0, 2.0, 1.1]), measured([3.0, 3.0, 3.0])]
    assert accuracy.rounds_ranking_line(swapped).endswith("0.333, 0.333, 0.333 (round order)")
    assert accuracy.rounds_ranking_line([measured([1.0, 2.0]), measured([2.0, 3.0])]) is None
