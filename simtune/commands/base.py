"""The base of every command: its name, its arguments, and what it does.

A command's help text is its class docstring (first line: the one-line summary of ``simtune -h``).
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from typing import ClassVar


class Command(ABC):
    """A verb of the ``simtune`` command line."""

    name: ClassVar[str]

    @classmethod
    def summary(cls) -> str:
        """The first line of the docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0]

    @classmethod
    def description(cls) -> str:
        """The whole docstring, as the command's ``-h`` shows it."""
        return (cls.__doc__ or "").strip()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's options (none by default)."""

    @abstractmethod
    def run(self, args: argparse.Namespace) -> int:
        """Do the work; return the exit code. Errors users can cause raise SimtuneError."""
