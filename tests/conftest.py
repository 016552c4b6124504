"""Every test gets its own simtune home, so no test reads or writes the user's profiles, residual
models or workload cache (``SIMTUNE_HOME``; launched processes inherit it)."""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


_SPEED_AT_START = pytest.StashKey[float]()
"""The speed probe's reading when the session started (the controlling process only)."""


def _speed_probe_ms() -> float:
    """The machine's speed now (benchmarks/machine_speed.py; lower is faster)."""
    from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script

    return load_script(BENCHMARKS / "machine_speed.py", "machine_speed").speed_probe(repeats=3) * 1e3


def pytest_sessionstart(session):
    """The suite is CPU-bound and a VM's speed drifts: its time means something only beside the
    machine's speed, timed once at the start and once at the end (in the controlling process)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        session.config.stash[_SPEED_AT_START] = _speed_probe_ms()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    start = config.stash.get(_SPEED_AT_START, None)
    if start is not None:
        terminalreporter.write_line(f"machine speed probe: {start:.0f} ms at the start, {_speed_probe_ms():.0f} ms at "
                                    f"the end (python benchmarks/machine_speed.py; lower is faster)")


@pytest.fixture(autouse=True)
def _isolated_simtune_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SIMTUNE_HOME", str(tmp_path_factory.mktemp("simtune-home")))
    monkeypatch.delenv("SIMTUNE_PROFILE_PATH", raising=False)
    monkeypatch.delenv("SIMTUNE_CACHE_DIR", raising=False)


# ------------------------------------------------------------------------------------------------
# Slurm, for tests/slurm/: the one-node cluster .ci/services/slurm.sh started, or started here by the
# same script when Slurm is installed but no controller answers. The tests skip only when
# slurm-wlm cannot be installed; a cluster that is installed but does not start fails them.
SLURM_SERVICE = Path(__file__).resolve().parents[1] / ".ci" / "services" / "slurm.sh"


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False)
    return done.returncode == 0 and any(state in done.stdout for state in ("idle", "mixed", "allocated"))


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node Slurm cluster that takes jobs."""
    if not _slurm_answers():
        done = subprocess.run(["bash", "-c", f"source {SLURM_SERVICE}"], capture_output=True, text=True,
                              timeout=900, check=False)
        if shutil.which("slurmctld") is None:
            pytest.skip(f"slurm-wlm cannot be installed here: {done.stderr.strip()[-300:] or 'apt-get failed'}")
        if not _slurm_answers():
            pytest.fail(f"Slurm is installed but did not start (exit {done.returncode}): "
                        f"{done.stderr.strip()[-500:]}; see /var/log/slurm/")
    os.environ["SIMTUNE_TEST_SLURM"] = "1"
    return True


# Slurm's time limit: a job must sleep its whole minute (Slurm's smallest limit) to reach it
TIME_LIMIT_TEST = "test_a_job_that_reaches_its_time_limit_is_a_timeout"
TIME_LIMIT_JOB = Path(__file__).parent / "slurm" / "time_limit_job.py"
TIME_LIMIT_RESULT = "result.json"


class TimeLimitJob:
    """The helper that submits the time-limit job and writes what came of it to ``result.json`` in
    its folder. Started when the session starts, its minute of sleep on one of the cluster's CPUs
    overlaps other tests instead of adding to the session. Under pytest-xdist the folder is shared
    by the workers and the first to create it starts the helper; it is left to end by itself (the
    job's limit bounds it), as the worker that started it may finish before the one that reads it."""

    def __init__(self, folder=None):
        self.folder = folder

    @staticmethod
    def start(folder):
        """Start the helper in ``folder`` unless another process has already claimed it."""
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            return
        command = (f"{shlex.quote(sys.executable)} {shlex.quote(str(TIME_LIMIT_JOB))} {shlex.quote(str(folder))} "
                   f"> {shlex.quote(str(folder / 'helper.log'))} 2>&1; echo $? > {shlex.quote(str(folder / 'exit'))}")
        subprocess.Popen(["bash", "-c", command], start_new_session=True)

    def result(self, folder, timeout_s=300):
        """What the helper wrote: started now (in ``folder``) when it was not started early."""
        if self.folder is None:
            self.folder = folder / "time-limit"
            self.start(self.folder)
        written, ended = self.folder / TIME_LIMIT_RESULT, self.folder / "exit"
        deadline = time.monotonic() + timeout_s
        while not written.exists() and not ended.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        if not written.exists():
            log = self.folder / "helper.log"
            pytest.fail(f"the time-limit helper wrote no result: {log.read_text()[-2000:] if log.exists() else ''}")
        return json.loads(written.read_text())


