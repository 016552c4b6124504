"""simtune.runner.local_ranks: the ranks of one node started directly (tiny Python modules, no
DeepSpeed)."""

import json
import os
import subprocess
import sys
import time

from simtune.runner import local_ranks

RECORD = """
import json, os, sys
out = sys.argv[sys.argv.index("--out") + 1]
keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "CROSS_RANK", "CROSS_SIZE", "MASTER_ADDR", "MASTER_PORT")
with open(os.path.join(out, "rank" + os.environ["RANK"] + ".json"), "w") as fh:
    json.dump({"env": {k: os.environ.get(k) for k in keys}, "argv": sys.argv[1:]}, fh)
"""

FAIL_ONE = """
import os, sys, time
if os.environ["RANK"] == "1":
    sys.exit(3)
time.sleep(60)
"""


def _run(tmp_path, source: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    (tmp_path / "tiny_rank.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    done = subprocess.run(local_ranks.command(2, 29999, "tiny_rank", list(args)), env=env, capture_output=True,
                          text=True, timeout=60)
    return done, time.monotonic() - started


def test_every_rank_gets_the_variables_deepspeeds_launcher_sets(tmp_path):
    done, _ = _run(tmp_path, RECORD, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["env"] == {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_SIZE": "2",
                               "CROSS_RANK": "0", "CROSS_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                               "MASTER_PORT": "29999"}
        assert seen["argv"] == [f"--local_rank={rank}", "--out", str(tmp_path)]


def test_a_failing_rank_stops_the_others_and_its_code_is_returned(tmp_path):
    done, seconds = _run(tmp_path, FAIL_ONE)
    assert done.returncode == 3
    assert seconds < 30  # the other rank would sleep 60 s


def test_rank_commands_keep_the_given_environment():
    commands = local_ranks.rank_commands(3, 1234, "some.module", ["--x"], base={"OMP_NUM_THREADS": "2"})
    assert [argv[-2:] for argv, _ in commands] == [["--local_rank=0", "--x"], ["--local_rank=1", "--x"],
                                                   ["--local_rank=2", "--x"]]
    assert all(env["OMP_NUM_THREADS"] == "2" and env["WORLD_SIZE"] == "3" for _, env in commands)
    assert commands[0][0][:4] == [sys.executable, "-u", "-m", "some.module"]
