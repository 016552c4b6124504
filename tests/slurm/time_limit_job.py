"""One experiment submitted as a Slurm job that sleeps past its one-minute time limit (Slurm's
smallest): ``python time_limit_job.py FOLDER`` writes the runner's result and the job's record to
``FOLDER/result.json`` (whole or absent), with ``scontrol show job`` as it read when the job had
ended: Slurm forgets a finished job after MinJobAge, and the test may read the file much later.
tests/conftest.py starts it when the session starts, so
that its minute of sleep overlaps other tests; tests/slurm/test_slurm_jobs.py checks what it wrote."""

import json
import subprocess
import sys
import time
from pathlib import Path

from simtune.runner import Experiment, Resources, Runner
from simtune.runner.slurm_executor import SlurmExecutor, SlurmSettings

SLEEPER = "import time\ntime.sleep(600)\n"
RESULT_FILE = "result.json"


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "sleeper.py"
    script.write_text(SLEEPER)
    (folder / "ds.json").write_text("{}")
    resources = Resources(hosts=(("localhost", 1),), num_gpus=1, num_nodes=1, accelerator="cpu")
    executor = SlurmExecutor(resources, SlurmSettings(options=(("comment", "simtune-timeout-test"),)))
    runner = Runner((str(script), ["--deepspeed", str(folder / "ds.json")]), resources, folder / "res",
                    folder / "exps", timeout_s=60, executor=executor)
    started = time.monotonic()
    [result] = runner.run([Experiment("sleeper", None, {"train_micro_batch_size_per_gpu": 1})])
    record = json.loads((folder / "res" / "sleeper" / "exp.json").read_text())
    seconds = time.monotonic() - started
    shown = subprocess.run(["scontrol", "show", "job", str(record.get("job_id"))], capture_output=True, text=True)
    written = folder / "result.json.tmp"
    written.write_text(json.dumps({"status": result.status, "reason": result.reason, "seconds": seconds,
                                   "record": record, "scontrol": shown.stdout + shown.stderr}))
    written.replace(folder / RESULT_FILE)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
