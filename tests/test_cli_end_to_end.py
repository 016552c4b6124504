"""Real searches through the command line: 2 CPU processes (gloo), 9 DeepSpeed launches in all."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from simtune.cli import main
from simtune.search.outputs import parse_summary_table
from simtune.runner.launcher import free_port, release_port
from simtune.runner.runner import remove_shm_buffers

TINY_TRAIN = Path(__file__).parent / "data" / "tiny_train.py"
EXPERIMENT_FILES = ("cmd.txt", "ds_config.json", "exp.json", "metrics.json", "stdout.log", "stderr.log")
SHORT_WINDOW = {"start_profile_step": 2, "end_profile_step": 3}


def write_json(path, document):
    path.write_text(json.dumps(document))
    return str(path)


@pytest.mark.slow
def test_model_mode_search_writes_deepspeeds_layout_and_a_rerun_launches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_json(tmp_path / "ds.json", {
        "train_micro_batch_size_per_gpu": [1, 2],
        "zero_optimization": {"stage": 1},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
        "autotuning": {"enabled": True, **SHORT_WINDOW},
    })
    argv = ["search", "--strategy", "measure", "--model", "gpt2-tiny", "--seq-len", "32", "--deepspeed", config,
            "--num_gpus", "2", "--results_dir", "res", "--exps_dir", "exps"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    names = ["z1_gas2_tmbspg1", "z1_gas1_tmbspg2"]
    results, exps = tmp_path / "res", tmp_path / "exps"
    for name in names:
        assert (exps / f"{name}.json").is_file()
        for file_name in EXPERIMENT_FILES:
            assert (results / name / file_name).is_file(), (name, file_name)
        assert json.loads((results / name / "exp.json").read_text())["status"] == "ok"
    assert not (results / "shared_launch").exists()  # measured exploration: a launch each, as DeepSpeed's

    summary = (results / "summary.txt").read_text()
    rows = {row["tuning_space"]: row for row in parse_summary_table(summary)}
    assert set(rows) == {"z1", "global"}
    assert rows["global"]["num_experiments"] == "2" and rows["global"]["best_exp_name"] in names
    assert "Total number of experiments: 2." in summary
    assert summary.splitlines()[0] in out and "Best configuration" in out

    optimal = json.loads((results / "ds_config_optimal.json").read_text())
    best = rows["global"]["best_exp_name"]
    assert "autotuning" not in optimal
    assert optimal == json.loads((results / best / "ds_config.json").read_text())
    command = shlex.split((results / "cmd_optimal.txt").read_text())
    assert "simtune.probe" not in command and not any(arg.startswith("--simtune-probe") for arg in command)
    assert command[command.index("--deepspeed") + 1] == str(results.resolve() / "ds_config_optimal.json")
    assert "DS_ACCELERATOR=cpu" in command and "LOCAL_SIZE=2" in command
    document = json.loads((results / "results.json").read_text())
    assert sorted(e["name"] for e in document["experiments"]) == sorted(names)
    assert all(e["status"] == "ok" and e["metrics"]["throughput"] > 0 for e in document["experiments"])

    stamps = {name: (results / name / "stdout.log").stat().st_mtime_ns for name in names}
    assert main(argv + ["-q"]) == 0
    again = json.loads((results / "results.json").read_text())
    assert all(e["status"] == "ok" and e["reused"] for e in again["experiments"])
    assert {name: (results / name / "stdout.log").stat().st_mtime_ns for name in names} == stamps
    assert again["best"] == document["best"]
    assert "(reused)" not in capsys.readouterr().err  # -q: no progress lines


@pytest.mark.slow
def test_script_mode_maps_flags_and_run_trains_with_the_optimal_command(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "ds.json", {
        "train_micro_batch_size_per_gpu": [2],
        "zero_optimization": {"stage": 0},
        "optimizer": {"type": "SGD", "params": {"lr": 0.01}},
        "autotuning": {"arg_mappings": {"train_micro_batch_size_per_gpu ": "--batch_size"}, **SHORT_WINDOW},
    })
    (tmp_path / "data.txt").write_text("tokens\n")
    code = main(["search", "--strategy", "measure", "--num_gpus", "2", "--run", str(TINY_TRAIN), "--deepspeed", "ds.json",
                 "--batch_size", "1", "--steps", "4", "--hard_exit", "--data_file", "data.txt"])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    results = tmp_path / "autotuning_results"
    assert json.loads((results / "z0_gas1_tmbspg2" / "exp.json").read_text())["status"] == "ok"
    text = (results / "cmd_optimal.txt").read_text()
    command = shlex.split(text)
    assert command[command.index("--batch_size") + 1] == "2"
    assert command[command.index("--deepspeed") + 1].endswith("ds_config_optimal.json")
    assert command[command.index("--data_file") + 1] == str(tmp_path / "data.txt")
    assert command[:3] == ["cd", str(tmp_path), "&&"]  # where the experiments ran
    assert "tiny_train finished 4 steps" in captured.out  # --run trained to the end, no probe
    # the written command trains from another folder too (on a free port: other runs may hold 29500)
    port = free_port()
    try:
        elsewhere = subprocess.run(["bash", "-c", text.replace("--master_port 29500", f"--master_port {port}")],
                                   cwd="/", capture_output=True, text=True, timeout=300)
    finally:
        remove_shm_buffers(port)
        release_port(port)
    assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
    assert "tiny_train finished 4 steps" in elsewhere.stdout
    # the user's global batch (train mbs 2 x 2 processes) is the chosen one: no learning-rate advice
    assert "Learning rate" not in (results / "summary.txt").read_text()


@pytest.mark.slow
def test_a_memory_budget_makes_experiments_fail_as_oom(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_json(tmp_path / "ds.json", {"train_micro_batch_size_per_gpu": [1],
                                               "zero_optimization": {"stage": 0},
                                               "autotuning": SHORT_WINDOW})
    code = main(["search", "--strategy", "measure", "--model", "gpt2-tiny", "--seq-len", "32", "--deepspeed", config,
                 "--memory-budget", "10MB"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no experiment ran successfully" in err
    document = json.loads((tmp_path / "autotuning_results" / "results.json").read_text())
    (experiment,) = document["experiments"]
    assert experiment["status"] == "oom", experiment["reason"]
    assert experiment["reason"].startswith("out of memory: peak ")
    assert "exceeds the budget 10000000 bytes" in experiment["reason"]
    record = json.loads((tmp_path / "autotuning_results" / experiment["name"] / "exp.json").read_text())
    assert record["returncode"] == 3  # every rank left with the probe's out-of-memory code
    assert not (tmp_path / "autotuning_results" / "ds_config_optimal.json").exists()
    summary = (tmp_path / "autotuning_results" / "summary.txt").read_text()
    assert "Failed experiments: 1 (oom 1)." in summary


@pytest.mark.slow
def test_the_measured_search_launches_no_size_beyond_the_memory_that_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_json(tmp_path / "ds.json", {
        "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 0},
        "optimizer": {"type": "SGD", "params": {"lr": 0.01}},
        "autotuning": {"arg_mappings": {"train_micro_batch_size_per_gpu": "--batch_size"},
                       "max_train_micro_batch_size_per_gpu": 4, "num_tuning_micro_batch_sizes": 1, **SHORT_WINDOW},
    })
    # a rank of tiny_train peaks at about 450 MiB on CPU: 1000 MB hold about 2 samples in proportion
    code = main(["search", "--strategy", "measure", "--num_gpus", "2", "--memory-budget", "1000MB", str(TINY_TRAIN),
                 "--deepspeed", config, "--batch_size", "1", "--hard_exit"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "micro-batch sizes are bounded by the memory that exists (the memory budget of 954 MiB per rank)" in err
    document = json.loads((tmp_path / "autotuning_results" / "results.json").read_text())
    sizes = [e["trial"]["micro_batch_size"] for e in document["experiments"]]
    assert all(e["status"] == "ok" for e in document["experiments"])
    assert sizes[0] == 1 and 1 < sizes[1] < 4  # the bound from the first run's peak, not the space's 4
    peak = document["experiments"][0]["metrics"]["peak_memory_bytes"]
    assert sizes[1] <= 1000e6 / peak


@pytest.mark.slow
def test_a_run_that_other_processes_disturb_is_marked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_json(tmp_path / "ds.json", {
        "train_micro_batch_size_per_gpu": [1], "zero_optimization": {"stage": 0},
        "optimizer": {"type": "SGD", "params": {"lr": 0.01}},
        "autotuning": {"arg_mappings": {"train_micro_batch_size_per_gpu": "--batch_size"}, **SHORT_WINDOW},
    })
    spin = "import time\nend = time.time() + 600\nwhile time.time() < end: pass"
    others = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]  # two cores' worth of load
    try:
        code = main(["search", "--strategy", "measure", "--num_gpus", "1", str(TINY_TRAIN), "--deepspeed", config,
                     "--batch_size", "1", "--hard_exit"])
    finally:
        for process in others:
            process.kill()
            process.wait()
    err = capsys.readouterr().err
    assert code == 0, err
    results = tmp_path / "autotuning_results"
    exp = json.loads((results / "z0_gas1_tmbspg1" / "exp.json").read_text())
    assert exp["status"] == "ok" and exp["others_cores"] > 0.5
    (record,) = json.loads((results / "results.json").read_text())["experiments"]
    assert record["others_cores"] == exp["others_cores"]
    assert f"other processes used {exp['others_cores']:.2f} cores on average during z0_gas1_tmbspg1" in err
    summary = (results / "summary.txt").read_text()
    assert "Load: other processes used more than 0.5 cores on average during 1 experiment(s)" in summary
    assert f"so their timings may be slowed by them: z0_gas1_tmbspg1 {exp['others_cores']:.2f}." in summary
