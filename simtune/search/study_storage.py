"""Where the Optuna study of a search is kept: ``--storage URL`` / ``autotuning.storage``.

Spellings (:func:`parse_storage`):

- an SQLAlchemy database URL, as Optuna's ``RDBStorage`` takes it: ``sqlite:///PATH``,
  ``postgresql://USER:PASSWORD@HOST[:PORT]/DB`` (``postgresql+psycopg2://...``),
  ``mysql://...`` (``mysql+pymysql://...``), or any other SQLAlchemy dialect;
- a journal file (Optuna's ``JournalStorage`` with a file backend): ``journal:///ABSOLUTE/PATH``,
  ``journal:RELATIVE/PATH``, or a plain path ending in ``.log``.

With none given the study is ``sqlite:///<results_dir>/study.db`` (:meth:`StudyStorage.default`).
:meth:`StudyStorage.open` gives the Optuna storage; what goes wrong there is a
:class:`~simtune.errors.StorageError` in one sentence (unknown driver, unreachable server within
:data:`CONNECT_TIMEOUT_S`, a schema it cannot use). Several searches may open one database at once:
Optuna creates its tables on the first connection, and a search that loses that race to another
tries again (:data:`SETUP_TRIES`). :attr:`StudyStorage.shown` is the URL without its password, for
everything that is printed or written.

Optuna and SQLAlchemy (2.5 s of imports together) are imported inside the functions that use them:
the command line reads a storage URL with this module before any study runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simtune.errors import ConfigError, StorageError

STUDY_FILE = "study.db"
"""The default study database in results_dir."""

JOURNAL_SCHEME = "journal:"
JOURNAL_SUFFIX = ".log"
"""A plain path with this suffix is a journal file."""

CONNECT_TIMEOUT_S = 10
"""How long a database server may take to accept a connection."""

SQLITE_BUSY_TIMEOUT_S = 60
"""How long an SQLite write waits for another process's lock."""

SETUP_TRIES = 4
"""Openings of a database whose tables another search is creating at the same moment."""

DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary (pip install 'simtune[postgres]')",
    "psycopg": "psycopg[binary]",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "cx_Oracle": "cx_Oracle",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}
"""The Python module of a database driver -> the package that provides it."""

DRIVERS = {"postgresql": ("psycopg2", "psycopg", "pg8000"), "mysql": ("mysqldb", "pymysql", "mysqlconnector")}
"""The SQLAlchemy drivers a URL without one (``postgresql://``) may use, in order of preference:
SQLAlchemy's default changes between versions (psycopg2, then psycopg), so the installed one is
taken."""

TIMEOUT_ARGS = {"psycopg2": "connect_timeout", "psycopg": "connect_timeout", "pg8000": "timeout",
                "mysqldb": "connect_timeout", "pymysql": "connect_timeout", "mysqlconnector": "connection_timeout"}
"""The connect argument of each driver that bounds the wait for a server (others get none)."""

DRIVER_MODULES = {"mysqldb": "MySQLdb", "mysqlconnector": "mysql.connector"}
"""An SQLAlchemy driver name -> its Python module, where they differ."""

SPELLINGS = ("sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB, mysql://USER:PASSWORD@HOST/DB "
             "or journal:///PATH.log")


@dataclass(frozen=True)
class StudyStorage:
    """An Optuna storage named by URL: ``kind`` is "sqlite", "rdb" (a database server) or
    "journal" (``url`` is then ``journal://`` and the file's absolute path)."""

    url: str
    kind: str

    @classmethod
    def default(cls, results_dir: str | Path) -> "StudyStorage":
        """``sqlite:///<results_dir>/study.db`` (absolute)."""
        return cls(f"sqlite:///{Path(results_dir).resolve() / STUDY_FILE}", "sqlite")

    @classmethod
    def chosen(cls, text: str | None, results_dir: str | Path) -> "StudyStorage":
        """The storage ``text`` names, or the default in ``results_dir`` when it is None."""
        return cls.default(results_dir) if text is None else parse_storage(text)

    def __repr__(self) -> str:  # the URL without its password
        return f"StudyStorage({self.shown!r}, {self.kind!r})"

    @property
    def journal_path(self) -> Path:
        return Path(self.url[len(JOURNAL_SCHEME) + 2:])

    @property
    def shown(self) -> str:
        """The URL with its password replaced by ``***``."""
        if self.kind == "journal":
            return self.url
        from sqlalchemy.engine import make_url  # loaded with optuna's storages, not with the command line

        return make_url(self.url).render_as_string(hide_password=True)

    def open(self) -> Any:
        """The Optuna storage (its database, tables or file created when missing)."""
        if self.kind == "journal":
            return self._open_journal()
        url = _with_installed_driver(self.url)
        engine_kwargs: dict[str, Any]
        if self.kind == "sqlite":
            database = Path(_database_of(self.url))
            try:
                database.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"The folder of the study database {database} cannot be created "
                                   f"({exc.strerror}).") from None
            engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
        else:
            engine_kwargs = {"connect_args": _connect_timeout(url), "pool_pre_ping": True}
        storage = self._open_rdb(url, engine_kwargs)
        if self.kind == "sqlite":
            _use_write_ahead_log(storage)
        return storage

    def check(self) -> None:
        """Open the storage once and close it again: what is wrong is said before a search starts."""
        engine = getattr(self.open(), "engine", None)
        if engine is not None:
            engine.dispose()

    # ------------------------------------------------------------------------------------------
    def _open_rdb(self, url: str, engine_kwargs: dict[str, Any]) -> Any:
        """``RDBStorage``, tried again when another process created the tables first."""
        import optuna
        from sqlalchemy import exc as sql

        for attempt in range(1, SETUP_TRIES + 1):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            except ImportError as exc:
                raise StorageError(self._missing_driver(exc)) from None
            except (sql.IntegrityError, sql.ProgrammingError) as exc:
                # two first connections creating the same tables: the loser sees them exist
                if attempt == SETUP_TRIES:
                    raise StorageError(f"The study storage {self.shown} cannot be set up: "
                                       f"{reason_of(exc)}.") from None
                time.sleep(0.1 * attempt)
            except sql.OperationalError as exc:
                raise StorageError(f"Cannot connect to the study storage {self.shown}: {reason_of(exc)}.") from None
            except (sql.SQLAlchemyError, RuntimeError) as exc:  # RuntimeError: a schema of another Optuna
                raise StorageError(f"The study storage {self.shown} cannot be used: {reason_of(exc)}.") from None
        raise AssertionError("unreachable")

    def _open_journal(self) -> Any:
        import optuna

        try:
            from optuna.storages.journal import JournalFileBackend
        except ImportError:  # Optuna < 4
            from optuna.storages import JournalFileStorage as JournalFileBackend
        path = self.journal_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise StorageError(f"The study journal {path} cannot be opened ({exc.strerror}).") from None

    def _missing_driver(self, exc: ImportError) -> str:
        cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
        module = (cause.name or "").split(".")[0]
        package = DRIVER_PACKAGES.get(module, module or "its database driver")
        return f"The study storage {self.shown} needs the Python package {package}: install it, or use another URL."


