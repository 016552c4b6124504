"""From calib.run_all output to a validated measured profile (no launch)."""

import pytest

from simtune.calibration import build_profile, default_name
from simtune.calibration.build import RawOutputError
from simtune.hardware import bus_factor, load_profile, save_profile, validate
from simtune.model.adapters import cached_plain_bandwidth

# calib.run_all output with known answers
LATENCY_S = {"allreduce": 2e-4, "allgather": 1e-4, "reduce_scatter": 1.5e-4, "broadcast": 5e-5}
BUS_BANDWIDTH = {"allreduce": 2e9, "allgather": 1e9, "reduce_scatter": 1.2e9, "broadcast": 4e9}
ADAM_S_PER_PARAM = 1.5e-9
GELU_S_PER_ELEMENT = 8e-10
COPY_BYTES_PER_S = 10e9
FP32_RATE = 1e11


def stats(seconds: float) -> dict:
    """Fits use the fastest repeat: that one carries the known answer."""
    return {"min_s": seconds, "median_s": 1.1 * seconds, "max_s": 1.3 * seconds, "repeats": 5, "inner": 1}


def raw_output(ranks: int = 2, applicable: bool = True) -> dict:
    matmul = []
    for tokens, hidden in [(64, 128), (256, 256), (512, 512)]:
        fwd_flop = 2 * tokens * hidden * 4 * hidden
        rate = FP32_RATE * min(1.0, fwd_flop / 1e8)  # slower for small work
        matmul.append({
            "dtype": "fp32", "tokens": tokens, "hidden": hidden, "out_features": 4 * hidden,
            "fwd_flop": fwd_flop, "bwd_flop": 2 * fwd_flop,
            "fwd": stats(fwd_flop / rate), "bwd": stats(2 * fwd_flop / rate),
        })
    elementwise = [
        {"op": "gelu", "dtype": "fp32", "elements": n, "width": 256,
         "fwd": stats(1e-5 + 0.4 * GELU_S_PER_ELEMENT * n), "bwd": stats(0.6 * GELU_S_PER_ELEMENT * n)}
        for n in (2**14, 2**18, 2**21)
    ]
    ops = {
        op: [
            {"elements": n, "bytes": 4 * n, **stats(LATENCY_S[op] + bus_factor(op, ranks) * 4 * n / BUS_BANDWIDTH[op])}
            for n in (2**16, 2**18, 2**20, 2**22)
        ]
        for op in LATENCY_S
    }
    collectives = (
        {"applicable": True, "world": {"ranks": ranks, "dtype": "fp32", "ops": ops}}
        if applicable
        else {"applicable": False, "reason": "one rank: there is nothing to communicate"}
    )
    return {
        "calib_schema": 1,
        "quick": True,
        "environment": {
            "host": "test-host", "device_kind": "cpu", "device_name": "CPU Test", "world_size": ranks,
            "ranks_per_node": ranks, "nodes": 1, "omp_num_threads": "1", "torch_threads": 1,
            "cuda_matmul_allow_tf32": False, "torch": "2.x", "cuda": None, "nccl": None,
            "deepspeed": "0.x", "python": "3.x", "backend": "gloo",
        },
        "memory": {
            "kind": "cpu", "host_total_bytes": 16 * 2**30, "host_available_bytes": 12 * 2**30,
            "rss_bytes": 300 * 2**20, "rss_bytes_per_rank": [300 * 2**20, 310 * 2**20][:ranks],
        },
        "copy": {"kind": "cpu_memcpy", "cache_bytes": 32 * 2**20, "points": [
            {"direction": "host_memcpy", "bytes": b, **stats(b / COPY_BYTES_PER_S)} for b in (2**22, 2**24, 2**26)
        ] + [{"direction": "host_memcpy_cached", "bytes": 2**22, **stats(2**22 / (3 * COPY_BYTES_PER_S))}]},
        "compute": {"dtypes": {"fp32": "ok", "bf16": "unsupported: test", "fp16": "unsupported: test"},
                    "matmul": matmul, "elementwise": elementwise},
        "optimizer": {"impls": {
            "torch_adamw_fused": {"device": "cpu", "dtype": "fp32", "points": [
                {"params": p, **stats(1e-4 + ADAM_S_PER_PARAM * p)} for p in (2**16, 2**19, 2**22)
            ]},
            "deepspeed_cpu_adam": {"unavailable": "op cpu_adam is not built"},
        }},
        "collectives": collectives,
        "sections_s": {},
        "elapsed_s": 1.0,
    }




