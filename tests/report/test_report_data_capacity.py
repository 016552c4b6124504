"""The data behind every capacity-planning plot and table (gpt2-xl on V100 and A100 spec profiles)."""

import math

import pytest

from simtune.prediction.planning import PLAIN_GRID, Planner, ladder_planners, ladder_specs
from simtune.space import Trial
from simtune.report.data.best_config import STEP_TERM_LABELS
from simtune.report.data.memory import TERM_LABELS, memory_terms
from simtune.report.data.scaling import scaling_efficiencies
from simtune.report.data.training_cost import TOKENS_PER_PARAMETER, training_budget
from simtune.workloads import load_workload


def test_stacked_memory_terms_sum_to_the_total(study):
    for data in study.memory:
        assert data.term_labels == TERM_LABELS
        assert data.limit_bytes == data.device_bytes  # spec profiles: usable memory + fixed overhead
        for panel in data.panels:
            for terms, total, fit in zip(panel.terms_bytes, panel.totals_bytes, panel.fits):
                assert len(terms) == len(TERM_LABELS)
                assert all(t >= 0 for t in terms)
                assert sum(terms) == total
                assert fit == (total <= data.limit_bytes)


def test_memory_terms_cover_the_step_transient_when_it_dominates():
    # stage 0 in mixed precision at micro-batch 1 of a small model: 4 bytes per parameter of fp32
    # gradients in the step exceed the activations, and the bar must still add up
    planner = Planner.from_parts(load_workload("gpt2", seq_len=64), "dgx-a100-80gb", 8, "bf16")
    m = planner.predictor.predict(Trial(stage=0, micro_batch_size=1)).memory
    assert m.step_transient_bytes > m.activations_bytes + m.logits_bytes + m.comm_scratch_bytes
    assert sum(memory_terms(m)) == m.total_bytes


def test_memory_bars_use_the_largest_stage_0_micro_batch_or_1(study):
    v100, a100 = study.memory
    assert v100.micro_batch_size == 1 and "does not fit" in v100.micro_batch_note
    planner = Planner.from_parts(study.request.workload, "dgx-a100-80gb", 16, "bf16", PLAIN_GRID)
    expected = planner.largest_micro_batch(0)
    assert a100.micro_batch_size == expected > 1
    assert a100.panels[0].fits[0]  # stage 0 fits at its own largest size
    assert not v100.panels[0].fits[0]
    assert [p.gpus for p in a100.panels] == [16, 32, 64]


def test_largest_micro_batch_per_stage_is_monotone_and_ends_every_curve(study):
    for data in study.micro_batch:
        for panel in data.panels:
            for checkpointing in (False, True):
                sizes = [panel.largest(s, checkpointing) for s in data.stages]
                assert sizes == sorted(sizes)
            for curve in panel.curves:
                assert curve.largest >= 0
                assert panel.largest(curve.stage, True) >= panel.largest(curve.stage, False)
                if curve.largest:
                    assert curve.micro_batch_sizes[-1] == curve.largest
                    assert all(t > 0 for t in curve.throughputs_samples_per_s)
                else:
                    assert curve.micro_batch_sizes == ()


def test_scaling_efficiency_is_one_at_the_smallest_count(study):
    for series in study.scaling.series:
        assert series.gpus == (16, 32, 64)
        assert series.efficiencies[0] == pytest.approx(1.0)
        for n, t, e in zip(series.gpus, series.throughputs_samples_per_s, series.efficiencies):
            assert e == pytest.approx(t / (n / 16 * series.throughputs_samples_per_s[0]))


def test_scaling_efficiency_starts_where_the_model_first_fits():
    assert scaling_efficiencies((8, 16, 32), (None, 100.0, 150.0)) == (None, 1.0, 0.75)
    assert scaling_efficiencies((8, 16), (None, None)) == (None, None)


