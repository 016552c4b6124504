"""Fixtures for the cost-model tests: a GPT-2 (124M) shape and an A100-like profile, with builders
(``make_gpt2``, ``make_hardware``) that take field overrides."""

import pytest

from simtune.model.inputs import (CollectiveCost, Collectives, ComputeCurves, EfficiencyCurve, HardwareSpec,
                                  ModelSpec)
from simtune.model.layout import transformer_param_numels

GIB = 2**30


def gpt2_spec(**overrides) -> ModelSpec:
    layers, hidden, vocab, seq = 12, 768, 50257, 1024
    params = sum(transformer_param_numels(layers, hidden, 4 * hidden, vocab, seq))
    fields = dict(parameter_count=params, num_layers=layers, hidden_size=hidden, num_heads=12,
                  intermediate_size=4 * hidden, vocab_size=vocab, seq_len=seq,
                  flops_per_sample_forward=2.0 * params * seq, largest_layer_params=vocab * hidden)
    fields.update(overrides)
    return ModelSpec(**fields)


def hardware_spec(**overrides) -> HardwareSpec:
    link = CollectiveCost(latency_s=20e-6, bandwidth_bytes_per_s=200e9)
    fields = dict(device_memory_bytes=80 * GIB, usable_memory_bytes=78 * GIB, fixed_overhead_bytes=2 * GIB,
                  compute=ComputeCurves(fp32=EfficiencyCurve(((1e9, 5e12), (1e13, 10e12))),
                                        bf16=EfficiencyCurve(((1e9, 50e12), (1e13, 150e12)))),
                  optimizer_s_per_param=2e-11, collectives=Collectives(link, link, link),
                  h2d_bandwidth_bytes_per_s=25e9, d2h_bandwidth_bytes_per_s=25e9, cpu_adam_s_per_param=1e-9,
                  ranks_per_node=8)
    fields.update(overrides)
    return HardwareSpec(**fields)



@pytest.fixture
def make_gpt2():
    return gpt2_spec


@pytest.fixture
def make_hardware():
    return hardware_spec


@pytest.fixture
def gpt2():
    return gpt2_spec()


@pytest.fixture
def hardware():
    return hardware_spec()