def test_build_recovers_the_known_answers(tmp_path):
    profile = validate(build_profile(raw_output(), command="simtune calibrate --gpus 2 --quick", date="2026-01-01"))
    assert profile.name == "cpu-2proc-test-host"
    assert profile.kind == "measured"
    device = profile.device
    assert device.count_per_node == 2 and device.kind == "cpu"
    assert device.memory_bytes == 8 * 2**30  # RAM share of one rank
    assert device.fixed_overhead_bytes == 310 * 2**20  # largest baseline RSS
    assert device.usable_memory_bytes == device.memory_bytes - device.fixed_overhead_bytes
    assert device.memory_bandwidth_bytes_per_s == pytest.approx(2 * COPY_BYTES_PER_S)  # the cached copy left out
    assert device.cache_bytes == 16 * 2**20  # one rank's share of the host's
    assert cached_plain_bandwidth(profile) == pytest.approx(6 * COPY_BYTES_PER_S)
    for op, fit in profile.collectives.intra_node.items():
        assert fit.latency_s == pytest.approx(LATENCY_S[op], rel=1e-6)
        assert fit.bandwidth_bytes_per_s == pytest.approx(BUS_BANDWIDTH[op], rel=1e-6)
        assert fit.r2 == pytest.approx(1.0)
    assert profile.collectives.inter_node == {}
    assert profile.optimizer.fits["torch_adamw_fused"].s_per_param == pytest.approx(ADAM_S_PER_PARAM)
    assert "deepspeed_cpu_adam" in profile.optimizer.unavailable
    assert profile.offload.kind == "cpu_memcpy"
    assert profile.offload.h2d_bytes_per_s == pytest.approx(COPY_BYTES_PER_S)
    assert profile.offload.cpu_adam_impl == "torch_adamw_fused"
    gelu = profile.compute.elementwise_fit("gelu", "fp32")
    assert gelu.s_per_element == pytest.approx(GELU_S_PER_ELEMENT)
    curve = profile.compute.curves["fp32"]
    assert [p.flop_per_s for p in curve.points] == sorted(p.flop_per_s for p in curve.points)
    assert device.peak_flop_per_s["fp32"] == pytest.approx(FP32_RATE)  # CPU: best measured
    assert profile.compute.unsupported_dtypes.keys() == {"bf16", "fp16"}
    assert load_profile(save_profile(profile, tmp_path)) == profile


def test_vendor_peak_is_used_when_known():
    profile = build_profile(raw_output(), reference_peaks={"fp32": 4 * FP32_RATE}, reference_name="spec-x")
    assert profile.device.peak_flop_per_s["fp32"] == 4 * FP32_RATE
    assert profile.efficiency("fp32", 1e12) == pytest.approx(0.25)
    assert any("spec-x" in s for s in profile.provenance.sources)


def test_a_timed_storage_gives_the_nvme_rates_and_a_note():
    raw = raw_output()
    assert build_profile(raw).offload.nvme_read_bytes_per_s is None
    raw["nvme"] = {"path": "/local_nvme", "read_bytes_per_s": 6e9, "write_bytes_per_s": 3e9, "direct": True,
                   "ranks": 2, "bytes_per_rank": 2**30}
    profile = validate(build_profile(raw))
    assert (profile.offload.nvme_read_bytes_per_s, profile.offload.nvme_write_bytes_per_s) == (6e9, 3e9)
    assert any("1024 MiB under /local_nvme" in note and "O_DIRECT" in note for note in profile.provenance.notes)


