"""Searches that meet a fault: a hanging script, ... Each runs the real command line."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simtune.hardware.registry import load_profile, save_profile
from simtune.strategies.model_inputs import local_device_name

TINY_TRAIN = Path(__file__).parent / "data" / "tiny_train.py"
REPO = Path(__file__).parents[1]


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
        "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 0},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}}))
    code, _, err, seconds = simtune("search", "--num_gpus", "1", "--timeout", "4", "--profile", str(profile),
                                    str(TINY_TRAIN), "--deepspeed", "ds.json", "--sleep_s", "300",
                                    cwd=tmp_path, timeout_s=60)
    assert code == 2, err
    assert "took longer than the time-out of 4 s" in err and "Traceback" not in err
    assert seconds < 30
