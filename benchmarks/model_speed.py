"""How many configurations the cost model evaluates per second (target: 10,000 on 2 cores).

Run from the repository root:

    python benchmarks/model_speed.py > benchmarks/results/model_speed.txt

The space is what a search meets: GPT-2 medium on 8 ranks of an A100-like profile, stages 0-3 x
micro-batch sizes 1-32 x accumulation {1, 2, 4} x bucket sizes x overlap x checkpointing x
offload. "estimate only" times ``estimate()`` on prebuilt configurations; "with config" also
builds each ``TrainConfig`` (validation included), as a search loop does. The first pass over the
space fills the per-model caches (bucket counts per bucket size, partition layouts per degree);
the best of several timed passes afterwards is reported.
"""

from __future__ import annotations

import itertools
import os
import platform
import time

from simtune.model import (CollectiveCost, Collectives, ComputeCurves, EfficiencyCurve, HardwareSpec, ModelSpec,
                           TrainConfig, estimate)
from simtune.model.layout import transformer_param_numels

TARGET_PER_S = 10_000
GIB = 2**30


def gpt2_medium() -> ModelSpec:
    layers, hidden, vocab, seq = 24, 1024, 50257, 1024
    params = sum(transformer_param_numels(layers, hidden, 4 * hidden, vocab, seq))
    flops = 2.0 * params * seq + 4.0 * layers * seq * seq * hidden
    return ModelSpec(parameter_count=params, num_layers=layers, hidden_size=hidden, num_heads=16,
                     intermediate_size=4 * hidden, vocab_size=vocab, seq_len=seq, flops_per_sample_forward=flops,
                     largest_layer_params=vocab * hidden)


def a100_like() -> HardwareSpec:
    link = CollectiveCost(latency_s=20e-6, bandwidth_bytes_per_s=240e9)
    return HardwareSpec(device_memory_bytes=80 * GIB, usable_memory_bytes=78 * GIB, fixed_overhead_bytes=2 * GIB,
                        compute=ComputeCurves(fp32=EfficiencyCurve(((1e9, 4e12), (1e13, 9.75e12))),
                                              bf16=EfficiencyCurve(((1e9, 40e12), (1e12, 120e12), (1e13, 156e12)))),
                        optimizer_s_per_param=1.7e-11, collectives=Collectives(link, link, link),
                        h2d_bandwidth_bytes_per_s=25e9, d2h_bandwidth_bytes_per_s=25e9,
                        cpu_adam_s_per_param=1e-9, ranks_per_node=8)


def space() -> list[dict]:
    points = []
    for stage, mbs, gas, rbs, overlap, ckpt, offload in itertools.product(
            range(4), range(1, 33), (1, 2, 4), (50_000_000, 500_000_000), (False, True), (False, True),
            (False, True)):
        if offload and stage == 0:
            continue
        points.append(dict(stage=stage, micro_batch_size=mbs, gradient_accumulation_steps=gas, dp_degree=8,
                           reduce_bucket_size=rbs, overlap_comm=overlap, activation_checkpointing=ckpt,
                           offload_optimizer=offload))
    return points


def best_rate(run, count: int, passes: int = 5) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return count / best


def main() -> None:
    model, hardware, points = gpt2_medium(), a100_like(), space()
    configs = [TrainConfig(**p) for p in points]
    for config in configs:  # warm the per-model caches
        estimate(model, hardware, config)

    def estimate_only():
        for config in configs:
            estimate(model, hardware, config)

    def with_config():
        for p in points:
            estimate(model, hardware, TrainConfig(**p))

    only = best_rate(estimate_only, len(configs))
    built = best_rate(with_config, len(points))
    feasible = sum(estimate(model, hardware, c).feasible for c in configs)
    print("command: python benchmarks/model_speed.py > benchmarks/results/model_speed.txt")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"space: {len(configs)} configurations of GPT-2 medium ({model.parameter_count:,} parameters) "
          f"on 8 ranks, {feasible} feasible")
    for label, rate in (("estimate only", only), ("with config", built)):
        verdict = "ok" if rate >= TARGET_PER_S else "MISSED"
        print(f"{label}: {rate:,.0f} configurations/s (target {TARGET_PER_S:,}: {verdict}); "
              f"{1e6 / rate:.1f} us each")


if __name__ == "__main__":
    main()