def test_one_rank_has_no_collectives():
    profile = validate(build_profile(raw_output(ranks=1, applicable=False)))
    assert not profile.collectives.applicable and profile.collectives.intra_node == {}
    assert default_name(raw_output(ranks=1)) == "cpu-1proc-test-host"


def test_other_raw_schema_is_rejected():
    raw = raw_output()
    raw["calib_schema"] = 7
    with pytest.raises(RawOutputError, match="calib_schema 7"):
        build_profile(raw)
    del raw["calib_schema"]
    raw = raw_output()
    del raw["memory"]
    with pytest.raises(RawOutputError, match="lacks or garbles"):
        build_profile(raw)


def multi_node_raw(nodes: int, per_node: int, inter_slowdown: float = 10.0) -> dict:
    """``calib.run_all`` output of a launch over ``nodes`` nodes: the world spans them (its bus
    bandwidth ``inter_slowdown`` times lower) and, with several ranks per node, each node's group."""
    world = nodes * per_node
    raw = raw_output(ranks=world)
    raw["environment"].update(nodes=nodes, ranks_per_node=per_node, ranks_per_host=world,
                              node_grouping="SIMTUNE_NODE_IDS")
    ops = {
        op: [{"elements": n, "bytes": 4 * n,
              **stats(LATENCY_S[op] + bus_factor(op, world) * 4 * n * inter_slowdown / BUS_BANDWIDTH[op])}
             for n in (2**16, 2**18, 2**20, 2**22)]
        for op in LATENCY_S
    }
    raw["collectives"]["world"] = {"ranks": world, "dtype": "fp32", "ops": ops,
                                   "layout": {"nodes": nodes, "ranks_per_node": per_node}}
    if per_node > 1:
        raw["collectives"]["intra_node"] = {**raw_output(ranks=per_node)["collectives"]["world"],
                                            "layout": {"nodes": 1, "ranks_per_node": per_node}}
    return raw


def test_a_world_spanning_nodes_gives_the_inter_node_fits_and_each_node_the_intra_node_ones():
    profile = validate(build_profile(multi_node_raw(nodes=2, per_node=2)))
    assert (profile.device.nodes, profile.device.count_per_node) == (2, 2)
    collectives = profile.collectives
    for op in LATENCY_S:
        intra, inter = collectives.intra_node[op], collectives.inter_node[op]
        assert (intra.ranks, inter.ranks) == (2, 4)
        assert intra.bandwidth_bytes_per_s == pytest.approx(BUS_BANDWIDTH[op], rel=1e-6)
        assert inter.bandwidth_bytes_per_s == pytest.approx(BUS_BANDWIDTH[op] / 10, rel=1e-6)
        assert inter.latency_s == pytest.approx(LATENCY_S[op], rel=1e-6)
    assert "2 nodes x 2 ranks" in collectives.note and "SIMTUNE_NODE_IDS" in collectives.note
    assert profile.name == "cpu-2x2proc-test-host"


def test_one_rank_per_node_has_inter_node_fits_only():
    raw = multi_node_raw(nodes=2, per_node=1)
    profile = validate(build_profile(raw))
    assert profile.collectives.intra_node == {}
    assert set(profile.collectives.inter_node) == set(LATENCY_S)
    assert "intra-node not applicable (one rank per node)" in profile.collectives.note
    # both ranks share one host's RAM although they are grouped as two nodes
    assert profile.device.memory_bytes == 8 * 2**30


