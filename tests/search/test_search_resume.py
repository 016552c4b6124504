"""A search killed with SIGKILL resumes where it stopped: no finished study trial and no finished
experiment is lost or run again.

The first test kills a predictions-only search in its study (nothing launched). The second runs
the README's main command, ``simtune search`` on 2 CPU processes with gpt2-tiny, for real: it
calibrates this machine and measures the workload (one launch), studies the model and verifies
the top 3 predictions; it is killed right after its first verification and run again. Real
launches: the calibration with the workload measurement, the first verification, the second one
(killed in flight and run again), the third: 5 in all.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest

from simtune.cli import main
from simtune.search.outputs import GLOBAL_SPACE, parse_prediction_table, parse_summary_table
from simtune.runner.experiment import STATUSES
from simtune.runner.runner import remove_shm_buffers
from simtune.search.study import storage_url

STUDY_CONFIG = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": "all"},
                "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}, "bf16": {"enabled": True},
                "autotuning": {"fast": False, "max_train_batch_size": 4096}}


def start(argv, cwd, home):
    env = {**os.environ, "HOME": str(home), "SIMTUNE_HOME": str(home / ".simtune"), "PYTHONUNBUFFERED": "1"}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))  # the JIT-built ops of the real home
    return subprocess.Popen([sys.executable, "-m", "simtune", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def torch_extensions_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "torch_extensions" / f"py{sys.version_info.major}{sys.version_info.minor}_cpu"


def kill_tree(process: subprocess.Popen) -> list[int]:
    """SIGKILL the search and everything it started (launches run in their own sessions)."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    process.send_signal(signal.SIGKILL)
    for child in children:
        try:
            child.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.wait()
    psutil.wait_procs(children, timeout=10)
    return [c.pid for c in children]


def wait_for(condition, process, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace")
            pytest.fail(f"the search ended (code {process.returncode}) before {what}:\n{output[-3000:]}")
        time.sleep(0.05)
    kill_tree(process)
    pytest.fail(f"timed out waiting for {what}")


def completed_trials(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def stored_trials(results: Path) -> dict:
    (name,) = sqlite3.connect(results / "study.db").execute("select study_name from studies").fetchone()
    study = optuna.load_study(study_name=name, storage=storage_url(results))
    return {t.number: (t.params, t.value, t.user_attrs["name"]) for t in study.get_trials()
            if t.state.name == "COMPLETE"}


def test_a_search_killed_in_its_study_keeps_every_finished_trial(tmp_path, monkeypatch, capsys):
    (tmp_path / "ds.json").write_text(json.dumps(STUDY_CONFIG))
    argv = ["search", "--verify-top", "0", "--model", "gpt2-medium", "--profile", "dgx-a100-80gb", "--num_gpus",
            "8", "--deepspeed", "ds.json", "--results_dir", "res", "-q"]
    db = tmp_path / "res" / "study.db"
    process = start([*argv, "--trials", "100000"], tmp_path, tmp_path / "home")
    wait_for(lambda: completed_trials(db) >= 25, process, 120, "25 study trials")
    kill_tree(process)
    before = stored_trials(tmp_path / "res")
    assert len(before) >= 25

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIMTUNE_HOME", str(tmp_path / "home" / ".simtune"))
    total = len(before) + 15
    assert main([*argv[:-1], "--trials", str(total)]) == 0
    after = stored_trials(tmp_path / "res")
    assert len(after) == total  # exactly the missing trials ran
    assert {n: after[n] for n in before} == before  # the finished ones are untouched
    document = json.loads((tmp_path / "res" / "results.json").read_text())
    assert document["model"]["study_resumed_from"] == len(before)
    assert document["model"]["study_trials"] == total


@pytest.mark.slow
def test_the_main_command_killed_after_one_verification_resumes_without_rerunning_it(tmp_path, monkeypatch,
                                                                                      capfd):
    home = tmp_path / "home"
    results = tmp_path / "autotuning_results"
    process = start(["search"], tmp_path, home)

    def first_verified():
        for record in results.glob("*/exp.json"):
            try:
                if json.loads(record.read_text()).get("status") in STATUSES:
                    return True
            except ValueError:
                pass
        return False

    wait_for(first_verified, process, 420, "the first verification")
    kill_tree(process)
    for record in results.glob("*/exp.json"):  # a launch killed in flight leaves its buffers behind
        port = json.loads(record.read_text()).get("master_port")
        if port:
            remove_shm_buffers(port)
    finished = {}
    for record in results.glob("*/exp.json"):
        data = json.loads(record.read_text())
        if data["status"] in STATUSES:
            finished[data["name"]] = (record.parent / "stdout.log").stat().st_mtime_ns
    (first,) = finished
    assert json.loads((results / first / "exp.json").read_text())["status"] == "ok"
    profiles = list((home / ".simtune" / "profiles").glob("cpu-*proc-*.json"))
    assert len(profiles) == 1, "the machine was calibrated first and its profile saved"
    assert len(list((home / ".simtune" / "cache").glob("workload-*.json"))) == 1, "the workload measurement cached"
    profile_stamp = profiles[0].stat().st_mtime_ns
    trials_before = stored_trials(results)
    residual_file = home / ".simtune" / "profiles" / "residuals" / f"{profiles[0].stem}.json"
    assert not residual_file.exists()  # the model learns at the end of a search, not half-way

    # the same command again, in this process, asking for one verification less (the study, the
    # candidates and their order are the same: only one new experiment runs)
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR") or str(torch_extensions_dir())  # before HOME moves
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SIMTUNE_HOME", str(home / ".simtune"))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", extensions)
    capfd.readouterr()
    assert main(["search", "--verify-top", "2"]) == 0
    out, err = capfd.readouterr()
    assert "calibrating" not in err and profiles[0].stat().st_mtime_ns == profile_stamp
    assert "read from the cache" in err  # the killed search's measurement: its study, not a new one
    assert stored_trials(results) == trials_before  # the finished study was resumed, not redone
    for name, stamp in finished.items():
        assert (results / name / "stdout.log").stat().st_mtime_ns == stamp, f"{name} ran again"
        assert f"{name} ok (reused)" in err

    document = json.loads((results / "results.json").read_text())
    experiments = document["experiments"]
    assert len(experiments) == 2 and all(e["status"] == "ok" for e in experiments)
    assert sum(e["reused"] for e in experiments) == 1
    assert {e["name"] for e in experiments if e["reused"]} == set(finished)
    summary = (results / "summary.txt").read_text()
    assert summary in out
    assert "Real experiments: 1 launched (in one shared launch), 1 reused from earlier runs." in summary
    assert "Total number of experiments: 2." in summary
    best = {r["tuning_space"]: r for r in parse_summary_table(summary)}[GLOBAL_SPACE]
    table = parse_prediction_table(summary)
    assert len(table) == 2 and all(float(r["measured_val"]) > 0 and r["error"].endswith("%") for r in table)
    assert best["best_exp_name"] == max(table, key=lambda r: float(r["measured_val"]))["exp_name"]
    assert "Best configuration, measured" in out
    assert json.loads((results / "ds_config_optimal.json").read_text()) == \
        json.loads((results / best["best_exp_name"] / "ds_config.json").read_text())
    predictions = json.loads((results / "predictions.json").read_text())
    assert {p["name"] for p in predictions["predictions"]} == {e["name"] for e in experiments}
    assert all(p["measured_metrics"]["step_time_s"] > 0 for p in predictions["predictions"])
    residual = json.loads(residual_file.read_text())
    assert len(residual["time_samples"]) == 2  # the next search starts from these measurements
