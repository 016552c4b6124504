"""Verification of the best predictions against the runner's in-memory twin: only K experiments (plus
replacements) run, a predicted-feasible candidate that runs out of memory teaches the model and is
replaced, and the measured best is returned."""

import pytest

from simtune.dsconfig import AutotuningConfig
from simtune.hardware import load_profile
from simtune.prediction.predictor import Predictor
from simtune.prediction.residual import ResidualModel
from simtune.space import TuningSpace
from simtune.search.simulated import SimulatedSearch, SimulateOptions
from simtune.search.twin import TwinRunner, metrics_for
from simtune.workloads import load_workload

CONFIG = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": "all"},
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}, "bf16": {"enabled": True},
          "autotuning": {"max_train_batch_size": 256}}
WORKLOAD = "gpt2-medium@512"


@pytest.fixture(scope="module")
def setup():
    space = TuningSpace.from_config(CONFIG, AutotuningConfig.from_dict(CONFIG["autotuning"]), world_size=8)
    predictor = Predictor.from_parts(space, load_workload("gpt2-medium", 512), load_profile("dgx-a100-80gb"),
                                     world_size=8, precision="bf16")
    return space, predictor


def truth(space, predictor, *, oom=lambda t: False, crash=lambda t: False):
    """Measured = predicted step time x 1.2, and ZeRO-3 x 1.5 more (a cost the model misses)."""
    def outcome(trial):
        if oom(trial):
            return "oom"
        if crash(trial):
            return "crashed"
        step_s = predictor.predict(trial).time.step_s * 1.2 * (1.5 if trial.stage == 3 else 1.0)
        batch = space.global_batch(trial)
        return {**metrics_for(batch / step_s, train_batch_size=batch), "step_time_s": step_s,
                "peak_memory_bytes": predictor.predict(trial).memory.total_bytes}
    return outcome


def search(tmp_path, space, predictor, runner, **options):
    return SimulatedSearch(space, predictor, runner, results_dir=tmp_path, residual=ResidualModel(),
                           workload=WORKLOAD, options=SimulateOptions(search_trials=60, **options))


def test_only_the_top_k_run_and_the_measured_best_is_returned(tmp_path, setup):
    space, predictor = setup
    runner = TwinRunner(truth(space, predictor))
    simulated = search(tmp_path, space, predictor, runner, verify_top=3)
    result = simulated.run()
    assert len(runner.launched) == 3 == len(result.verifications)
    assert len({e.name for e in runner.launched}) == 3
    measured = [v.measurement for v in result.verifications]
    assert result.outcome.best == max(measured, key=lambda m: m.value)
    assert all(m.phase == "verify" and m.status == "ok" for m in measured)
    # the model's ranking is spread over its doubt: three different stages, as all are within 10%
    assert len({v.forecast.trial.stage for v in result.verifications}) == 3
    # every verification fed the residual model, which errs by the factor it was shown
    assert len(simulated.residual.time_samples) == 3
    for v in result.verifications:
        assert v.error == pytest.approx(v.forecast.value / v.measurement.value - 1)
    assert result.predictions == {v.forecast.name: v.forecast.value for v in result.verifications}


def test_a_candidate_that_runs_out_of_memory_is_replaced_and_teaches_the_model(tmp_path, setup):
    space, predictor = setup
    top = search(tmp_path / "plan", space, predictor, None, verify_top=0).run().predicted_best

    def too_big(trial):  # the true memory of the leader's stage is higher than predicted
        return trial.stage == top.trial.stage and trial.micro_batch_size >= top.trial.micro_batch_size

    runner = TwinRunner(truth(space, predictor, oom=too_big))
    simulated = search(tmp_path / "run", space, predictor, runner, verify_top=2)
    result = simulated.run()
    first, *rest = result.verifications
    assert first.forecast.name == top.name and first.measurement.status == "oom"
    assert first.forecast.feasible  # it was predicted to fit
    assert len(runner.launched) == 3 and [v.measurement.status for v in rest] == ["ok", "ok"]
    assert rest[0].replaces == top.name
    assert not any(too_big(v.forecast.trial) for v in rest)  # the corrected model avoids the region
    factor = simulated.residual.memory_factor(WORKLOAD, top.trial.stage)
    assert top.estimate.memory.total_bytes * factor > top.limit_bytes
    assert any("ran out of memory" in note and "multiplied by" in note for note in result.outcome.notes)
    assert result.outcome.best.status == "ok" and result.outcome.best in [v.measurement for v in rest]
    failed = [m for m in result.outcome.measurements if m.status == "oom"]
    assert [m.name for m in failed] == [top.name]


