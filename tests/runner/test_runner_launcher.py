import os
import socket

import psutil
import pytest

from simtune.errors import InputError
from simtune.runner.experiment import Experiment
from simtune.runner.launcher import (
    absolute_paths,
    build_command,
    free_port,
    launch_env,
    mapped_args,
    release_port,
    run_process_group,
    with_config_path,
)
from simtune.runner.resources import Resources
from simtune.runner.runner import remove_shm_buffers


def test_config_path_replaced_in_every_form():
    args = ["--deepspeed", "a.json", "--lr", "1", "--deepspeed_config=b.json"]
    assert with_config_path(args, "/r/ds.json") == ["--deepspeed", "/r/ds.json", "--lr", "1",
                                                    "--deepspeed_config=/r/ds.json"]
    assert args[1] == "a.json"  # the caller's list is left alone
    bare = ["--deepspeed", "--deepspeed_config", "c.json"]
    assert with_config_path(bare, "/r/ds.json") == ["--deepspeed", "--deepspeed_config", "/r/ds.json"]
    assert with_config_path(["--deepspeed=x.json"], "y") == ["--deepspeed=y"]


def test_relative_paths_of_existing_files_become_absolute(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.txt").write_text("x")
    (tmp_path / "1").write_text("a file named like a number")
    args = ["--train_file", "data/train.txt", "--validation_file=./data/train.txt", "--output_dir", "out",
            "--epochs", "1", "--cache", "/abs/cache"]
    assert absolute_paths(args, str(tmp_path)) == [
        "--train_file", f"{tmp_path}/data/train.txt", f"--validation_file={tmp_path}/data/train.txt",
        "--output_dir", "out", "--epochs", "1", "--cache", "/abs/cache"]  # out does not exist yet


@pytest.mark.parametrize("args", [[], ["--lr", "1"], ["--deepspeed"]])
def test_script_without_config_is_refused(args):
    with pytest.raises(InputError):
        with_config_path(args, "/r/ds.json")


class Trial:
    activation_checkpointing = True


def test_arg_mappings_rewrite_and_append():
    config = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": "auto",
              "zero_optimization": {"stage": 1, "reduce_bucket_size": 5e8},
              "activation_checkpointing": {"partition_activations": False}}
    mappings = {"train_micro_batch_size_per_gpu ": " --per_device_train_batch_size",
                "gradient_accumulation_steps": "--gas",
                "reduce_bucket_size": "--rbs",
                "activation_checkpointing": "--gradient_checkpointing",
                "not_in_config": "--absent"}
    args = ["--per_device_train_batch_size", "2", "--gas", "4", "--rbs=1"]
    out = mapped_args(args, mappings, config, Trial())
    assert out == ["--per_device_train_batch_size", "8", "--gas", "4", "--rbs=500000000",
                   "--gradient_checkpointing", "true"]
    assert args == ["--per_device_train_batch_size", "2", "--gas", "4", "--rbs=1"]


def test_command_for_local_cpu(tmp_path):
    resources = Resources.local(num_gpus=2, accelerator="cpu")
    experiment = Experiment("z1_gas1_tmbspg4", None, {"train_micro_batch_size_per_gpu": 4})
    command = build_command(experiment, ("train.py", ["--deepspeed", "ds.json", "--bs", "1"]), resources,
                            resources.concurrent_slots()[0], 31234, tmp_path,
                            arg_mappings={"train_micro_batch_size_per_gpu": "--bs"})
    assert command[0].endswith("deepspeed")
    assert command[1:] == ["--num_nodes", "1", "--num_accelerators", "2", "--master_port", "31234",
                           "--module", "simtune.probe", f"--simtune-probe={tmp_path / 'probe.json'}",
                           "train.py", "--deepspeed", str(tmp_path / "ds_config.json"), "--bs", "4"]
    plain = build_command(experiment, ("train.py", ["--deepspeed", "ds.json"]), resources,
                          resources.concurrent_slots()[0], 29500, tmp_path, probe=False,
                          config_path="/out/ds_config_optimal.json")
    assert "--module" not in plain and plain[-3:] == ["train.py", "--deepspeed", "/out/ds_config_optimal.json"]


def test_command_with_hostfiles(tmp_path):
    experiment = Experiment("e", None, {})
    local = Resources(hosts=(("localhost", 2),), num_gpus=1, num_nodes=1, accelerator="cpu", hostfile="/hf")
    command = build_command(experiment, ("t.py", ["--deepspeed", "d"]), local, local.concurrent_slots()[1], 1, tmp_path)
    assert command[1:9] == ["--hostfile", "/hf", "--include", "localhost:1", "--no_ssh_check",
                            "--master_addr", "127.0.0.1", "--master_port"]
    cluster = Resources(hosts=(("a", 2), ("b", 2)), num_gpus=2, num_nodes=2, accelerator="cuda", hostfile="/hf")
    command = build_command(experiment, ("t.py", ["--deepspeed", "d"]), cluster,
                            cluster.concurrent_slots()[0], 1, tmp_path)
    assert command[1:7] == ["--hostfile", "/hf", "--include", "a:0,1@b:0,1", "--master_port", "1"]


