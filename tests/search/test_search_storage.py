"""``simtune search --storage URL`` / ``autotuning.storage``: the study kept in a journal file or a
PostgreSQL database that several searches share, read back by a resumed search; the default
still ``results_dir/study.db``. Model-only searches (``--verify-top 0`` on a spec profile): nothing
is launched."""

import json
import os
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from simtune.cli import main
from simtune.search.study_storage import STUDY_FILE, parse_storage

TRIALS = 60
ARGV = ["search", "--verify-top", "0", "--model", "gpt2-xl", "--profile", "dgx-a100-80gb", "--num_gpus", "8",
        "--trials", str(TRIALS), "-q"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def search(results: str, *extra: str) -> dict:
    """Run a search here; its results.json's account of the study."""
    assert main([*ARGV, "--results_dir", results, *extra]) == 0
    with open(os.path.join(results, "results.json")) as handle:
        return json.load(handle)["model"]


def stored(url: str, name: str) -> list:
    """The completed trials of study ``name`` at ``url``, read as another process would."""
    study = optuna.load_study(study_name=name, storage=parse_storage(url).open())
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def test_without_a_storage_the_study_is_sqlite_in_the_results_dir(workdir):
    model = search("res")
    assert model["study_storage"] == f"sqlite:///{workdir.resolve() / 'res' / STUDY_FILE}"
    assert len(stored(model["study_storage"], model["study_name"])) == TRIALS


def test_a_journal_file_keeps_the_study_and_a_resumed_search_redraws_nothing(workdir):
    url = f"journal://{workdir}/shared/study.log"
    first = search("res-a", "--storage", url)
    assert first["study_storage"] == url and first["study_resumed_from"] == 0
    assert not (workdir / "res-a" / STUDY_FILE).exists()
    trials = stored(url, first["study_name"])
    assert len(trials) == first["study_trials"] == TRIALS
    inputs = optuna.load_study(study_name=first["study_name"], storage=parse_storage(url).open()).user_attrs["inputs"]
    assert inputs["profile"] == "dgx-a100-80gb" and inputs["world_size"] == 8  # which study is which, by name
    predictions = json.loads((workdir / "res-a" / "predictions.json").read_text())
    best = max(t.value for t in trials if t.user_attrs["prediction"]["feasible"])
    assert best == pytest.approx(predictions["predictions"][0]["predicted_metric_value"])

    again = search("res-b", "--storage", f"{workdir}/shared/study.log")  # the plain-path spelling
    assert again["study_name"] == first["study_name"]
    assert again["study_resumed_from"] == again["study_trials"] == TRIALS
    assert len(stored(url, first["study_name"])) == TRIALS


def test_the_config_key_names_the_storage_and_the_flag_wins_over_it(workdir):
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": "all"}, "bf16": {"enabled": True},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
              "autotuning": {"storage": "journal:from-config.log"}}
    (workdir / "ds.json").write_text(json.dumps(config))
    from_config = search("res-a", "--deepspeed", "ds.json")
    assert from_config["study_storage"] == f"journal://{workdir.resolve()}/from-config.log"
    assert len(stored(from_config["study_storage"], from_config["study_name"])) == TRIALS
    size = (workdir / "from-config.log").stat().st_size

    from_flag = search("res-b", "--deepspeed", "ds.json", "--storage", "journal:from-flag.log")
    assert from_flag["study_storage"] == f"journal://{workdir.resolve()}/from-flag.log"
    assert from_flag["study_resumed_from"] == 0  # a new storage holds no trials yet
    assert (workdir / "from-config.log").stat().st_size == size


def _waiting_on_locks(cursor, database: str) -> int:
    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                   (database,))
    return cursor.fetchone()[0]


def test_two_searches_write_one_postgresql_study_at_once_and_a_third_resumes_it(workdir, postgres_url):
    """Both searches load the empty study, then their writers are held on a lock of the trials
    table until both wait: each draws all its trials while the other does, and both are stored."""
    import psycopg2
    from sqlalchemy.engine import make_url

    parse_storage(postgres_url).check()  # the tables, so that they can be locked
    database = make_url(postgres_url).database
    libpq_url = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    holder, watcher = psycopg2.connect(libpq_url), psycopg2.connect(libpq_url)
    watcher.autocommit = True  # a transaction would see one snapshot of pg_stat_activity
    holder.cursor().execute("LOCK TABLE trials IN EXCLUSIVE MODE")  # reads go on, inserts wait
    searches = [subprocess.Popen([sys.executable, "-m", "simtune", *ARGV, "--results_dir", results,
                                  "--storage", postgres_url], cwd=workdir, env=dict(os.environ),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for results in ("res-a", "res-b")]
    deadline = time.monotonic() + 120
    while _waiting_on_locks(watcher.cursor(), database) < 2:
        assert all(s.poll() is None for s in searches), [s.communicate()[0] for s in searches]
        assert time.monotonic() < deadline, "the two searches never both waited to store a trial"
        time.sleep(0.1)
    holder.rollback()
    holder.close()
    watcher.close()
    for s in searches:
        output = s.communicate(timeout=300)[0]
        assert s.returncode == 0, output
    a, b = (json.loads((workdir / r / "results.json").read_text())["model"] for r in ("res-a", "res-b"))
    assert a["study_name"] == b["study_name"]
    assert a["study_resumed_from"] == b["study_resumed_from"] == 0
    assert a["study_trials"] == b["study_trials"] == TRIALS
    trials = stored(postgres_url, a["study_name"])
    assert len(trials) == 2 * TRIALS  # nothing lost
    assert sorted(t.number for t in trials) == list(range(2 * TRIALS))
    shown = make_url(postgres_url).render_as_string(hide_password=True)
    for results in ("res-a", "res-b"):
        for name in ("summary.txt", "results.json"):
            text = (workdir / results / name).read_text()
            assert shown in text and postgres_url not in text

    resumed = search("res-c", "--storage", postgres_url)
    assert resumed["study_name"] == a["study_name"]
    assert resumed["study_resumed_from"] == resumed["study_trials"] == 2 * TRIALS
    assert len(stored(postgres_url, a["study_name"])) == 2 * TRIALS  # nothing redrawn


@pytest.mark.parametrize("table, sentence", [
    ("trials", "Writing the study's trials to {storage} failed (rows are refused here)."),  # in the writer process
    ("studies", "The study storage {storage} failed: rows are refused here."),  # in the search itself
])
def test_a_database_that_refuses_rows_ends_the_search_in_one_sentence(table, sentence, workdir, postgres_url,
                                                                      capsys):
    import psycopg2
    from sqlalchemy.engine import make_url

    parse_storage(postgres_url).check()
    connection = psycopg2.connect(make_url(postgres_url).set(drivername="postgresql")
                                  .render_as_string(hide_password=False))
    with connection, connection.cursor() as cursor:
        cursor.execute("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'rows are refused "
                       "here'; END $$ LANGUAGE plpgsql")
        cursor.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()")
    connection.close()
    assert main([*ARGV, "--results_dir", "res", "--storage", postgres_url]) == 2
    storage = make_url(postgres_url).render_as_string(hide_password=True)
    assert capsys.readouterr().err.strip().splitlines() == [f"simtune: error: {sentence.format(storage=storage)}"]
