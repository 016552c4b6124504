"""Real quick calibrations on two CPU processes (gloo): `simtune calibrate --gpus 2 --quick
--no-engines` as one node, and the same two processes named as two nodes."""

import glob
import re
import time

import pytest

from simtune.calib.thread_pool import PRODUCT_SHAPES
from simtune.cli import main
from simtune.hardware import COLLECTIVE_OPS, load_profile
from simtune.model.adapters import hardware_spec
from simtune.model.links import ring_collectives
from simtune.prediction.learnt_engine_costs import learnt_engine_costs
from simtune.prediction.predictor import Predictor
from simtune.space import Trial
from simtune.workloads import load_workload


@pytest.mark.slow
def test_quick_two_process_calibration_writes_a_valid_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # also on a GPU machine: this test is about CPU ranks
    out = tmp_path / "profiles"
    started = time.perf_counter()
    disk = tmp_path / "nvme"
    disk.mkdir()
    assert main(["calibrate", "--gpus", "2", "--quick", "--no-engines", "--out", str(out), "--name",
                 "ci-cpu-2proc", "--nvme-path", str(disk)]) == 0
    wall_s = time.perf_counter() - started
    stdout = capsys.readouterr().out
    assert f"Saved ci-cpu-2proc to {out / 'ci-cpu-2proc.json'}" in stdout

    profile = load_profile(out / "ci-cpu-2proc.json")  # loading validates every field
    assert profile.kind == "measured" and profile.device.kind == "cpu"
    assert profile.device.count == 2 and profile.device.usable_memory_bytes > 0
    assert "--gpus 2" in profile.provenance.command and "--quick" in profile.provenance.command
    # both ranks wrote and read their files under --nvme-path at once, and removed them
    assert profile.offload.nvme_read_bytes_per_s > 0 and profile.offload.nvme_write_bytes_per_s > 0
    assert f"--nvme-path {disk}" in profile.provenance.command and list(disk.iterdir()) == []
    assert "nvme (node)" in stdout
    assert profile.provenance.torch_version and profile.provenance.deepspeed_version
    assert profile.collectives.applicable and profile.collectives.backend == "gloo"
    assert set(profile.collectives.intra_node) == set(COLLECTIVE_OPS)
    for op, fit in profile.collectives.intra_node.items():
        assert fit.ranks == 2
        assert fit.latency_s >= 0, op
        assert fit.bandwidth_bytes_per_s > 0, op
        assert fit.r2 is not None and fit.r2 <= 1.0
        assert len(fit.points) >= 4
        smallest, largest = fit.points[0], fit.points[-1]
        assert largest.bytes >= 16 * smallest.bytes
        assert largest.stats.min_s > smallest.stats.min_s, op  # measured time grows with size
        assert fit.time_s(largest.bytes) > fit.time_s(smallest.bytes)
    assert "fp32" in profile.compute.curves
    # torch's fused (flash) attention kernel, forward and backward, at its own rate
    attention = profile.compute.attention["fp32"]
    assert 0 < attention.backward_flop_per_s and 0 < attention.forward_flop_per_s <= profile.device.peak_flop_per_s["fp32"]
    assert hardware_spec(profile).compute.attention_for("fp32") is not None
    assert "torch_adamw_foreach" in profile.optimizer.fits
    assert "deepspeed_cpu_adam" in profile.optimizer.fits or "deepspeed_cpu_adam" in profile.optimizer.unavailable
    assert profile.offload.kind == "cpu_memcpy" and profile.offload.cpu_adam_s_per_param > 0
    # a copy into a freshly mapped tensor costs its page faults beyond a copy into one that exists
    assert any(p.direction == "host_fresh" for p in profile.offload.points)
    assert hardware_spec(profile).first_touch_s_per_byte > 0
    # few tokens over a 32 MiB weight cost more than many over a 4 MiB one, timed in turn (one
    # pass can read 0 while the suite's other worker loads the machine: their sum is asserted)
    weights = profile.compute.weight_points
    assert len(weights) == 2 and len({p.fwd_flop for p in weights}) == 1
    cost = hardware_spec(profile).matmul_weights
    assert cost.s_per_byte(32 * 2**20, backward=False) + cost.s_per_byte(32 * 2**20, backward=True) > 0
    # a 128 MiB allreduce beyond the fitted sizes, kept beside the line
    tail = profile.collectives.intra_node["allreduce"].tail_points
    assert [p.elements for p in tail] == [2**25] and tail[0].stats.min_s > 0
    assert profile.collectives.intra_node["allgather"].tail_points == ()
    # a parallel copy at two threads, timed alone and after a gloo all-gather (which throttles the
    # pool: benchmarks/results/openmp_wakeups.txt shows it on an idle machine; beside the other
    # tests' launches the copy alone can wait milliseconds for its worker, so only the record is
    # checked here)
    pool = profile.compute.thread_pool
    assert pool is not None and pool.threads == 2 and pool.elements >= 32768
    assert pool.alone.repeats == pool.throttled.repeats >= 50 and pool.alone.min_s > 0
    assert hardware_spec(profile).pool_wake_s == pool.wake_s >= 0
    assert "thread pool wake" in stdout
    assert [(p.rows, p.depth, p.cols) for p in pool.products] == list(PRODUCT_SHAPES)
    assert all(p.alone.repeats == p.throttled.repeats >= 50 and p.alone.min_s > 0 for p in pool.products)
    assert hardware_spec(profile).pool_product_wake_s == pool.product_wake_s >= 0
    assert "per matrix product" in stdout

    port = re.search(r"--master_port (\d+)", " ".join(profile.provenance.notes)).group(1)
    assert glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_*_{port}_*") == []
    assert wall_s < 240  # target 20 s for the machine; generous for a loaded CI machine

    # --no-engines: the machine only (the engines' costs are measured and checked by
    # tests/search/test_engine_reference.py, in a first search of a large workload)
    assert "Measured DeepSpeed's engines" not in stdout
    assert learnt_engine_costs(profile, "fp32") is None