def test_ports_are_never_handed_out_twice_while_in_use():
    ports = [free_port() for _ in range(50)]
    try:
        assert len(set(ports)) == 50
        with socket.socket() as sock:
            sock.bind(("", ports[0]))  # free for the rendezvous to take
    finally:
        for port in ports:
            release_port(port)


def test_launch_env_on_cpu_merges_user_env_files(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    (home / ".deepspeed_env").write_text("NCCL_DEBUG=INFO\nOMP_NUM_THREADS=64\n")
    (work / ".deepspeed_env").write_text("NCCL_DEBUG=WARN\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    resources = Resources.local(num_gpus=2, accelerator="cpu")
    env = launch_env(resources, tmp_path, base={"PATH": "/bin"})
    assert env["DS_ACCELERATOR"] == "cpu" and env["LOCAL_SIZE"] == "2" and env["PATH"] == "/bin"
    assert int(env["OMP_NUM_THREADS"]) >= 1 and env["PYTHONUNBUFFERED"] == "1"
    lines = (tmp_path / "deepspeed_env").read_text().splitlines()
    assert env["DS_ENV_FILE"] == str(tmp_path / "deepspeed_env")
    assert "NCCL_DEBUG=WARN" in lines and f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}" in lines
    assert "OMP_NUM_THREADS=64" not in lines


def test_shm_buffers_of_one_port_are_removed(tmp_path):
    names = ["deepspeed_allreduce_buffer_0_127.0.0.1_40001_0", "deepspeed_allreduce_buffer_0_127.0.0.1_40001_1",
             "deepspeed_allreduce_buffer_0_127.0.0.1_40002_0"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert remove_shm_buffers(40001, tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == [names[2]]


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (a zombie waiting for init to reap it holds no
    port, memory or file any more)."""
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def test_process_group_is_stopped_whole_at_the_time_out(tmp_path):
    started = []
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        # a child in the background stands for the ranks the launcher starts
        returncode, timed_out, wall_s = run_process_group(
            ["sh", "-c", "sleep 60 & echo started; wait"], dict(os.environ), tmp_path, out, err, 1.0,
            on_start=started.append,
        )
    assert timed_out and returncode != 0 and 1.0 <= wall_s < 15.0
    assert (tmp_path / "out.log").read_text() == "started\n"
    assert not _group_alive(started[0].pid)


def test_a_finished_run_is_not_left_to_its_launchers_teardown(tmp_path):
    """The ranks write their results and leave; the launcher above them would take seconds more.
    A run whose ``finished()`` holds is stopped whole and counts as a clean exit."""
    done = tmp_path / "metrics.json"
    started = []
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        returncode, timed_out, wall_s = run_process_group(
            ["sh", "-c", f"sleep 30 & (sleep 0.5; echo '{{}}' > {done}); wait"], dict(os.environ), tmp_path, out,
            err, 60.0, on_start=started.append, finished=done.is_file)
    assert (returncode, timed_out) == (0, False) and 0.5 <= wall_s < 10.0
    assert not _group_alive(started[0].pid)


def test_a_run_that_exits_by_itself_keeps_its_exit_code_even_when_finished(tmp_path):
    done = tmp_path / "metrics.json"
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        returncode, timed_out, _ = run_process_group(
            ["sh", "-c", f"echo '{{}}' > {done}; exit 3"], dict(os.environ), tmp_path, out, err, 60.0,
            finished=done.is_file)
    assert (returncode, timed_out) == (3, False)


def test_process_group_exit_code_and_callbacks(tmp_path):
    seen = []
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        result = run_process_group(["sh", "-c", "exit 3"], dict(os.environ), tmp_path, out, err, None,
                                   on_start=lambda p: seen.append("start"), on_end=lambda p: seen.append("end"))
    assert result[:2] == (3, False) and seen == ["start", "end"]


def test_launches_find_the_tools_of_simtunes_own_environment_first():
    """One ninja for every launch: another version would rebuild DeepSpeed's JIT ops each switch."""
    import sys

    from simtune.runner.launcher import own_tools_first

    mine = os.path.dirname(sys.executable)
    env = own_tools_first({"PATH": os.pathsep.join(["/usr/bin", mine, "/bin"])})
    assert env["PATH"].split(os.pathsep) == [mine, "/usr/bin", "/bin"]
    assert own_tools_first({})["PATH"] == mine
