"""Run the user's script unmodified, with ``deepspeed.initialize`` timing the engine it returns."""

from __future__ import annotations

import functools
import os
import runpy
import sys
import traceback
from typing import Any, Callable

from simtune.errors import ConfigError
from simtune.probe.argv import ProbeUsageError, parse_probe_argv
from simtune.probe.instrument import Instrument, RunEnded, end_process
from simtune.probe.protocol import CANNOT_START_PREFIX, ProbeSettings
from simtune.probe.ranks import adopt_launcher_ranks


def install(instrument: Instrument) -> None:
    """Replace ``deepspeed.initialize`` so the engine it returns is attached to ``instrument``.

    Scripts (and Hugging Face's accelerate) look the function up on the ``deepspeed`` module when
    they call or import it, which happens after this.
    """
    import deepspeed

    original = deepspeed.initialize

    @functools.wraps(original)
    def initialize(*args, **kwargs):
        result = original(*args, **kwargs)
        instrument.attach(result[0])
        return result

    deepspeed.initialize = initialize


def run_as_main(script: str, argv: list[str], end: Callable[[int], Any]) -> None:
    """Run the user's ``script`` as ``__main__`` with ``sys.argv = argv`` and its folder first on
    ``sys.path``, as ``python script`` would; a non-zero exit or an exception (printed) ends the
    process through ``end(code)``. Returns when the script ends normally."""
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(script)
    try:
        runpy.run_path(script, run_name="__main__")
    except RunEnded:
        raise
    except SystemExit as exc:
        if exc.code not in (None, 0):
            if not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
            end(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:
        traceback.print_exc()
        end(1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    adopt_launcher_ranks()
    try:
        invocation = parse_probe_argv(argv)
        if invocation.serve_folder is not None:
            settings = None
        else:
            settings = ProbeSettings.read(str(invocation.settings_path))
    except (ProbeUsageError, ConfigError, OSError, ValueError, TypeError) as exc:
        print(f"{CANNOT_START_PREFIX} {exc}", file=sys.stderr)
        return 2
    script = os.path.abspath(invocation.script)
    if not os.path.isfile(script):
        print(f"{CANNOT_START_PREFIX} the training script {invocation.script} does not exist.",
              file=sys.stderr)
        return 2

    if settings is None:
        from simtune.probe.serve import serve

        serve(str(invocation.serve_folder), script, invocation.local_rank)
    instrument = Instrument(settings)
    install(instrument)
    run_as_main(script, invocation.script_argv(), end_process)
    instrument.report_no_metrics()
