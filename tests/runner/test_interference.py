"""The load of other processes: a busy process beside a measurement is seen, and the measured
work's own descendants, orphans re-parented to it included, are not counted as others. The
machine may be loaded by others too, which only adds to what is seen, so each check compares
with the CPU time the test's own busy process reports."""

import shlex
import subprocess
import sys
import time

import psutil

from simtune.runner.interference import MAX_OTHERS_CORES, Load, LoadWatch, busy_s, load_note, watched

BUSY = "import sys, time\nend = time.time() + {s}\nwhile time.time() < end: pass\nopen(sys.argv[1], 'w').write(str(time.process_time()))"


def busy(seconds, report, *, orphan=False):
    """A process that spins for ``seconds`` and writes its CPU seconds to ``report``; with
    ``orphan`` started through a shell that exits at once, in a session of its own as a launch is,
    so it is re-parented."""
    argv = [sys.executable, "-c", BUSY.format(s=seconds), str(report)]
    if orphan:
        return subprocess.run(["sh", "-c", shlex.join(argv) + " &"], check=True, start_new_session=True)
    return subprocess.Popen(argv)


def wait_for(path, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return float(path.read_text())


def test_a_busy_process_beside_the_measurement_is_seen(tmp_path):
    watcher = subprocess.Popen([sys.executable, "-c", "import time\nfrom simtune.runner.interference import watched\n"
                                "print(watched(lambda: time.sleep(3))[1].others_cores)"],
                               stdout=subprocess.PIPE, text=True)
    other = busy(3, tmp_path / "cpu")
    out, _ = watcher.communicate(timeout=60)
    other.wait(timeout=60)
    others_cores = float(out)
    assert others_cores >= 0.8 * wait_for(tmp_path / "cpu") / 3.2  # it spun for about 3 of the 3 s watched
    assert Load(others_cores).disturbed == (others_cores > MAX_OTHERS_CORES)


def test_the_measured_works_own_orphans_are_not_counted_as_others(tmp_path):
    report = tmp_path / "cpu"
    before, started = busy_s(), time.perf_counter()
    _, load = watched(lambda: (busy(2, report, orphan=True), wait_for(report)))
    total = (busy_s() - before) / (time.perf_counter() - started)  # every process's cores in the window
    own = total - load.others_cores
    assert own >= 0.8 * float(report.read_text()) / 2.5  # the orphan's CPU time counted as the work's own


def test_a_launch_running_before_the_measurement_and_kept_is_its_own_work(tmp_path):
    """A shared launch starts before its experiment: its ranks (a grandchild here) are already
    running when the experiment's watch starts, and their work is the experiment's, not others'.
    Two watches over the same window, one keeping the launch, differ by the rank's cores."""
    argv = [sys.executable, "-c", BUSY.format(s=3), str(tmp_path / "cpu")]
    launch = subprocess.Popen(["sh", "-c", shlex.join(argv) + "; exit 0"], start_new_session=True)
    deadline = time.monotonic() + 10
    while not psutil.Process(launch.pid).children() and time.monotonic() < deadline:  # a busy machine starts it late
        time.sleep(0.05)
    time.sleep(0.3)
    (rank,) = psutil.Process(launch.pid).children()
    before, started = sum(rank.cpu_times()[:2]), time.perf_counter()
    kept, plain = LoadWatch(lambda: {launch.pid}), LoadWatch()
    time.sleep(1.5)
    rank_cores = (sum(rank.cpu_times()[:2]) - before) / (time.perf_counter() - started)
    kept_load, plain_load = kept.load(), plain.load()
    launch.wait(timeout=30)
    assert rank_cores > 0.2
    assert plain_load.others_cores - kept_load.others_cores >= 0.7 * rank_cores


def test_a_disturbed_measurement_has_a_note():
    assert load_note("z0_gas1_tmbspg1", Load(0.2)) is None and load_note("x", Load(None)) is None
    assert load_note("z0_gas1_tmbspg1", Load(1.3)).startswith(
        "other processes used 1.30 cores on average during z0_gas1_tmbspg1 (more than 0.5)")
