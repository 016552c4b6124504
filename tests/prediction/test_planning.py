"""Planning: the configuration space enumerated against the cost model (pure, no launch)."""

import math

import pytest

from simtune.errors import InputError
from simtune.hardware import load_profile
from simtune.model import TrainConfig, estimate
from simtune.model.adapters import model_spec
from simtune.model.links import ring_collectives
from simtune.prediction.planning import (DEFAULT_GRID, LADDER_GROWTH, PLAIN_GRID, best_plan, check_precision, configurations,
                              default_precision, family_ladder, fits, hardware_for, ladder_specs,
                              largest_fitting_model, largest_micro_batch, micro_batch_candidates,
                              throughput_by_micro_batch, trial_of)
from simtune.workloads import load_workload, parameter_count


@pytest.fixture(scope="module")
def v100():
    return load_profile("dgx2-v100-32gb")


@pytest.fixture(scope="module")
def a100():
    return load_profile("dgx-a100-80gb")


@pytest.fixture(scope="module")
def xl():
    return model_spec(load_workload("gpt2-xl"))


def test_nodes_follow_the_gpus_per_node_and_big_groups_use_inter_node_costs(a100):
    one_node = hardware_for(a100, 8)
    assert (one_node.nodes, one_node.ranks_per_node) == (1, 8)
    assert ring_collectives(one_node, 8) == one_node.collectives
    three_nodes = hardware_for(a100, 20)
    assert (three_nodes.nodes, three_nodes.ranks_per_node) == (3, 8)
    assert ring_collectives(three_nodes, 20) == three_nodes.inter_node_collectives
    inter, intra = ring_collectives(three_nodes, 20).allreduce, one_node.collectives.allreduce
    assert inter.bandwidth_bytes_per_s < intra.bandwidth_bytes_per_s
    assert hardware_for(a100, 4).ranks_per_node == 4
    with pytest.raises(InputError):
        hardware_for(a100, 0)


def test_precision_defaults_to_what_the_hardware_has(v100, a100):
    assert default_precision(a100) == "bf16"
    assert default_precision(v100) == "fp16"  # V100 has no bf16
    check_precision(a100, "bf16")
    with pytest.raises(InputError, match="no bf16"):
        check_precision(v100, "bf16")


def test_grid_sizes_per_stage_and_offload_only_where_deepspeed_allows_it():
    sizes = {s: len(configurations(s, 1, 8, "bf16", DEFAULT_GRID)) for s in range(4)}
    # stage 0: checkpointing x2; stages 1/2: 3 buckets x 2 overlap x 2 offload x 2 ckpt;
    # stage 3: x 2 memory settings and 3 offload modes
    assert sizes == {0: 2, 1: 24, 2: 24, 3: 72}
    for stage in range(4):
        for c in configurations(stage, 1, 8, "bf16", DEFAULT_GRID):
            assert not c.offload_optimizer or stage >= 1
            assert not c.offload_param or stage == 3
    assert len(configurations(2, 1, 8, "bf16", PLAIN_GRID)) == 6
    assert all(not c.offload_optimizer and not c.activation_checkpointing
               for c in configurations(3, 4, 8, "bf16", PLAIN_GRID))


@pytest.mark.parametrize("profile_name, precision", [("dgx2-v100-32gb", "fp16"), ("dgx-a100-80gb", "bf16")])
def test_largest_micro_batch_fits_and_one_more_does_not(profile_name, precision, xl):
    profile = load_profile(profile_name)
    hardware = hardware_for(profile, 16)
    for stage in range(4):
        largest = largest_micro_batch(xl, hardware, stage, 16, precision)
        if largest:
            assert fits(xl, hardware, configurations(stage, largest, 16, precision, PLAIN_GRID))
        assert not fits(xl, hardware, configurations(stage, largest + 1, 16, precision, PLAIN_GRID))


@pytest.mark.parametrize("preset", ["gpt2-medium", "gpt2-xl"])
@pytest.mark.parametrize("profile_name", ["dgx2-v100-32gb", "dgx-a100-80gb"])
def test_largest_micro_batch_never_shrinks_with_the_stage(preset, profile_name):
    profile = load_profile(profile_name)
    model = model_spec(load_workload(preset))
    precision = default_precision(profile)
    for gpus in (16, 64):
        hardware = hardware_for(profile, gpus)
        sizes = [largest_micro_batch(model, hardware, s, gpus, precision) for s in range(4)]
        assert sizes == sorted(sizes), sizes


