"""Where experiments run: hosts and their slots, and how many GPUs and nodes each experiment takes.

The DeepSpeed launcher's meaning: a slot is one GPU (one process on CPU); ``num_gpus`` is the
number of slots per node and ``num_nodes`` the number of hosts of one experiment. Hosts come from a
DeepSpeed hostfile (``hostname slots=N`` lines; ``#`` comments) or, without one, from this machine:
its CUDA devices, or on a machine without CUDA the requested number of CPU processes (DeepSpeed
runs them with ``DS_ACCELERATOR=cpu`` and the gloo backend).

Experiments that fit side by side on disjoint slots run at the same time:
:meth:`Resources.concurrent_slots` hands out, as long as possible, the lowest free ``num_gpus``
slots on each of the first ``num_nodes`` hosts that still have that many (DeepSpeed's scheduler
does the same per request), e.g. 16 GPUs on one host with 8 per experiment gives 2 at once.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from simtune.errors import InputError, LaunchError

DEFAULT_HOSTFILE = "/job/hostfile"
"""The hostfile DeepSpeed's launcher reads when none is given."""

ACCELERATORS = ("cuda", "cpu")

LAUNCHERS = ("pdsh", "slurm", "openmpi", "mpich", "impi", "mvapich")
"""DeepSpeed's multi-node launchers (its ``--launcher``); pdsh is its default."""

_HOSTFILE_LINE = re.compile(r"^(\S+)\s+slots\s*=\s*(\d+)\s*(#.*)?$")



def cpu_model_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (the name calibration records)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"

def local_hostnames() -> frozenset[str]:
    """Names under which this machine may appear in a hostfile."""
    name = socket.gethostname()
    return frozenset({"localhost", "127.0.0.1", name, name.split(".")[0], socket.getfqdn()})


@dataclass(frozen=True)
class SlotAssignment:
    """The slots one experiment runs on: ``((host, (slot, ...)), ...)``."""

    slots: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(host for host, _ in self.slots)

    def include_arg(self) -> str:
        """The launcher's ``--include`` value, e.g. ``worker-0:0,1@worker-1:0,1``."""
        return "@".join(f"{host}:{','.join(map(str, ids))}" for host, ids in self.slots)


