"""The measured search's exploration logic, on the in-memory twin of the runner."""

import pytest

from simtune.space import TuningSpace
from simtune.search.measured import MeasuredSearch, MeasureOptions
from simtune.search.memory_bound import MemoryBound, RankMemory
from simtune.search.twin import TwinRunner, metrics_for


def make_space(stage="all", mbs=1, world_size=2, zero=None, **autotuning):
    config = {"train_micro_batch_size_per_gpu": mbs, "zero_optimization": {"stage": stage, **(zero or {})},
              "autotuning": {"max_train_micro_batch_size_per_gpu": 64, **autotuning}}
    return TuningSpace.from_config(config, world_size=world_size)


def linear(limit_by_stage, per_stage=None):
    """Throughput = mbs * stage factor / gas**0.01 (no plateau); runs above the stage's limit are oom."""
    factors = per_stage or {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}

    def outcome(trial):
        if trial.micro_batch_size > limit_by_stage[trial.stage]:
            return "oom"
        return metrics_for(10.0 * trial.micro_batch_size * factors[trial.stage]
                           / trial.gradient_accumulation_steps ** 0.01)
    return outcome


def search(space, outcome, **options):
    twin = TwinRunner(outcome)
    fits = options.pop("fits", None)
    result = MeasuredSearch(space, twin, MeasureOptions(**options), fits=fits).run()
    return twin, result


def test_stages_are_explored_in_increasing_order():
    twin, result = search(make_space(), linear({0: 8, 1: 8, 2: 8, 3: 8}), stop_at_worse_stage=False)
    stages = [e.trial.stage for e in twin.launched]
    assert stages == sorted(stages)
    assert set(stages) == {0, 1, 2, 3}
    assert [s.stage for s in result.stages] == [0, 1, 2, 3]


def test_largest_mbs_is_the_upper_bound_then_a_binary_search():
    twin, result = search(make_space(stage=0), linear({0: 37}))
    assert twin.names[:8] == [
        "z0_gas1_tmbspg1", "z0_gas1_tmbspg64",  # start, upper bound (fails)
        "z0_gas1_tmbspg32", "z0_gas1_tmbspg48", "z0_gas1_tmbspg40", "z0_gas1_tmbspg36",
        "z0_gas1_tmbspg38", "z0_gas1_tmbspg37",
    ]
    assert result.stages[0].max_micro_batch_size == 37
    # the tuning list: mbs from 37 // 2 = 18 whose gas differs from that of 37, at a global batch of about 37
    assert twin.names[8:] == ["z0_gas2_tmbspg18"]
    assert result.best.name == "z0_gas1_tmbspg37"


def test_the_upper_bound_is_capped_by_max_train_batch_size():
    twin, result = search(make_space(stage=0, max_train_batch_size=20), linear({0: 64}))
    assert twin.names[:2] == ["z0_gas1_tmbspg1", "z0_gas1_tmbspg10"]  # 20 / 2 processes
    assert result.stages[0].max_micro_batch_size == 10
    assert max(e.trial.micro_batch_size * e.trial.gradient_accumulation_steps for e in twin.launched) <= 10


def test_growth_stops_when_the_metric_plateaus():
    def saturating(trial):
        if trial.micro_batch_size > 40:
            return "oom"
        return metrics_for(1000.0 * min(trial.micro_batch_size, 20) + trial.micro_batch_size)

    twin, result = search(make_space(stage=0), saturating)
    # 1 ok, 64 oom, 32 ok (much better), 48 oom, 40 ok but < 5 % better than 32: stop at 40
    assert twin.names[:5] == ["z0_gas1_tmbspg1", "z0_gas1_tmbspg64", "z0_gas1_tmbspg32",
                              "z0_gas1_tmbspg48", "z0_gas1_tmbspg40"]
    assert result.stages[0].max_micro_batch_size == 40
    assert any("plateaus at micro-batch size 40" in n for n in result.notes)


