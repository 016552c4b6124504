"""``python -m simtune.probe --simtune-probe=PROBE_JSON [--local_rank=N] SCRIPT ARGS...``"""

from simtune.probe.main import main

raise SystemExit(main())