@dataclass(frozen=True)
class Resources:
    hosts: tuple[tuple[str, int], ...]
    """``((hostname, slots), ...)`` in hostfile order."""
    num_gpus: int
    """Slots (GPUs, or CPU processes) per node of one experiment."""
    num_nodes: int
    """Hosts of one experiment."""
    accelerator: str
    """``"cuda"`` or ``"cpu"``."""
    hostfile: str | None = None
    """The hostfile the hosts came from; None for this machine alone."""
    device_ids: tuple[int, ...] | None = None
    """This machine's visible CUDA device ids (``CUDA_VISIBLE_DEVICES``) when they are not 0..n-1."""
    launcher: str = "pdsh"
    """DeepSpeed's ``--launcher``: how a launch reaches the hosts (pdsh over ssh, srun steps of a
    Slurm allocation, mpirun, ...)."""
    launcher_args: str = ""
    """DeepSpeed's ``--launcher_args``: options added to the launcher's command (srun, mpirun)."""

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise InputError(f"--launcher must be one of {', '.join(LAUNCHERS)}, not {self.launcher!r}.")
        if self.accelerator not in ACCELERATORS:
            raise InputError(f"The accelerator must be one of {', '.join(ACCELERATORS)}, not {self.accelerator!r}.")
        if self.num_gpus < 1:
            raise InputError(f"--num_gpus must be at least 1, not {self.num_gpus}.")
        if self.num_nodes < 1:
            raise InputError(f"--num_nodes must be at least 1, not {self.num_nodes}.")
        if not self.hosts:
            raise InputError(f"No {self.accelerator} device is available to run experiments on.")
        if self.num_nodes > len(self.hosts):
            raise InputError(
                f"--num_nodes {self.num_nodes} asks for more nodes than the {len(self.hosts)} available."
            )
        large_enough = sum(1 for _, slots in self.hosts if slots >= self.num_gpus)
        if large_enough < self.num_nodes:
            most = max(slots for _, slots in self.hosts)
            raise InputError(
                f"--num_gpus {self.num_gpus} on {self.num_nodes} node(s) asks for more slots than "
                f"available (the largest host has {most})."
            )

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def resolve(cls, *, num_gpus: int | None = None, num_nodes: int | None = None,
                hostfile: str | os.PathLike | None = None) -> "Resources":
        """Resources as DeepSpeed's launcher would see them: the given hostfile, else
        ``/job/hostfile`` if it exists, else this machine."""
        if hostfile is None and os.path.isfile(DEFAULT_HOSTFILE):
            hostfile = DEFAULT_HOSTFILE
        if hostfile is not None:
            return cls.from_hostfile(hostfile, num_gpus=num_gpus, num_nodes=num_nodes)
        return cls.local(num_gpus=num_gpus, num_nodes=num_nodes)

    @classmethod
    def from_hostfile(cls, path: str | os.PathLike, *, num_gpus: int | None = None,
                      num_nodes: int | None = None, accelerator: str | None = None) -> "Resources":
        """Hosts from a DeepSpeed hostfile; by default an experiment takes every host and the
        smallest host's slot count per node (DeepSpeed's autotuner default)."""
        hosts = parse_hostfile(path)
        return cls(
            hosts=hosts,
            num_gpus=min(slots for _, slots in hosts) if num_gpus is None else num_gpus,
            num_nodes=len(hosts) if num_nodes is None else num_nodes,
            accelerator=accelerator or detect_accelerator(),
            hostfile=str(Path(path).resolve()),
        )

    @classmethod
    def local(cls, *, num_gpus: int | None = None, num_nodes: int | None = None,
              accelerator: str | None = None) -> "Resources":
        """This machine: its CUDA devices, or without CUDA ``num_gpus`` CPU processes (default 1)."""
        if num_nodes is not None and num_nodes > 1:
            raise InputError(f"--num_nodes {num_nodes} needs a hostfile that names the nodes.")
        accelerator = accelerator or detect_accelerator()
        device_ids = None
        if accelerator == "cuda":
            import torch

            slots = torch.cuda.device_count()
            if num_gpus is not None and num_gpus > slots:
                raise InputError(f"--num_gpus {num_gpus} asks for more GPUs than the {slots} on this machine.")
            device_ids = visible_device_ids(slots)
        else:
            slots = 1 if num_gpus is None else num_gpus
        return cls(
            hosts=(("localhost", slots),) if slots > 0 else (),
            num_gpus=slots if num_gpus is None else num_gpus,
            num_nodes=1,
            accelerator=accelerator,
            device_ids=device_ids,
        )

    # -- queries ------------------------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return self.num_gpus * self.num_nodes

    def slot_ids(self, host: str, slots: int) -> tuple[int, ...]:
        if self.hostfile is None and self.device_ids is not None:
            return self.device_ids[:slots]
        return tuple(range(slots))

    @property
    def uses_own_launcher(self) -> bool:
        """Whether launches go through a launcher other than DeepSpeed's default (pdsh or local)."""
        return self.launcher != "pdsh"

    def concurrent_slots(self) -> tuple[SlotAssignment, ...]:
        """The slot sets of the experiments that can run at once (its length is how many).
        Through another launcher than pdsh one experiment runs at a time, on the first
        ``num_gpus`` slots of the first ``num_nodes`` hosts (srun and mpirun place processes by
        count, not by slot)."""
        if self.uses_own_launcher:
            chosen = [host for host, slots in self.hosts if slots >= self.num_gpus][: self.num_nodes]
            return (SlotAssignment(tuple((host, tuple(range(self.num_gpus))) for host in chosen)),)
        free = {host: list(self.slot_ids(host, slots)) for host, slots in self.hosts}
        assignments = []
        while True:
            chosen = [host for host, _ in self.hosts if len(free[host]) >= self.num_gpus]
            chosen = chosen[: self.num_nodes]
            if len(chosen) < self.num_nodes:
                return tuple(assignments)
            assignments.append(
                SlotAssignment(tuple((host, tuple(free[host][: self.num_gpus])) for host in chosen))
            )
            for host in chosen:
                del free[host][: self.num_gpus]

    def processes_at_once_per_host(self) -> int:
        """The most processes one host runs when every concurrent slot set is busy."""
        per_host: dict[str, int] = {}
        for assignment in self.concurrent_slots():
            for host, ids in assignment.slots:
                per_host[host] = per_host.get(host, 0) + len(ids)
        return max(per_host.values(), default=self.num_gpus)

    def on_this_machine_alone(self) -> bool:
        """Whether one experiment runs on this machine only (so a launch here stands in for it)."""
        return self.num_nodes == 1 and all(host in local_hostnames() for host in self.concurrent_slots()[0].hosts)

    def is_first_local_slots(self, assignment: SlotAssignment) -> bool:
        """Whether ``--num_gpus`` alone (no ``--include``) selects exactly ``assignment``."""
        return (
            self.hostfile is None
            and self.device_ids is None
            and assignment.slots == (("localhost", tuple(range(self.num_gpus))),)
        )

    def to_dict(self) -> dict:
        return {
            "hosts": [list(host) for host in self.hosts],
            "num_gpus": self.num_gpus,
            "num_nodes": self.num_nodes,
            "accelerator": self.accelerator,
            "hostfile": self.hostfile,
            "launcher": self.launcher,
            "launcher_args": self.launcher_args,
        }


