"""The space the model explores and the Optuna study over it: bounded by predicted memory, stored in
SQLite, resumed without losing a trial, and checked against the enumerated optimum."""

import sqlite3

import optuna
import pytest

from simtune.dsconfig import AutotuningConfig
from simtune.hardware import load_profile
from simtune.prediction.predictor import Predictor
from simtune.space import TuningSpace
from simtune.search.forecast import Forecaster
from simtune.search.model_space import ModelSpace
from simtune.search.simulated import SimulatedSearch, SimulateOptions
from simtune.search.study import ModelStudy, open_storage, storage_url, study_trials
from simtune.workloads import load_workload

BASE = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": "all"},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}, "fp16": {"enabled": True}}


def make(config, model="gpt2-xl", profile="dgx2-v100-32gb", world_size=16, seq_len=None, **autotuning):
    section = {**config.get("autotuning", {}), **autotuning}
    space = TuningSpace.from_config(config, AutotuningConfig.from_dict(section), world_size=world_size)
    predictor = Predictor.from_parts(space, load_workload(model, seq_len), load_profile(profile),
                                     world_size=world_size, precision="fp16")
    return space, predictor


def test_micro_batch_sizes_stop_at_the_largest_predicted_to_fit():
    space, predictor = make(BASE)
    forecaster = Forecaster(predictor, space)
    model_space = ModelSpace.build(space, lambda t: forecaster.forecast(t).feasible)
    for dims in model_space.stages:
        largest = predictor.max_micro_batch_size(dims.stage, limit=space.max_micro_batch_size)
        assert (dims.predicted_max_mbs or 0) == largest
        if largest:
            assert dims.micro_batch_sizes[-1] == largest
    assert model_space.dims(0).predicted_max_mbs is None  # 1.5B parameters with Adam: not without ZeRO
    points = list(model_space.points())
    assert len(points) == model_space.size() == len(set(points))
    assert all(p in model_space for p in points)
    assert all(p.micro_batch_size * p.gradient_accumulation_steps <= model_space.batch_limit for p in points)


def test_knobs_offload_and_checkpointing_become_dimensions_without_dead_knobs():
    config = {**BASE, "zero_optimization": {"stage": [2, 3], "offload_optimizer": {"device": ["none", "cpu"]}},
              "autotuning": {"fast": False, "tune_activation_checkpointing": True, "max_train_batch_size": 256}}
    space, predictor = make(config)
    forecaster = Forecaster(predictor, space)
    model_space = ModelSpace.build(space, lambda t: forecaster.forecast(t).feasible)
    z3 = model_space.dims(3)
    assert "allgather_partitions" not in dict(z3.knobs) and "allgather_bucket_size" not in dict(z3.knobs)
    assert z3.offload_optimizer == ("none", "cpu") and z3.checkpointing == (False, True)
    assert model_space.batch_limit == 256 // 16
    # offload and checkpointing let larger micro-batches fit than the plain setting would
    plain = predictor.max_micro_batch_size(3, limit=space.max_micro_batch_size)
    assert z3.predicted_max_mbs > plain
    trial = next(p for p in model_space.points() if p.stage == 3)
    assert trial in model_space
    assert all(n in model_space and n != trial for n in model_space.neighbours(trial))
    # an Optuna trial with the parameters of a point draws exactly that point
    assert model_space.sample(optuna.trial.FixedTrial(model_space.params(trial))) == trial


def run_study(tmp_path, space, predictor, n_trials, name="study-under-test"):
    forecaster = Forecaster(predictor, space)
    model_space = ModelSpace.build(space, lambda t: forecaster.forecast(t).feasible)
    study = ModelStudy(model_space, forecaster, storage=open_storage(tmp_path), name=name, seed=0)
    return study.run(n_trials), model_space


