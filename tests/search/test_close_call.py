"""The close-call note: the spread of each run's step times, the chance that the two best
verified runs are the other way round, and when the note is given."""

import math
import random
from types import SimpleNamespace

import pytest

from simtune.metrics import metric
from simtune.search.close_call import CLOSE_CALL_CHANCE, chance_reversed, close_call, median_step_error

THROUGHPUT = metric("throughput")


def run(name, value, predicted, *, spread=0.05, steps=20, seed=0):
    """A verified run: ``steps`` step times scattered by ``spread`` around the value's step time."""
    rng = random.Random(seed)
    step = 32 / value
    times = [step * (1 + rng.uniform(-spread, spread)) for _ in range(steps)]
    metrics = {"throughput": value, "step_time_s": step, "step_times_s": times}
    return SimpleNamespace(measurement=SimpleNamespace(name=name, value=value, metrics=metrics, ok=True),
                           forecast=SimpleNamespace(value=predicted))


def test_median_step_error_is_the_robust_standard_error_of_the_median():
    # median 3, absolute deviations 2, 1, 0, 1, 2: MAD 1
    assert median_step_error({"step_times_s": [1, 2, 3, 4, 5]}) == pytest.approx(
        1.2533 * 1.4826 * 1 / 3 / math.sqrt(5))
    # one spike does not move it: the MAD ignores it
    calm = median_step_error({"step_times_s": [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01]})
    spiky = median_step_error({"step_times_s": [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 9.0]})
    assert spiky == pytest.approx(calm, rel=0.5) and spiky < 0.02


@pytest.mark.parametrize("metrics", [None, {}, {"step_times_s": [0.1, 0.1, 0.1, 0.1]},
                                     {"step_times_s": "0.1"}, {"step_times_s": [0.1, -1, 0, True, 0.1, 0.1]}])
def test_median_step_error_needs_enough_step_times(metrics):
    assert median_step_error(metrics) is None


def test_the_chance_of_a_reversed_order_falls_with_the_lead():
    assert chance_reversed(0.0, [0.02, 0.02]) == pytest.approx(0.5)
    one_sigma = math.hypot(0.02, 0.02)
    assert chance_reversed(one_sigma, [0.02, 0.02]) == pytest.approx(0.1587, abs=1e-4)
    assert chance_reversed(0.10, [0.02, 0.02]) < 1e-3
    assert chance_reversed(0.01, [0.0, 0.0]) == 0.0


def test_two_runs_inside_their_noise_are_a_close_call_with_the_models_view():
    runs = [run("z2", 376.4, 425.0, seed=1), run("z0", 373.7, 436.7, seed=2), run("z1", 340.0, 430.5, seed=3)]
    note = close_call(runs, metric=THROUGHPUT)
    assert note is not None
    assert note.startswith("close call: z2 (throughput 376.4) measured 0.7% better than z0 (373.7)")
    assert "the chance that z0 is the better is" in note
    assert "the model predicted z0 2.8% better" in note


def test_runs_far_apart_or_without_step_times_are_no_close_call():
    assert close_call([run("z0", 450.0, 436.7), run("z2", 380.0, 425.0)], metric=THROUGHPUT) is None
    bare = [run("z0", 376.0, 1.0), run("z2", 375.0, 1.0)]
    for r in bare:
        r.measurement.metrics.pop("step_times_s")
    assert close_call(bare, metric=THROUGHPUT) is None
    one = [run("z0", 376.0, 1.0)]
    assert close_call(one, metric=THROUGHPUT) is None


def test_failed_runs_are_left_out_and_the_model_may_agree():
    failed = run("z3", 999.0, 500.0)
    failed.measurement.ok = False
    note = close_call([failed, run("z0", 376.0, 440.0, seed=4), run("z2", 375.0, 420.0, seed=5)],
                      metric=THROUGHPUT)
    assert note is not None and "z3" not in note
    assert note.endswith("the model also ranks z0 first")


def test_for_latency_the_lower_measurement_leads():
    a, b = run("a", 80.0, 81.0, seed=6), run("b", 80.5, 79.0, seed=7)
    note = close_call([b, a], metric=metric("latency"))
    assert note is not None and note.startswith("close call: a (latency 80)")
    assert "the model predicted b 2.5% better" in note


def test_the_threshold_is_the_chance_not_the_lead():
    # the same 3% lead is a close call for noisy runs and not for calm ones
    noisy = close_call([run("a", 412.0, 1.0, spread=0.20, seed=8), run("b", 400.0, 1.0, spread=0.20, seed=9)],
                       metric=THROUGHPUT)
    calm = close_call([run("a", 412.0, 1.0, spread=0.01, seed=8), run("b", 400.0, 1.0, spread=0.01, seed=9)],
                      metric=THROUGHPUT)
    assert noisy is not None and calm is None
    assert 0 < CLOSE_CALL_CHANCE < 0.5
