"""How a Slurm job's end becomes an experiment's outcome, and the sbatch options of a job."""

import pytest

from simtune.errors import InputError
from simtune.runner.outcome import classify
from simtune.runner.slurm_executor import SlurmSettings, time_limit_minutes


def outcome(state, stderr="", metrics=None, reason=""):
    return classify(returncode=None, timed_out=state == "TIMEOUT", timeout_s=90, stdout="", stderr=stderr,
                    metrics=metrics, job_state=state, job_reason=reason)


def test_the_jobs_state_decides_when_the_logs_cannot():
    assert outcome("TIMEOUT").status == "timeout" and "time limit" in outcome("TIMEOUT").reason
    assert outcome("OUT_OF_MEMORY").status == "oom"
    assert outcome("NODE_FAIL", reason="Node down").reason == "the Slurm job ended NODE_FAIL (Node down)"
    assert outcome("PREEMPTED").reason == "the Slurm job ended PREEMPTED"
    assert outcome("CANCELLED", reason="None").reason == "the Slurm job ended CANCELLED"


def test_a_finished_jobs_logs_and_metrics_decide_as_for_a_local_run():
    assert outcome("COMPLETED", metrics={"throughput": 1.0}).status == "ok"
    assert outcome("TIMEOUT", metrics={"throughput": 1.0}).status == "ok"  # measured before the limit
    budget = "simtune-probe: out of memory: 2.1 GB over the budget of 1.0 GB"
    assert outcome("FAILED", stderr=budget).status == "oom"
    failed = outcome("FAILED", stderr="Traceback (most recent call last):\n  x\nValueError: bad value\n")
    assert (failed.status, failed.reason) == ("crashed", "ValueError: bad value")


def test_time_limits_are_whole_minutes_of_at_least_one():
    assert [time_limit_minutes(s) for s in (1, 60, 61, 600)] == [1, 1, 2, 10]
    assert time_limit_minutes(None) == 0  # no limit


def test_extra_sbatch_options():
    assert SlurmSettings.parse_options(["qos=high", "--constraint=a100", "exclusive"]) == (
        ("qos", "high"), ("constraint", "a100"), ("exclusive", ""))
    with pytest.raises(InputError):
        SlurmSettings.parse_options(["=x"])
