"""Where hardware profiles live, and loading and saving them.

Folders, searched in this order (the first file of a name wins, except that a measured profile
beats a spec one of the same name):

1. each folder in ``SIMTUNE_PROFILE_PATH`` (separated like ``PATH``),
2. the user folder ``~/.simtune/profiles`` (where ``simtune calibrate`` saves by default),
3. the shipped ``hardware_profiles/`` folder next to the package.

A profile named ``NAME`` is the file ``NAME.json``. For the same hardware (same device name,
compared case- and space-insensitively, and the same device count) a measured profile always
wins over a spec one: :func:`list_profiles` marks the spec one as superseded and
:func:`find_profile_for` returns the measured one. :func:`load_profile` loads exactly the
profile it is given (by name or path).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from simtune.atomic import write_atomically
from simtune.errors import ProfileError
from simtune.hardware.profile import HardwareProfile
from simtune.hardware.serialize import profile_from_dict, profile_to_dict, validate

PROFILE_PATH_ENV = "SIMTUNE_PROFILE_PATH"
HOME_ENV = "SIMTUNE_HOME"


def _shipped_dir() -> Path:
    """The shipped ``hardware_profiles/``: beside the package in a source checkout (editable
    install), else where a wheel installs its data files (``<prefix>/share/simtune/``)."""
    beside = Path(__file__).resolve().parents[2] / "hardware_profiles"
    installed = Path(sys.prefix) / "share" / "simtune" / "hardware_profiles"
    return beside if beside.is_dir() or not installed.is_dir() else installed


SHIPPED_DIR = _shipped_dir()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def simtune_home() -> Path:
    """simtune's own folder: ``$SIMTUNE_HOME`` when set, else ``~/.simtune`` (resolved at each
    call, so a changed environment is honoured)."""
    env = os.environ.get(HOME_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".simtune"


def user_dir() -> Path:
    """``<simtune home>/profiles``: where ``simtune calibrate`` saves by default."""
    return simtune_home() / "profiles"


def profile_side_file(subfolder: str, profile_name: str, folder: str | os.PathLike[str] | None = None) -> Path:
    """``<folder>/<profile>.json``, the folder by default ``<user profile folder>/<subfolder>``
    (a sub-folder, so that profile listings do not mistake the file for a profile): where what
    is learnt on one profile is kept beside it (residuals, engine costs)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in profile_name) or "profile"
    return Path(folder if folder is not None else user_dir() / subfolder) / f"{safe}.json"


def profile_dirs() -> list[tuple[Path, str]]:
    """``(folder, origin)`` in search order; origin is "env", "user" or "shipped"."""
    dirs: list[tuple[Path, str]] = []
    for part in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep):
        if part.strip():
            dirs.append((Path(part).expanduser(), "env"))
    dirs.append((user_dir(), "user"))
    dirs.append((SHIPPED_DIR, "shipped"))
    return dirs


def same_hardware_key(device_name: str, device_count: int) -> tuple[str, int]:
    """Device names compared without case and with runs of spaces collapsed."""
    return (" ".join(device_name.lower().split()), device_count)


@dataclass(frozen=True)
class ProfileEntry:
    """One profile found on disk, as ``simtune profiles`` lists it."""

    name: str
    kind: str
    device_name: str
    device_count: int
    memory_bytes: int
    path: Path
    origin: str
    superseded_by: Optional[str] = None
    """For a spec profile: the measured profile of the same hardware that wins over it."""
    nodes: int = 1
    """Nodes the profile was measured on (spec profiles: one)."""


@dataclass(frozen=True)
class ProfileProblem:
    """A file in a profile folder that is not a valid profile."""

    path: Path
    message: str


def read_profile_file(path: Union[str, os.PathLike]) -> HardwareProfile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"Hardware profile file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"Hardware profile file {path} cannot be read ({exc}).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"Hardware profile file {path} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    return profile_from_dict(data, source=str(path))


