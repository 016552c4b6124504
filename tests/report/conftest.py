"""Fixtures for the report tests: one capacity study (gpt2-xl on a V100 and an A100 spec profile at
16, 32 and 64 GPUs, computed once) and a search results folder written by simtune's own writer."""

import json

import pytest

from simtune.hardware import load_profile
from simtune.search.outputs import write_outputs
from simtune.report import CapacityRequest, capacity_study
from simtune.space import Trial
from simtune.metrics import metric
from simtune.search.outcome import Measurement, SearchOutcome, StageOutcome
from simtune.workloads import load_workload

GPU_COUNTS = (16, 32, 64)
PROFILES = ("dgx2-v100-32gb", "dgx-a100-80gb")


@pytest.fixture(scope="session")
def study():
    request = CapacityRequest(load_workload("gpt2-xl"), tuple(load_profile(p) for p in PROFILES), GPU_COUNTS,
                              tokens=1e10, price_usd_per_gpu_hour=2.0)
    return capacity_study(request)


def measurement(name, stage, mbs, value, status="ok", gas=1):
    trial = Trial(stage=stage, micro_batch_size=mbs, gradient_accumulation_steps=gas)
    return Measurement(name=name, trial=trial, status=status, reason="" if status == "ok" else "out of memory",
                       metrics={"throughput": value} if value is not None else None, value=value,
                       result_dir=f"/results/{name}", wall_s=10.0, phase="start")


MEASURED = (("z0_gas1_tmbspg1", 0, 1, 100.0), ("z0_gas1_tmbspg16", 0, 16, 300.0),
            ("z1_gas1_tmbspg32", 1, 32, None), ("z1_gas1_tmbspg16", 1, 16, 250.0))


def write_search(folder, predicted=None, predictions_json=None):
    ms = tuple(measurement(n, s, b, v, "ok" if v is not None else "oom") for n, s, b, v in MEASURED)
    best = ms[1]
    outcome = SearchOutcome(metric=metric("throughput"), measurements=ms,
                            stages=(StageOutcome(0, tuple(m.name for m in ms[:2]), best, 16),
                                    StageOutcome(1, tuple(m.name for m in ms[2:]), ms[3], 16)),
                            best=best, notes=("stage 1 is worse",))
    write_outputs(folder, outcome, 42.0, predicted=predicted)
    if predictions_json is not None:
        (folder / "predictions.json").write_text(json.dumps(predictions_json))
    return folder


@pytest.fixture
def search_dir(tmp_path):
    return write_search(tmp_path / "autotuning_results")


@pytest.fixture
def make_search(tmp_path):
    """write_search(folder_name, predicted=..., predictions_json=...) -> the results folder."""
    def make(name="autotuning_results", **kwargs):
        return write_search(tmp_path / name, **kwargs)
    return make
