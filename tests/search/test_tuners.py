import pytest

from simtune.errors import ConfigError
from simtune.space import Trial
from simtune.metrics import metric
from simtune.search.tuners import (
    GridSearchTuner,
    ModelBasedTuner,
    RandomTuner,
    TunerSettings,
    make_tuner,
    run_tuner,
    trial_features,
)

THROUGHPUT = metric("throughput")
LATENCY = metric("latency")

GRID = [Trial(1, 8, 1, (("allgather_bucket_size", a), ("reduce_bucket_size", r)))
        for a in (50_000_000, 500_000_000, 1_000_000_000) for r in (50_000_000, 500_000_000, 1_000_000_000)]


def value_of(trial):
    """Throughput grows with reduce_bucket_size, shrinks a little with allgather_bucket_size."""
    knobs = trial.knobs
    return knobs["reduce_bucket_size"] / 1e7 - knobs["allgather_bucket_size"] / 1e9


def measure_with(fn, log):
    def measure(batch):
        log.append(list(batch))
        return [fn(t) for t in batch]
    return measure


def settings(**kw):
    return TunerSettings(**{"num_trials": 50, "early_stopping": 0, **kw})


def test_gridsearch_keeps_lexical_order_and_measures_everything():
    log = []
    outcome = run_tuner(GridSearchTuner(GRID, settings(), THROUGHPUT), measure_with(value_of, log))
    assert [t for t, _ in outcome.evaluated] == GRID
    assert outcome.best[0].knobs == {"allgather_bucket_size": 50_000_000, "reduce_bucket_size": 1_000_000_000}
    assert outcome.stop_reason == "every candidate was measured"


def test_trial_limit_stops_every_tuner():
    for kind in ("gridsearch", "random", "model_based"):
        tuner = make_tuner(kind, GRID, settings(num_trials=4), THROUGHPUT)
        outcome = run_tuner(tuner, measure_with(value_of, []))
        assert len(outcome.evaluated) == 4, kind
        assert "tuner_num_trials (4)" in outcome.stop_reason


def test_batches_hold_batch_size_candidates_and_never_repeat():
    for kind in ("gridsearch", "random", "model_based"):
        log = []
        tuner = make_tuner(kind, GRID, settings(batch_size=4), THROUGHPUT)
        outcome = run_tuner(tuner, measure_with(value_of, log))
        assert [len(b) for b in log] == [4, 4, 1], kind
        measured = [t for t, _ in outcome.evaluated]
        assert len(set(measured)) == len(measured) == len(GRID)


def test_early_stopping_after_n_trials_without_improvement():
    # values fall along the grid order: nothing improves on the first candidate
    log = []
    outcome = run_tuner(GridSearchTuner(GRID, settings(early_stopping=3), THROUGHPUT),
                        measure_with(lambda t: -float(GRID.index(t)), log))
    assert len(outcome.evaluated) == 4  # the best, then three without improvement
    assert outcome.best_index == 0
    assert "no improvement in the last 3 trials" in outcome.stop_reason


def test_early_stopping_counts_from_the_last_improvement():
    values = iter([1.0, 2.0, 1.5, 3.0, 1.0, 1.0, 1.0, 9.0])
    outcome = run_tuner(GridSearchTuner(GRID, settings(early_stopping=3), THROUGHPUT),
                        lambda batch: [next(values) for _ in batch])
    assert [v for _, v in outcome.evaluated] == [1.0, 2.0, 1.5, 3.0, 1.0, 1.0, 1.0]
    assert outcome.best[1] == 3.0


def test_failed_runs_are_recorded_and_never_best():
    values = iter([None, 1.0, None])
    outcome = run_tuner(GridSearchTuner(GRID[:3], settings(), THROUGHPUT), lambda b: [next(values) for _ in b])
    assert [v for _, v in outcome.evaluated] == [None, 1.0, None]
    assert outcome.best == (GRID[1], 1.0)
    failing = run_tuner(GridSearchTuner(GRID[:3], settings(), THROUGHPUT), lambda b: [None] * len(b))
    assert failing.best is None and len(failing.evaluated) == 3


def test_lower_is_better_picks_the_smallest_value():
    outcome = run_tuner(GridSearchTuner(GRID, settings(), LATENCY), measure_with(value_of, []))
    assert outcome.best[0].knobs == {"allgather_bucket_size": 1_000_000_000, "reduce_bucket_size": 50_000_000}


def test_random_tuner_is_seeded():
    def order(seed):
        return [t for t, _ in run_tuner(RandomTuner(GRID, settings(seed=seed), THROUGHPUT),
                                        measure_with(value_of, [])).evaluated]
    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(order(3)) == sorted(GRID)


def test_model_based_exploits_the_model_after_the_random_start():
    # no exploration: after two random picks the model must head for large reduce_bucket_size
    tuner = ModelBasedTuner(GRID, settings(num_trials=5, exploration_rate=0.0, seed=1), THROUGHPUT, trial_features)
    outcome = run_tuner(tuner, measure_with(value_of, []))
    assert tuner.model_fits >= 1
    later = [t.knobs["reduce_bucket_size"] for t, _ in outcome.evaluated[2:]]
    assert max(later) == 1_000_000_000
    assert outcome.best[0].knobs["reduce_bucket_size"] == 1_000_000_000


def test_model_based_treats_failures_as_worst():
    tuner = ModelBasedTuner(GRID, settings(exploration_rate=0.0), THROUGHPUT, trial_features)
    tuner.observe(0, None)
    tuner.observe(1, 5.0)
    tuner.observe(2, 7.0)
    labels = tuner._relevance_labels()
    assert labels[0] < labels[1] < labels[2]
    lower = ModelBasedTuner(GRID, settings(), LATENCY, trial_features)
    lower.observe(0, None)
    lower.observe(1, 5.0)
    lower.observe(2, 7.0)
    labels = lower._relevance_labels()
    assert labels[0] < labels[2] < labels[1]


def test_full_exploration_rate_is_random_choice():
    tuner = ModelBasedTuner(GRID, settings(exploration_rate=1.0, seed=5), THROUGHPUT, trial_features)
    run_tuner(tuner, measure_with(value_of, []))
    assert tuner.model_fits == 0


def test_trial_features_are_numeric_fields_and_knobs():
    trial = Trial(3, 4, 2, (("overlap_comm", True), ("reduce_bucket_size", 5e8)), "cpu", "none", True)
    assert trial_features(trial) == [3.0, 4.0, 2.0, 1.0, 5e8, 1.0, 0.0, 1.0]


def test_bad_settings_and_unknown_tuner_are_config_errors():
    with pytest.raises(ConfigError):
        TunerSettings(num_trials=0)
    with pytest.raises(ConfigError):
        TunerSettings(exploration_rate=1.5)
    with pytest.raises(ConfigError, match="Unknown tuner_type"):
        make_tuner("bayes", GRID, TunerSettings(), THROUGHPUT)
