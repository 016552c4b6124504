"""--launcher slurm inside an allocation of the local one-node Slurm cluster: the machine is
calibrated on the node simtune runs on and every experiment is an srun step (DeepSpeed's slurm
launcher), no pdsh or ssh."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from simtune.cli import main
from simtune.probe.ranks import launcher_rank_env

pytestmark = pytest.mark.xdist_group("launches-2")  # beside the timed launches (tests/conftest.py)
CONFIG = {"train_micro_batch_size_per_gpu": [1], "zero_optimization": {"stage": 1},
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
          "autotuning": {"start_profile_step": 2, "end_profile_step": 3}}


@pytest.mark.slow
@pytest.mark.slurm
def test_a_search_inside_an_allocation_runs_its_experiments_as_srun_steps(slurm_cluster, tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps(CONFIG))
    search = [sys.executable, "-m", "simtune", "search", "--launcher", "slurm", "--verify-top", "1",
              "--trials", "10", "--model", "gpt2-tiny", "--seq-len", "32", "--deepspeed", "ds.json", "--num_gpus", "2",
              "--results_dir", "res"]
    done = subprocess.run(["salloc", "-N1", "--ntasks-per-node=2", "--time=5", *search], cwd=tmp_path,
                          capture_output=True, text=True, timeout=400, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "calibrating it first" in done.stderr  # on this node of the allocation, with no pdsh
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


AIM = """
import json, sys
from simtune.runner.launcher import launch_env, launcher_args
from simtune.runner.slurm import job_resources
from simtune.runner.slurm_job import JobLaunch, aimed_at_this_job
resources = job_resources(num_gpus=2, num_nodes=2, default_cpu_processes=2)
slots = resources.concurrent_slots()[0]
env = launch_env(resources, sys.argv[1], base={}, rendezvous=(slots.hosts[0], 1234))
job = JobLaunch(("deepspeed", *launcher_args(resources, slots, 1234), "x.py"), env, ".", sys.argv[1], 2)
command, env = aimed_at_this_job(job, 4321)
print(json.dumps({"command": command, "env": {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT")}}))
"""


@pytest.mark.slurm
def test_a_job_on_several_nodes_aims_the_slurm_launcher_at_its_own_nodes(slurm_cluster, tmp_path):
    done = subprocess.run(["salloc", "-N1", "--time=1", sys.executable, "-c", AIM, str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DS_ACCELERATOR": "cpu"}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    aimed = json.loads(done.stdout.strip().splitlines()[-1])
    command, node = aimed["command"], os.uname().nodename.split(".")[0]
    assert command[command.index("--master_addr") + 1] == node and command[command.index("--master_port") + 1] == "4321"
    assert open(command[command.index("--hostfile") + 1]).read() == f"{node} slots=2\n"
    assert aimed["env"] == {"MASTER_ADDR": node, "MASTER_PORT": "4321"}
    exported = (tmp_path / "deepspeed_env").read_text()  # what the other nodes get
    assert f"MASTER_ADDR={node}\n" in exported and "MASTER_PORT=4321\n" in exported