def parse_storage(text: Any) -> StudyStorage:
    """The storage ``text`` names (see the module docstring); a :class:`ConfigError` in one
    sentence when it names none."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"The study storage must be a URL such as {SPELLINGS}, not {text!r}.")
    text = text.strip()
    if text.startswith(JOURNAL_SCHEME):
        path = text[len(JOURNAL_SCHEME):]
        return _journal(path[2:] if path.startswith("//") else path, text)
    if "://" not in text:
        if text.endswith(JOURNAL_SUFFIX):
            return _journal(text, text)
        raise ConfigError(f"The study storage {text!r} is not a URL: give {SPELLINGS}.")
    return _database(text)


def _journal(path: str, text: str) -> StudyStorage:
    if not path or path.endswith("/"):
        raise ConfigError(f"The study storage {text!r} names no journal file: give journal:///PATH.log.")
    return StudyStorage(f"{JOURNAL_SCHEME}//{Path(path).expanduser().resolve()}", "journal")


def _database(text: str) -> StudyStorage:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    scheme = text.split("://", 1)[0]
    try:
        url = make_url(text)
        url.get_dialect()
    except NoSuchModuleError:
        hint = " (SQLAlchemy spells it postgresql://)" if scheme.split("+")[0] == "postgres" else ""
        raise ConfigError(f"The study storage scheme {scheme}:// is unknown{hint}: give {SPELLINGS}.") from None
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"The study storage {_hidden(text)!r} is not a valid URL ({reason_of(exc)}).") from None
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ConfigError("An in-memory SQLite study is lost when the search ends: give sqlite:///PATH.")
        return StudyStorage(text, "sqlite")
    return StudyStorage(text, "rdb")


def _with_installed_driver(url: str) -> str:
    """``url`` with the first installed driver of :data:`DRIVERS` when it names none and
    SQLAlchemy's default is not installed (the first of them when none is)."""
    import importlib.util

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    choices = DRIVERS.get(parsed.drivername)
    if not choices:
        return url

    def installed(driver: str) -> bool:
        return importlib.util.find_spec(DRIVER_MODULES.get(driver, driver).split(".")[0]) is not None

    if installed(parsed.get_dialect().driver):
        return url
    driver = next((d for d in choices if installed(d)), choices[0])
    return parsed.set(drivername=f"{parsed.drivername}+{driver}").render_as_string(hide_password=False)


def _connect_timeout(url: str) -> dict[str, int]:
    """The connect argument that gives up on a server after :data:`CONNECT_TIMEOUT_S`."""
    from sqlalchemy.engine import make_url

    name = TIMEOUT_ARGS.get(make_url(url).get_dialect().driver)
    return {name: CONNECT_TIMEOUT_S} if name else {}


def _database_of(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).database or ""


def _hidden(text: str) -> str:
    """``text`` with what looks like a password (between ``user:`` and ``@``) replaced by ``***``."""
    head, sep, rest = text.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return text
    return f"{head}://{credentials.split(':', 1)[0]}:***@{host}"


def _use_write_ahead_log(storage: Any) -> None:
    """SQLite in WAL mode with ``synchronous=NORMAL``: durable when the process is killed, without
    a disk flush per write, and readers beside the writer."""
    from sqlalchemy import event

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened from now on get the pragmas


def storage_failures() -> tuple[type[BaseException], ...]:
    """The exceptions of a storage that fails while it is used (Optuna's and SQLAlchemy's)."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    return StorageInternalError, SQLAlchemyError


def reason_of(exc: BaseException) -> str:
    """The driver's own message, one line: the innermost cause (under SQLAlchemy's and Optuna's
    wrappers), its first line, without SQLAlchemy's background link."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    inner = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    return (lines[0] if lines else type(inner).__name__).rstrip(".")
