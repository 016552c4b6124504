"""Script mode, on the host: measure the model of the user's own training script, unmodified, in
one launch, or read the cached measurement.

:func:`calibrate_script` renders the script's DeepSpeed config at ZeRO stage 0 (so no gradient
hook communicates) and has DeepSpeed's launcher start every rank as

    python -m simtune.calib.script_rank --simtune-probe=REQUEST.json SCRIPT ARGS...

(see that module for what the ranks measure); rank 0 writes the calibration JSON, which is cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from simtune.calibration.workload import (DEFAULT_MICRO_BATCH_SIZES, LOG_PREFIX, Log, WorkloadCalibration,
                                          WorkloadCalibrationError, cached_measurement, fingerprint, save, say,
                                          script_identity)
from simtune.calibration.workload_launch import run_in_own_group
from simtune.hardware.profile import HardwareProfile
from simtune.runner.launcher import (deepspeed_launcher, free_port, launch_env, launcher_args, mapped_args,
                                     release_port, with_config_path)
from simtune.runner.outcome import first_exception
from simtune.runner.resources import Resources
from simtune.watchdog import remove_shm_buffers

RANK_MODULE = "simtune.calib.script_rank"


def calibrate_script(script: str, args: Sequence[str], ds_config: Mapping[str, Any], profile: HardwareProfile, *,
                     precision: str, num_gpus: int, seq_len: Optional[int] = None,
                     micro_batch_sizes: Sequence[int] = DEFAULT_MICRO_BATCH_SIZES, repeats: int = 10,
                     cache_dir: Optional[os.PathLike[str] | str] = None, refresh: bool = False,
                     timeout_s: Optional[float] = 900.0, log: Optional[Log] = say,
                     arg_mappings: Optional[Mapping[str, str]] = None) -> WorkloadCalibration:
    """Measure the model of the user's script in one launch on ``num_gpus`` local ranks (its
    DeepSpeed config at stage 0, micro-batch as the user set it or 1, no accumulation, and the
    ``arg_mappings`` flags set to match, as for an experiment: a Hugging Face Trainer refuses a
    config that disagrees with its arguments), or return the cached measurement for the same
    script, arguments, modification time, sequence length, precision and profile."""
    key = fingerprint(script_identity(script, args), seq_len or 0, precision, profile.name)
    path, cached = cached_measurement(key, cache_dir, refresh, f"{script} ({precision}, profile {profile.name})",
                                      log)
    if cached is not None:
        return cached
    resources = Resources.resolve(num_gpus=num_gpus)
    with tempfile.TemporaryDirectory(prefix="simtune-script-") as folder:
        config_path = Path(folder) / "ds_config.json"
        request_path = Path(folder) / "request.json"
        out_path = Path(folder) / "calibration.json"
        config = stage_zero_config(ds_config)
        config_path.write_text(json.dumps(config))
        request_path.write_text(json.dumps({
            "name": str(Path(script).resolve()), "precision": precision, "profile_name": profile.name,
            "fingerprint": key, "micro_batch_sizes": list(micro_batch_sizes), "repeats": repeats,
            "memory_limit_bytes": int(profile.device.usable_memory_bytes), "seq_len": seq_len,
            "out": str(out_path)}))
        port = free_port()
        command = [deepspeed_launcher(), *launcher_args(resources, resources.concurrent_slots()[0], port),
                   "--module", RANK_MODULE, f"--simtune-probe={request_path}",
                   os.path.abspath(script), *mapped_args(with_config_path(args, str(config_path)), arg_mappings, config,
                                                          None)]
        if log:
            log(f"measuring the model of {script} in one launch on {num_gpus} rank(s)...")
        try:
            returncode, output = run_in_own_group(command, launch_env(resources, folder), timeout_s,
                                                  out_path.is_file, port)  # written whole before the last barrier
        except subprocess.TimeoutExpired:
            raise WorkloadCalibrationError(f"Measuring the model of {script} took longer than the time-out of "
                                           f"{timeout_s:g} s and was stopped (--timeout sets it).") from None
        finally:
            remove_shm_buffers(port)
            release_port(port)
        if not out_path.is_file():
            lines = [line for line in output.splitlines() if LOG_PREFIX in line or "Error" in line]
            reason = first_exception(output) or (lines[-1].strip() if lines else f"exit code {returncode}")
            raise WorkloadCalibrationError(f"Measuring the model of {script} failed: {reason.rstrip('.:')}.")
        calibration = WorkloadCalibration.from_dict(json.loads(out_path.read_text()))
    save(calibration, path)
    if log:
        log(f"workload calibration saved to {path} ({calibration.seconds:.1f} s of measurement).")
    return calibration


def stage_zero_config(ds_config: Mapping[str, Any]) -> dict[str, Any]:
    """The user's config for the measuring launch: ZeRO stage 0 (no gradient hooks, no
    partitioning), no offload, no accumulation, the user's micro-batch size when it is a number
    (else 1), no "autotuning" section and no train_batch_size (DeepSpeed derives it; see
    :meth:`simtune.space.TuningSpace.render`)."""
    config: dict[str, Any] = json.loads(json.dumps(ds_config))
    config.pop("autotuning", None)
    zero = config.get("zero_optimization")
    if isinstance(zero, dict):
        config["zero_optimization"] = {"stage": 0}
    mbs = config.get("train_micro_batch_size_per_gpu")
    if isinstance(mbs, list):
        mbs = min(m for m in mbs if isinstance(m, int)) if any(isinstance(m, int) for m in mbs) else 1
    if isinstance(mbs, bool) or not isinstance(mbs, int) or mbs < 1:
        mbs = 1
    config["train_micro_batch_size_per_gpu"] = mbs
    config["gradient_accumulation_steps"] = 1
    config.pop("train_batch_size", None)
    return config
