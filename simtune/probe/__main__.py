"""``python -m simtune.probe --simtune-probe=PROBE_JSON [--local_rank=N] SCRIPT ARGS...``

Launchers that start a file rather than a module (DeepSpeed's slurm launcher runs
``python -u SCRIPT``) run this file by its path; its folder then leaves ``sys.path`` so that the
probe's modules do not shadow top-level ones.
"""

import os
import sys

if not __package__:
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _here]

from simtune.probe.main import main  # noqa: E402

raise SystemExit(main())
