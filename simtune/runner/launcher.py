"""The launcher command and environment of one experiment, free rendezvous ports, and running a
launch as one process group (stopped whole at a time-out).

The command (one argv list, never a shell string)::

    deepspeed (--num_nodes 1 --num_gpus N | --num_accelerators N on CPU
               | [--hostfile F] --include host:0,1@host2:0,1)
              --master_port P --module simtune.probe --simtune-probe=<result_dir>/probe.json
              SCRIPT ARGS...

``--num_gpus`` when the experiment takes the first N slots of this machine, ``--include``
otherwise (DeepSpeed refuses both together). A hostfile that names only this machine adds
``--no_ssh_check --master_addr 127.0.0.1`` (no ssh to oneself); a single remote host adds
``--force_multi`` (DeepSpeed would otherwise start it here).

Through another launcher (``--launcher slurm|openmpi|mpich|impi|mvapich``) the placement is
``--launcher L [--hostfile F] --no_ssh_check --master_addr FIRST_HOST [--force_multi]
--num_nodes M [--num_gpus N] [--launcher_args "..."]``: DeepSpeed's launcher then starts the
ranks with ``srun`` (or ``mpirun``) itself. For slurm, ``--num_gpus`` is given on GPUs only (it
becomes srun's ``--gpus-per-node``), ``--ntasks-per-node=N`` goes first in ``--launcher_args``,
and the probe is started by its file path (DeepSpeed's slurm launcher runs ``python -u SCRIPT``,
never a module).
In ARGS the DeepSpeed config after ``--deepspeed``/``--deepspeed_config`` (also the ``=``
forms) becomes ``<result_dir>/ds_config.json``, and each ``arg_mappings`` flag is set to the
experiment's value (the value after the flag replaced, or flag and value appended; booleans as
``true``/``false``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence

from simtune.atomic import write_atomically
from simtune.errors import InputError, LaunchError
from simtune.probe.protocol import PROBE_FLAG, SERVE_FLAG
from simtune.runner.arch_list import with_readable_arch_list
from simtune.runner.build_locks import remove_stale_build_locks
from simtune.runner.experiment import Experiment
from simtune.runner.resources import Resources, SlotAssignment, local_hostnames

CONFIG_FLAGS = ("--deepspeed", "--deepspeed_config")
"""Script flags that name the DeepSpeed config (Hugging Face uses the first, DeepSpeed's own
``add_config_arguments`` the second, with ``--deepspeed`` as a bare switch)."""

ENV_FILE_NAME = "deepspeed_env"
"""Per-experiment file the launcher exports to every node (passed as ``DS_ENV_FILE``)."""

STOP_GRACE_S = 5.0
"""After a time-out: seconds between SIGTERM to the process group and SIGKILL."""
FINISHED_POLL_S = 0.1
"""How often a run's ``finished()`` is asked."""
FINISHED_GRACE_S = 0.2
"""Once ``finished()``: how long the launcher gets to exit by itself before its group is stopped."""

_ports_in_use: set[int] = set()
_ports_lock = threading.Lock()


# -- ports ------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free now and not handed out by this process since (until :func:`release_port`)."""
    with _ports_lock:
        for _ in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("", 0))
                port = probe.getsockname()[1]
            if port not in _ports_in_use:
                _ports_in_use.add(port)
                return port
    raise LaunchError("No free TCP port could be found for the rendezvous.")


def release_port(port: int) -> None:
    """Let :func:`free_port` hand ``port`` out again (the experiment using it has ended)."""
    with _ports_lock:
        _ports_in_use.discard(port)


# -- script arguments -------------------------------------------------------------------------------
def _value_index(args: Sequence[str], index: int) -> int | None:
    """Index of the value of the flag at ``index`` given as ``--flag VALUE``, or None if bare."""
    following = index + 1
    if following < len(args) and not args[following].startswith("--"):
        return following
    return None


