"""Timing helpers of the calibration's microbenchmarks."""

from __future__ import annotations

import time

from simtune.calib.timing import measure_in_turn


def test_calls_taken_in_turn_share_a_burst_instead_of_one_losing_every_repeat():
    order: list[str] = []
    slow_rounds = {0}  # the first round of repeats is slowed for whoever runs in it

    def call(name: str, cost_s: float):
        def run() -> None:
            order.append(name)
            repeat = sum(1 for n in order if n == name) - 1 - 1  # minus the warmup call
            time.sleep(cost_s + (0.02 if repeat in slow_rounds else 0.0))
        return run

    small, large = call("small", 0.001), call("large", 0.004)
    points = measure_in_turn([small, large], lambda: None, warmup=1, repeats=3)
    assert order == ["small", "large"] + ["small", "large"] * 3  # warmups, then rounds in turn
    assert [p["repeats"] for p in points] == [3, 3]
    assert points[0]["min_s"] < points[1]["min_s"]  # the fastest repeats still grow with the cost
    assert points[0]["max_s"] >= 0.02  # the burst landed in one repeat of each, not all of one
    assert points[1]["max_s"] >= 0.02