def test_gpu_hours_are_time_times_gpus_and_cost_is_gpu_hours_times_price(study):
    cost = study.cost
    assert cost.budget.tokens == 1e10
    assert cost.budget.samples == pytest.approx(1e10 / 1024)
    assert len(cost.runs) == 6
    for run in cost.runs:
        plan = study.plans[(run.profile, run.gpus)]
        assert run.throughput_samples_per_s == plan.throughput_samples_per_s
        assert run.time_s == pytest.approx(cost.budget.samples / plan.throughput_samples_per_s)
        assert run.gpu_hours == pytest.approx(run.time_s * run.gpus / 3600)
        assert run.cost_usd == pytest.approx(run.gpu_hours * 2.0)


def test_the_default_budget_is_twenty_tokens_per_parameter():
    budget = training_budget(None, None, 1024, 1_000_000)
    assert budget.tokens == TOKENS_PER_PARAMETER * 1_000_000 and budget.samples == budget.tokens / 1024
    assert training_budget(None, 500.0, 1024, 1).tokens == 500.0 * 1024


def test_the_largest_model_that_fits_really_fits_and_the_next_size_does_not(study):
    data = study.largest
    specs = ladder_specs(study.ladder)
    assert len(data.cells) == 2 * 3 * (1 + 2 + 2 + 3)  # profiles x counts x (stage, offload) pairs
    for cell in data.cells:
        planner = Planner.from_parts(study.request.workload, cell.profile, cell.gpus, study.precisions[cell.profile])
        planners = ladder_planners(specs, planner)
        assert cell.index is not None
        fitting, next_one = (planners[i].restricted(offload=cell.offload) for i in (cell.index, cell.index + 1))
        assert fitting.fits(fitting.trials(cell.stage, 1))
        assert not cell.beyond_ladder and not next_one.fits(next_one.trials(cell.stage, 1))
    assert data.family == "GPT-2"
    # partitioning more states never fits a smaller model
    for profile in ("dgx2-v100-32gb", "dgx-a100-80gb"):
        for n in (16, 32, 64):
            sizes = [data.parameters_of(data.cell(profile, n, s, "none")) for s in range(4)]
            assert sizes == sorted(sizes)


def test_step_time_terms_sum_to_the_step(study):
    assert study.step_time.term_labels == STEP_TERM_LABELS
    assert len(study.step_time.labels) == sum(1 for b in study.best if b.plan)
    for terms, step in zip(study.step_time.terms_s, study.step_time.steps_s):
        assert sum(terms) == pytest.approx(step, rel=1e-9)
    for best in study.best:
        t = best.plan.estimate.time
        assert sum(t.terms()) == pytest.approx(t.step_s, rel=1e-9)


def test_best_configurations_fit_and_report_their_utilisation(study):
    assert [(b.profile, b.gpus) for b in study.best] == [(p, n) for p in ("dgx2-v100-32gb", "dgx-a100-80gb")
                                                         for n in (16, 32, 64)]
    for best in study.best:
        assert best.plan.estimate.feasible
        assert best.nodes == math.ceil(best.gpus / (16 if best.profile.startswith("dgx2") else 8))
        assert best.mfu == pytest.approx(best.plan.estimate.metrics.flops_per_gpu / best.peak_flop_per_s)
        assert 0 < best.mfu < 1
    assert study.precisions == {"dgx2-v100-32gb": "fp16", "dgx-a100-80gb": "bf16"}


def test_an_autocast_plan_keeps_fp32_states_and_runs_slower():
    from simtune.hardware import load_profile
    from simtune.report import CapacityRequest, capacity_study

    def best(autocast):
        request = CapacityRequest(load_workload("gpt2-medium"), (load_profile("dgx-a100-80gb"),), (8,),
                                  precision="bf16", autocast=autocast)
        return capacity_study(request).plans[("dgx-a100-80gb", 8)]

    plain, autocast = best(False), best(True)
    assert autocast.config.autocast and not plain.config.autocast
    assert autocast.config.state_bytes == 4 and plain.config.state_bytes == 2
    assert autocast.throughput_samples_per_s < plain.throughput_samples_per_s
