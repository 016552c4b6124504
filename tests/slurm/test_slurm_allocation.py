"""--launcher slurm inside an allocation of the local one-node Slurm cluster: every experiment
is an srun step (DeepSpeed's slurm launcher), no pdsh or ssh."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from simtune.cli import main
from simtune.probe.ranks import launcher_rank_env

CONFIG = {"train_micro_batch_size_per_gpu": [1], "zero_optimization": {"stage": 1},
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
          "autotuning": {"start_profile_step": 2, "end_profile_step": 3}}


@pytest.mark.slow
@pytest.mark.slurm
def test_a_search_inside_an_allocation_runs_its_experiments_as_srun_steps(slurm_cluster, tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps(CONFIG))
    search = [sys.executable, "-m", "simtune", "search", "--launcher", "slurm", "--strategy", "measure",
              "--model", "gpt2-tiny", "--seq-len", "32", "--deepspeed", "ds.json", "--num_gpus", "2",
              "--results_dir", "res", "-q"]
    done = subprocess.run(["salloc", "-N1", "--ntasks-per-node=2", "--time=5", *search], cwd=tmp_path,
                          capture_output=True, text=True, timeout=400, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    name = "z1_gas1_tmbspg1"
    record = json.loads((tmp_path / "res" / name / "exp.json").read_text())
    assert record["status"] == "ok" and record["resources"]["launcher"] == "slurm"
    command = record["command"]
    assert command[command.index("--launcher") + 1] == "slurm" and "--force_multi" in command
    hostfile = command[command.index("--hostfile") + 1]
    assert open(hostfile).read().split() == [os.uname().nodename.split(".")[0], "slots=2"]
    stdout = (tmp_path / "res" / name / "stdout.log").read_text()
    assert "cmd = srun -n 2 --ntasks-per-node=2" in stdout  # DeepSpeed's launcher started an srun step
    optimal = shlex.split((tmp_path / "res" / "cmd_optimal.txt").read_text())
    assert optimal[optimal.index("--launcher") + 1] == "slurm" and "simtune.probe" not in " ".join(optimal)


def test_launcher_slurm_outside_an_allocation_is_refused_in_one_sentence(monkeypatch, capsys):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert main(["search", "--launcher", "slurm", "--strategy", "measure", "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("simtune: error: --launcher slurm runs each experiment as an srun step") and "\n" not in error


def test_ranks_come_from_srun_only_inside_a_step_and_never_override_the_launchers():
    step = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4",
            "SLURM_NTASKS_PER_NODE": "2(x2)"}
    assert launcher_rank_env(step) == {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_SIZE": "2"}
    batch_script = {key: value for key, value in step.items() if key != "SLURM_STEP_ID"}
    assert launcher_rank_env(batch_script) == {}
    assert launcher_rank_env({**step, "RANK": "0"}) == {}
    mpirun = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}
    assert launcher_rank_env(mpirun) == {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
