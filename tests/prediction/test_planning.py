"""Planning: queries over the grid's tuning spaces, every trial estimated by the Predictor (pure, no launch)."""

import math

import pytest

from simtune.errors import InputError
from simtune.hardware import load_profile
from simtune.model import estimate
from simtune.model.links import ring_collectives
from simtune.prediction.planning import (DEFAULT_GRID, LADDER_GROWTH, PLAIN_GRID, Plan, Planner, check_precision,
                                         family_ladder, ladder_planners, ladder_specs, largest_fitting_model,
                                         micro_batch_candidates,
                                         offload_mode)
from simtune.prediction.predictor import Predictor, default_precision
from simtune.space import Trial
from simtune.workloads import load_workload, parameter_count


@pytest.fixture(scope="module")
def v100():
    return load_profile("dgx2-v100-32gb")


@pytest.fixture(scope="module")
def a100():
    return load_profile("dgx-a100-80gb")


@pytest.fixture(scope="module")
def xl():
    return load_workload("gpt2-xl")


def test_nodes_follow_the_gpus_per_node_and_big_groups_use_inter_node_costs(a100, xl):
    one_node = Planner.from_parts(xl, a100, 8).predictor.hardware
    assert (one_node.nodes, one_node.ranks_per_node) == (1, 8)
    assert ring_collectives(one_node, 8) == one_node.collectives
    three_nodes = Planner.from_parts(xl, a100, 20).predictor.hardware
    assert (three_nodes.nodes, three_nodes.ranks_per_node) == (3, 8)
    assert ring_collectives(three_nodes, 20) == three_nodes.inter_node_collectives
    inter, intra = ring_collectives(three_nodes, 20).allreduce, one_node.collectives.allreduce
    assert inter.bandwidth_bytes_per_s < intra.bandwidth_bytes_per_s
    assert Planner.from_parts(xl, a100, 4).predictor.hardware.ranks_per_node == 4
    with pytest.raises(InputError):
        Planner.from_parts(xl, a100, 0)


def test_precision_defaults_to_what_the_hardware_has(v100, a100, xl):
    assert default_precision(a100) == "bf16"
    assert default_precision(v100) == "fp16"  # V100 has no bf16
    assert Planner.from_parts(xl, v100, 16).precision == "fp16"
    check_precision(a100, "bf16")
    with pytest.raises(InputError, match="no bf16"):
        check_precision(v100, "bf16")


def test_grid_sizes_per_stage_and_offload_only_where_deepspeed_allows_it(a100, xl):
    planner = Planner.from_parts(xl, a100, 8)
    sizes = {s: len(planner.trials(s, 1)) for s in range(4)}
    # stage 0: checkpointing x2; stages 1/2: 3 buckets x 2 overlap x 2 offload x 2 ckpt;
    # stage 3: x 2 memory settings and 3 offload modes
    assert sizes == {0: 2, 1: 24, 2: 24, 3: 72}
    for stage in range(4):
        for t in planner.trials(stage, 1):
            assert t.offload_optimizer == "none" or stage >= 1
            assert t.offload_param == "none" or stage == 3
            assert offload_mode(t) is not None  # parameters without the optimizer are not tried
    plain = planner.restricted(offload="none", checkpointing=False)
    assert plain.grid == PLAIN_GRID
    assert len(plain.trials(2, 1)) == 6
    assert all(t.offload_optimizer == "none" and not t.activation_checkpointing for t in plain.trials(3, 4))


def test_the_grid_is_a_tuning_space_and_stage_3_pairs_live_parameters_with_reuse_distance(a100, xl):
    planner = Planner.from_parts(xl, a100, 8)
    for stage in range(4):
        space = DEFAULT_GRID.space(stage, 8)
        assert space.stages == (stage,)
        for trial in planner.trials(stage, 2):
            knobs = trial.knobs
            reuse = knobs.pop("stage3_max_reuse_distance", None)
            assert trial.replace(zero_knobs=knobs) in space
            if stage == 3:
                assert reuse == knobs["stage3_max_live_parameters"]
            else:
                assert reuse is None
    # overlap_comm is tried at stage 1 too (a list in a config with several stages would tune it at 2-3 only)
    assert {t.knobs["overlap_comm"] for t in planner.trials(1, 1)} == {False, True}