def _scan() -> tuple[list[ProfileEntry], list[ProfileProblem]]:
    chosen: dict[str, ProfileEntry] = {}
    problems: list[ProfileProblem] = []
    for folder, origin in profile_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            try:
                profile = read_profile_file(path)
            except ProfileError as exc:
                problems.append(ProfileProblem(path, str(exc)))
                continue
            entry = ProfileEntry(
                name=path.stem,
                kind=profile.kind,
                device_name=profile.device.name,
                device_count=profile.device.count,
                memory_bytes=profile.device.memory_bytes,
                path=path,
                origin=origin,
                nodes=profile.device.nodes,
            )
            earlier = chosen.get(entry.name)
            if earlier is None or (earlier.kind == "spec" and entry.kind == "measured"):
                chosen[entry.name] = entry
    measured = {}
    for entry in chosen.values():
        if entry.kind == "measured":
            measured.setdefault(same_hardware_key(entry.device_name, entry.device_count), entry.name)
    entries = []
    for entry in sorted(chosen.values(), key=lambda e: e.name):
        winner = measured.get(same_hardware_key(entry.device_name, entry.device_count))
        if entry.kind == "spec" and winner is not None:
            entry = dataclasses.replace(entry, superseded_by=winner)
        entries.append(entry)
    return entries, problems


def list_profiles() -> list[ProfileEntry]:
    """Every valid profile in the profile folders, by name (invalid files are left out)."""
    return _scan()[0]


def profile_problems() -> list[ProfileProblem]:
    """Files in the profile folders that are not valid profiles, with why."""
    return _scan()[1]


def find_profile_for(device_name: str, device_count: int, nodes: int = 1) -> Optional[ProfileEntry]:
    """The profile for this hardware: a measured one if any, else a spec one, else None; among
    those, one measured on ``nodes`` nodes first (the same devices split into other nodes, as
    ``SIMTUNE_NODE_IDS`` can make them, have other links)."""
    key = same_hardware_key(device_name, device_count)
    matches = [e for e in list_profiles() if same_hardware_key(e.device_name, e.device_count) == key]
    matches.sort(key=lambda e: (e.kind != "measured", e.nodes != nodes, e.name))
    return matches[0] if matches else None


def _looks_like_path(text: str) -> bool:
    return text.endswith(".json") or os.sep in text or (os.altsep is not None and os.altsep in text)


def load_profile(path_or_name: Union[str, os.PathLike]) -> HardwareProfile:
    """A profile from a JSON file path, or by name from the profile folders."""
    text = os.fspath(path_or_name)
    if _looks_like_path(text) or Path(text).is_file():
        return read_profile_file(text)
    for entry in list_profiles():
        if entry.name == text:
            return read_profile_file(entry.path)
    for problem in profile_problems():
        if problem.path.stem == text:
            raise ProfileError(f"Hardware profile {text!r} is corrupt: {problem.message[0].lower()}"
                               f"{problem.message[1:]}")
    names = ", ".join(e.name for e in list_profiles()) or "none"
    raise ProfileError(f"No hardware profile is named {text!r} (available: {names}).")


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ProfileError(
            f"Hardware profile name {name!r} must start with a letter or digit and hold only letters, "
            "digits, '.', '_' and '-'."
        )
    return name


def save_profile(profile: HardwareProfile, path: Union[str, os.PathLike, None] = None) -> Path:
    """Validate and write ``profile``; ``path`` is a file, or a folder for ``<name>.json``
    (default: the user folder). Returns the file written."""
    check_name(profile.name)
    validate(profile)
    target = Path(path).expanduser() if path is not None else user_dir()
    if target.suffix != ".json":
        target = target / f"{profile.name}.json"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProfileError(f"Hardware profile {profile.name!r} cannot be written to {target} ({exc}).") from None
    return write_atomically(target, json.dumps(profile_to_dict(profile), indent=2) + "\n")