def test_replacements_are_capped(tmp_path, setup):
    space, predictor = setup
    runner = TwinRunner(truth(space, predictor, crash=lambda t: True))
    result = search(tmp_path, space, predictor, runner, verify_top=2).run()
    assert len(runner.launched) == 4  # K plus K replacements
    assert result.outcome.best is None
    assert any("stopped after 4 experiments" in note for note in result.outcome.notes)


def test_verifications_run_side_by_side_when_slots_allow(tmp_path, setup):
    space, predictor = setup
    runner = TwinRunner(truth(space, predictor))
    search(tmp_path, space, predictor, runner, verify_top=3, parallel=2).run()
    assert [len(batch) for batch in runner.batches] == [2, 1]


def test_the_residual_is_saved_only_when_something_was_measured(tmp_path, setup):
    space, predictor = setup
    residual = ResidualModel(path=tmp_path / "residuals" / "p.json")
    nothing = SimulatedSearch(space, predictor, None, results_dir=tmp_path / "a", residual=residual,
                              workload=WORKLOAD, options=SimulateOptions(verify_top=0, search_trials=20))
    nothing.run()
    assert nothing.save_residual() is None and not residual.path.exists()
    runner = TwinRunner(truth(space, predictor))
    measured = SimulatedSearch(space, predictor, runner, results_dir=tmp_path / "b", residual=residual,
                               workload=WORKLOAD, options=SimulateOptions(verify_top=1, search_trials=20))
    measured.run()
    assert measured.save_residual() == residual.path
    assert len(ResidualModel.load(residual.path).time_samples) == 1


def test_the_residual_counts_only_the_runs_it_learnt_from(tmp_path, setup):
    space, predictor = setup
    top = search(tmp_path / "plan", space, predictor, None, verify_top=0).run().predicted_best
    residual = ResidualModel(path=tmp_path / "residuals" / "p.json")
    runner = TwinRunner(truth(space, predictor, crash=lambda t: t == top.trial))
    crashing = SimulatedSearch(space, predictor, runner, results_dir=tmp_path / "a", residual=residual,
                               workload=WORKLOAD, options=SimulateOptions(verify_top=2, search_trials=20))
    result = crashing.run()
    statuses = [v.measurement.status for v in result.verifications]
    assert "crashed" in statuses and statuses.count("ok") == 2
    saved = crashing.save_residual()
    note = crashing.residual_note(saved)
    crashed = statuses.count("crashed")
    assert note.startswith(f"residual model updated with 2 measurement(s) ({crashed} experiment(s) that crashed")
    assert len(ResidualModel.load(saved).time_samples) == 2

    nothing = SimulatedSearch(space, predictor, TwinRunner(truth(space, predictor, crash=lambda t: True)),
                              results_dir=tmp_path / "b", residual=ResidualModel(path=tmp_path / "r" / "q.json"),
                              workload=WORKLOAD, options=SimulateOptions(verify_top=1, search_trials=20))
    nothing.run()
    assert nothing.save_residual() is None  # crashes teach nothing, so nothing is saved


