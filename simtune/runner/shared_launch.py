"""Experiments run one after another in one launch of the DeepSpeed launcher (model mode).

A launch of a small model is mostly its start: the ``deepspeed`` launcher and ``launch.py``
import torch and DeepSpeed, then every rank imports them and the model library and meets the
others at the rendezvous; on two CPU processes that is some 8 s of a 10 s experiment of
gpt2-tiny. :class:`SharedLaunch` starts the launch once, with the probe in its serving mode
(:mod:`simtune.probe.serve`), and hands it the runner's experiments one at a time as requests in
``results_dir/shared_launch/``; each experiment is still the training program's own run,
configured, timed, logged and classified exactly as its own launch would be. It can be started
ahead (:meth:`SharedLaunch.start`), so that its start overlaps the study of the cost model.

- A run that ends other than by its window closing (an exception, out of the memory budget, the
  program ending early) ends the launch with that run's exit code; the launcher's own lines since
  the request are appended to the experiment's logs, the outcome is read as any launch's, and the
  next experiment starts a new shared launch. So does a successful run whose engine outlived it
  or that left device memory allocated (its reply says why), so that no run is measured beside
  its leftovers.
- A shared launch that ends before it took a request up failed by itself, not by the
  experiment: that experiment and every later one run in launches of their own (the
  ``fallback`` executor), and :attr:`SharedLaunch.given_up` says why.
- The time-out is the runner's per experiment, counted from the request; at the time-out the
  whole launch is stopped.

Only for simtune's own training program (it is written to run again in one process) on one node
with one slot set: a user's script, several nodes or experiments side by side keep a launch each.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from simtune.probe.protocol import (PROBE_FLAG, read_json_object, reply_path, request_path, started_path,
                                    write_json_atomically)
from simtune.runner.executors import Execution, Executor, Interrupted, Launch, Submitted
from simtune.runner.launcher import free_port, release_port, start_watchdog, stop_group
from simtune.watchdog import remove_shm_buffers

FOLDER = "shared_launch"
"""The shared launch's folder in results_dir: its requests, replies and logs."""

POLL_S = 0.02
"""How often the runner looks for a reply."""

CLOSE_GRACE_S = 10.0
"""After the stop request: how long the launch gets to end by itself."""


def run_arguments(command: tuple[str, ...]) -> tuple[list[str], str]:
    """An experiment's launch command -> (the script's arguments, probe.json): what follows
    ``--simtune-probe=P SCRIPT`` and P."""
    for index, arg in enumerate(command):
        name, _, value = arg.partition("=")
        if name == PROBE_FLAG and index + 1 < len(command):
            return list(command[index + 2:]), value
    raise ValueError("the launch command has no probe flag followed by a script")