def test_tuning_list_holds_the_global_batch_about_constant():
    twin, result = search(make_space(stage=0, num_tuning_micro_batch_sizes=3), linear({0: 64}))
    runs = [e for e in twin.launched if e.name not in ("z0_gas1_tmbspg1",)]
    assert [e.name for e in runs] == ["z0_gas1_tmbspg64", "z0_gas2_tmbspg32"]
    batches = [e.ds_config["train_micro_batch_size_per_gpu"] * e.ds_config["gradient_accumulation_steps"] * 2
               for e in runs]  # DeepSpeed derives train_batch_size: mbs x gas x 2 processes
    assert batches == [128, 128]


def test_a_user_list_is_run_exactly():
    twin, result = search(make_space(stage=1, mbs=[2, 4, 8]), linear({1: 64}))
    assert sorted(twin.names) == ["z1_gas1_tmbspg8", "z1_gas2_tmbspg4", "z1_gas4_tmbspg2"]
    assert result.stages[0].max_micro_batch_size == 8


def test_a_one_element_list_fixes_the_micro_batch_size():
    twin, _ = search(make_space(stage=[0, 1], mbs=[4]), linear({0: 64, 1: 64}))
    assert twin.names == ["z0_gas1_tmbspg4", "z1_gas1_tmbspg4"]


def test_the_first_stage_falls_back_to_the_minimum_micro_batch_size():
    twin, result = search(make_space(stage=0, mbs=4), linear({0: 2}))
    assert twin.names[:3] == ["z0_gas1_tmbspg4", "z0_gas1_tmbspg1", "z0_gas1_tmbspg64"]
    assert result.stages[0].max_micro_batch_size == 2

    twin, result = search(make_space(stage=[0, 1], mbs=4), linear({0: 0, 1: 0}))
    assert twin.names == ["z0_gas1_tmbspg4", "z0_gas1_tmbspg1", "z1_gas1_tmbspg4", "z1_gas1_tmbspg1"]
    assert result.stages[0].note == "abandoned: neither micro-batch size 4 nor 1 runs (oom)"
    assert result.best is None


def test_a_later_stage_starts_at_the_largest_so_far_and_is_abandoned_if_it_fails_there():
    twin, result = search(make_space(stage=[0, 1, 2]), linear({0: 16, 1: 8, 2: 32}), stop_at_worse_stage=False)
    z1 = [n for n in twin.names if n.startswith("z1")]
    assert z1 == ["z1_gas1_tmbspg16"]
    assert "abandoned" in result.stages[1].note
    z2 = [n for n in twin.names if n.startswith("z2")]
    assert z2[0] == "z2_gas1_tmbspg16"  # stage 2 still starts from stage 0's largest
    assert result.stages[2].max_micro_batch_size == 32


def test_a_stage_worse_by_more_than_5_percent_stops_the_search():
    outcome = linear({s: 8 for s in range(4)}, {0: 1.0, 1: 0.8, 2: 2.0, 3: 2.0})
    twin, result = search(make_space(), outcome)
    assert {e.trial.stage for e in twin.launched} == {0, 1}
    assert result.stages[2].note.startswith("skipped because stage 1 is 20% worse")
    assert any(n.endswith("so later stages are skipped") for n in result.notes)
    assert result.stages[3].names == ()
    assert result.best.trial.stage == 0

    twin, result = search(make_space(), outcome, stop_at_worse_stage=False)
    assert {e.trial.stage for e in twin.launched} == {0, 1, 2, 3}
    assert result.best.trial.stage == 2


def test_latency_is_minimised():
    def outcome(trial):
        if trial.micro_batch_size > 8:
            return "oom"
        latency = {0: 50.0, 1: 40.0, 2: 30.0, 3: 45.0}[trial.stage] * (1 + trial.micro_batch_size / 100)
        return {"throughput": 1.0, "latency": latency, "FLOPS_per_gpu": 1.0}

    twin, result = search(make_space(metric="latency"), outcome)
    assert result.metric.lower_is_better
    assert result.best.trial.stage == 2
    assert result.best.value == min(m.value for m in result.measurements if m.ok)


def test_failed_experiments_are_recorded_and_the_search_goes_on():
    twin, result = search(make_space(stage=0), linear({0: 37}))
    failed = [m for m in result.measurements if not m.ok]
    assert {m.name for m in failed} == {"z0_gas1_tmbspg64", "z0_gas1_tmbspg48", "z0_gas1_tmbspg40",
                                        "z0_gas1_tmbspg38"}
    assert all(m.status == "oom" and m.reason == "twin says oom" for m in failed)
    assert len(result.measurements) == len(twin.launched)


