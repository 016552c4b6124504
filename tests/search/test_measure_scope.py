"""What a search needs measured of its workload: micro-batch sizes up to the largest it runs,
activation checkpointing when it is a choice, the engines with small buckets when a configuration
issues another number of gradient reductions than DeepSpeed's default bucket."""

import pytest

from simtune.space import TuningSpace
from simtune.search.model_inputs import measure_scope
from simtune.workloads import load_workload

BASE = {"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
        "zero_optimization": {"stage": "all"}, "autotuning": {"fast": False}}


def scope(model: str, zero: dict | None = None, world_size: int = 2, **autotuning):
    config = {**BASE, "zero_optimization": zero or BASE["zero_optimization"],
              "autotuning": {**BASE["autotuning"], **autotuning}}
    return measure_scope(TuningSpace.from_config(config, world_size=world_size), load_workload(model, seq_len=64))


def test_a_tiny_model_issues_one_reduction_with_every_default_bucket():
    chosen = scope("gpt2-tiny")
    assert not chosen.bucket_engines and not chosen.checkpointing


def test_gpt2_has_more_parameters_than_the_smallest_default_bucket():
    assert scope("gpt2").bucket_engines  # 124M parameters: 3 buckets of 5e7, 1 of 5e8
    assert not scope("gpt2", fast=True).bucket_engines  # only DeepSpeed's default bucket runs
    assert not scope("gpt2", world_size=1).bucket_engines  # one rank reduces nothing


@pytest.mark.parametrize("zero, expected", [
    ({"stage": "all", "reduce_bucket_size": [50_000, 500_000_000]}, True),  # a tuned small bucket
    ({"stage": 2, "reduce_bucket_size": 50_000}, True),                      # a fixed small bucket
    ({"stage": 0}, False),                                                   # stage 0 has no buckets
])
def test_the_users_bucket_sizes_count(zero, expected):
    assert scope("gpt2-tiny", zero).bucket_engines is expected


def test_checkpointing_is_measured_when_the_search_tunes_it():
    assert scope("gpt2-tiny", tune_activation_checkpointing=True).checkpointing


def test_the_model_is_measured_up_to_the_spaces_largest_micro_batch():
    assert scope("gpt2-tiny", max_train_micro_batch_size_per_gpu=16).larger_micro_batch_sizes == (16,)
    assert scope("gpt2-tiny", max_train_micro_batch_size_per_gpu=8).larger_micro_batch_sizes == ()
    # DeepSpeed's default of 1024 is capped: each size doubles the measurement's cost
    assert scope("gpt2-tiny").larger_micro_batch_sizes == (16, 32)