def test_output_without_group_layouts_is_read_as_before():
    raw = raw_output()
    assert "layout" not in raw["collectives"]["world"]
    profile = build_profile(raw)
    assert set(profile.collectives.intra_node) == set(LATENCY_S) and profile.collectives.inter_node == {}
    raw = multi_node_raw(nodes=2, per_node=2)
    for key in ("world", "intra_node"):
        del raw["collectives"][key]["layout"]
    collectives = build_profile(raw).collectives  # the launch's nodes for the world, one for a node's group
    assert (collectives.intra_node["allreduce"].ranks, collectives.inter_node["allreduce"].ranks) == (2, 4)


def test_an_element_wise_fit_that_noise_broke_is_left_out_with_a_note():
    """A burst of other work can make a small size slower than a large one; the time model does
    not use the element-wise fits, so the profile is still built, without that fit."""
    raw = raw_output()
    for entry in raw["compute"]["elementwise"]:
        entry["fwd"] = entry["bwd"] = stats(1e-3 / entry["elements"])  # shrinks as the size grows
    profile = validate(build_profile(raw))
    assert profile.compute.elementwise_fit("gelu", "fp32") is None
    assert any("gelu (fp32) not fitted" in note for note in profile.provenance.notes)


def test_the_dispatch_chain_gives_the_framework_costs_per_op():
    raw = raw_output()
    raw["compute"]["dispatch"] = {"ops": 64, "fwd": stats(64 * 5e-6), "bwd": stats(64 * 3e-6)}
    framework = build_profile(raw, name="t").framework
    assert framework is not None and framework.kind == "measured"
    assert framework.forward_kernel_s == pytest.approx(5e-6) and framework.backward_kernel_s == pytest.approx(3e-6)
    assert framework.zero3_module_s == framework.engine_step_s == 0.0  # the engines are not measured here


def test_output_without_a_dispatch_chain_has_no_framework_costs():
    assert build_profile(raw_output(), name="t").framework is None


def test_a_fresh_copy_beside_the_copy_gives_the_first_touch_cost(tmp_path):
    from simtune.model.adapters import hardware_spec

    raw = raw_output()
    size, first_touch = 2**26, 0.4e-9
    raw["copy"]["points"].append({"direction": "host_fresh", "bytes": size,
                                  **stats(size / COPY_BYTES_PER_S + first_touch * size)})
    profile = build_profile(raw, name="fresh")
    save_profile(profile, tmp_path / "fresh.json")
    spec = hardware_spec(load_profile(str(tmp_path / "fresh.json")))
    assert spec.first_touch_s_per_byte == pytest.approx(first_touch)
    assert hardware_spec(build_profile(raw_output(), name="older")).first_touch_s_per_byte is None
    assert hardware_spec(load_profile("dgx-a100-80gb")).first_touch_s_per_byte is None


def test_a_parallel_copy_timed_alone_and_throttled_gives_the_thread_pool_wake(tmp_path):
    from simtune.model.adapters import hardware_spec
    from simtune.hardware import profile_to_dict

    raw = raw_output()
    raw["thread_pool"] = {"threads": 2, "elements": 65536, "alone": stats(4e-6), "throttled": stats(3e-5)}
    profile = build_profile(raw, name="pool")
    save_profile(profile, tmp_path / "pool.json")
    loaded = load_profile(str(tmp_path / "pool.json"))
    assert loaded == profile and loaded.compute.thread_pool is not None
    assert loaded.compute.thread_pool.wake_s == pytest.approx(1.1 * (3e-5 - 4e-6))  # the medians' difference
    assert hardware_spec(loaded).pool_wake_s == pytest.approx(loaded.compute.thread_pool.wake_s)
    older = build_profile(raw_output(), name="older")
    assert older.compute.thread_pool is None and hardware_spec(older).pool_wake_s is None
    assert "thread_pool" not in profile_to_dict(older)["compute"]  # older profiles keep their fingerprint
    assert loaded.compute.thread_pool.product_wake_s is None and hardware_spec(loaded).pool_product_wake_s is None
    assert "products" not in profile_to_dict(loaded)["compute"]["thread_pool"]  # nor those without products


