"""The study's storage: the URL spellings, opening each kind for real, what a bad one says, and
several searches opening one new PostgreSQL database at the same moment."""

import multiprocessing
import time

import optuna
import pytest

from simtune.errors import ConfigError
from simtune.search.study_storage import STUDY_FILE, StudyStorage, parse_storage


def test_the_default_is_sqlite_in_the_results_dir(tmp_path):
    storage = StudyStorage.chosen(None, tmp_path / "res")
    assert storage == StudyStorage(f"sqlite:///{tmp_path.resolve() / 'res' / STUDY_FILE}", "sqlite")
    opened = storage.open()
    assert (tmp_path / "res" / STUDY_FILE).is_file()
    assert opened.engine.dialect.name == "sqlite"


@pytest.mark.parametrize("text, path", [
    ("journal:///abs/dir/study.log", "/abs/dir/study.log"),
    ("journal:rel/study.log", "{cwd}/rel/study.log"),
    ("rel/study.log", "{cwd}/rel/study.log"),
    ("  /abs/study.log ", "/abs/study.log"),
])
def test_journal_spellings_name_an_absolute_file(text, path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = parse_storage(text)
    assert storage.kind == "journal"
    assert str(storage.journal_path) == path.format(cwd=tmp_path.resolve())
    assert storage.shown == f"journal://{storage.journal_path}"


@pytest.mark.parametrize("text, kind", [
    ("sqlite:///study.db", "sqlite"),
    ("postgresql://simtune:secret@db.example:5432/studies", "rdb"),
    ("postgresql+psycopg2://simtune@db.example/studies", "rdb"),
    ("mysql+pymysql://simtune:secret@db.example/studies", "rdb"),
])
def test_database_urls_are_kept_as_written(text, kind):
    storage = parse_storage(text)
    assert storage == StudyStorage(text, kind)


@pytest.mark.parametrize("text, expected", [
    ("mongodb://db.example/studies", "scheme mongodb:// is unknown"),
    ("postgres://simtune@db.example/studies", "SQLAlchemy spells it postgresql://"),
    ("studies", "is not a URL"),
    ("sqlite://", "in-memory SQLite study is lost"),
    ("journal:", "names no journal file"),
    ("", "must be a URL"),
    (7, "must be a URL"),
])
def test_a_storage_that_names_none_is_one_sentence(text, expected):
    with pytest.raises(ConfigError, match=expected) as raised:
        parse_storage(text)
    message = str(raised.value)
    assert message.endswith(".") and "\n" not in message


def test_the_password_is_never_shown():
    storage = parse_storage("postgresql://simtune:s3cret-pw@db.example/studies")
    assert storage.shown == "postgresql://simtune:***@db.example/studies"
    assert "s3cret-pw" not in repr(storage) and "s3cret-pw" not in str(storage)
    with pytest.raises(ConfigError) as raised:
        parse_storage("postgresql://simtune:s3cret-pw@db.example:port/studies")
    assert "s3cret-pw" not in str(raised.value)


def test_a_journal_file_is_created_where_it_is_named(tmp_path):
    storage = parse_storage(f"journal://{tmp_path}/deep/er/study.log")
    study = optuna.create_study(storage=storage.open(), study_name="s")
    study.enqueue_trial({"x": 1})
    assert (tmp_path / "deep" / "er" / "study.log").stat().st_size > 0
    again = optuna.load_study(study_name="s", storage=parse_storage(storage.url).open())
    assert len(again.trials) == 1


def test_a_database_url_without_a_driver_uses_the_installed_one(postgres_url):
    bare = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    storage = parse_storage(bare).open()
    assert storage.engine.dialect.driver in ("psycopg2", "psycopg", "pg8000")
    optuna.create_study(storage=storage, study_name="s")
    assert optuna.get_all_study_names(storage=storage) == ["s"]


def _open_at(url: str, moment: float, answers) -> None:
    time.sleep(max(0.0, moment - time.time()))
    try:
        optuna.create_study(storage=parse_storage(url).open(), study_name="shared", load_if_exists=True)
        answers.put("ok")
    except Exception as exc:  # noqa: BLE001 - the answer is what the test reads
        answers.put(f"{type(exc).__name__}: {exc}")


def test_searches_opening_a_new_database_at_once_all_get_it(postgres_url):
    """Optuna creates its tables on the first connection; without the second try, two of six
    first connections at the same moment fail with "relation already exists"."""
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    moment = time.time() + 4  # every process has imported Optuna by then
    processes = [context.Process(target=_open_at, args=(postgres_url, moment, answers)) for _ in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [answers.get(timeout=5) for _ in processes] == ["ok"] * 6
    storage = parse_storage(postgres_url).open()
    assert optuna.get_all_study_names(storage=storage) == ["shared"]
