"""One class per command of the ``simtune`` command line (see :mod:`simtune.cli`)."""

from simtune.commands.base import Command
from simtune.commands.search import SearchCommand

__all__ = ["Command", "SearchCommand"]
