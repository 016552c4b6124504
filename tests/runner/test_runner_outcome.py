import json

import pytest

from simtune.probe.protocol import REQUIRED_METRIC_KEYS
from simtune.runner.outcome import classify, first_exception, read_metrics
from simtune.runner.runner import recorded_result

TRACEBACK = """\
/venv/lib/python3.11/site-packages/torch/distributed/c10d_logger.py:83: FutureWarning: error-prone API is deprecated
  return func(*args, **kwargs)
[rank1]: Traceback (most recent call last):
[rank1]:   File "/x/train.py", line 12, in <module>
[rank1]:     main()
[rank1]:     ^^^^^^
[rank1]: KeyError: 'hidden'
[rank1]:
[rank1]: During handling of the above exception, another exception occurred:
[rank1]:
[rank1]: Traceback (most recent call last):
[rank1]:   File "/x/train.py", line 14, in <module>
[rank1]:     raise ValueError("hidden size missing")
[rank1]: ValueError: hidden size missing
Traceback (most recent call last):
  File "/x/train.py", line 40, in <module>
RuntimeError: Connection closed by peer
"""


def _classify(stderr="", stdout="", returncode=1, timed_out=False, metrics=None):
    outcome = classify(returncode=returncode, timed_out=timed_out, timeout_s=30.0, stdout=stdout,
                       stderr=stderr, metrics=metrics)
    return outcome.status, outcome.reason


def test_first_traceback_chain_gives_the_reason():
    assert first_exception(TRACEBACK) == "ValueError: hidden size missing"
    assert _classify(TRACEBACK) == ("crashed", "ValueError: hidden size missing")


def test_an_exception_that_lists_its_details_keeps_them():
    stderr = ("Traceback (most recent call last):\n  File \"train.py\", line 3, in <module>\n"
              "ValueError: Please correct the following DeepSpeed config values that mismatch TrainingArguments"
              " values:\n- ds train_micro_batch_size_per_gpu=1 vs hf per_device_train_batch_size=4\n"
              "- ds gradient_accumulation_steps=1 vs hf gradient_accumulation_steps=2\n"
              "The easiest method is to set these DeepSpeed config values to 'auto'.\n")
    assert first_exception(stderr) == (
        "ValueError: Please correct the following DeepSpeed config values that mismatch TrainingArguments values: "
        "ds train_micro_batch_size_per_gpu=1 vs hf per_device_train_batch_size=4; "
        "ds gradient_accumulation_steps=1 vs hf gradient_accumulation_steps=2")


def trainer_refusal(*items: str) -> str:
    return ("Traceback (most recent call last):\n  File \"run_clm.py\", line 3, in <module>\n"
            "ValueError: Please correct the following DeepSpeed config values that mismatch TrainingArguments"
            " values:\n" + "".join(f"- {item}\n" for item in items))


def test_a_trainer_counting_one_process_on_cpu_is_told_to_use_the_cpu():
    status, reason = _classify(trainer_refusal("ds train_batch_size=2 vs hf train_batch_size=1"))
    assert status == "crashed" and reason.startswith("the Trainer counts fewer processes than DeepSpeed runs; "
                                                     "on CPU give the script --use_cpu true: ValueError:")


def test_a_trainer_flag_missing_from_the_mappings_is_named():
    _, reason = _classify(trainer_refusal("ds train_micro_batch_size_per_gpu=8 vs hf per_device_train_batch_size=4",
                                          "ds gradient_accumulation_steps=2 vs hf gradient_accumulation_steps=1"))
    assert reason.startswith('the Trainer\'s flags disagree with the config; add "train_micro_batch_size_per_gpu": '
                             '"--per_device_train_batch_size", "gradient_accumulation_steps": '
                             '"--gradient_accumulation_steps" to autotuning.arg_mappings: ValueError:')
    assert _classify(TRACEBACK)[1] == "ValueError: hidden size missing"  # other failures keep their line


def test_warnings_mentioning_error_do_not_fail_a_run():
    stderr = "UserWarning: this error is harmless\nsome ERROR text\n"
    assert first_exception(stderr) is None
    assert _classify(stderr, returncode=0) == ("crashed", "the run ended without writing metrics.json")
    assert _classify(stderr, returncode=0, metrics={"throughput": 1.0})[0] == "ok"


