"""Stale build locks of torch extensions: a lock whose build was stopped is removed, before a
launch and after a launch is stopped; a lock a live build holds is kept. Real processes take the
locks with torch's own FileBaton; one real launch through DeepSpeed's launcher is stopped mid-build."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simtune.runner import Experiment, Resources, Runner
from simtune.runner.build_locks import build_locks, remove_stale_build_locks

HANG_IN_BUILD = Path(__file__).parents[1] / "data" / "hang_in_build.py"

TAKE_LOCK = """
import sys, time
from torch.utils.file_baton import FileBaton
assert FileBaton(sys.argv[1]).try_acquire()
print("held", flush=True)
time.sleep(300)
"""


def take_lock(lock: Path) -> subprocess.Popen:
    """A live process that holds ``lock`` as a build in progress does."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", TAKE_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_only_a_lock_no_live_process_holds_is_removed(tmp_path):
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    live, dead = tmp_path / "ext" / "cpu_adam" / "lock", tmp_path / "ext" / "fused_adam" / "lock"
    holder, killed = take_lock(live), take_lock(dead)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert build_locks(env) == [live, dead]
        with pytest.warns(UserWarning, match="fused_adam/lock, which no running process holds"):
            assert remove_stale_build_locks(env, why="test") == [dead]
        assert live.exists() and not dead.exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_default_folder_is_the_cache_of_each_python_and_accelerator(tmp_path):
    lock = tmp_path / "cache" / "torch_extensions" / "py311_cpu" / "fused_adam" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    assert build_locks({"XDG_CACHE_HOME": str(tmp_path / "cache")}) == [lock]
    assert build_locks({"HOME": str(tmp_path), "XDG_CACHE_HOME": ""}) == []


@pytest.mark.slow
def test_a_launch_stopped_mid_build_leaves_no_lock_and_a_stale_one_is_removed_first(tmp_path, monkeypatch):
    extensions = tmp_path / "ext"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(extensions))
    stale = extensions / "cpu_adam" / "lock"
    stale.parent.mkdir(parents=True)
    stale.touch()
    runner = Runner((str(HANG_IN_BUILD), ["--deepspeed", "ds.json"]), Resources.local(num_gpus=1, accelerator="cpu"),
                    tmp_path / "results", tmp_path / "exps", timeout_s=20)
    config = {"train_micro_batch_size_per_gpu": 1, "train_batch_size": 1}
    with pytest.warns(UserWarning) as warned:
        result, = runner.run([Experiment("z0_gas1_tmbspg1", None, config)])
    assert result.status == "timeout"
    assert "building fused_adam" in (Path(result.result_dir) / "stdout.log").read_text()  # stopped mid-build
    messages = " ".join(str(w.message) for w in warned)
    assert f"removed the build lock {stale}" in messages
    assert f"removed the build lock {extensions / 'fused_adam' / 'lock'}" in messages
    assert build_locks({"TORCH_EXTENSIONS_DIR": str(extensions)}) == []
    assert json.loads((Path(result.result_dir) / "exp.json").read_text())["status"] == "timeout"