def _shared_tmp(tmp_path_factory) -> Path:
    """The session's temporary root, the same for every pytest-xdist worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def slurm_time_limit_job(request, tmp_path_factory):
    """Starts the time-limit job at once when its test is among the session's and a Slurm cluster
    answers (.ci/services/slurm.sh started it)."""
    if any(item.name == TIME_LIMIT_TEST for item in request.session.items) and _slurm_answers():
        folder = _shared_tmp(tmp_path_factory) / "slurm-time-limit"
        TimeLimitJob.start(folder)
        return TimeLimitJob(folder)
    return TimeLimitJob()


# ------------------------------------------------------------------------------------------------
# Two pytest-xdist workers (pyproject's addopts). The tests that launch real multi-process runs or
# use the Slurm cluster form groups, each run in order on one worker: "launches" (the default: runs
# whose time limits, overlap and load notes are asserted) and groups a module names for itself
# ("launches-2": searches and measurements whose assertions do not depend on the machine being
# otherwise idle; "gpu-kit": the kit's rehearsal). Two groups and the quick tests run side by side.
LAUNCH_GROUP = "launches"


def pytest_itemcollected(item):
    """Grouped as it is collected: before any ``pytest_collection_modifyitems`` (pytest-xdist's reads
    the group there)."""
    if item.get_closest_marker("xdist_group"):
        return
    marked = any(item.get_closest_marker(name) for name in ("slow", "slurm", "gpu"))
    if marked or "slurm_cluster" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.xdist_group(LAUNCH_GROUP))


@pytest.fixture(autouse=True)
def _grouped(request):
    """Fail a grouped test when the grouping did not take (pytest-xdist 3.8 marks a group in the node
    id, which pytest 9.2 no longer reads: pytest-xdist issue #1386): launches would run side by side."""
    group = request.node.get_closest_marker("xdist_group")
    if group and getattr(request.config.option, "loadgroup", False) \
            and not request.node.nodeid.endswith(f"@{group.args[0]}"):
        pytest.fail("pytest-xdist did not group this test with the others of its group: install a pytest below "
                    "9.2 (pyproject's dev extra) or run with -n 0.", pytrace=False)


# ------------------------------------------------------------------------------------------------
# PostgreSQL, for the study storage's tests
POSTGRES_URL_ENV = "SIMTUNE_TEST_POSTGRES_URL"
"""A server URL whose role may create databases (.ci/services/postgres.sh exports it)."""


def _postgres_bindir():
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return installed[-1].parent if installed else None


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a PostgreSQL server the tests may create databases on: $SIMTUNE_TEST_POSTGRES_URL,
    else a throwaway server started here from the installed binaries (a fresh cluster in a
    temporary folder, on a free port, run as the postgres user when the tests run as root),
    stopped at the end. Skips only when PostgreSQL or psycopg2 is not installed."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed: pip install -e '.[dev]'")
    if os.environ.get(POSTGRES_URL_ENV):
        yield os.environ[POSTGRES_URL_ENV]
        return
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
                    "apt-get install postgresql, or set SIMTUNE_TEST_POSTGRES_URL")
    root = Path(tempfile.mkdtemp(prefix="simtune-postgres-"))
    prefix = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data, log = root / "data", root / "server.log"

    def run(*argv: str) -> None:
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            pytest.fail(f"{argv[0]} failed: {done.stderr or done.stdout}{server_log}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
    try:
        yield f"postgresql://postgres:not-checked@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A new, empty database on :func:`postgres_server` (dropped afterwards): its URL."""
    import uuid

    import psycopg2
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server).set(drivername="postgresql")
    name = f"simtune_test_{uuid.uuid4().hex[:12]}"
    connection = psycopg2.connect(server.render_as_string(hide_password=False))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()