def test_planning_and_the_predictor_agree(a100, xl):
    planner = Planner.from_parts(xl, a100, 16)
    for stage in range(4):
        space = DEFAULT_GRID.space(stage, 16)
        predictor = Predictor.from_parts(space, xl, a100, world_size=16, precision="bf16")
        for trial in planner.trials(stage, 4)[::5]:
            plan = planner.plan(trial)
            assert plan.estimate == predictor.predict(trial)
            assert plan.config == predictor.config(trial)
            assert planner.fits([trial]) == plan.estimate.feasible
    # a trial leaving every knob out runs with DeepSpeed's defaults, as the estimate command does
    trial = Trial(stage=2, micro_batch_size=4)
    plain = Predictor.from_parts(None, xl, a100, world_size=16, precision="bf16")
    assert planner.predictor.predict(trial) == plain.predict(trial)


@pytest.mark.parametrize("profile_name", ["dgx2-v100-32gb", "dgx-a100-80gb"])
def test_largest_micro_batch_fits_and_one_more_does_not(profile_name, xl):
    planner = Planner.from_parts(xl, profile_name, 16, grid=PLAIN_GRID)
    for stage in range(4):
        largest = planner.largest_micro_batch(stage)
        if largest:
            assert planner.fits(planner.trials(stage, largest))
        assert not planner.fits(planner.trials(stage, largest + 1))


@pytest.mark.parametrize("preset", ["gpt2-medium", "gpt2-xl"])
@pytest.mark.parametrize("profile_name", ["dgx2-v100-32gb", "dgx-a100-80gb"])
def test_largest_micro_batch_never_shrinks_with_the_stage(preset, profile_name):
    workload = load_workload(preset)
    for gpus in (16, 64):
        planner = Planner.from_parts(workload, profile_name, gpus, grid=PLAIN_GRID)
        sizes = [planner.largest_micro_batch(s) for s in range(4)]
        assert sizes == sorted(sizes), sizes


def test_gpt2_xl_does_not_fit_at_stage_0_on_a_32_gb_v100(v100, xl):
    # 16 bytes per parameter of model states alone is 25 GB, before activations and the 2 GiB overhead
    planner = Planner.from_parts(xl, v100, 16, "fp16", PLAIN_GRID)
    assert planner.largest_micro_batch(0) == 0
    assert planner.throughput_by_micro_batch(0) == ()


def test_micro_batch_candidates_are_powers_of_two_and_the_largest():
    assert micro_batch_candidates(0) == ()
    assert micro_batch_candidates(1) == (1,)
    assert micro_batch_candidates(12) == (1, 2, 4, 8, 12)
    assert micro_batch_candidates(16) == (1, 2, 4, 8, 16)


def test_best_plan_fits_and_beats_every_stage_curve(a100, xl):
    planner = Planner.from_parts(xl, a100, 16, "bf16")
    best = planner.best_plan()
    assert best is not None and best.estimate.feasible
    assert best.estimate == estimate(planner.predictor.model, planner.predictor.hardware, best.config)
    for stage in range(4):
        for plan in planner.throughput_by_micro_batch(stage):
            assert plan.throughput_samples_per_s <= best.throughput_samples_per_s * (1 + 1e-12)
    assert best.trial.gradient_accumulation_steps == 1


def test_a_fixed_global_batch_is_split_into_micro_batches_and_accumulation(a100, xl):
    planner = Planner.from_parts(xl, a100, 16, "bf16")
    best = planner.best_plan(global_batch_size=512)
    t = best.trial
    assert t.micro_batch_size * t.gradient_accumulation_steps * 16 == 512
    assert best.config.global_batch_size == 512
    with pytest.raises(InputError, match="cannot be split evenly"):
        planner.best_plan(global_batch_size=500)


def test_nothing_fits_gives_no_plan(v100):
    huge = family_ladder(load_workload("gpt2-xl"))[-1].workload
    assert Planner.from_parts(huge, v100, 8, "fp16").best_plan() is None


