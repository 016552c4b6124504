"""Start the ranks of one node directly, with the variables DeepSpeed's launcher gives them.

``python -m simtune.runner.local_ranks --nproc N --master_port P MODULE [ARGS...]`` runs
``python -u -m MODULE --local_rank=R ARGS...`` for R in 0..N-1, each with ``RANK = LOCAL_RANK = R``,
``WORLD_SIZE = LOCAL_SIZE = N``, ``CROSS_RANK = 0``, ``CROSS_SIZE = 1``, ``MASTER_ADDR = 127.0.0.1``
and ``MASTER_PORT = P`` (what ``deepspeed.launcher.launch`` sets for one node), and waits for
them. When a rank ends with a non-zero code the others are stopped and that code is returned,
as DeepSpeed's launcher does; a SIGTERM or SIGINT stops every rank.

Why: the ``deepspeed`` command starts two interpreters that import DeepSpeed (``runner.py``,
then ``launch.py``) before the first rank starts, 2.7 s on 2 CPU processes, and notices its ranks'
exit at a once-a-second poll. simtune's own measuring launches on one node (the machine's
calibration, the workload's measurement) start their ranks with this instead; the experiments,
the configurations being tuned, always run under DeepSpeed's launcher.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def command(nproc: int, port: int, module: str, args: list[str]) -> list[str]:
    """The argv that starts ``module`` on ``nproc`` local ranks with this starter."""
    return [sys.executable, "-m", "simtune.runner.local_ranks", "--nproc", str(nproc), "--master_port", str(port),
            module, *args]


def rank_env(rank: int, nproc: int, port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of local rank ``rank`` of ``nproc`` (``base``, else this process's, plus
    what DeepSpeed's launcher sets for one node)."""
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_SIZE=str(nproc),
               CROSS_RANK="0", CROSS_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return env


def rank_commands(nproc: int, port: int, module: str, args: list[str],
                  base: dict[str, str] | None = None) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, environment) of every rank."""
    return [([sys.executable, "-u", "-m", module, f"--local_rank={rank}", *args], rank_env(rank, nproc, port, base))
            for rank in range(nproc)]


def run(nproc: int, port: int, module: str, args: list[str], poll_s: float = 0.05) -> int:
    """Start every rank, wait; the first non-zero exit code stops the others and is returned."""
    processes = [subprocess.Popen(argv, env=env) for argv, env in rank_commands(nproc, port, module, args)]

    def stop(*_: object) -> None:
        for process in processes:
            if process.poll() is None:
                process.kill()

    def on_signal(signum: int, _frame: object) -> None:
        stop()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while True:
        codes = [process.poll() for process in processes]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            stop()
            for process in processes:
                process.wait()
            return failed[0] if failed[0] > 0 else 128 - failed[0]
        if all(code == 0 for code in codes):
            return 0
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simtune.runner.local_ranks", description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, required=True, help="ranks to start on this node")
    parser.add_argument("--master_port", type=int, required=True, help="the process group's rendezvous port")
    parser.add_argument("module", help="the Python module every rank runs")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the module's arguments")
    options = parser.parse_args(argv)
    if options.nproc < 1:
        parser.error("--nproc must be at least 1")
    return run(options.nproc, options.master_port, options.module, options.args)


if __name__ == "__main__":
    sys.exit(main())