def test_a_close_call_between_the_two_best_measurements_is_noted(tmp_path, setup):
    space, predictor = setup
    exact = truth(space, predictor)

    def scattered(trial, lead):
        metrics = dict(exact(trial))
        value = 100.0 * (1 + lead * trial.stage)  # every stage measured about alike
        step = metrics["train_batch_size"] / value
        return {**metrics, "throughput": value, "step_time_s": step,
                "step_times_s": [step * (1 + 0.05 * ((i * 7) % 5 - 2) / 2) for i in range(20)]}

    close = search(tmp_path / "close", space, predictor, TwinRunner(lambda t: scattered(t, 0.002)),
                   verify_top=3).run()
    notes = [n for n in close.outcome.notes if n.startswith("close call:")]
    assert len(notes) == 1 and close.outcome.best.name in notes[0].split(" measured ")[0]
    far = search(tmp_path / "far", space, predictor, TwinRunner(lambda t: scattered(t, 0.2)), verify_top=3).run()
    assert not any(n.startswith("close call:") for n in far.outcome.notes)
    assert len(far.verifications) == len(close.verifications) == 3  # a note, not another experiment


def test_a_close_call_is_settled_by_more_runs_when_asked(tmp_path, setup):
    space, predictor = setup
    exact = truth(space, predictor)
    runs: dict = {}

    def drifting(trial):
        # first runs: every stage about alike, the higher a little ahead; later runs: the lower 5% per stage ahead
        runs[trial] = runs.get(trial, 0) + 1
        value = 100.0 * (1 + 0.002 * trial.stage) if runs[trial] == 1 else 100.0 * (1 - 0.05 * trial.stage)
        metrics = dict(exact(trial))
        step = metrics["train_batch_size"] / value
        return {**metrics, "throughput": value, "step_time_s": step,
                "step_times_s": [step * (1 + 0.05 * ((i * 7) % 5 - 2) / 2) for i in range(20)]}

    runner = TwinRunner(drifting)
    simulated = search(tmp_path, space, predictor, runner, verify_top=3, confirm_close_calls=2)
    result = simulated.run()
    first_runs = [v.measurement for v in result.verifications if v.measurement.phase == "verify"]
    assert len(first_runs) == 3
    leader, runner_up = sorted(first_runs, key=lambda m: m.value, reverse=True)[:2]
    # 2 more runs of each of the two, alternating with the runner-up first, and nothing else
    assert runner.names[3:] == [f"{runner_up.name}_r2", f"{leader.name}_r2", f"{leader.name}_r3",
                                f"{runner_up.name}_r3"]
    confirmations = [v.measurement for v in result.verifications if v.measurement.phase == "confirm"]
    assert len(confirmations) == 4 and all(m.ok for m in confirmations)
    # the better mean wins (the lower stage here), and its mean is the value returned
    winner = min((leader, runner_up), key=lambda m: m.trial.stage)
    values = [winner.value] + [m.value for m in confirmations if m.name.startswith(winner.name + "_r")]
    assert result.outcome.best.name == winner.name != leader.name
    assert result.outcome.best.value == pytest.approx(sum(values) / 3)
    assert any(n.startswith("close call settled by more runs") and n.endswith(f"{winner.name} is returned")
               for n in result.outcome.notes)
    # one residual sample per configuration (the median of its runs), not copies that would read as held out
    assert len(simulated.residual.time_samples) == 3
    # the extra runs are not candidates of their own: no stage row names one
    assert all(not s.best.name.endswith(("_r2", "_r3")) for s in result.outcome.stages if s.best)
    assert result.predictions[f"{winner.name}_r2"] == result.predictions[winner.name]


def drifting_with(space, predictor, fail):
    """Every stage about alike on the first run; later runs fail where ``fail(trial, run)`` says."""
    exact = truth(space, predictor)
    runs: dict = {}

    def outcome(trial):
        runs[trial] = runs.get(trial, 0) + 1
        if runs[trial] > 1 and fail(trial, runs[trial]):
            return "crashed"
        value = 100.0 * (1 + 0.002 * trial.stage) if runs[trial] == 1 else 100.0 * (1 - 0.05 * trial.stage)
        metrics = dict(exact(trial))
        step = metrics["train_batch_size"] / value
        return {**metrics, "throughput": value, "step_time_s": step,
                "step_times_s": [step * (1 + 0.05 * ((i * 7) % 5 - 2) / 2) for i in range(20)]}
    return outcome


