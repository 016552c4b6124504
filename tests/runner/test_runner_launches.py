"""Real runs through DeepSpeed's launcher: 6 launches of 1-2 CPU processes, and one on a GPU when
the machine has one. Elsewhere: a Hugging Face Trainer script's runs (tests/search/test_search_hf_trainer.py),
a memory budget exceeded (tests/test_cli_end_to_end.py), a script that ends before the measured
window does (tests/workloads/test_workload_train.py)."""

import json
import time
from pathlib import Path

import psutil
import pytest

from simtune.runner import Experiment, Resources, Runner

SCRIPT = Path(__file__).parents[1] / "data" / "tiny_train.py"
HIDDEN = 128  # tiny_train's default width: Linear(h, 4h) -> GELU -> Linear(4h, h)
MAPPINGS = {"train_micro_batch_size_per_gpu": "--batch_size"}

pytestmark = pytest.mark.slow


def ds_config(stage, mbs, gas=1, world_size=2):
    return {
        "train_micro_batch_size_per_gpu": mbs,
        "gradient_accumulation_steps": gas,
        "train_batch_size": mbs * gas * world_size,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
        "zero_optimization": {"stage": stage},
    }


def make_runner(root, *extra_args, resources=None, **kwargs):
    kwargs.setdefault("arg_mappings", MAPPINGS)
    return Runner(
        (str(SCRIPT), ["--deepspeed", "user_ds.json", "--batch_size", "1", *extra_args]),
        resources or Resources.local(num_gpus=2, accelerator="cpu"),
        root / "results", root / "exps",
        start_profile_step=2, end_profile_step=4, **kwargs,
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A crashing experiment (batch size 3 makes tiny_train raise), then a ZeRO-3 one over a window
    of its own (steps 3..5, the runner's being 2..4)."""
    root = tmp_path_factory.mktemp("runs")
    calls = []
    runner = make_runner(root, "--fail_batch_size", "3", progress=lambda *call: calls.append(call))
    experiments = [Experiment("z0_gas1_tmbspg3", None, ds_config(0, 3)),
                   Experiment("z3_gas2_tmbspg4", None, ds_config(3, 4, gas=2), window=(3, 5))]
    results = runner.run(experiments)
    return root, experiments, results, calls


def test_a_crash_is_recorded_with_its_exception_and_the_next_experiment_runs(first_run):
    root, _, results, calls = first_run
    crashed = results[0]
    assert (crashed.name, crashed.status, crashed.metrics) == ("z0_gas1_tmbspg3", "crashed", None)
    assert crashed.reason == "ValueError: tiny_train was asked to fail (batch size 3)"
    result_dir = Path(crashed.result_dir)
    assert not (result_dir / "metrics.json").exists()
    assert json.loads((result_dir / "exp.json").read_text())["status"] == "crashed"
    assert "Traceback" in (result_dir / "stderr.log").read_text()
    assert [(name, index, total, result.status) for name, index, total, result in calls] == [
        ("z0_gas1_tmbspg3", 0, 2, "crashed"), ("z3_gas2_tmbspg4", 1, 2, "ok")]


def test_zero3_run_measures_steps_split_flops_and_memory(first_run):
    root, experiments, results, _ = first_run
    result = results[1]
    assert result.status == "ok", result.reason
    m = result.metrics
    assert (m["zero_stage"], m["world_size"], m["train_batch_size"], m["gradient_accumulation_steps"]) == (3, 2, 16, 2)
    assert len(m["step_times_s"]) == 3 and all(t > 0 for t in m["step_times_s"])
    assert (m["start_profile_step"], m["end_profile_step"]) == (3, 5)  # the experiment's window
    assert m["step_time_s"] == sorted(m["step_times_s"])[1]
    assert m["throughput"] == pytest.approx(16 / m["step_time_s"])
    assert m["latency"] == pytest.approx(1000 * m["step_time_s"])
    assert 0 < m["fwd_s"] and 0 < m["bwd_s"] and 0 < m["step_s"]
    # each phase's median over the window is at most the longest step (their sum need not be: the
    # medians may come from different steps)
    assert max(m["fwd_s"], m["bwd_s"], m["step_s"]) <= m["step_time_max_s"]
    # 2 flop per multiply-add: forward of both layers, backward of both (no input gradient for the
    # first layer): 5 products of 4 * h * 4h each, per micro-step, times 2 micro-steps.
    assert m["flops_per_step"] == 2 * 5 * 2 * 4 * HIDDEN * 4 * HIDDEN
    assert m["FLOPS_per_gpu"] == pytest.approx(m["flops_per_step"] / m["step_time_s"])
    assert len(m["peak_memory_per_rank"]) == 2 and m["peak_memory_bytes"] == max(m["peak_memory_per_rank"])
    assert m["peak_memory_bytes"] > 50 * 2**20 and m["memory_kind"] == "rss_peak"

    result_dir = Path(result.result_dir)
    on_disk = json.loads((result_dir / "metrics.json").read_text())
    assert on_disk == m
    command = (result_dir / "cmd.txt").read_text()
    assert "--module simtune.probe" in command and "--batch_size 4" in command
    assert f"--deepspeed {result_dir / 'ds_config.json'}" in command
    assert json.loads((result_dir / "ds_config.json").read_text()) == experiments[1].ds_config
    record = json.loads((result_dir / "exp.json").read_text())
    assert record["others_cores"] == result.others_cores >= 0  # the load of other processes during it
    exp = json.loads((root / "exps" / "z3_gas2_tmbspg4.json").read_text())
    assert exp["ds_config"] == experiments[1].ds_config and exp["num_gpus"] == 2


def test_the_run_leaves_no_shared_memory_buffers(first_run):
    root, _, _, _ = first_run
    for exp_json in (root / "results").glob("*/exp.json"):
        port = json.loads(exp_json.read_text())["master_port"]
        assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


def test_rerun_without_overwrite_launches_nothing(first_run):
    root, experiments, results, _ = first_run
    logs = sorted((root / "results").glob("*/stdout.log"))
    before = [path.stat().st_mtime_ns for path in logs]
    started = time.monotonic()
    again = make_runner(root, "--fail_batch_size", "3").run(experiments)
    assert time.monotonic() - started < 3
    assert [path.stat().st_mtime_ns for path in logs] == before
    assert [(r.status, r.reason, r.reused) for r in again] == [(r.status, r.reason, True) for r in results]
    assert again[1].metrics == results[1].metrics


def test_time_out_stops_the_whole_launch(tmp_path):
    runner = make_runner(tmp_path, "--sleep_s", "300", timeout_s=6)
    result, = runner.run([Experiment("z0_gas1_tmbspg2", None, ds_config(0, 2))])
    assert result.status == "timeout" and "6 s" in result.reason
    assert 6 <= result.wall_s < 15
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if result.result_dir in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_a_time_out_is_run_again_only_under_a_longer_time_out(tmp_path):
    experiment = Experiment("z0_gas1_tmbspg2", None, ds_config(0, 2, world_size=1))
    one = Resources.local(num_gpus=1, accelerator="cpu")
    first, = make_runner(tmp_path, resources=one, timeout_s=2).run([experiment])
    assert first.status == "timeout" and not first.reused
    assert json.loads((Path(first.result_dir) / "exp.json").read_text())["timeout_s"] == 2
    same, = make_runner(tmp_path, resources=one, timeout_s=2).run([experiment])
    assert same.status == "timeout" and same.reused
    longer, = make_runner(tmp_path, resources=one, timeout_s=300).run([experiment])
    assert longer.status == "ok" and not longer.reused


def test_hostfile_naming_this_machine_runs_two_experiments_at_once(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    resources = Resources.from_hostfile(hostfile, num_gpus=1, accelerator="cpu")
    assert len(resources.concurrent_slots()) == 2
    runner = make_runner(tmp_path, resources=resources)
    experiments = [Experiment(f"z{stage}_gas1_tmbspg2", None, ds_config(stage, 2, world_size=1)) for stage in (0, 1)]
    started = time.monotonic()
    results = runner.run(experiments)
    elapsed = time.monotonic() - started
    assert [r.status for r in results] == ["ok", "ok"], [r.reason for r in results]
    assert [r.metrics["world_size"] for r in results] == [1, 1]
    commands = [(Path(r.result_dir) / "cmd.txt").read_text() for r in results]
    assert all(f"--hostfile {hostfile}" in c and "--no_ssh_check" in c for c in commands)
    assert sorted(c.split("--include ")[1].split()[0] for c in commands) == ["localhost:0", "localhost:1"]
    assert elapsed < 0.85 * sum(r.wall_s for r in results)  # they overlapped


@pytest.mark.gpu
def test_one_gpu_run_reports_cuda_memory(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    runner = make_runner(tmp_path, resources=Resources.local(num_gpus=1))
    result, = runner.run([Experiment("z2_gas1_tmbspg4", None, ds_config(2, 4, world_size=1))])
    assert result.status == "ok", result.reason
    m = result.metrics
    assert m["memory_kind"] == "cuda_max_allocated"
    assert 0 < m["peak_memory_bytes"] <= m["peak_memory_reserved_bytes"]
    assert m["flops_per_step"] == 5 * 2 * 4 * HIDDEN * 4 * HIDDEN