@pytest.mark.parametrize("stderr,stdout,returncode", [
    ("simtune-probe: out of memory: peak 9 bytes exceeds the budget 1 bytes at step 1\n", "", 3),
    ("Traceback (most recent call last):\n  File \"t.py\", line 1\n"
     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n", "", 1),
    ("Traceback (most recent call last):\n  File \"t.py\", line 1\n"
     "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes\n", "", 1),
    ("", "[launch.py:290:sigkill_handler] ['python'] exits with return code = -9\n", 247),
    ("", "", -9),
])
def test_out_of_memory_forms(stderr, stdout, returncode):
    assert _classify(stderr, stdout, returncode)[0] == "oom"


def test_probe_budget_line_is_the_reason():
    line = "simtune-probe: out of memory: peak 9 bytes exceeds the budget 1 bytes at step 1"
    assert _classify(line + "\n", returncode=3)[1] == "out of memory: peak 9 bytes exceeds the budget 1 bytes at step 1"


def test_timeout_signal_and_probe_lines():
    assert _classify("", timed_out=True, returncode=-15)[0] == "timeout"
    assert _classify("", "... exits with return code = -11\n", 245) == ("crashed", "a process was killed by SIGSEGV")
    early = "simtune-probe: no metrics: the script ended after 2 optimizer steps, before end_profile_step 5\n"
    assert _classify(early, returncode=4) == (
        "crashed", "no metrics: the script ended after 2 optimizer steps, before end_profile_step 5")
    assert _classify("usage: t.py\nt.py: error: unrecognized arguments: --x\n", returncode=2)[1] == (
        "the launcher ended with exit code 2: t.py: error: unrecognized arguments: --x")


def _metrics(**overrides):
    metrics = {key: 1 for key in REQUIRED_METRIC_KEYS}
    metrics.update(overrides)
    return metrics


def test_read_metrics_rejects_incomplete_files(tmp_path):
    path = tmp_path / "metrics.json"
    assert read_metrics(path) is None
    path.write_text(json.dumps(_metrics(throughput=0)))
    assert read_metrics(path) is None
    path.write_text("{\"throughput\": 5")
    assert read_metrics(path) is None
    path.write_text(json.dumps(_metrics(throughput=5.0)))
    assert read_metrics(path)["throughput"] == 5.0


def test_recorded_results(tmp_path):
    config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 1}}
    record = {"name": "z1", "ds_config": config, "status": "running", "reason": "", "wall_s": None}
    (tmp_path / "exp.json").write_text(json.dumps(record))
    assert recorded_result(tmp_path, config) is None  # interrupted: run again
    record.update(status="crashed", reason="ValueError: x", wall_s=3.5)
    (tmp_path / "exp.json").write_text(json.dumps(record))
    earlier = recorded_result(tmp_path, config)
    assert (earlier.status, earlier.reason, earlier.wall_s, earlier.reused) == ("crashed", "ValueError: x", 3.5, True)
    assert recorded_result(tmp_path, {**config, "train_micro_batch_size_per_gpu": 4}) is None
    record.update(status="ok", reason="")
    (tmp_path / "exp.json").write_text(json.dumps(record))
    assert recorded_result(tmp_path, config) is None  # ok but no metrics.json
    (tmp_path / "metrics.json").write_text(json.dumps(_metrics(throughput=2.0)))
    assert recorded_result(tmp_path, config).metrics["throughput"] == 2.0


def test_a_recorded_time_out_is_reused_only_under_a_time_out_no_longer(tmp_path):
    config = {"train_micro_batch_size_per_gpu": 2}
    record = {"name": "z0", "ds_config": config, "status": "timeout", "reason": "", "wall_s": 60.0}
    (tmp_path / "exp.json").write_text(json.dumps(record))
    assert recorded_result(tmp_path, config, 60.0) is None  # recorded before the time-out was recorded
    (tmp_path / "exp.json").write_text(json.dumps({**record, "timeout_s": 60.0}))
    assert recorded_result(tmp_path, config, 60.0).status == "timeout"
    assert recorded_result(tmp_path, config, 30.0).reused
    assert recorded_result(tmp_path, config, 120.0) is None
    assert recorded_result(tmp_path, config, None) is None  # no time-out now
