"""``calibrate()``: measure this machine layout, fit a hardware profile and save it.

One real launch of ``simtune.calib.run_all`` on ``num_gpus`` ranks per node (CPU processes with gloo when
there is no GPU), then :func:`simtune.calibration.build.build_profile`, validation and
:func:`simtune.hardware.save_profile`. The default name comes from the device, the count and the
host (``cpu-2proc-<host>``, ``nvidia-h100-80gb-hbm3-8gpu-<host>``), the default folder is
``~/.simtune/profiles``.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from simtune.calibration.launch import LaunchResult, launch
from simtune.errors import InputError
from simtune.hardware.profile import HardwareProfile
from simtune.hardware.registry import check_name, list_profiles, read_profile_file, same_hardware_key, save_profile
from simtune.runner.resources import Resources, detect_accelerator, parse_hostfile

PathArg = Optional[Union[str, os.PathLike]]


@dataclass(frozen=True)
class CalibrationResult:
    profile: HardwareProfile
    path: Path
    """The profile file written."""
    wall_s: float
    """Wall time of the launch (start of the launcher to its exit)."""
    launch: LaunchResult


def calibrate_command(num_gpus: int, num_nodes: int, hostfile, name, out, quick: bool, nvme_path=None) -> str:
    """The ``simtune calibrate`` command line that asks for this calibration (for provenance)."""
    parts = ["simtune", "calibrate", "--gpus", str(num_gpus)]
    if num_nodes != 1 or hostfile:
        parts += ["--num_nodes", str(num_nodes)]
    if hostfile:
        parts += ["--hostfile", str(hostfile)]
    if name:
        parts += ["--name", name]
    if out:
        parts += ["--out", str(out)]
    if quick:
        parts.append("--quick")
    if nvme_path:
        parts += ["--nvme-path", str(nvme_path)]
    return shlex.join(parts)


def _check_out(out: PathArg) -> None:
    """Refuse an ``--out`` the profile cannot be saved to: a folder where a .json file is named,
    or a file (or a path through one) where a folder is."""
    if out is None:
        return
    target = Path(out).expanduser()
    if target.suffix == ".json" and target.is_dir():
        raise InputError(f"--out {out} is an existing folder, not a .json file.")
    folder = target.parent if target.suffix == ".json" else target
    for existing in (folder, *folder.parents):
        if existing.exists():
            if not existing.is_dir():
                raise InputError(f"--out {out} cannot be saved to: {existing} is a file, not a folder "
                                 f"(name a .json file or a folder).")
            return


def _check_request(num_gpus: int, num_nodes: int, hostfile) -> None:
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1:
        raise InputError(f"--gpus must be a whole number of at least 1, not {num_gpus!r}.")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise InputError(f"--num_nodes must be a whole number of at least 1, not {num_nodes!r}.")
    if num_nodes > 1 and not hostfile:
        raise InputError(f"--num_nodes {num_nodes} needs a --hostfile that names the nodes.")
    if hostfile:
        parse_hostfile(hostfile)  # a missing or malformed hostfile, before anything is launched


def _check_nvme_path(path: PathArg) -> str:
    """``--nvme-path`` as an absolute folder that exists and can be written to."""
    folder = Path(str(path)).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"--nvme-path {path} is not a folder (name a folder on the storage to swap to).")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"--nvme-path {path} cannot be written to.")
    return str(folder)


def _reference_peaks(device_name: str) -> tuple[dict, Optional[str]]:
    """Vendor peaks from a spec profile of the same device (any count), if one is known."""
    wanted = same_hardware_key(device_name, 0)[0]
    for entry in list_profiles():
        if entry.kind == "spec" and same_hardware_key(entry.device_name, 0)[0] == wanted:
            return dict(read_profile_file(entry.path).device.peak_flop_per_s), entry.name
    return {}, None


def save_measured_profile(raw: dict, *, command: str, note: str, name: Optional[str] = None,
                          out: PathArg = None) -> tuple[HardwareProfile, Path]:
    """Fit a profile to ``simtune.calib.run_all``'s raw output (vendor peaks from a spec profile of the
    same device when one is known), add ``note`` to its provenance, save it; (profile, file)."""
    from simtune.calibration.build import build_profile  # numpy and scipy: not in the measuring ranks' memory

    peaks, reference = _reference_peaks(raw["environment"]["device_name"])
    profile = build_profile(raw, name=name, command=command, reference_peaks=peaks, reference_name=reference)
    profile = dataclasses.replace(
        profile, provenance=dataclasses.replace(profile.provenance, notes=profile.provenance.notes + (note,)))
    return profile, save_profile(profile, out)


def run_calibration(num_gpus: int, num_nodes: int = 1, hostfile: PathArg = None, name: Optional[str] = None,
                    out: PathArg = None, quick: bool = False, *, timeout_s: float = 900.0,
                    command: Optional[str] = None, say: Optional[Callable[[str], None]] = None,
                    nvme_path: PathArg = None) -> CalibrationResult:
    """Calibrate and save; also returns where the profile went and how long the launch took.
    ``say`` hears what is launched, once the request is found valid; ``nvme_path``: a folder on
    the storage ZeRO-Infinity would swap to, timed too (:mod:`simtune.calib.nvme`)."""
    if name is not None:
        check_name(name)
    _check_request(num_gpus, num_nodes, hostfile)
    _check_out(out)
    if not timeout_s > 0:
        raise InputError(f"--timeout must be a positive number of seconds, not {timeout_s:g}.")
    accelerator = detect_accelerator()
    if not hostfile:
        Resources.local(num_gpus=num_gpus, accelerator=accelerator)  # refuses more GPUs than this machine has
    hostfile = str(Path(hostfile).resolve()) if hostfile else None
    if nvme_path is not None:
        nvme_path = _check_nvme_path(nvme_path)
    if say is not None:
        say(f"calibrating {num_gpus} rank(s) per node on {num_nodes} node(s){' (quick)' if quick else ''}...")
    work_dir = Path(tempfile.mkdtemp(prefix="simtune-calibrate-"))
    result = launch(
        num_gpus, work_dir, num_nodes=num_nodes, hostfile=hostfile, quick=quick, accelerator=accelerator,
        timeout_s=timeout_s, nvme_path=nvme_path,
    )
    launcher_note = "launcher: " + shlex.join(result.command[1:]).replace(str(work_dir), "<tmp>")
    profile, path = save_measured_profile(
        result.raw, command=command or calibrate_command(num_gpus, num_nodes, hostfile, name, out, quick, nvme_path),
        note=launcher_note, name=name, out=out)
    shutil.rmtree(work_dir, ignore_errors=True)
    return CalibrationResult(profile=profile, path=path, wall_s=result.wall_s, launch=result)


def calibrate(num_gpus: int, num_nodes: int = 1, hostfile: PathArg = None, name: Optional[str] = None,
              out: PathArg = None, quick: bool = False) -> HardwareProfile:
    """Measure ``num_gpus`` ranks per node on ``num_nodes`` nodes; save and return the profile.

    ``out`` is a file (``.json``) or a folder for ``<name>.json``; default ``~/.simtune/profiles``.
    """
    return run_calibration(num_gpus, num_nodes, hostfile, name, out, quick).profile
