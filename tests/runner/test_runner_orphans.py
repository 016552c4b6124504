"""simtune killed by SIGKILL in the middle of an experiment: its launch (launcher and ranks) ends
with it and the launch's /dev/shm buffers go, and the next search reads what the experiment left
(metrics written before the end: ok; else run again). One real 2-process launch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simtune.runner.runner import recorded_result
from simtune.watchdog import SHM_DIR, live_members

REPO = Path(__file__).parents[2]
TINY_TRAIN = Path(__file__).parents[1] / "data" / "tiny_train.py"

SEARCH = """
import sys
from simtune.runner import Experiment, Resources, Runner
runner = Runner((sys.argv[1], ["--deepspeed", "ds.json", "--batch_size", "1"]),
                Resources.local(num_gpus=2, accelerator="cpu"), sys.argv[2] + "/results", sys.argv[2] + "/exps",
                start_profile_step=2, end_profile_step=100000, arg_mappings={"train_micro_batch_size_per_gpu": "--batch_size"})
runner.run([Experiment("z0_gas1_tmbspg1", None, {"train_micro_batch_size_per_gpu": 1, "train_batch_size": 2,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}})])
"""


def buffers(port: int) -> list[Path]:
    return sorted(SHM_DIR.glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_killed_simtune_takes_its_launch_and_buffers_with_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    search = subprocess.Popen([sys.executable, "-c", SEARCH, str(TINY_TRAIN), str(tmp_path)], env=env)
    record_path = tmp_path / "results" / "z0_gas1_tmbspg1" / "exp.json"

    def record():
        try:
            return json.loads(record_path.read_text())
        except (OSError, ValueError):
            return {}

    pgid = None
    try:
        assert wait_until(lambda: "pgid" in record() and buffers(record()["master_port"]), 120), \
            "the launch did not get as far as its shared-memory buffers"
        pgid, port = record()["pgid"], record()["master_port"]
        search.send_signal(signal.SIGKILL)
        search.wait()
        assert wait_until(lambda: not live_members(pgid), 15), "the launch outlived simtune"
        assert wait_until(lambda: not buffers(port), 5), "the launch's /dev/shm buffers were left behind"
        assert record()["status"] == "running"
    finally:
        search.kill()
        search.wait()
        if pgid is not None and live_members(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_an_experiment_left_running_is_recorded_ok_if_its_metrics_are_complete_else_run_again(tmp_path):
    from simtune.probe.protocol import REQUIRED_METRIC_KEYS

    config = {"train_micro_batch_size_per_gpu": 1}
    port = 60000 + os.getpid() % 5000
    leftover = SHM_DIR / f"deepspeed_allreduce_buffer_0_127.0.0.1_{port}_0"
    record = {"name": "z0", "ds_config": config, "status": "running", "master_port": port, "pgid": 1}
    (tmp_path / "exp.json").write_text(json.dumps(record))
    leftover.write_bytes(b"\0")
    try:
        assert recorded_result(tmp_path, config) is None  # no metrics: it runs again
        assert not leftover.exists()
        metrics = {key: 1.0 for key in REQUIRED_METRIC_KEYS}
        (tmp_path / "metrics.json").write_text(json.dumps(metrics))
        result = recorded_result(tmp_path, config)
        assert result.status == "ok" and result.reused and result.metrics["throughput"] == 1.0
        assert json.loads((tmp_path / "exp.json").read_text())["status"] == "ok"
    finally:
        leftover.unlink(missing_ok=True)
