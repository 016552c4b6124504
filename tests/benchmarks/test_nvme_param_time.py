"""benchmarks/nvme_param_time.py: the DeepSpeed functions it times are there to time."""

from __future__ import annotations

import importlib

from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script


def test_every_function_the_benchmark_times_is_a_method_of_the_installed_deepspeed():
    script = load_script(BENCHMARKS / "nvme_param_time.py", "nvme_param_time")
    labels = set()
    for module, cls, method, label in script.TIMED:
        owner = getattr(importlib.import_module(module), cls)
        assert callable(getattr(owner, method, None)), f"{module}.{cls}.{method}"
        labels.add(label)
    assert labels == {script.READS, script.WRITE_BACK}