def detect_accelerator() -> str:
    """``DS_ACCELERATOR`` when it names cuda or cpu; else ``"cuda"`` when torch sees a CUDA
    device, else ``"cpu"``. A CPU-only build of torch (its ``torch/version.py`` names no CUDA or
    ROCm version) is recognised without importing torch, which takes over a second."""
    chosen = os.environ.get("DS_ACCELERATOR", "").strip().lower()
    if chosen in ACCELERATORS:
        return chosen
    if "torch" not in sys.modules and _torch_build_is_cpu_only():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "cpu"


def _torch_build_is_cpu_only() -> bool:
    """True when the installed torch's ``version.py`` sets ``cuda`` and ``hip`` to None."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text(encoding="utf-8")
    except OSError:
        return False
    builds = dict(re.findall(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(.+?)\s*$", text, flags=re.MULTILINE))
    return builds.get("cuda") == "None" and builds.get("hip") == "None"


def visible_device_ids(count: int) -> tuple[int, ...] | None:
    """The ids in ``CUDA_VISIBLE_DEVICES`` when they are plain integers other than 0..count-1."""
    text = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not text:
        return None
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        return None
    ids = ids[:count]
    return None if ids == tuple(range(len(ids))) else ids


def parse_hostfile(path: str | os.PathLike) -> tuple[tuple[str, int], ...]:
    """``((hostname, slots), ...)`` from a DeepSpeed hostfile."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"The hostfile {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"The hostfile {path} cannot be read ({exc}).") from None
    hosts: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _HOSTFILE_LINE.match(line)
        if match is None:
            raise LaunchError(f"Hostfile {path} line {number} is not 'hostname slots=N': {line!r}.")
        host, slots = match.group(1), int(match.group(2))
        if slots < 1:
            raise LaunchError(f"Hostfile {path} line {number} gives {host} no slots.")
        if host in hosts:
            raise LaunchError(f"Hostfile {path} names {host} twice (line {number}).")
        hosts[host] = slots
    if not hosts:
        raise LaunchError(f"Hostfile {path} names no host.")
    return tuple(hosts.items())