def test_a_configuration_that_fails_when_run_again_loses_the_close_call(tmp_path, setup):
    space, predictor = setup
    plain = search(tmp_path / "plain", space, predictor, TwinRunner(drifting_with(space, predictor, lambda t, r: False)),
                   verify_top=3, confirm_close_calls=1).run()
    winner = plain.outcome.best  # the lower stage of the two, by its mean
    # the same, but the winner's extra run crashes: the other one is returned, and the note says why
    runner = TwinRunner(drifting_with(space, predictor, lambda t, r: t == winner.trial))
    result = search(tmp_path / "crash", space, predictor, runner, verify_top=3, confirm_close_calls=1).run()
    assert len(runner.launched) == 5
    assert result.outcome.best.name != winner.name
    settled = [n for n in result.outcome.notes if n.startswith("close call settled")]
    assert len(settled) == 1 and f"{winner.name} " in settled[0] and "1 of its 1 more runs failed" in settled[0]
    assert any(n.startswith(f"{winner.name}_r2 ended crashed") for n in result.outcome.notes)


def test_a_close_call_whose_extra_runs_all_fail_is_not_settled(tmp_path, setup):
    space, predictor = setup
    runner = TwinRunner(drifting_with(space, predictor, lambda t, r: True))
    result = search(tmp_path, space, predictor, runner, verify_top=3, confirm_close_calls=2).run()
    assert len(runner.launched) == 7
    first_runs = [v.measurement for v in result.verifications if v.measurement.phase == "verify"]
    assert result.outcome.best == max(first_runs, key=lambda m: m.value)  # the single-run best, as without
    assert any(n.startswith("the close call could not be settled") for n in result.outcome.notes)


def test_no_more_runs_without_a_close_call(tmp_path, setup):
    space, predictor = setup
    exact = truth(space, predictor)

    def spread_out(trial):
        metrics = dict(exact(trial))
        value = 100.0 * (1 + 0.2 * trial.stage)
        step = metrics["train_batch_size"] / value
        return {**metrics, "throughput": value, "step_time_s": step,
                "step_times_s": [step * (1 + 0.05 * ((i * 7) % 5 - 2) / 2) for i in range(20)]}

    runner = TwinRunner(spread_out)
    result = search(tmp_path, space, predictor, runner, verify_top=3, confirm_close_calls=2).run()
    assert len(runner.launched) == 3 and not any(n.startswith("close call") for n in result.outcome.notes)


def falling_window(space, predictor):
    """First runs: a 3-step window (3..5) still warming up (44.5 -> 38.4 -> 30.7 s), every stage
    about alike; later runs: the lower stage 5% ahead per stage."""
    exact = truth(space, predictor)
    runs: dict = {}

    def outcome(trial):
        runs[trial] = runs.get(trial, 0) + 1
        value = 100.0 * (1 + 0.01 * trial.stage) if runs[trial] == 1 else 100.0 * (1 - 0.05 * trial.stage)
        metrics = dict(exact(trial))
        step = metrics["train_batch_size"] / value
        return {**metrics, "throughput": value, "step_time_s": step, "start_profile_step": 3,
                "end_profile_step": 5, "step_times_s": [step * 44.5 / 38.4, step, step * 30.7 / 38.4]}
    return outcome


def test_a_window_too_short_to_compare_the_two_best_is_said_and_not_trusted(tmp_path, setup):
    space, predictor = setup
    runner = TwinRunner(falling_window(space, predictor))
    result = search(tmp_path, space, predictor, runner, verify_top=3).run()
    (note,) = [n for n in result.outcome.notes if n.startswith("window too short to compare")]
    assert "over 3 step(s) (start_profile_step 3 .. end_profile_step 5)" in note
    assert "vary by 36% (" in note and "still falling" in note
    assert '"start_profile_step": 6, "end_profile_step": 13' in note
    assert "the choice between the two is not reliable" in note
    assert len(runner.launched) == 3  # a note, not another experiment


