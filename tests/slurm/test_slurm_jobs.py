"""--executor slurm on the local one-node Slurm cluster: every experiment a real job of 2 CPU
processes (gloo). One search is killed while its verifications are queued or running and run
again; a job that reaches its time limit is recorded as a time-out. Only one such job runs at a
time on a 2-core machine."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simtune.cli import main
from simtune.runner.slurm import job_info

# beside the timed launches (tests/conftest.py)
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.xdist_group("launches-2")]

SMALL_CONFIG = {"train_micro_batch_size_per_gpu": [1, 2], "zero_optimization": {"stage": [0, 1]},
                "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
                "autotuning": {"start_profile_step": 2, "end_profile_step": 3}}
"""Four configurations, two measured steps each: jobs of a few seconds."""

SLEEPER = """import time
time.sleep(600)
"""


def start_search(argv, cwd):
    """simtune in a process of its own, taking SIGINT as a terminal's Ctrl-C gives it even when the
    tests run as a background job (whose commands start with SIGINT ignored, as POSIX shells do)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "simtune", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def records(results: Path) -> dict[str, dict]:
    found = {}
    for path in results.glob("*/exp.json"):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except ValueError:
            continue  # being replaced
    return found


def jobs_under(folder: Path) -> list[str]:
    """Ids of the jobs the controller holds whose output lies under ``folder``."""
    done = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, check=False)
    return [line.split()[0].split("=")[1] for line in done.stdout.splitlines() if f"StdOut={folder}" in line]


def test_a_killed_search_picks_up_its_queued_verifications_without_running_them_twice(slurm_cluster, tmp_path,
                                                                                     monkeypatch):
    """A first search (no profile yet): the calibration, with the workload's measurement, is a job
    of its own too."""
    monkeypatch.setenv("SIMTUNE_HOME", str(tmp_path / "home"))
    (tmp_path / "ds.json").write_text(json.dumps(SMALL_CONFIG))
    argv = ["search", "--executor", "slurm", "--verify-top", "2", "--timeout", "300", "--results_dir", "res",
            "--trials", "20", "--model", "gpt2-tiny", "--seq-len", "32", "--deepspeed", "ds.json", "--num_gpus", "2"]
    search = start_search(argv, tmp_path)
    results = tmp_path / "res"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and search.poll() is None:
        submitted = {name: r for name, r in records(results).items() if r.get("job_id")}
        if len(submitted) == 2:
            break
        time.sleep(0.5)
    else:
        out = search.stdout.read().decode() if search.poll() is not None else ""
        pytest.fail(f"the search did not submit 2 jobs: {out[-2000:]}")
    search.send_signal(signal.SIGKILL)
    search.wait()
    first = {name: r["job_id"] for name, r in submitted.items()}
    assert all(job_info(job).state in ("PENDING", "RUNNING", "COMPLETING", "COMPLETED") for job in first.values())
    assert all(r["status"] == "running" and r["executor"] == "slurm" for r in submitted.values())

    again = subprocess.run([sys.executable, "-m", "simtune", *argv], cwd=tmp_path, capture_output=True, text=True,
                           timeout=400, check=False)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    final = records(results)
    verified = {name: final[name] for name in first}
    for name, record in verified.items():
        assert record["status"] == "ok", record["reason"]
        assert record["job_ids"] == [first[name]] and record["job_state"] == "COMPLETED"
        for file_name in ("stdout.log", "stderr.log", "metrics.json", "cmd.txt", "ds_config.json"):
            assert (results / name / file_name).is_file(), (name, file_name)
        assert record["command"][record["command"].index("--num_accelerators") + 1] == "2"
        assert "'localhost': [0, 1]" in (results / name / "stdout.log").read_text()  # 2 ranks in the job
        assert "NumCPUs=2" in subprocess.run(["scontrol", "show", "job", first[name]], capture_output=True,
                                             text=True).stdout
    calibration_jobs = jobs_under((results / "measuring" / "calibration").resolve())
    assert len(calibration_jobs) == 1  # the resumed search found the profile the job saved
    assert "NumCPUs=2" in subprocess.run(["scontrol", "show", "job", calibration_jobs[0]], capture_output=True,
                                         text=True).stdout
    assert list((tmp_path / "home" / "profiles").glob("*.json"))
    experiment_jobs = set(jobs_under(results.resolve())) - set(calibration_jobs)
    assert sorted(experiment_jobs) == sorted(first.values())  # nothing submitted twice
    starts = sorted(verified.values(), key=lambda r: r["job_start_time"])
    assert starts[1]["job_submit_time"] <= starts[0]["job_end_time"]  # both queued before the first ended
    document = json.loads((results / "results.json").read_text())
    assert document["best"] is not None and (results / "cmd_optimal.txt").is_file()


def test_a_job_that_reaches_its_time_limit_is_a_timeout(slurm_cluster, slurm_time_limit_job, tmp_path):
    """The job was submitted when the session started (tests/conftest.py), else it is now."""
    result = slurm_time_limit_job.result(tmp_path)
    assert result["status"] == "timeout", result["reason"]
    assert "time limit" in result["reason"]
    assert 55 <= result["seconds"] < 200
    record = result["record"]
    assert record["job_state"] == "TIMEOUT" and record["status"] == "timeout"
    assert "TimeLimit=00:01:00" in result["scontrol"]  # read when the job ended: Slurm forgets it later


def test_executor_slurm_without_sbatch_is_refused_in_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["search", "--executor", "slurm", "--strategy", "measure", "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("simtune: error: --executor slurm needs Slurm's sbatch") and error.count("\n") == 0


def test_ctrl_c_cancels_the_jobs_the_search_submitted(slurm_cluster, tmp_path):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    (tmp_path / "ds.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": [1],
                                                  "zero_optimization": {"stage": 0}}))
    search = start_search(["search", "--executor", "slurm", "--strategy", "measure", "--num_gpus", "1",
                           "--results_dir", "res", "sleeper.py", "--deepspeed", "ds.json"], tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (submitted := [r for r in records(tmp_path / "res").values()
                                                             if r.get("job_id")]):
        assert search.poll() is None, search.stdout.read().decode()[-2000:]
        time.sleep(0.2)
    [record] = submitted
    search.send_signal(signal.SIGINT)
    assert search.wait(timeout=60) == 130
    deadline = time.monotonic() + 60  # a cancelled job reads COMPLETING while its node cleans up after it
    while (state := job_info(record["job_id"]).state) == "COMPLETING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state == "CANCELLED"
    [left] = records(tmp_path / "res").values()
    assert left["status"] == "running"  # unrecorded: the next search submits it again
