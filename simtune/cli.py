"""The ``simtune`` command line: one class per command, listed in :data:`COMMANDS`.

Adding a command is one line here plus its class in :mod:`simtune.commands`. Every command takes
``--debug`` (show tracebacks) and ``-q`` (no progress lines). An error a user can cause prints
``simtune: error: <one sentence>`` and exits with its code (2), and so does a file or folder
that cannot be written (read-only, full disk, a file where a folder is expected); an interrupt
exits with 130.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from typing import Sequence

import simtune
from simtune import __version__
from simtune.atomic import WRITE_ERRNOS, unwritable
from simtune.commands import Command, SearchCommand
from simtune.commands.calibrate import CalibrateCommand
from simtune.commands.estimate import EstimateCommand
from simtune.commands.profiles import ProfilesCommand
from simtune.commands.report import ReportCommand
from simtune.errors import InputError, SimtuneError

COMMANDS: tuple[type[Command], ...] = (
    SearchCommand,
    CalibrateCommand,
    ProfilesCommand,
    EstimateCommand,
    ReportCommand,
)
"""Every command, in the order ``simtune -h`` lists them."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are SimtuneErrors (one sentence, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sentence = message[0].upper() + message[1:] if message else "Invalid arguments"
        raise InputError(f"{sentence.rstrip('.')} (see {self.prog} -h).")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    common.add_argument("-q", "--quiet", action="store_true", help="print no progress lines")
    parser = _Parser(prog="simtune", description=simtune.__doc__)
    parser.add_argument("--version", action="version", version=f"simtune {__version__}")
    verbs = parser.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=_Parser)
    for command_class in COMMANDS:
        sub = verbs.add_parser(command_class.name, parents=[common], help=command_class.summary(),
                               description=command_class.description(),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        command = command_class()
        command.add_arguments(sub)
        sub.set_defaults(command=command)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"simtune: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    debug = False
    previous_showwarning = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        args = parser.parse_args(argv)
        debug = getattr(args, "debug", False)
        if getattr(args, "command", None) is None:
            parser.print_help(sys.stderr)
            return 2
        return args.command.run(args)
    except SimtuneError as exc:
        if debug:
            traceback.print_exc()
        print(f"simtune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a folder made or a file opened for writing where the place refuses it
        if exc.filename is None or exc.errno not in WRITE_ERRNOS:
            raise
        if debug:
            traceback.print_exc()
        error = unwritable(exc.filename, exc)
        print(f"simtune: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("simtune: interrupted; nothing was written.", file=sys.stderr)
        return 130
    except SystemExit as exc:  # -h and --version
        return exc.code if isinstance(exc.code, int) else 0
    finally:
        warnings.showwarning = previous_showwarning


if __name__ == "__main__":
    raise SystemExit(main())
