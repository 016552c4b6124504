"""Searches that meet a fault: a script that hangs before its model is measured, a second search
in the results folder of a running one, and two searches of one simtune home needing a calibration.
A first search killed by SIGKILL, and run again: tests/search/test_search_resume.py."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from simtune.hardware.registry import load_profile, save_profile
from simtune.search.model_inputs import local_device_name

TINY_TRAIN = Path(__file__).parents[1] / "data" / "tiny_train.py"
REPO = Path(__file__).parents[2]


def this_machine_profile(path: Path, processes: int = 1) -> Path:
    """A shipped profile relabelled as this CPU machine on ``processes`` ranks, so that a search
    with it measures and verifies here without calibrating first."""
    base = load_profile("dgx-a100-80gb")
    device = dataclasses.replace(base.device, kind="cpu", count_per_node=processes, name=local_device_name("cpu"))
    fits = {k: dataclasses.replace(f, device="cpu") for k, f in base.optimizer.fits.items()}
    profile = dataclasses.replace(base, name=f"cpu-{processes}proc-here", device=device,
                                  optimizer=dataclasses.replace(base.optimizer, fits=fits))
    return save_profile(profile, path)


def simtune(*argv, cwd, timeout_s=120):
    """Run the command line in a child process; (exit code, stdout, stderr, seconds)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "simtune", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout_s)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def test_the_launch_that_measures_a_scripts_model_is_held_to_the_timeout(tmp_path):
    profile = this_machine_profile(tmp_path / "here.json")
    (tmp_path / "ds.json").write_text(json.dumps({
        "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": [0, 1]},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}}))
    code, _, err, seconds = simtune("search", "--num_gpus", "1", "--timeout", "4", "--profile", str(profile),
                                    str(TINY_TRAIN), "--deepspeed", "ds.json", "--sleep_s", "300",
                                    cwd=tmp_path, timeout_s=60)
    assert code == 2, err
    assert "took longer than the time-out of 4 s" in err and "Traceback" not in err
    assert seconds < 30


HOLD_RESULTS_DIR = """
import sys, time
from pathlib import Path
from simtune.search.session import only_search_in
with only_search_in(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(300)
"""


def test_a_second_search_in_the_same_results_dir_is_refused_naming_the_first(tmp_path):
    results = tmp_path / "autotuning_results"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-c", HOLD_RESULTS_DIR, str(results)], env=env,
                             stdout=subprocess.PIPE, text=True)
    predict = ("search", "--verify-top", "0", "--profile", "dgx-a100-80gb", "--trials", "10")
    try:
        assert first.stdout.readline().strip() == "holding"
        code, out, err, _ = simtune(*predict, cwd=tmp_path)
        assert code == 2 and "Traceback" not in err, err
        assert f"simtune: error: Another search (pid {first.pid}) is running in autotuning_results" in err
        assert not (results / "study.db").exists() and out == ""
    finally:
        first.kill()  # SIGKILL: the kernel releases its lock
        first.wait()
    code, out, err, _ = simtune(*predict, cwd=tmp_path)
    assert code == 0, err
    assert (results / "study.db").exists()


CALIBRATE_ELSEWHERE = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from simtune.file_lock import exclusive
from simtune.hardware.registry import simtune_home
from simtune.search.model_inputs import CALIBRATION_LOCK_FILE
from test_search_faults import this_machine_profile
with exclusive(simtune_home() / CALIBRATION_LOCK_FILE):
    print("calibrating", flush=True)
    time.sleep(2)
    this_machine_profile(simtune_home() / "profiles" / "cpu-2proc-here.json", processes=2)
"""


def test_a_search_that_finds_another_calibrating_waits_and_takes_its_profile(tmp_path):
    from simtune.runner import Resources
    from simtune.search.model_inputs import choose_profile

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    other = subprocess.Popen([sys.executable, "-c", CALIBRATE_ELSEWHERE, "", str(Path(__file__).parent)], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "calibrating"
        said = []
        started = time.monotonic()
        choice = choose_profile(None, Resources.local(num_gpus=2, accelerator="cpu"), say=said.append)
        assert choice.how == "found" and choice.profile.name == "cpu-2proc-here"
        assert time.monotonic() - started < 10  # waited for the other, did not calibrate
        assert f"another search (pid {other.pid}) is calibrating this machine" in said[0]
    finally:
        other.kill()
        other.wait()