def test_no_experiment_runs_twice():
    twin, result = search(make_space(stage="all", mbs=[4, 8]), linear({s: 64 for s in range(4)}),
                          stop_at_worse_stage=False)
    assert len(twin.names) == len(set(twin.names))


def test_knob_experiments_keep_the_best_mbs_and_gas_and_skip_the_default_setting():
    space = make_space(stage=1, mbs=[4], fast=False)

    def outcome(trial):
        return metrics_for(100.0 + dict(trial.zero_knobs).get("reduce_bucket_size", 500_000_000) / 1e8)

    twin, result = search(space, outcome)
    # allgather_bucket_size has no effect with this torch: only reduce_bucket_size is tuned; its
    # default value 5e8 names the experiment already run
    assert twin.names == ["z1_gas1_tmbspg4", "z1_rbs5.0e+07_gas1_tmbspg4", "z1_rbs1.0e+09_gas1_tmbspg4"]
    assert result.best.name == "z1_rbs1.0e+09_gas1_tmbspg4"
    assert all(e.trial.micro_batch_size == 4 and e.trial.gradient_accumulation_steps == 1 for e in twin.launched)
    assert "gridsearch tuner measured 3 of 3" in result.stages[0].note


def test_knob_tuning_obeys_the_trial_limit():
    space = make_space(stage=2, mbs=[4], fast=False, tuner_num_trials=4, tuner_type="random")
    twin, result = search(space, linear({2: 64}))
    assert len([m for m in result.measurements if m.phase == "tuner"]) <= 4
    assert "tuner_num_trials (4)" in result.stages[0].note


def test_the_memory_estimate_prunes_sizes_and_stages():
    def fits(stage, mbs):
        return None if stage == 3 else (stage >= 1 and mbs <= 20)

    twin, result = search(make_space(), linear({s: 64 for s in range(4)}), fits=fits, stop_at_worse_stage=False)
    assert not any(n.startswith("z0") for n in twin.names)
    assert "memory estimate" in result.stages[0].note
    assert max(e.trial.micro_batch_size for e in twin.launched if e.trial.stage in (1, 2)) == 20
    assert "z3_gas1_tmbspg64" in twin.names  # unknown (None) does not prune


def test_parallel_experiments_run_together():
    twin, _ = search(make_space(stage=1, mbs=[2, 4, 8]), linear({1: 64}), parallel=2)
    assert [len(b) for b in twin.batches] == [2, 1]


def test_names_leave_out_default_knobs():
    space = make_space(stage=1, fast=False)
    assert space.name(space.trial(1, 4, 1, (("reduce_bucket_size", 500_000_000),))) == "z1_gas1_tmbspg4"
    assert space.name(space.trial(1, 4, 1, (("reduce_bucket_size", 50_000_000),))) == \
        "z1_rbs5.0e+07_gas1_tmbspg4"


MIB = 2**20


def with_memory(limit_mbs, fixed=100 * MIB, per_sample=10 * MIB):
    """linear() with a measured peak of ``fixed + per_sample * mbs`` per rank."""
    base = linear({s: limit_mbs for s in range(4)})

    def outcome(trial):
        got = base(trial)
        return got if isinstance(got, str) else {**got, "peak_memory_bytes": fixed + per_sample * trial.micro_batch_size}
    return outcome


def test_measured_peaks_bound_the_sizes_launched_by_the_memory_that_exists():
    # 400 MiB per rank holds mbs 30 (100 + 10 x 30 MiB); the space goes up to 64
    memory = MemoryBound(RankMemory(400 * MIB, "400 MiB per rank"))
    twin = TwinRunner(with_memory(64))
    result = MeasuredSearch(make_space(stage=0), twin, memory=memory).run()
    sizes = [e.trial.micro_batch_size for e in twin.launched]
    # mbs 1 (110 MiB) allows 3 in proportion; the line through 1 and 3 then allows 30; nothing above
    assert sizes[:3] == [1, 3, 30] and max(sizes) == 30
    assert all(m.status == "ok" for m in result.measurements)
    assert result.stages[0].max_micro_batch_size == 30
    (note,) = [n for n in result.notes if "not launched" in n]
    assert note.startswith("stage 0: micro-batch sizes above 30 are not launched (the space goes up to 64): at 31 ")
    assert note.endswith("the line through the peaks measured at 3 and 30 gives 410 MiB per rank, more than 400 MiB "
                         "per rank")