def test_a_window_too_short_is_settled_by_runs_over_a_longer_window(tmp_path, setup):
    space, predictor = setup
    runner = TwinRunner(falling_window(space, predictor))
    result = search(tmp_path, space, predictor, runner, verify_top=3, confirm_close_calls=1).run()
    first_runs = [v.measurement for v in result.verifications if v.measurement.phase == "verify"]
    leader, runner_up = sorted(first_runs, key=lambda m: m.value, reverse=True)[:2]
    again = runner.launched[3:]
    assert [e.name for e in again] == [f"{runner_up.name}_r2", f"{leader.name}_r2"]
    assert all(e.window == (6, 13) for e in again) and all(e.window is None for e in runner.launched[:3])
    # the short first runs are left out: each configuration's value is its longer run's alone
    winner = min((leader, runner_up), key=lambda m: m.trial.stage)
    rerun = next(v.measurement for v in result.verifications if v.measurement.name == f"{winner.name}_r2")
    assert result.outcome.best.name == winner.name != leader.name
    assert result.outcome.best.value == pytest.approx(rerun.value)
    assert any(n.startswith("close call settled by more runs") for n in result.outcome.notes)


def slower_beyond(space, predictor, mbs: int):
    """Measured = predicted up to micro-batch ``mbs``, then slower by 1/8 for each size beyond: a
    cost that grows with the micro-batch size (memory pressure) which the model does not know."""
    def outcome(trial):
        step_s = predictor.predict(trial).time.step_s * (1.0 + max(0, trial.micro_batch_size - mbs) / 8)
        batch = space.global_batch(trial)
        return {**metrics_for(batch / step_s, train_batch_size=batch), "step_time_s": step_s,
                "peak_memory_bytes": predictor.predict(trial).memory.total_bytes}
    return outcome


def test_a_run_that_contradicts_the_model_moves_the_doubt_to_other_micro_batch_sizes(tmp_path, setup):
    space, predictor = setup
    top = search(tmp_path / "plan", space, predictor, None, verify_top=0).run().predicted_best
    assert top.trial.micro_batch_size >= 16  # the model favours the largest micro-batch sizes
    runner = TwinRunner(slower_beyond(space, predictor, 4))
    result = search(tmp_path / "run", space, predictor, runner, verify_top=3).run()
    first, *rest = result.verifications
    assert first.forecast.name == top.name and first.error > 1.0  # far more than the model's 10%
    note = next(n for n in result.outcome.notes if "more than the model's 10% error" in n)
    assert f"the error is now {first.error:.0%}" in note and f"away from {top.trial.micro_batch_size}" in note
    # the remaining runs leave the contradicted size instead of trying it at other stages
    assert all(2 * v.forecast.trial.micro_batch_size <= top.trial.micro_batch_size for v in rest)
    assert all("where the model was contradicted" in v.reason for v in rest)
    assert result.outcome.best.value > 1.5 * first.measurement.value


def test_a_contradiction_by_a_run_whose_step_time_moved_says_so(tmp_path, setup):
    space, predictor = setup
    slower = slower_beyond(space, predictor, 4)

    def with_a_transient(trial):  # the window's first half 30% slower than its second
        metrics = slower(trial)
        return {**metrics, "step_times_s": [1.3 * metrics["step_time_s"]] * 10 + [metrics["step_time_s"]] * 10}

    runner = TwinRunner(with_a_transient)
    result = search(tmp_path, space, predictor, runner, verify_top=3).run()
    note = next(n for n in result.outcome.notes if "more than the model's 10% error" in n)
    assert note.endswith("(its step time moved 30% within its measured window: a transient may account for some "
                         "of it)")
    # each ran once more and moved as much again, so each first run's figure stands
    firsts = [v for v in result.verifications if v.measurement.phase == "verify"]
    assert len(firsts) == 3 and all(v.measurement.ok for v in firsts)
    assert runner.names == [n for v in firsts for n in (v.measurement.name, v.measurement.name + "_rerun")]
    again = [v.measurement for v in result.verifications if v.measurement.phase == "rerun"]
    assert all(m.status == "unsteady" and m.value is None and "moved no less than" in m.reason for m in again)


