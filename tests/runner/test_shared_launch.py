"""Experiments as requests to one shared launch: real runs of the built-in program (gpt2-tiny) on 2
CPU processes through DeepSpeed's launcher (two shared launches: a crash ends the first, and
ZeRO-3's engine is freed like the others'), and the fall-back to a launch each when the shared launch cannot start."""

import json
import sys
from pathlib import Path

import pytest

from simtune.probe.argv import ProbeUsageError, parse_probe_argv
from simtune.runner import Experiment, Resources, Runner
from simtune.runner.executors import Launch, LocalExecutor
from simtune.runner.shared_launch import SharedLaunch, run_arguments
from simtune.watchdog import SHM_DIR
from simtune.workloads import TRAIN_PROGRAM


def ds_config(stage, mbs, gas=1):
    return {"train_micro_batch_size_per_gpu": mbs, "gradient_accumulation_steps": gas,
            "train_batch_size": mbs * gas * 2,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.0}},
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


def test_a_search_run_again_starts_its_shared_launch_only_when_an_experiment_runs(tmp_path):
    """A results folder with finished experiments (a rerun or a resumed search) may reuse them all:
    the launch is not started ahead of the first experiment there. An unfinished record counts
    for nothing: that experiment runs again."""
    def runner():
        return Runner((str(TRAIN_PROGRAM), ["--model", "gpt2-tiny", "--deepspeed", "ds.json"]),
                      Resources.local(num_gpus=2, accelerator="cpu"), tmp_path / "results", tmp_path / "exps",
                      shared_launch=True)

    unfinished = tmp_path / "results" / "z0_gas1_tmbspg2"
    unfinished.mkdir(parents=True)
    (unfinished / "exp.json").write_text(json.dumps({"name": unfinished.name, "status": "running"}))
    (tmp_path / "results" / "z1_gas1_tmbspg2").mkdir()
    (tmp_path / "results" / "z1_gas1_tmbspg2" / "exp.json").write_text("{not json")
    assert not runner().has_finished_experiments()
    (unfinished / "exp.json").write_text(json.dumps({"name": unfinished.name, "status": "oom"}))
    again = runner()
    assert again.has_finished_experiments()
    again.start_shared_launch()
    try:
        assert again.shared_launch is not None and again.shared_launch.launches == 0
        assert again.shared_launch.running_pids() == set()
    finally:
        again.close()


@pytest.mark.slow
@pytest.mark.xdist_group("launches-2")  # beside the timed launches (tests/conftest.py): nothing here is timed
def test_experiments_share_one_launch_until_a_run_crashes(tmp_path):
    runner = Runner((str(TRAIN_PROGRAM), ["--model", "gpt2-tiny", "--seq-len", "16", "--deepspeed", "ds.json"]),
                    Resources.local(num_gpus=2, accelerator="cpu"), tmp_path / "results", tmp_path / "exps",
                    start_profile_step=2, end_profile_step=4, shared_launch=True)
    shared = runner.shared_launch
    assert shared is not None and runner.parallel == 1
    inconsistent = {**ds_config(0, 2), "train_batch_size": 7}  # DeepSpeed refuses it in every rank
    experiments = [Experiment("z0_gas1_tmbspg2", None, ds_config(0, 2)),
                   Experiment("z1_gas2_tmbspg2", None, ds_config(1, 2, gas=2)),
                   Experiment("z3_gas1_tmbspg2", None, ds_config(3, 2)),
                   Experiment("z0_bad_batch", None, inconsistent),
                   Experiment("z2_gas1_tmbspg2", None, ds_config(2, 2))]
    try:
        runner.start_shared_launch()
        first_port = shared._port
        results = runner.run(experiments)
    finally:
        runner.close()
    assert [r.status for r in results] == ["ok", "ok", "ok", "crashed", "ok"], [r.reason for r in results]
    assert "train_batch_size" in results[3].reason
    assert "Traceback" in (Path(results[3].result_dir) / "stderr.log").read_text()
    # every rank found each engine gone after its run, ZeRO-3's too; only the crash ended a launch
    assert (shared.launches, shared.given_up, shared.ended_after_run) == (2, None, [])
    ok = [results[i] for i in (0, 1, 2, 4)]
    for result, (stage, batch) in zip(ok, [(0, 4), (1, 8), (3, 4), (2, 4)]):
        metrics = result.metrics
        assert (metrics["zero_stage"], metrics["train_batch_size"]) == (stage, batch)
        assert len(metrics["step_times_s"]) == 3 and metrics["peak_memory_bytes"] > 0
        record = json.loads((Path(result.result_dir) / "exp.json").read_text())
        assert record["status"] == "ok" and record["shared_launch"]["request"] >= 1
        assert "Traceback" not in (Path(result.result_dir) / "stderr.log").read_text()
    # a first run's resident-set peak is a fresh process's; a later one's says what it includes
    assert [r.metrics["memory_kind"] for r in ok] == [
        "rss_peak", "rss_peak_after_earlier_runs", "rss_peak_after_earlier_runs", "rss_peak"]
    # each run's own lines went to its own log, none to another's
    assert "train_batch_size" not in (Path(results[1].result_dir) / "stderr.log").read_text()
    assert runner.shared_launch.running_pids() == set()
    assert not list(SHM_DIR.glob(f"deepspeed_allreduce_buffer_*_{first_port}_*"))