def test_names_leave_out_deepspeed_defaults(a100, xl):
    planner = Planner.from_parts(xl, a100, 8)

    def plan_of(stage: int, mbs: int, **fields: object) -> Plan:
        return planner.plan(next(t for t in planner.trials(stage, mbs)
                                 if all(t.knobs.get(k, getattr(t, k, None)) == v for k, v in fields.items())))

    default = plan_of(1, 4, reduce_bucket_size=500_000_000, overlap_comm=False, activation_checkpointing=False,
                      offload_optimizer="none")
    assert default.name == "z1_gas1_tmbspg4"
    tuned = plan_of(3, 2, reduce_bucket_size=50_000_000, overlap_comm=True, stage3_max_live_parameters=100_000_000,
                    offload_optimizer="cpu", offload_param="none", activation_checkpointing=True)
    # overlap_comm is on by default at stage 3
    assert tuned.name == "z3_rbs5.0e+07_smlp1.0e+08_smrd1.0e+08_oocpu_acT_gas1_tmbspg2"
    assert tuned.config.stage3_max_reuse_distance == 100_000_000 and tuned.config.offload_optimizer


def test_family_ladder_starts_with_the_published_shapes_and_keeps_the_aspect_ratio():
    xl = load_workload("gpt2-xl")
    ladder = family_ladder(xl)
    published = [m for m in ladder if not m.extrapolated]
    assert [m.label for m in published] == ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
    assert ladder[:4] == tuple(published)
    params = [m.parameters for m in ladder]
    assert params == sorted(params)
    for previous, member in zip(ladder[3:], ladder[4:]):
        w = member.workload
        assert w.hidden_size // w.num_heads == 64  # GPT-2's head size
        assert w.intermediate_size == 4 * w.hidden_size
        assert w.hf_config["n_embd"] == w.hidden_size and w.hf_config["n_layer"] == w.num_layers
        assert w.hf_config["n_head"] == w.num_heads
        assert 1.15 < member.parameters / previous.parameters < 1.75
        # GPT-2: L (12 h^2 + 13 h) + V h + positions h + 2 h (tied head)
        h, layers = w.hidden_size, w.num_layers
        assert member.parameters == layers * (12 * h * h + 13 * h) + (w.vocab_size + w.max_positions + 2) * h
    assert math.isclose(LADDER_GROWTH, 2 ** 0.5)
    assert ladder[-1].parameters > 4e12


def test_family_of_a_config_without_presets_is_the_model_and_its_extrapolations(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "gpt2", "n_layer": 4, "n_embd": 256, "n_head": 4, "vocab_size": 1000, '
                      '"n_positions": 128}')
    ladder = family_ladder(load_workload(str(config)))
    assert not ladder[0].extrapolated and ladder[0].parameters == parameter_count(load_workload(str(config)))
    assert all(m.extrapolated for m in ladder[1:])


def test_largest_model_fits_and_the_next_does_not(a100, xl):
    specs = ladder_specs(family_ladder(xl))
    for gpus in (8, 64):
        planners = ladder_planners(specs, Planner.from_parts(xl, a100, gpus, "bf16"))
        for stage, offload in ((0, "none"), (2, "none"), (3, "none"), (3, "optimizer")):
            found = largest_fitting_model(planners, stage, offload)
            assert found.index is not None and not found.beyond_ladder
            fitting, next_one = (planners[i].restricted(offload=offload) for i in (found.index, found.index + 1))
            assert fitting.fits(fitting.trials(stage, 1))
            assert not next_one.fits(next_one.trials(stage, 1))
    planners = ladder_planners(specs, Planner.from_parts(xl, a100, 8, "bf16"))
    assert largest_fitting_model(planners, 0, "optimizer") is None
    assert largest_fitting_model(planners, 2, "optimizer+parameters") is None


def test_more_gpus_never_fit_a_smaller_model_at_stage_3(a100, xl):
    specs = ladder_specs(family_ladder(xl))
    found = [largest_fitting_model(ladder_planners(specs, Planner.from_parts(xl, a100, n, "bf16")), 3).index
             for n in (8, 16, 32, 64)]
    assert found == sorted(found) and found[-1] > found[0]