class SharedLaunch(Executor):
    """The runner's experiments as requests to one launch (see the module docstring)."""

    name = "local"

    def __init__(self, command_for: Callable[[int, Path], list[str]], env_for: Callable[[int, Path], dict[str, str]],
                 folder: Path, cwd: str, fallback: Executor) -> None:
        self.command_for = command_for
        """port, folder -> the shared launch's argv."""
        self.env_for = env_for
        self.folder = folder
        self.cwd = cwd
        self.fallback = fallback
        self.given_up: str | None = None
        """Why experiments now run in launches of their own (None: they share one)."""
        self.launches = 0
        """Shared launches started so far."""
        self.ended_after_run: list[str] = []
        """Runs after which their launch ended although they succeeded, and why (their engine
        outlived them, or they left device memory allocated: :func:`simtune.probe.serve.left_behind`)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._next = 1
        self._stopped = False
        self._lock = threading.Lock()

    # -- the executor's side ----------------------------------------------------------------------
    def capacity(self, slot_sets: int) -> int:
        return 1

    def begin(self) -> None:
        self._stopped = False
        self.fallback.begin()

    def running_pids(self) -> set[int]:
        process = self._process
        alive = {process.pid} if process is not None and process.poll() is None else set()
        return alive | self.fallback.running_pids()

    def stop_all(self) -> None:
        self._stopped = True
        self._end()
        self.fallback.stop_all()

    def execute(self, launch: Launch, submitted: Submitted) -> Execution:
        if self.given_up is not None:
            return self.fallback.execute(launch, submitted)
        argv, probe = run_arguments(launch.command)
        with self._lock:
            process = self.start()
            number, self._next = self._next, self._next + 1
        logs = launch.result_dir / "stdout.log", launch.result_dir / "stderr.log"
        for log in logs:
            log.touch()
        own_logs = self.folder / "stdout.log", self.folder / "stderr.log"
        offsets = [path.stat().st_size if path.is_file() else 0 for path in own_logs]
        write_json_atomically(request_path(self.folder, number), {
            "argv": argv, "probe": probe, "stdout": str(logs[0]), "stderr": str(logs[1])})
        submitted({"pgid": process.pid, "shared_launch": {"folder": str(self.folder), "request": number,
                                                          "launch": self.launches}})
        started = time.monotonic()
        deadline = None if launch.timeout_s is None else started + launch.timeout_s
        reply = reply_path(self.folder, number)
        while True:
            if reply.is_file():
                wall = time.monotonic() - started
                why = read_json_object(reply).get("ends")
                if why:  # the ranks are leaving: the next experiment starts a new launch
                    self.ended_after_run.append(f"{launch.name}: {why}")
                    self._end()
                return Execution(0, False, wall)
            if self._stopped:
                raise Interrupted()
            code = process.poll()
            if code is not None:
                took_up = started_path(self.folder, number).is_file()
                self._end()
                if not took_up:  # the launch failed by itself: this experiment gets a launch of its own
                    self.given_up = (f"the shared launch ended (exit code {code}) before it took {launch.name} up "
                                     f"(its logs: {self.folder})")
                    return self.fallback.execute(launch, submitted)
                for own, log, offset in zip(own_logs, logs, offsets):
                    _append_tail(own, log, offset)
                return Execution(code, False, time.monotonic() - started)
            if deadline is not None and time.monotonic() >= deadline:
                self._end()
                return Execution(None, True, time.monotonic() - started)
            time.sleep(POLL_S)

    def describe(self) -> str | None:
        """How the experiments ran, in words (None when no shared launch started)."""
        if not self.launches:
            return None
        words = ("in one shared launch" if self.launches == 1 else
                 f"in {self.launches} shared launches: a run that fails, or one that leaves its engine or "
                 f"device memory behind, ends one")
        return words if self.given_up is None else f"{words}, then each in its own: {self.given_up}"

    # -- the launch -------------------------------------------------------------------------------
    def start(self) -> subprocess.Popen[bytes]:
        """The shared launch, started now unless it runs already."""
        process = self._process
        if process is not None and process.poll() is None:
            return process
        self._end()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self._port = port = free_port()
        env = self.env_for(port, self.folder)
        with open(self.folder / "stdout.log", "wb") as out, open(self.folder / "stderr.log", "wb") as err:
            process = subprocess.Popen(self.command_for(port, self.folder), stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=err, env=env, cwd=self.cwd, start_new_session=True)
        self._watchdog = start_watchdog(process.pid, port, env)
        self._process, self._next = process, 1
        self.launches += 1
        return process

    def close(self) -> None:
        """Ask the launch to end, give it :data:`CLOSE_GRACE_S`, then stop what is left."""
        process = self._process
        if process is not None and process.poll() is None:
            write_json_atomically(request_path(self.folder, self._next), {"stop": True})
            try:
                process.wait(timeout=CLOSE_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        self._end()

    def _end(self) -> None:
        process, watchdog, port = self._process, self._watchdog, self._port
        self._process = self._watchdog = self._port = None
        if process is not None:
            stop_group(process)
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
        if port is not None:
            remove_shm_buffers(port)
            release_port(port)


def _append_tail(source: Path, target: Path, offset: int) -> None:
    """Append what ``source`` gained after ``offset`` bytes to ``target``."""
    try:
        with open(source, "rb") as read:
            read.seek(offset)
            tail = read.read()
    except OSError:
        return
    if tail:
        with open(target, "ab") as write:
            write.write(tail)


__all__ = ["FOLDER", "SharedLaunch", "run_arguments"]
