"""Choosing which predictions to verify: cover the model's doubt, trust the ranking outside it."""

import pytest

from simtune.space import Trial
from simtune.metrics import metric
from simtune.naming import experiment_name
from simtune.search.doubt import choose_candidates, novelty
from simtune.search.forecast import Forecast

THROUGHPUT = metric("throughput")


def forecast(stage, mbs, value, gas=1, knobs=(), feasible=True, **fields):
    trial = Trial(stage, mbs, gas, knobs, **fields)
    return Forecast(trial=trial, name=experiment_name(trial), estimate=None, step_s=1.0, value=value, memory_bytes=1,
                    limit_bytes=2, feasible=feasible)


def names(candidates):
    return [c.forecast.name for c in candidates]


# a leader, near-copies of it that differ only in a knob, and other stages a little below
RANKED = [
    forecast(0, 16, 1000.0),
    forecast(0, 16, 999.0, knobs=(("reduce_bucket_size", 50_000_000),)),
    forecast(0, 16, 998.0, knobs=(("reduce_bucket_size", 1_000_000_000),)),
    forecast(0, 15, 990.0),
    forecast(3, 16, 960.0),
    forecast(1, 16, 950.0),
    forecast(2, 16, 700.0),
]


def test_inside_the_doubt_the_picks_spread_over_stages_not_near_copies():
    picked = choose_candidates(RANKED, 3, error=0.10, metric=THROUGHPUT)
    assert names(picked) == ["z0_gas1_tmbspg16", "z3_gas1_tmbspg16", "z1_gas1_tmbspg16"]
    assert picked[0].reason == "best prediction"
    assert "covers another ZeRO stage" in picked[1].reason and "inside the model's 10% error" in picked[1].reason
    assert picked[1].gap == pytest.approx(0.04)


def test_then_other_micro_batch_sizes_before_knob_copies():
    picked = choose_candidates(RANKED, 5, error=0.10, metric=THROUGHPUT)
    assert names(picked)[3] == "z0_gas1_tmbspg15"
    assert "another micro-batch size" in picked[3].reason
    assert picked[4].forecast.trial.zero_knobs  # only knob copies are left inside the doubt


def test_a_confident_model_verifies_its_top_predictions_in_order():
    picked = choose_candidates(RANKED, 3, error=0.0005, metric=THROUGHPUT)
    assert names(picked) == [f.name for f in RANKED[:3]]
    assert "outside the model's" in picked[1].reason


def test_latency_is_better_when_lower():
    ranked = [forecast(2, 8, 10.0), forecast(2, 4, 10.5), forecast(1, 8, 12.0), forecast(0, 8, 30.0)]
    picked = choose_candidates(ranked, 2, error=0.25, metric=metric("latency"))
    assert names(picked) == ["z2_gas1_tmbspg8", "z1_gas1_tmbspg8"]  # 20% worse, inside a 25% doubt
    assert metric("latency").shortfall(10.0, 12.0) == pytest.approx(0.2)
    assert THROUGHPUT.shortfall(1000.0, 960.0) == pytest.approx(0.04)


def test_what_is_already_verified_counts_for_novelty_and_is_not_picked_again():
    verified = [RANKED[0]]
    picked = choose_candidates(RANKED[1:], 1, error=0.10, metric=THROUGHPUT, covered=verified,
                               best_value=RANKED[0].value)
    assert names(picked) == ["z3_gas1_tmbspg16"]


def test_infeasible_forecasts_are_never_picked():
    ranked = [forecast(0, 32, 2000.0, feasible=False), *RANKED[:2]]
    assert "z0_gas1_tmbspg32" not in names(choose_candidates(ranked, 3, error=0.1, metric=THROUGHPUT))
    assert choose_candidates([], 3, error=0.1, metric=THROUGHPUT) == []


def test_novelty_levels():
    base = Trial(1, 8, 2)
    assert novelty(Trial(2, 8, 2), [base]) == 3
    assert novelty(Trial(1, 8, 4), [base]) == 2
    assert novelty(Trial(1, 8, 2, offload_optimizer="cpu"), [base]) == 1
    assert novelty(Trial(1, 8, 2, (("reduce_bucket_size", 50_000_000),)), [base]) == 0