def test_products_timed_alone_and_throttled_give_the_products_wake(tmp_path):
    from simtune.model.adapters import hardware_spec

    raw = raw_output()
    products = [{"rows": 512, "depth": d, "cols": c, "alone": stats(alone), "throttled": stats(throttled)}
                for d, c, alone, throttled in [(128, 128, 1e-4, 2e-4), (128, 512, 3e-4, 5e-4), (512, 512, 1e-3, 1.05e-3)]]
    raw["thread_pool"] = {"threads": 2, "elements": 65536, "alone": stats(4e-6), "throttled": stats(3e-5),
                          "products": products}
    profile = build_profile(raw, name="pool")
    save_profile(profile, tmp_path / "pool.json")
    loaded = load_profile(str(tmp_path / "pool.json"))
    assert loaded == profile and loaded.compute.thread_pool is not None
    pool = loaded.compute.thread_pool
    assert [(p.depth, p.cols) for p in pool.products] == [(128, 128), (128, 512), (512, 512)]
    assert pool.product_wake_s == pytest.approx(1.1 * 1e-4)  # the median of 110, 220 and 55 us
    assert hardware_spec(loaded).pool_product_wake_s == pytest.approx(pool.product_wake_s)
    assert hardware_spec(loaded).pool_wake_s == pytest.approx(pool.wake_s)