def transient_once(outcome, trials, *, then="steady"):
    """``outcome`` whose first run of each trial in ``trials`` measured a transient (its window's first
    half 30% slower, its median 15% slow); its next run is steady, or ``then`` (a status) instead."""
    runs: dict = {}

    def run(trial):
        metrics = outcome(trial)
        if trial not in trials:
            return metrics
        runs[trial] = runs.get(trial, 0) + 1
        if runs[trial] > 1:
            return metrics if then == "steady" else then
        step_s = metrics["step_time_s"]
        batch = metrics["train_batch_size"]
        return {**metrics_for(batch / (1.15 * step_s), train_batch_size=batch), "step_time_s": 1.15 * step_s,
                "peak_memory_bytes": metrics["peak_memory_bytes"], "step_times_s": [1.3 * step_s] * 10 + [step_s] * 10}
    return run


def test_a_run_whose_step_time_moved_runs_once_more_and_the_steady_run_stands(tmp_path, setup):
    from simtune.search.outputs import write_outputs

    space, predictor = setup
    top = search(tmp_path / "plan", space, predictor, None, verify_top=0).run().predicted_best
    exact = truth(space, predictor)
    runner = TwinRunner(transient_once(exact, {top.trial}))
    simulated = search(tmp_path / "run", space, predictor, runner, verify_top=3)
    result = simulated.run()
    rerun = top.name + "_rerun"
    assert runner.names[:2] == [top.name, rerun] and len(runner.names) == 4  # one more run, no more
    first, again, *rest = result.verifications
    assert first.measurement.status == "unsteady" and first.measurement.value is None
    assert first.measurement.reason == f"set aside for {rerun}, a steadier run of the same configuration"
    steady = exact(top.trial)["throughput"]
    assert again.measurement.ok and again.measurement.value == pytest.approx(steady)
    assert len(rest) == 2 and all(v.measurement.ok for v in rest)
    # the steady run taught the model (one sample for the configuration) and competes for the best
    samples = simulated.residual.time_samples
    assert len(samples) == 3 and top.name in {s.name for s in samples}  # the sample names the configuration
    sample = next(s for s in samples if s.name == top.name)
    assert sample.measured_step_s == pytest.approx(exact(top.trial)["step_time_s"])
    # the search keeps each experiment once, the first run as set aside
    assert [v.measurement.name for v in simulated.verifications] == [v.measurement.name for v in result.verifications]
    assert simulated.verifications[0].measurement.status == "unsteady"
    assert first.replaces is None and again.replaces is None
    assert result.outcome.best.value == max(v.measurement.value for v in (again, *rest))
    note = next(n for n in result.outcome.notes if n.startswith(f"{top.name}'s step time moved 30%"))
    assert note.endswith(f"so it ran once more as {rerun}, which held still: its figure stands for the configuration")

    summary = write_outputs(tmp_path / "out", result.outcome, 1.0).summary_text
    assert "Failed experiments: 0." in summary
    assert f"Unsteady: {top.name}: its step time moved 30% within the measured window" in summary
    assert summary.count("Unsteady: ") == 1 and f"; set aside for {rerun}, a steadier run" in summary


