"""The command that trains with the optimal configuration (cmd_optimal.txt, and ``--run``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from simtune.runner import Runner
from simtune.runner.launcher import (absolute_paths, deepspeed_launcher, free_port, launch_env, launcher_args,
                                     mapped_args, release_port, with_config_path)
from simtune.runner.runner import DEFAULT_MASTER_PORT
from simtune.watchdog import remove_shm_buffers
from simtune.search.outcome import Measurement
from simtune.search.outputs import command_text


def optimal_command(runner: Runner, best: Measurement, config_path: Path, port: int | None = None
                    ) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that train with the optimal config: the runner's launcher command for the
    best experiment with no probe, the script's config flag pointing at ``config_path``, the
    mapped flags set to the best experiment's values and the relative paths of existing files made
    absolute (run in ``runner.cwd``, where the experiments ran, for the paths still relative)."""
    script, args = runner.workload
    script_args = mapped_args(with_config_path(absolute_paths(args, runner.cwd), str(config_path)),
                              runner.arg_mappings, best.ds_config, best.trial)
    slots = runner.slot_sets[0]
    port = port or DEFAULT_MASTER_PORT
    argv = [deepspeed_launcher(), *launcher_args(runner.resources, slots, port), script, *script_args]
    env = launch_env(runner.resources, config_path.parent, base={}, rendezvous=(slots.hosts[0], port))
    return argv, env


def train_with_optimal(runner: Runner, best: Measurement, config_path: Path) -> int:
    """Run the optimal command here (on a free rendezvous port) and return its exit code."""
    port = free_port()
    try:
        argv, env = optimal_command(runner, best, config_path, port)
        print(f"\nsimtune: training with the optimal configuration: {command_text(argv)}", file=sys.stderr,
              flush=True)
        return subprocess.run(argv, env={**os.environ, **env}, cwd=runner.cwd, check=False).returncode
    finally:
        remove_shm_buffers(port)
        release_port(port)
