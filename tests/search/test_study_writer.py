"""The study's trial writer: a forked child stores every trial it is given, and ends when the
search that started it is gone."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import psutil
import pytest

from simtune.search.study import TrialWriter, open_storage, storage_url
from simtune.search.study_storage import parse_storage


def _trial(i: int):
    return optuna.trial.create_trial(params={"x": i}, distributions={"x": optuna.distributions.IntDistribution(0, 99)},
                                     value=float(i), user_attrs={"name": f"t{i}"})


def _stored(url: str) -> list:
    """The trials stored in study "s" at ``url``, as another process sees them."""
    study = optuna.load_study(study_name="s", storage=parse_storage(url).open())
    return sorted(t.params["x"] for t in study.get_trials() if t.state.name == "COMPLETE")


@pytest.mark.parametrize("background", [True, False])
def test_every_trial_given_is_stored_once_closed(tmp_path, background):
    storage = open_storage(tmp_path)
    optuna.create_study(storage=storage, study_name="s")
    writer = TrialWriter(storage, "s", background=background)
    for i in range(30):
        writer.add(_trial(i))
    writer.close()
    assert _stored(storage_url(tmp_path)) == list(range(30))


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_the_writer_process_stores_into_any_storage(kind, tmp_path, request):
    url = f"journal://{tmp_path}/study.log" if kind == "journal" else request.getfixturevalue("postgres_url")
    storage = parse_storage(url).open()
    optuna.create_study(storage=storage, study_name="s")
    writer = TrialWriter(storage, "s", background=True)
    assert writer._process is not None  # noqa: SLF001 - the forked writer, not the inline one
    for i in range(30):
        writer.add(_trial(i))
    writer.close()
    assert _stored(url) == list(range(30))


def test_the_writer_stores_what_it_got_and_ends_when_its_parent_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, time, optuna
        from simtune.search.study import TrialWriter, open_storage
        storage = open_storage({str(tmp_path)!r})
        optuna.create_study(storage=storage, study_name="s")
        writer = TrialWriter(storage, "s", background=True)
        for i in range(20):
            writer.add(optuna.trial.create_trial(
                params={{"x": i}}, distributions={{"x": optuna.distributions.IntDistribution(0, 99)}}, value=1.0))
        print(writer._process.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while psutil.pid_exists(child_pid) and psutil.Process(child_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the writer outlived its parent"
        time.sleep(0.05)
    assert _stored(storage_url(tmp_path)) == list(range(20))
