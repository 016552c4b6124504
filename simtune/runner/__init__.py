"""Real experiments: resources and slots, the launcher command, running and recording outcomes."""

from simtune.runner.experiment import STATUSES, Experiment, ExperimentResult
from simtune.runner.launcher import build_command, free_port, release_port
from simtune.runner.outcome import Outcome, classify, read_metrics
from simtune.runner.resources import Resources, SlotAssignment, parse_hostfile
from simtune.runner.runner import Runner

__all__ = [
    "STATUSES",
    "Experiment",
    "ExperimentResult",
    "Outcome",
    "Resources",
    "Runner",
    "SlotAssignment",
    "build_command",
    "classify",
    "free_port",
    "parse_hostfile",
    "read_metrics",
    "release_port",
]