def test_a_rerun_that_fails_leaves_the_first_runs_figure_and_is_not_replaced(tmp_path, setup):
    space, predictor = setup
    top = search(tmp_path / "plan", space, predictor, None, verify_top=0).run().predicted_best
    runner = TwinRunner(transient_once(truth(space, predictor), {top.trial}, then="crashed"))
    result = search(tmp_path / "run", space, predictor, runner, verify_top=3).run()
    assert len(runner.names) == 4
    first, again, *rest = result.verifications
    assert first.measurement.ok and first.measurement.name == top.name
    assert again.measurement.status == "crashed" and again.measurement.name == top.name + "_rerun"
    assert len(rest) == 2 and all(v.measurement.ok and v.replaces is None for v in rest)
    assert any(n.endswith(f"which ended crashed (twin says crashed): {top.name}'s figure stands")
               for n in result.outcome.notes)


def test_a_run_within_the_error_leaves_the_doubt_where_it_was(tmp_path, setup):
    space, predictor = setup
    result = search(tmp_path, space, predictor, TwinRunner(slower_beyond(space, predictor, 10_000)),
                    verify_top=3).run()
    assert not any("more than the model's" in n for n in result.outcome.notes)
    assert len({v.forecast.trial.stage for v in result.verifications}) == 3


def test_a_stage_that_fails_twice_for_one_reason_is_ruled_out(tmp_path, setup):
    _, predictor = setup
    config = {**CONFIG, "zero_optimization": {"stage": [2, 3]}}
    space = TuningSpace.from_config(config, AutotuningConfig.from_dict(config["autotuning"]), world_size=8)
    exact = truth(space, predictor)
    bad = search(tmp_path / "plan", space, predictor, None, verify_top=0).run().predicted_best.trial.stage
    other = 5 - bad

    def rejects_the_top_stage(trial):  # a failure that does not depend on the size, worded with the sizes
        if trial.stage == bad:
            batch = space.global_batch(trial)
            return "crashed", (f"AssertionError: train_batch_size {batch} != {trial.micro_batch_size} * "
                               f"{trial.gradient_accumulation_steps} * 8")
        return exact(trial)

    runner = TwinRunner(rejects_the_top_stage)
    result = search(tmp_path / "run", space, predictor, runner, verify_top=3).run()
    stages = [v.forecast.trial.stage for v in result.verifications]
    assert stages[0] == bad
    assert stages.count(bad) == 2 and stages.count(other) == 3  # two failures rule it out, no more are spent
    assert any(f"ZeRO stage {bad} is ruled out" in n for n in result.outcome.notes)
    assert result.outcome.best.trial.stage == other


def test_a_rerun_out_of_memory_still_teaches_the_memory_model(tmp_path, setup):
    space, predictor = setup
    top = search(tmp_path / "plan", space, predictor, None, verify_top=0).run().predicted_best
    simulated = search(tmp_path / "run", space, predictor,
                       TwinRunner(transient_once(truth(space, predictor), {top.trial}, then="oom")), verify_top=3)
    result = simulated.run()
    assert simulated.residual.memory_factor(WORKLOAD, top.trial.stage) > 1.0
    note = next(n for n in result.outcome.notes if n.startswith(f"{top.name}'s step time moved"))
    assert f"which ended oom (twin says oom); stage {top.trial.stage} memory predictions are now multiplied by" in note
    assert note.endswith(f"{top.name}'s figure stands")


def test_a_run_that_moved_while_other_processes_loaded_the_machine_is_not_run_again(tmp_path, setup):
    """Their load explains the move, and a second run on a busy machine is disturbed too."""
    import dataclasses

    space, predictor = setup
    top = search(tmp_path / "plan", space, predictor, None, verify_top=0).run().predicted_best

    class BusyTwin(TwinRunner):
        def run(self, experiments):
            return [dataclasses.replace(r, others_cores=1.2) for r in super().run(experiments)]

    runner = BusyTwin(transient_once(truth(space, predictor), {top.trial}))
    result = search(tmp_path / "run", space, predictor, runner, verify_top=3).run()
    assert len(runner.names) == 3 and top.name + "_rerun" not in runner.names
    first = result.verifications[0]
    assert first.measurement.name == top.name and first.measurement.ok and first.measurement.load_note