def test_pairs_of_products_of_equal_flops_give_the_matmul_weight_cost(tmp_path):
    from simtune.model.adapters import hardware_spec

    raw = raw_output()
    depth = 1024
    per_byte = {4096: (0.05e-9, 0.2e-9), 40960: (0.25e-9, 0.5e-9)}  # forward, backward s per weight byte
    raw["compute"]["matmul_weights"] = []
    for out, (fwd, bwd) in per_byte.items():
        flop = 2 * 64 * depth * out
        for tokens, width in ((64, out), (64 * out // depth, depth)):  # the large weight, the small one
            size = 4 * depth * width
            raw["compute"]["matmul_weights"].append({
                "dtype": "fp32", "tokens": tokens, "hidden": depth, "out_features": width, "fwd_flop": flop,
                "bwd_flop": 2 * flop, "fwd": stats(flop / FP32_RATE + fwd * size),
                "bwd": stats(2 * flop / FP32_RATE + bwd * size)})
    profile = build_profile(raw, name="weights")
    assert len(profile.compute.weight_points) == 4
    save_profile(profile, tmp_path / "weights.json")
    weights = hardware_spec(load_profile(str(tmp_path / "weights.json"))).matmul_weights
    assert weights is not None and [p[0] for p in weights.points] == [4 * depth * 4096, 4 * depth * 40960]
    assert weights.s_per_byte(4 * depth * 40960, False) == pytest.approx(0.25e-9)
    assert weights.s_per_byte(4 * depth * 40960, True) == pytest.approx(0.5e-9)
    assert weights.s_per_byte(4 * depth * 4096, True) == pytest.approx(0.2e-9)
    # a pair whose large weight ran faster (a busy moment) reads 0, not a negative cost
    raw["compute"]["matmul_weights"][0]["fwd"] = stats(1e-6)
    assert hardware_spec(build_profile(raw, name="w")).matmul_weights.s_per_byte(4 * depth * 4096, False) == 0.0
    # profiles without them (older calibrations, spec profiles) cost FLOPs alone, and keep their
    # fingerprint: the empty field is not written
    older = build_profile(raw_output(), name="older")
    assert hardware_spec(older).matmul_weights is None
    assert hardware_spec(load_profile("dgx-a100-80gb")).matmul_weights is None
    save_profile(older, tmp_path / "older.json")
    assert "weight_points" not in (tmp_path / "older.json").read_text()


def test_a_larger_tail_message_stays_out_of_the_line_and_sets_the_regime_beyond_it(tmp_path):
    from simtune.model.adapters import hardware_spec

    raw = raw_output()
    tail_bytes, slower = 4 * 2**25, 0.5e9  # the bus bandwidth beyond the largest fitted size
    largest = 4 * 2**22
    for op in ("allreduce", "allgather", "reduce_scatter"):
        f = bus_factor(op, 2)
        seconds = LATENCY_S[op] + f * largest / BUS_BANDWIDTH[op] + f * (tail_bytes - largest) / slower
        raw["collectives"]["world"]["ops"][op].append(
            {"elements": 2**25, "bytes": tail_bytes, **stats(seconds), "tail": True})
    profile = build_profile(raw, name="tail")
    allreduce = profile.collectives.intra_node["allreduce"]
    assert allreduce.bandwidth_bytes_per_s == pytest.approx(BUS_BANDWIDTH["allreduce"], rel=1e-3)  # the line as before
    assert [p.bytes for p in allreduce.tail_points] == [tail_bytes]
    assert profile.collectives.intra_node["broadcast"].tail_points == ()
    save_profile(profile, tmp_path / "tail.json")
    costs = hardware_spec(load_profile(str(tmp_path / "tail.json"))).collectives
    assert costs.allgather.beyond_bytes == largest
    assert costs.allgather.beyond_bandwidth_bytes_per_s == pytest.approx(slower, rel=1e-3)
    assert costs.allgather.call_s(tail_bytes, 0.5) == pytest.approx(
        LATENCY_S["allgather"] + 0.5 * largest / BUS_BANDWIDTH["allgather"] + 0.5 * (tail_bytes - largest) / slower,
        rel=1e-3)
    # a tail no slower than the line leaves one regime; a profile without tails writes none
    fast = raw_output()
    fast["collectives"]["world"]["ops"]["allreduce"].append(
        {"elements": 2**25, "bytes": tail_bytes, **stats(LATENCY_S["allreduce"] + tail_bytes / BUS_BANDWIDTH["allreduce"]),
         "tail": True})
    assert hardware_spec(build_profile(fast, name="fast")).collectives.allreduce.beyond_bytes is None
    save_profile(build_profile(raw_output(), name="plain"), tmp_path / "plain.json")
    assert "tail_points" not in (tmp_path / "plain.json").read_text()


def test_the_fused_attention_call_gives_its_rates_and_one_above_the_peak_is_capped(tmp_path):
    raw = raw_output()
    fwd_flop = 4 * 2 * 4 * 256 * 256 * 64 / 2
    entry = {"dtype": "fp32", "batch": 2, "heads": 4, "seq": 256, "head_dim": 64, "causal": True,
             "fwd_flop": fwd_flop, "bwd_flop": 2.5 * fwd_flop,
             "fwd": stats(fwd_flop / (0.4 * FP32_RATE)), "bwd": stats(2.5 * fwd_flop / (0.25 * FP32_RATE))}
    raw["compute"]["attention"] = [entry]
    profile = validate(build_profile(raw, command="simtune calibrate --gpus 2", date="2026-01-01"))
    rate = profile.compute.attention["fp32"]
    assert rate.forward_flop_per_s == pytest.approx(0.4 * FP32_RATE)
    assert rate.backward_flop_per_s == pytest.approx(0.25 * FP32_RATE)
    assert "256 tokens" in rate.basis and load_profile(save_profile(profile, tmp_path)) == profile
    entry["fwd"] = stats(fwd_flop / (3 * FP32_RATE))
    capped = build_profile(raw, command="simtune calibrate --gpus 2", date="2026-01-01")
    assert capped.compute.attention["fp32"].forward_flop_per_s == pytest.approx(FP32_RATE)
    assert any("fused attention (fp32) measured above the peak" in note for note in capped.provenance.notes)
    del raw["compute"]["attention"]  # an older calibration program's output
    assert build_profile(raw, command="simtune calibrate --gpus 2", date="2026-01-01").compute.attention == {}


def test_a_cuda_copy_section_gives_pinned_pageable_and_host_copy_rates():
    """CUDA calibrations time pinned and pageable copies each way and a copy within host memory;
    each rate is the slope over its sizes."""
    from simtune.calibration.build import _offload_and_bandwidth
    from simtune.hardware.profile import OptimizerProfile

    rates = {"h2d": 50e9, "d2h": 48e9, "d2d": 2e12, "h2d_pageable": 12e9, "d2h_pageable": 9e9, "host_memcpy": 15e9}
    raw = {"kind": "pinned_host_device", "points": [
        {"direction": direction, "bytes": b, **stats(2e-5 + b / rate)}
        for direction, rate in rates.items() for b in (2**24, 2**27, 2**29)]}
    offload, memory_bw = _offload_and_bandwidth(raw, OptimizerProfile(fits={}, unavailable={}), None)
    assert memory_bw == pytest.approx(2 * rates["d2d"])
    measured = {"h2d": offload.h2d_bytes_per_s, "d2h": offload.d2h_bytes_per_s,
                "h2d_pageable": offload.h2d_pageable_bytes_per_s, "d2h_pageable": offload.d2h_pageable_bytes_per_s,
                "host_memcpy": offload.host_memcpy_bytes_per_s}
    assert measured == pytest.approx({k: v for k, v in rates.items() if k != "d2d"})
    older = {"kind": "pinned_host_device", "points": [p for p in raw["points"] if p["direction"] in ("h2d", "d2h", "d2d")]}
    offload, _ = _offload_and_bandwidth(older, OptimizerProfile(fits={}, unavailable={}), None)
    assert offload.h2d_pageable_bytes_per_s is None and offload.host_memcpy_bytes_per_s is None


def test_copy_times_that_do_not_grow_with_size_leave_the_largest_copys_rate_and_a_note():
    """A quick CPU calibration times two copy sizes three times each; on a busy machine the smaller
    can read slower than the larger. The calibration then keeps the larger's own rate instead of
    failing."""
    from simtune.calibration.build import _offload_and_bandwidth
    from simtune.hardware.profile import OptimizerProfile

    raw = {"kind": "cpu_memcpy", "points": [{"direction": "host_memcpy", "bytes": 2**24, **stats(9e-3)},
                                            {"direction": "host_memcpy", "bytes": 2**26, **stats(8e-3)}]}
    notes: list[str] = []
    offload, memory_bw = _offload_and_bandwidth(raw, OptimizerProfile(fits={}, unavailable={}), None, notes)
    assert offload.host_memcpy_bytes_per_s == pytest.approx(2**26 / 8e-3)
    assert memory_bw == pytest.approx(2 * 2**26 / 8e-3)
    assert notes == ["The host_memcpy copy times did not grow with size, so no bandwidth can be fitted (rerun "
                     "calibration). The largest host_memcpy copy's own rate stands in."]


def test_a_cuda_calibration_keeps_the_sms_nccl_holds_and_a_cpu_one_none():
    """NCCL runs a channel per thread block: a CUDA calibration reads the GPU's SM count and keeps
    NCCL's blocks over it as the collectives' share of the device; CPU ranks hold no SMs."""
    from simtune.hardware.spec import NCCL_BLOCKS

    raw = raw_output()
    raw["environment"].update(device_kind="cuda", multiprocessors=132)
    assert build_profile(raw, date="2026-01-01").collectives.compute_share == pytest.approx(NCCL_BLOCKS / 132)
    raw["environment"].update(device_kind="cpu", multiprocessors=None)
    assert build_profile(raw, date="2026-01-01").collectives.compute_share is None
    raw["environment"].update(device_kind="cuda")
    del raw["environment"]["multiprocessors"]  # an older calibration program's output
    assert build_profile(raw, date="2026-01-01").collectives.compute_share is None