def test_gpt2_xl_does_not_fit_at_stage_0_on_a_32_gb_v100(v100, xl):
    # 16 bytes per parameter of model states alone is 25 GB, before activations and the 2 GiB overhead
    assert largest_micro_batch(xl, hardware_for(v100, 16), 0, 16, "fp16") == 0
    assert throughput_by_micro_batch(xl, hardware_for(v100, 16), 0, 16, "fp16") == ()


def test_micro_batch_candidates_are_powers_of_two_and_the_largest():
    assert micro_batch_candidates(0) == ()
    assert micro_batch_candidates(1) == (1,)
    assert micro_batch_candidates(12) == (1, 2, 4, 8, 12)
    assert micro_batch_candidates(16) == (1, 2, 4, 8, 16)


def test_best_plan_fits_and_beats_every_stage_curve(a100, xl):
    hardware = hardware_for(a100, 16)
    best = best_plan(xl, hardware, 16, "bf16")
    assert best is not None and best.estimate.feasible
    assert best.estimate == estimate(xl, hardware, best.config)
    for stage in range(4):
        for plan in throughput_by_micro_batch(xl, hardware, stage, 16, "bf16", DEFAULT_GRID):
            assert plan.throughput_samples_per_s <= best.throughput_samples_per_s * (1 + 1e-12)
    assert best.config.gradient_accumulation_steps == 1


def test_a_fixed_global_batch_is_split_into_micro_batches_and_accumulation(a100, xl):
    best = best_plan(xl, hardware_for(a100, 16), 16, "bf16", global_batch_size=512)
    c = best.config
    assert c.micro_batch_size * c.gradient_accumulation_steps * 16 == 512
    assert c.global_batch_size == 512
    with pytest.raises(InputError, match="cannot be split evenly"):
        best_plan(xl, hardware_for(a100, 16), 16, "bf16", global_batch_size=500)


def test_nothing_fits_gives_no_plan(v100):
    huge = model_spec(family_ladder(load_workload("gpt2-xl"))[-1].workload)
    assert best_plan(huge, hardware_for(v100, 8), 8, "fp16") is None


def test_names_leave_out_deepspeed_defaults():
    default = TrainConfig(stage=1, micro_batch_size=4, dp_degree=8)
    assert trial_of(default).zero_knobs == ()
    tuned = TrainConfig(stage=3, micro_batch_size=2, dp_degree=8, reduce_bucket_size=50_000_000,
                        stage3_max_live_parameters=100_000_000, stage3_max_reuse_distance=100_000_000,
                        offload_optimizer=True, activation_checkpointing=True)
    trial = trial_of(tuned)
    assert trial.knobs == {"reduce_bucket_size": 50_000_000, "stage3_max_live_parameters": 100_000_000,
                           "stage3_max_reuse_distance": 100_000_000}  # overlap_comm is on by default at stage 3
    assert trial.offload_optimizer == "cpu" and trial.activation_checkpointing


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


def test_largest_model_fits_and_the_next_does_not(a100):
    ladder = family_ladder(load_workload("gpt2-xl"))
    specs = ladder_specs(ladder)
    for gpus in (8, 64):
        hardware = hardware_for(a100, gpus)
        for stage, offload in ((0, "none"), (2, "none"), (3, "none"), (3, "optimizer")):
            found = largest_fitting_model(specs, hardware, stage, gpus, "bf16", offload)
            configs = configurations(stage, 1, gpus, "bf16", DEFAULT_GRID.restricted(offload=offload))
            assert found.index is not None and not found.beyond_ladder
            assert fits(specs[found.index], hardware, configs)
            assert not fits(specs[found.index + 1], hardware, configs)
    assert largest_fitting_model(specs, hardware_for(a100, 8), 0, 8, "bf16", "optimizer") is None
    assert largest_fitting_model(specs, hardware_for(a100, 8), 2, 8, "bf16", "optimizer+parameters") is None


def test_more_gpus_never_fit_a_smaller_model_at_stage_3(a100):
    specs = ladder_specs(family_ladder(load_workload("gpt2-xl")))
    found = [largest_fitting_model(specs, hardware_for(a100, n), 3, n, "bf16").index for n in (8, 16, 32, 64)]
    assert found == sorted(found) and found[-1] > found[0]