@pytest.mark.slow
def test_two_ranks_named_as_two_nodes_give_inter_node_fits_that_the_model_uses(tmp_path, monkeypatch, capsys):
    """SIMTUNE_NODE_IDS makes the two processes of this machine two nodes of one rank: the world
    group is then the inter-node link, and there is no group within a node to measure."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("SIMTUNE_NODE_IDS", "node-a,node-b")
    out = tmp_path / "profiles"
    assert main(["calibrate", "--gpus", "2", "--quick", "--out", str(out), "--name", "ci-cpu-2x1"]) == 0
    stdout = capsys.readouterr().out
    assert "Measured DeepSpeed's engines" not in stdout  # two nodes: the engines are measured on one
    assert "intra-node          not applicable: one rank per node" in stdout
    assert "inter-node allreduce" in stdout

    profile = load_profile(out / "ci-cpu-2x1.json")
    assert (profile.device.nodes, profile.device.count_per_node) == (2, 1)
    collectives = profile.collectives
    assert collectives.intra_node == {} and set(collectives.inter_node) == set(COLLECTIVE_OPS)
    assert "2 nodes x 1 ranks" in collectives.note and "SIMTUNE_NODE_IDS" in collectives.note
    for op, fit in collectives.inter_node.items():
        assert fit.ranks == 2 and fit.bandwidth_bytes_per_s > 0, op
        assert fit.points[-1].stats.min_s > fit.points[0].stats.min_s, op

    predictor = Predictor.from_parts(None, load_workload("gpt2-tiny"), profile, world_size=2, precision="fp32")
    assert (predictor.hardware.nodes, predictor.hardware.ranks_per_node) == (2, 1)
    allreduce = ring_collectives(predictor.hardware, 2).allreduce
    assert allreduce.bandwidth_bytes_per_s == collectives.inter_node["allreduce"].bandwidth_bytes_per_s
    assert predictor.predict(Trial(stage=0, micro_batch_size=1)).time.grad_reduce_s > 0