def test_the_study_is_stored_and_a_second_run_continues_it(tmp_path):
    config = {**BASE, "autotuning": {"fast": False, "max_train_batch_size": 512}}
    space, predictor = make(config, model="gpt2-medium", profile="dgx-a100-80gb", world_size=8)
    first, model_space = run_study(tmp_path, space, predictor, 30)
    assert model_space.size() > 1000 and first.completed == 30 and first.resumed_from == 0
    kept = {t.number: (t.params, t.value) for t in study_trials("study-under-test", tmp_path)}
    assert len(kept) == 30

    second, _ = run_study(tmp_path, space, predictor, 45)
    assert second.resumed_from == 30 and second.completed == 45
    after = {t.number: (t.params, t.value) for t in study_trials("study-under-test", tmp_path)}
    assert len(after) == 45
    assert {n: after[n] for n in kept} == kept  # nothing finished before was lost or redone

    # Optuna's own tools read it: the best trial is feasible and carries the experiment name
    study = optuna.load_study(study_name="study-under-test", storage=storage_url(tmp_path))
    best = study.best_trial
    assert best.user_attrs["prediction"]["feasible"] and best.user_attrs["name"].startswith("z")
    assert best.value == pytest.approx(second.best.value)  # equal values may differ in a knob the model ignores
    assert all(v <= 0 for v in best.constraints.values())


def test_infeasible_points_are_constrained_not_dropped(tmp_path):
    space, predictor = make(BASE)  # gpt2-xl on 16 V100s: nothing fits at stage 0
    result, _ = run_study(tmp_path, space, predictor, 25)
    trials = study_trials("study-under-test", tmp_path)
    infeasible = [t for t in trials if not t.user_attrs["prediction"]["feasible"]]
    assert infeasible, "the anchors include stage 0, which does not fit"
    assert all(sum(t.constraints.values()) > 0 for t in infeasible)
    assert all(t.value > 0 for t in infeasible)  # the predicted metric is kept for inspection
    assert result.best.feasible and result.best.trial.stage != 0


def test_a_trial_left_running_by_a_killed_process_is_not_counted(tmp_path):
    space, predictor = make(BASE)
    run_study(tmp_path, space, predictor, 5)
    storage = open_storage(tmp_path)
    study = optuna.load_study(study_name="study-under-test", storage=storage)
    study.ask()  # a RUNNING trial, as a SIGKILL during a trial would leave one
    result, _ = run_study(tmp_path, space, predictor, 8)
    states = sqlite3.connect(tmp_path / "study.db").execute("select state from trials").fetchall()
    assert sorted(s for (s,) in states).count("COMPLETE") == 8 and ("FAIL",) in states
    assert result.resumed_from == 5


@pytest.mark.parametrize("metric", ["throughput", "latency"])
def test_the_study_finds_the_models_optimum_of_an_enumerable_space(tmp_path, metric):
    config = {**BASE, "autotuning": {"fast": False, "max_train_batch_size": 512, "metric": metric}}
    space, predictor = make(config, model="gpt2-medium", profile="dgx-a100-80gb", world_size=8, seq_len=512)
    search = SimulatedSearch(space, predictor, None, results_dir=tmp_path, workload="gpt2-medium",
                             options=SimulateOptions(verify_top=0, search_trials=200))
    result = search.run()
    check = result.enumeration
    assert 1000 < check.points <= 20_000 and check.points == result.model_space.size()
    assert check.found_optimum and check.gap == 0
    assert check.study_best.name == check.optimum.name == result.predicted_best.name
    assert "gap 0%" in check.sentence(metric)
    assert result.study.completed <= 200 < check.points  # found with far fewer evaluations than points
    values = [f.value for f in result.study.forecasts if f.feasible]
    assert check.optimum.value == (min(values) if metric == "latency" else max(values))
    # predicted only: the answer is the predicted best, marked so
    assert result.predicted_only and result.outcome.best.status == "predicted"
    assert result.outcome.best.name == check.optimum.name and result.outcome.measurements == ()
