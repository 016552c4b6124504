"""Whether DeepSpeed's async_io op, through which ZeRO-Infinity swaps to NVMe, can run here.

DeepSpeed builds the op on first use unless it was prebuilt (``DS_BUILD_AIO=1``); its builder
calls it compatible where it can compile and link a call of libaio's ``io_submit``
(``AsyncIOBuilder.is_compatible``). Without it every experiment that swaps to NVMe stops as its
engine starts. The question is asked in a child process, so that the search does not import
DeepSpeed (which picks its accelerator as it is imported).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Mapping, Optional

_PROBE = """
from deepspeed.git_version_info import installed_ops
from deepspeed.ops.op_builder import AsyncIOBuilder
print("built" if installed_ops.get("async_io") else "buildable" if AsyncIOBuilder().is_compatible() else "no")
"""


def async_io_missing(accelerator: str, env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """None where DeepSpeed's async_io op is prebuilt or can be built on this machine for
    ``accelerator`` ("cpu" or "cuda"), else why not, as the end of a sentence ("cannot be built
    here: ...")."""
    run_env = {**(env if env is not None else os.environ), "DS_ACCELERATOR": accelerator}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300,
                              env=run_env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not be asked about ({exc})"
    answer = done.stdout.split()[-1:] if done.returncode == 0 else []
    if answer in (["built"], ["buildable"]):
        return None
    if answer == ["no"]:
        return ("cannot be built here: its builder found no libaio to compile and link against (install "
                "libaio's development files: libaio-dev, or libaio-devel)")
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"could not be loaded ({last})"