def test_the_cost_models_memory_prediction_bounds_the_sizes_before_any_run():
    predicted = lambda stage, mbs: (100 * MIB + 10 * MIB * mbs, mbs <= 50)  # noqa: E731
    twin = TwinRunner(with_memory(64))
    memory = MemoryBound(RankMemory(250 * MIB, "250 MiB per rank"), predicted, "closed-form gpt2-tiny")
    result = MeasuredSearch(make_space(stage=0, mbs=[1, 8, 16, 32, 64]), twin, memory=memory).run()
    assert sorted(e.trial.micro_batch_size for e in twin.launched) == [1, 8]
    assert "rules out micro-batch sizes [16, 32, 64] (at 16 the cost model (closed-form gpt2-tiny) predicts" \
           in result.stages[0].note


def moving_once(moves: dict, rerun_outcome=None):
    """``linear`` throughput, but the first run of each configuration in ``moves`` (by mbs) has a
    step time that moved 30% within its window, at the given throughput; its rerun holds still
    (or is ``rerun_outcome`` when given: a status, or a move of its own)."""
    runs: dict = {}

    def outcome(trial):
        metrics = linear({1: 64})(trial)
        mbs = trial.micro_batch_size
        runs[mbs] = runs.get(mbs, 0) + 1
        step = metrics["step_time_s"]
        if mbs in moves and runs[mbs] == 1:
            moved = metrics_for(moves[mbs] * 1.0)
            return {**moved, "step_times_s": [1.3 * moved["step_time_s"]] * 10 + [moved["step_time_s"]] * 10}
        if mbs in moves and rerun_outcome is not None:
            return rerun_outcome if isinstance(rerun_outcome, str) else {
                **metrics, "step_times_s": [rerun_outcome * step] * 10 + [step] * 10}
        return {**metrics, "step_times_s": [step] * 20}
    return outcome


def test_a_run_whose_step_time_moved_runs_once_more_and_the_steadier_stands():
    # the first run of mbs 8 moved and read 1000 samples/s, above every steady run: it must not win
    twin, result = search(make_space(stage=1, mbs=[2, 4, 8]), moving_once({8: 1000.0}))
    assert twin.names.count("z1_gas1_tmbspg8_rerun") == 1 and len(twin.names) == 4
    first = next(m for m in result.measurements if m.name == "z1_gas1_tmbspg8")
    again = next(m for m in result.measurements if m.name == "z1_gas1_tmbspg8_rerun")
    assert first.status == "unsteady" and first.value is None and not first.failed
    assert first.reason == "set aside for z1_gas1_tmbspg8_rerun, a steadier run of the same configuration"
    assert again.ok and again.phase == "rerun" and again.value == pytest.approx(80.0)
    assert result.best.name == "z1_gas1_tmbspg8_rerun"
    assert any("so it ran once more as z1_gas1_tmbspg8_rerun, which held still" in n for n in result.notes)


def test_a_rerun_that_moves_as_much_or_fails_leaves_the_first_runs_figure():
    for rerun in (1.5, "crashed"):
        twin, result = search(make_space(stage=1, mbs=[2, 4, 8]), moving_once({8: 90.0}, rerun))
        first = next(m for m in result.measurements if m.name == "z1_gas1_tmbspg8")
        again = next(m for m in result.measurements if m.name == "z1_gas1_tmbspg8_rerun")
        assert first.ok and first.value == pytest.approx(90.0) and result.best.name == "z1_gas1_tmbspg8"
        assert again.value is None and again.status == ("unsteady" if rerun == 1.5 else "crashed")
        assert len(twin.names) == 4  # one more run, no more


def test_a_steady_search_runs_nothing_twice():
    twin, result = search(make_space(stage=1, mbs=[2, 4, 8]), moving_once({}))
    assert not any(n.endswith("_rerun") for n in twin.names) and len(twin.names) == 3
