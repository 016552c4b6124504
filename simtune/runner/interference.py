"""How much other processes loaded the machine while something was measured.

On a machine shared with other work, every timing stretches with the load of the others. The
load of the others during a call is the CPU time all processes used (``/proc/stat``: user, nice,
system, irq, softirq, steal) less the CPU time of this process and its descendants, over the
call's wall time: the cores the others used on average. Launches are stopped as soon as their
results are written, so the launcher goes first and its ranks would be re-parented to init,
which would reap them and take their CPU time with it; this process therefore becomes their
subreaper (Linux ``PR_SET_CHILD_SUBREAPER``) and reaps them itself, so their time counts as its
own. Descendants still running (another experiment side by side) count with their CPU time so far.

Above :data:`MAX_OTHERS_CORES` the measurement is said to be disturbed. Where ``/proc/stat``
does not exist the load is unknown (None).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection

MAX_OTHERS_CORES = 0.5
"""Other processes using more cores than this on average disturb a measurement."""


def busy_s() -> float | None:
    """CPU seconds all processes used since boot; None without ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


_subreaper = False


def become_subreaper() -> None:
    """Be the reaper of this process's orphaned descendants (once; Linux only)."""
    global _subreaper
    if _subreaper:
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    _subreaper = True


def reap_orphans(keep: Collection[int] = ()) -> None:
    """Reap the exited children that no one waits for: the zombie children of another process
    group (every launch runs in a session of its own; children of this process's group, such as
    a forked writer, are waited for by their owner), but those in ``keep`` (the launchers a
    ``Popen`` still owns, which it reaps itself)."""
    import psutil

    own_group = os.getpgrp()
    for child in psutil.Process().children():
        try:
            if (child.pid not in keep and os.getpgid(child.pid) != own_group
                    and child.status() == psutil.STATUS_ZOMBIE):
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, OSError):
            pass


def living_descendants() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


def descendants_of(pids: Collection[int]) -> set[int]:
    """The living descendants of ``pids``."""
    import psutil

    found: set[int] = set()
    for pid in pids:
        try:
            found |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            pass
    return found


def own_s(keep: Collection[int] = (), foreign: Collection[int] = ()) -> float:
    """CPU seconds of this process, its reaped descendants and its living ones, but the living
    ones in ``foreign`` (processes that were already running when a measurement started: they
    are not its work, so their load counts as others')."""
    import psutil

    reap_orphans(keep)
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for child in psutil.Process().children(recursive=True):
        if child.pid in foreign:
            continue
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


@dataclass(frozen=True)
class Load:
    """The cores other processes used on average during a measurement (None: unknown)."""

    others_cores: float | None

    @property
    def disturbed(self) -> bool:
        return self.others_cores is not None and self.others_cores > MAX_OTHERS_CORES


class LoadWatch:
    """Started before a measurement, :meth:`load` after it."""

    def __init__(self, keep: Callable[[], Collection[int]] = lambda: ()):
        become_subreaper()
        self.keep = keep
        kept = set(keep())  # a launch already running for this measurement (a shared one) is its own work
        self.foreign = living_descendants() - kept - descendants_of(kept)
        self.busy = busy_s()
        self.own = own_s(keep(), self.foreign)
        self.started = time.perf_counter()

    def load(self) -> Load:
        busy = busy_s()
        if busy is None or self.busy is None:
            return Load(None)
        wall = max(time.perf_counter() - self.started, 1e-6)
        return Load(round(max(0.0, (busy - self.busy) - (own_s(self.keep(), self.foreign) - self.own)) / wall, 3))


def watched(call: Callable[[], Any]) -> tuple[Any, Load]:
    """``call()``, and the load of other processes while it ran."""
    watch = LoadWatch()
    result = call()
    return result, watch.load()


def load_note(what: str, load: Load) -> str | None:
    """The warning sentence of a disturbed measurement; None when it was not."""
    if not load.disturbed:
        return None
    return (f"other processes used {load.others_cores:.2f} cores on average during {what} (more than "
            f"{MAX_OTHERS_CORES}), so its timing may be slowed by them")