def with_config_path(args: Sequence[str], config_path: str) -> list[str]:
    """``args`` with every DeepSpeed config path replaced by ``config_path`` (a new list)."""
    out = list(args)
    replaced = False
    for index, arg in enumerate(args):
        name, has_value, _ = arg.partition("=")
        if name not in CONFIG_FLAGS:
            continue
        if has_value:
            out[index] = f"{name}={config_path}"
            replaced = True
        elif (value_index := _value_index(args, index)) is not None:
            out[value_index] = config_path
            replaced = True
    if not replaced:
        raise InputError(
            "The training script's arguments name no DeepSpeed config: pass it as "
            "--deepspeed ds_config.json or --deepspeed_config ds_config.json."
        )
    return out


def _names_a_file(value: str, cwd: str) -> bool:
    """Whether ``value`` is a relative path to something that exists under ``cwd`` (numbers and
    flags are not paths, even where a file of that name exists)."""
    if not value or value.startswith("-") or os.path.isabs(value):
        return False
    try:
        float(value)
        return False
    except ValueError:
        return os.path.exists(os.path.join(cwd, value))


def absolute_paths(args: Sequence[str], cwd: str) -> list[str]:
    """``args`` with every relative path to an existing file or folder (a value, or the value of
    ``--flag=value``) made absolute against ``cwd``, so that the command runs from anywhere."""
    out = []
    for arg in args:
        name, has_value, value = arg.partition("=")
        if has_value and name.startswith("-") and _names_a_file(value, cwd):
            out.append(f"{name}={os.path.normpath(os.path.join(cwd, value))}")
        elif _names_a_file(arg, cwd):
            out.append(os.path.normpath(os.path.join(cwd, arg)))
        else:
            out.append(arg)
    return out


