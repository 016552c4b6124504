"""The launch command, its environment, output parsing and /dev/shm clean-up (no launch)."""

import json
import os
from pathlib import Path

import pytest

from simtune.calibration.launch import (
    build_command,
    build_env,
    failure_reason,
    parse_output,
)
from simtune.runner.runner import remove_shm_buffers
from simtune.cli import main
from simtune.errors import InputError
from simtune.calibration import calibrate


def test_cpu_command_and_environment(tmp_path):
    command = build_command(2, 1, None, 12345, tmp_path / "raw.json", True, "cpu")
    assert command[1:] == [  # one node: the ranks are started directly, not by DeepSpeed's launcher
        "-m", "simtune.runner.local_ranks", "--nproc", "2", "--master_port", "12345",
        "simtune.calib.run_all", "--out", str(tmp_path / "raw.json"), "--quick",
    ]
    env = build_env(2, "cpu", base={"PATH": "/usr/bin"})
    assert env["DS_ACCELERATOR"] == "cpu" and env["LOCAL_SIZE"] == "2"
    assert int(env["OMP_NUM_THREADS"]) == max(1, len(os.sched_getaffinity(0)) // 2)
    simtune_root = Path(env["PYTHONPATH"].split(os.pathsep)[0])  # the ranks import this simtune
    assert (simtune_root / "simtune" / "calib" / "run_all.py").is_file()


def test_gpu_multi_node_command(tmp_path):
    command = build_command(8, 2, "/etc/hostfile", 29600, tmp_path / "raw.json", False, "cuda")
    assert command[1:7] == ["--hostfile", "/etc/hostfile", "--num_nodes", "2", "--num_gpus", "8"]
    assert "--quick" not in command
    assert "DS_ACCELERATOR" not in build_env(8, "cuda", base={})


def test_parse_output_finds_the_last_json_line_even_prefixed():
    first = {"calib_schema": 1, "n": 1}
    last = {"calib_schema": 1, "n": 2}
    stdout = "\n".join([
        "[INFO] launching",
        json.dumps(first),
        "worker-0: " + json.dumps(last),
        "[INFO] Process 1 exits successfully.",
    ])
    assert parse_output(stdout) == last
    assert parse_output("no json here\n{\"other\": 1}") is None


def test_failure_reason_is_the_exception_line():
    stderr = "Traceback (most recent call last):\n  File x\nRuntimeError: gloo connect failed\n[INFO] exit 1\n"
    assert failure_reason(stderr, "") == "RuntimeError: gloo connect failed"
    assert failure_reason("", "only this\n") == "only this"


def test_shm_buffers_of_the_port_are_removed_and_no_others():
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    mine = [f"/dev/shm/deepspeed_allreduce_buffer_0_127.0.0.1_1_{rank}" for rank in (0, 1)]
    other = "/dev/shm/deepspeed_allreduce_buffer_0_127.0.0.1_11_0"
    for path in [*mine, other]:
        Path(path).write_bytes(b"x")
    try:
        assert remove_shm_buffers(1) == len(mine)
        assert not any(os.path.exists(p) for p in mine) and os.path.exists(other)
    finally:
        for path in [*mine, other]:
            if os.path.exists(path):
                os.remove(path)


def test_bad_requests_fail_before_launching(tmp_path, capsys):
    with pytest.raises(InputError, match="needs a --hostfile"):
        calibrate(2, num_nodes=2)
    with pytest.raises(InputError, match="at least 1"):
        calibrate(0)
    assert main(["calibrate", "--gpus", "2", "--hostfile", str(tmp_path / "none"), "--quick"]) == 2
    assert "does not exist" in capsys.readouterr().err
