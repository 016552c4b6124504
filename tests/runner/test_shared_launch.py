"""Experiments as requests to one shared launch: real runs of tests/data/tiny_train.py on 2 CPU
processes through DeepSpeed's launcher (two shared launches: the crash ends the first), and the
fall-back to a launch each when the shared launch cannot start."""

import json
import sys
from pathlib import Path

import pytest

from simtune.probe.argv import ProbeUsageError, parse_probe_argv
from simtune.runner import Experiment, Resources, Runner
from simtune.runner.executors import Launch, LocalExecutor
from simtune.runner.shared_launch import SharedLaunch, run_arguments
from simtune.watchdog import SHM_DIR

SCRIPT = Path(__file__).parents[1] / "data" / "tiny_train.py"


def ds_config(stage, mbs, gas=1):
    return {"train_micro_batch_size_per_gpu": mbs, "gradient_accumulation_steps": gas,
            "train_batch_size": mbs * gas * 2,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
            "zero_optimization": {"stage": stage}}


def test_run_arguments_are_what_follows_the_probe_flag_and_the_script():
    command = ("deepspeed", "--num_gpus", "2", "--module", "simtune.probe", "--simtune-probe=/r/x/probe.json",
               "train.py", "--deepspeed", "/r/x/ds_config.json", "--flag")
    assert run_arguments(command) == (["--deepspeed", "/r/x/ds_config.json", "--flag"], "/r/x/probe.json")
    with pytest.raises(ValueError):
        run_arguments(("deepspeed", "train.py"))


def test_the_probe_serves_a_folder_or_runs_once_never_both():
    served = parse_probe_argv(["--local_rank=1", "--simtune-serve=/r/shared_launch", "train.py"])
    assert (served.serve_folder, served.settings_path, served.script, served.local_rank) == (
        "/r/shared_launch", None, "train.py", "1")
    for argv in (["--simtune-serve=/f", "--simtune-probe=/p.json", "t.py"], ["--local_rank=0", "t.py"]):
        with pytest.raises(ProbeUsageError):
            parse_probe_argv(argv)


def test_a_shared_launch_that_cannot_start_leaves_the_experiment_to_a_launch_of_its_own(tmp_path):
    result_dir = tmp_path / "z0"
    result_dir.mkdir()
    failing = SharedLaunch(lambda port, folder: [sys.executable, "-c", "raise SystemExit(7)"],
                           lambda port, folder: {}, tmp_path / "shared_launch", str(tmp_path), LocalExecutor())
    alone = Launch("z0", (sys.executable, "-c", "print('ran alone')", "--simtune-probe=p.json", "script.py"),
                   {}, {}, str(tmp_path), result_dir, 60.0)
    records = []
    execution = failing.execute(alone, records.append)
    assert (execution.returncode, execution.timed_out) == (0, False)
    assert (result_dir / "stdout.log").read_text() == "ran alone\n"
    assert failing.given_up is not None and "exit code 7" in failing.given_up
    assert failing.running_pids() == set()
    again = failing.execute(alone, records.append)  # no second try: it runs alone at once
    assert again.returncode == 0 and failing.launches == 1


@pytest.mark.slow
def test_experiments_share_one_launch_until_a_run_crashes(tmp_path):
    runner = Runner((str(SCRIPT), ["--deepspeed", "user_ds.json", "--batch_size", "1", "--fail_batch_size", "3"]),
                    Resources.local(num_gpus=2, accelerator="cpu"), tmp_path / "results", tmp_path / "exps",
                    arg_mappings={"train_micro_batch_size_per_gpu": "--batch_size"}, start_profile_step=2,
                    end_profile_step=4, shared_launch=True)
    shared = runner.shared_launch
    assert shared is not None and runner.parallel == 1
    experiments = [Experiment("z3_gas2_tmbspg4", None, ds_config(3, 4, gas=2)),
                   Experiment("z0_gas1_tmbspg2", None, ds_config(0, 2)),
                   Experiment("z0_gas1_tmbspg3", None, ds_config(0, 3)),
                   Experiment("z1_gas1_tmbspg2", None, ds_config(1, 2))]
    try:
        runner.start_shared_launch()
        first_port = shared._port
        results = runner.run(experiments)
    finally:
        runner.close()
    assert [r.status for r in results] == ["ok", "ok", "crashed", "ok"], [r.reason for r in results]
    assert results[2].reason == "ValueError: tiny_train was asked to fail (batch size 3)"
    assert "Traceback" in (Path(results[2].result_dir) / "stderr.log").read_text()
    assert shared.launches == 2 and shared.given_up is None  # the crash ended the first; the last got a new one
    for result, (stage, batch) in zip([results[i] for i in (0, 1, 3)], [(3, 16), (0, 4), (1, 4)]):
        metrics = result.metrics
        assert (metrics["zero_stage"], metrics["train_batch_size"]) == (stage, batch)
        assert len(metrics["step_times_s"]) == 3 and metrics["peak_memory_bytes"] > 0
        record = json.loads((Path(result.result_dir) / "exp.json").read_text())
        assert record["status"] == "ok" and record["shared_launch"]["request"] >= 1
        assert "tiny_train" not in (Path(result.result_dir) / "stderr.log").read_text()
    # the first run's resident-set peak is a fresh process's; a later one's says what it includes
    assert [results[i].metrics["memory_kind"] for i in (0, 1, 3)] == [
        "rss_peak", "rss_peak_after_earlier_runs", "rss_peak"]  # the last is the second launch's first
    # each run's own lines went to its own log, none to another's
    assert "batch size 3" not in (Path(results[1].result_dir) / "stderr.log").read_text()
    assert runner.shared_launch.running_pids() == set()
    assert not list(SHM_DIR.glob(f"deepspeed_allreduce_buffer_*_{first_port}_*"))