def with_flag(args: Sequence[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag`` set to ``value``: each occurrence's value replaced, else appended."""
    out = list(args)
    found = False
    index = 0
    while index < len(out):
        name, has_value, _ = out[index].partition("=")
        if name == flag:
            found = True
            if has_value:
                out[index] = f"{flag}={value}"
            elif (value_index := _value_index(out, index)) is not None:
                out[value_index] = value
            else:
                out.insert(index + 1, value)
        index += 1
    return out if found else [*out, flag, value]


def format_flag_value(value: Any) -> str:
    """How a config value is written on a command line: booleans as ``true``/``false``,
    whole floats as integers (``5e8`` -> ``500000000``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _find_nested(config: Mapping[str, Any], key: str) -> Any:
    for value in config.values():
        if isinstance(value, Mapping):
            if key in value and not isinstance(value[key], (Mapping, list)):
                return value[key]
            found = _find_nested(value, key)
            if found is not None:
                return found
    return None


def experiment_value(key: str, ds_config: Mapping[str, Any], trial: Any) -> Any:
    """The experiment's value of ``key``: a top-level config value, else the trial's field of
    that name (e.g. ``activation_checkpointing``), else the first nested config value."""
    value = ds_config.get(key)
    if value is not None and not isinstance(value, (Mapping, list)):
        return value
    if trial is not None and hasattr(trial, key):
        return getattr(trial, key)
    return _find_nested(ds_config, key)


def mapped_args(args: Sequence[str], arg_mappings: Mapping[str, str] | None,
                ds_config: Mapping[str, Any], trial: Any) -> list[str]:
    """``args`` with each mapped flag set to the experiment's value (unset or "auto" values skipped)."""
    out = list(args)
    for key, flag in (arg_mappings or {}).items():
        value = experiment_value(key.strip(), ds_config, trial)
        if value is None or value == "auto":
            continue
        out = with_flag(out, flag.strip(), format_flag_value(value))
    return out


# -- the command ------------------------------------------------------------------------------------
def deepspeed_launcher() -> str:
    """The ``deepspeed`` launcher of this Python environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("deepspeed")
    if beside.is_file():
        return str(beside)
    found = shutil.which("deepspeed")
    if found is None:
        raise LaunchError("The deepspeed launcher was not found: install DeepSpeed in this environment.")
    return found


def own_launcher_args(resources: Resources, slots: SlotAssignment) -> list[str]:
    """The placement through ``resources.launcher`` (see the module docstring)."""
    placement = ["--launcher", resources.launcher]
    if resources.hostfile is not None:
        placement += ["--hostfile", resources.hostfile]
    placement += ["--no_ssh_check", "--master_addr", slots.hosts[0]]
    if len(slots.hosts) == 1:
        placement.append("--force_multi")
    placement += ["--num_nodes", str(len(slots.hosts))]
    extra = resources.launcher_args
    if resources.launcher == "slurm":
        extra = " ".join(part for part in (f"--ntasks-per-node={resources.num_gpus}", extra) if part)
    if resources.launcher != "slurm" or resources.accelerator != "cpu":
        count_flag = "--num_accelerators" if resources.accelerator == "cpu" else "--num_gpus"
        placement += [count_flag, str(resources.num_gpus)]
    return placement + ([f"--launcher_args={extra}"] if extra else [])  # "=": the value starts with "--"


def probe_args(resources: Resources, probe_settings: str | os.PathLike) -> list[str]:
    """How the launcher starts the probe: as a module, or by its file for DeepSpeed's slurm launcher."""
    if resources.launcher == "slurm":
        return [str(Path(__file__).resolve().parent.parent / "probe" / "__main__.py"),
                f"{PROBE_FLAG}={probe_settings}"]
    return ["--module", "simtune.probe", f"{PROBE_FLAG}={probe_settings}"]


def shared_launch_command(script: str, resources: Resources, slots: SlotAssignment, port: int,
                          folder: str | os.PathLike) -> list[str]:
    """The argv of a shared launch (:mod:`simtune.probe.serve`) of ``script`` on ``slots``: an
    experiment's launch with ``--simtune-serve=<folder>`` for its probe flag and no arguments;
    each run's arguments come with its request."""
    return [deepspeed_launcher(), *launcher_args(resources, slots, port), "--module", "simtune.probe",
            f"{SERVE_FLAG}={folder}", script]


def launcher_args(resources: Resources, slots: SlotAssignment, port: int) -> list[str]:
    """The launcher's own arguments: which slots and which rendezvous port."""
    if resources.uses_own_launcher:
        return [*own_launcher_args(resources, slots), "--master_port", str(port)]
    if resources.is_first_local_slots(slots):
        count_flag = "--num_accelerators" if resources.accelerator == "cpu" else "--num_gpus"
        placement = ["--num_nodes", "1", count_flag, str(resources.num_gpus)]
    else:
        placement = [] if resources.hostfile is None else ["--hostfile", resources.hostfile]
        placement += ["--include", slots.include_arg()]
        if resources.hostfile is not None and len(slots.hosts) == 1:
            if slots.hosts[0] in local_hostnames():
                placement += ["--no_ssh_check", "--master_addr", "127.0.0.1"]
            else:
                placement += ["--force_multi"]
    return [*placement, "--master_port", str(port)]


def build_command(
    experiment: Experiment,
    workload: tuple[str, Sequence[str]],
    resources: Resources,
    slots: SlotAssignment,
    port: int,
    result_dir: str | os.PathLike,
    *,
    arg_mappings: Mapping[str, str] | None = None,
    probe: bool = True,
    config_path: str | os.PathLike | None = None,
) -> list[str]:
    """The argv that runs ``experiment``; with ``probe=False`` the plain training command.
    The script gets ``config_path`` (default ``<result_dir>/ds_config.json``) as its config."""
    script, args = workload
    result_dir = Path(result_dir)
    script_args = with_config_path(args, str(config_path or result_dir / "ds_config.json"))
    script_args = mapped_args(script_args, arg_mappings, experiment.ds_config, experiment.trial)
    probe_part = probe_args(resources, result_dir / "probe.json") if probe else []
    return [deepspeed_launcher(), *launcher_args(resources, slots, port), *probe_part, script, *script_args]


# -- the environment --------------------------------------------------------------------------------
def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def rank_env(accelerator: str, local_size: int, processes_on_host: int) -> dict[str, str]:
    """The variables every rank needs: ``PYTHONUNBUFFERED=1``; on CPU also ``DS_ACCELERATOR=cpu``,
    ``LOCAL_SIZE = local_size`` (processes per node: DeepSpeed's CPU device count) and
    ``OMP_NUM_THREADS = cores // processes_on_host`` (without it the ranks oversubscribe the cores
    and step times are noise)."""
    env = {"PYTHONUNBUFFERED": "1"}
    if accelerator == "cpu":
        threads = max(1, usable_cores() // max(1, processes_on_host))
        env.update(DS_ACCELERATOR="cpu", LOCAL_SIZE=str(local_size), OMP_NUM_THREADS=str(threads))
    return env


def own_tools_first(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's folder first on ``PATH``, so that the launcher and its
    ranks JIT-build DeepSpeed's ops with the ``ninja`` of simtune's environment.

    torch keeps one build folder per op (``~/.cache/torch_extensions/<py>_<device>/<op>``), and a
    ``ninja`` of another version reads the other's build log as stale: launches alternating
    between a virtual environment's ``ninja`` (on ``PATH`` when it is activated) and the system's
    rebuilt ``deepspeed_shm_comm`` on every switch, 30-40 s of a CPU launch on two cores."""
    folder = os.path.dirname(sys.executable)
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    if folder and (not parts or parts[0] != folder):
        env["PATH"] = os.pathsep.join([folder, *[p for p in parts if p != folder]])
    return env


def run_on_cpu_ranks(program: Sequence[str], ranks: int, *, timeout_s: float = 600,
                     env: Mapping[str, str] | None = None,
                     cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``program`` (a script and its arguments) under DeepSpeed's launcher on ``ranks`` CPU
    processes of this machine (gloo, one OpenMP thread each), in ``cwd``, on a port of its own,
    with its shared-memory buffers removed after; the launcher's output is captured."""
    from simtune.watchdog import remove_shm_buffers

    run_env = own_tools_first({**(env if env is not None else os.environ), "DS_ACCELERATOR": "cpu",
                               "OMP_NUM_THREADS": "1"})
    port = free_port()
    try:
        return subprocess.run([deepspeed_launcher(), "--num_accelerators", str(ranks), "--master_port", str(port),
                               *program], cwd=cwd, env=run_env, capture_output=True, text=True, timeout=timeout_s)
    finally:
        remove_shm_buffers(port)
        release_port(port)


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, has_value, value = line.partition("=")
            if has_value and key.strip() and not key.lstrip().startswith("#"):
                values[key.strip()] = value
    return values


def launch_env(resources: Resources, result_dir: str | os.PathLike,
               base: Mapping[str, str] | None = None, *,
               rendezvous: tuple[str, int] | None = None) -> dict[str, str]:
    """The launcher's environment, and ``<result_dir>/deepspeed_env`` for the other nodes.

    The variables are :func:`rank_env`'s, with the cores shared among the processes of every
    experiment running at once on the host; through another launcher than pdsh also
    ``MASTER_ADDR`` and ``MASTER_PORT`` from ``rendezvous`` (host, port), which srun and mpirun
    do not set. The file merges the user's ``~/.deepspeed_env`` and ``./.deepspeed_env`` (the
    launcher reads neither once ``DS_ENV_FILE`` names another file) with these variables, which win.
    """
    ours = rank_env(resources.accelerator, resources.num_gpus, resources.processes_at_once_per_host())
    if resources.uses_own_launcher and rendezvous is not None:
        ours.update(MASTER_ADDR=rendezvous[0], MASTER_PORT=str(rendezvous[1]))
    exported: dict[str, str] = {}
    for folder in (Path.home(), Path.cwd()):
        exported.update(_read_env_file(folder / ".deepspeed_env"))
    exported.update(ours)
    env_file = Path(result_dir) / ENV_FILE_NAME
    write_atomically(env_file, "".join(f"{key}={value}\n" for key, value in exported.items()))
    env = own_tools_first(dict(os.environ)) if base is None else dict(base)
    with_readable_arch_list(env)
    env.update(ours)
    env["DS_ENV_FILE"] = str(env_file)
    return env


# -- running one launch -----------------------------------------------------------------------------
def kill_group(process: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group ``process`` leads (it was started in a new session)."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(process: subprocess.Popen) -> None:
    """Kill what is left of the group ``process`` leads and return once none of it is alive."""
    kill_group(process, signal.SIGKILL)
    process.wait()
    _wait_group_gone(process.pid)


def _wait_group_gone(pgid: int, timeout_s: float = 10.0) -> None:
    """Wait until no process of the group is left but zombies: SIGKILL is delivered
    asynchronously, and a rank still exiting would hold its port and shared-memory buffers for the
    next launch. A zombie holds neither; ranks whose launcher was stopped stay zombies until init
    reaps them, which can take a second or more."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if not _live_members(pgid):
            return
        time.sleep(0.05)


def _live_members(pgid: int) -> bool:
    """Whether a process of the group is alive (not a zombie)."""
    import psutil

    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return False


def start_watchdog(pgid: int, port: int | None, env: Mapping[str, str]) -> subprocess.Popen:
    """:mod:`simtune.watchdog` for the launch that leads ``pgid``: it ends the launch (and removes
    the /dev/shm buffers of ``port``) if this process dies first, by SIGKILL or a crash."""
    return subprocess.Popen([sys.executable, "-m", "simtune.watchdog", str(os.getpid()), str(pgid), str(port or 0)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(env), start_new_session=True)


def run_process_group(
    command: Sequence[str],
    env: Mapping[str, str],
    cwd: str | os.PathLike,
    stdout: IO,
    stderr: IO,
    timeout_s: float | None,
    *,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    on_end: Callable[[subprocess.Popen], None] | None = None,
    finished: Callable[[], bool] | None = None,
    port: int | None = None,
) -> tuple[int, bool, float]:
    """Run ``command`` in a new session, so the launcher and every rank it starts share one
    process group; returns (exit code, timed out, wall seconds).

    At ``timeout_s`` (None: no limit) the group gets SIGTERM, and SIGKILL ``STOP_GRACE_S`` later.
    However the run ends (exit, time-out, or an exception such as an interrupt), what is left of
    the group is killed and this returns only once none of its processes is left. Stale build
    locks of torch extensions (:mod:`simtune.runner.build_locks`) are removed before the launch,
    and after it when it was stopped.
    A :func:`watchdog <start_watchdog>` ends the group (and removes the /dev/shm buffers of
    ``port``) if this process dies before it. ``on_start(process)`` and ``on_end(process)`` bracket the run (e.g. to stop it from another
    thread with :func:`kill_group`).

    ``finished()``, asked every ``FINISHED_POLL_S``, says the ranks have written their results and
    are leaving (the probe's metrics, a measurement's files, written just before the ranks' last
    barrier and exit). The DeepSpeed launcher notices its ranks' exit only at its next once-a-
    second poll and then tears down two interpreters that imported torch and DeepSpeed, some 2-3 s
    after the ranks are gone; a run that is finished gets ``FINISHED_GRACE_S`` to exit by itself,
    then its group is stopped and the exit code reported is 0.
    """
    remove_stale_build_locks(env, why="left by an earlier build that was stopped")
    started = time.monotonic()
    timed_out = False
    finished_early = False
    deadline = None if timeout_s is None else started + timeout_s
    process = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                               env=dict(env), cwd=cwd, start_new_session=True)
    watchdog = start_watchdog(process.pid, port, env)
    try:
        if on_start is not None:
            on_start(process)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait = left if finished is None else (FINISHED_POLL_S if left is None else min(FINISHED_POLL_S, left))
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                kill_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
                break
            if finished is not None and finished():
                try:
                    process.wait(timeout=FINISHED_GRACE_S)
                except subprocess.TimeoutExpired:
                    finished_early = True
                break
    finally:
        kill_group(process, signal.SIGKILL)  # whatever of the group is left
        process.wait()
        _wait_group_gone(process.pid)
        if timed_out or process.returncode < 0:  # stopped: a build it had under way is left locked
            remove_stale_build_locks(env, why="left by the build of the launch just stopped")
        if on_end is not None:
            on_end(process)
        watchdog.kill()  # its launch is over
        watchdog.wait()
    return (0 if finished_early else process.returncode), timed_out, time.monotonic() - started
