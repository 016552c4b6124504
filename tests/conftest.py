"""Every test gets its own simtune home, so no test reads or writes the user's profiles, residual
models or workload cache (``SIMTUNE_HOME``; launched processes inherit it)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


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


class TimeLimitJob:
    """The helper that submits the time-limit job, started when the session starts (None when
    not): its minute of sleep, on one of the cluster's CPUs, overlaps the tests before the Slurm
    tests instead of adding to the session."""

    def __init__(self, folder=None):
        self.process = None if folder is None else self._start(folder)

    @staticmethod
    def _start(folder):
        return subprocess.Popen([sys.executable, str(TIME_LIMIT_JOB), str(folder)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def result(self, folder):
        """What the helper printed: run it now (in ``folder``) when it was not started early."""
        if self.process is None:
            self.process = self._start(folder)
        out, err = self.process.communicate(timeout=300)
        assert self.process.returncode == 0, err[-2000:]
        return json.loads(out.strip().splitlines()[-1])

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="session", autouse=True)
def slurm_time_limit_job(request, tmp_path_factory):
    """Starts the time-limit job at once when its test is among the session's and a Slurm cluster
    answers (.ci/services/slurm.sh started it)."""
    early = any(item.name == TIME_LIMIT_TEST for item in request.session.items) and _slurm_answers()
    job = TimeLimitJob(tmp_path_factory.mktemp("slurm-time-limit") if early else None)
    yield job
    job.stop()


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
