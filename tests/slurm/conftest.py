"""The local Slurm cluster of the Slurm tests: the one .ci/services/slurm.sh started, or started
here by the same script when Slurm is installed but no controller answers. The tests skip only
when slurm-wlm cannot be installed; a cluster that is installed but does not start fails them."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / ".ci" / "services" / "slurm.sh"


def _answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False)
    return done.returncode == 0 and any(state in done.stdout for state in ("idle", "mixed", "allocated"))


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node Slurm cluster that takes jobs."""
    if not _answers():
        done = subprocess.run(["bash", "-c", f"source {SERVICE}"], capture_output=True, text=True, timeout=900,
                              check=False)
        if shutil.which("slurmctld") is None:
            pytest.skip(f"slurm-wlm cannot be installed here: {done.stderr.strip()[-300:] or 'apt-get failed'}")
        if not _answers():
            pytest.fail(f"Slurm is installed but did not start (exit {done.returncode}): "
                        f"{done.stderr.strip()[-500:]}; see /var/log/slurm/")
    os.environ["SIMTUNE_TEST_SLURM"] = "1"
    return True
