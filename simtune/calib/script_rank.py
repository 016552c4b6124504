"""Script mode, on every rank: measure the model of the user's own training script, unmodified.

:mod:`simtune.calibration.workload_script` has the DeepSpeed launcher start every rank as

    python -m simtune.calib.script_rank --simtune-probe=REQUEST.json SCRIPT ARGS...

with the script's DeepSpeed config rendered at ZeRO stage 0 (so no gradient hook communicates).
Like the probe, this wraps ``deepspeed.initialize`` and runs the script. The script trains
``WARM_STEPS + TIMED_STEPS`` steps while :class:`StepClock` times its own work between the
engine's calls (data loading, a Trainer's bookkeeping: work the cost model adds to every step at
every stage). At the next forward call it takes the batch the script passes (the last one if the
script ends first), and on every rank at once (so ranks that share a machine contend as in
training) measures ``engine.module`` directly, outside the engine, with
:func:`simtune.calib.workload_measure.measure_module`: other micro-batch sizes are made by
repeating or cutting the captured batch along its first dimension. Rank 0 writes the calibration
JSON; every rank then leaves with ``os._exit(0)``. The loss is the model output's ``.loss`` when
it has one, else the sum of its first tensor (the script's own loss, computed outside the model,
is not seen).
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import os
import sys
import time
import traceback
from typing import Any, Callable, Optional, Sequence

import deepspeed
import deepspeed.comm as comm
import torch

from simtune.calib.engines import measure_stage_engines
from simtune.calib.workload_measure import (Batch, MakeBatch, derived_activations, device_sync, flops_per_sample,
                                            hf_checkpointing, measure_module, model_shape, parameter_facts)
from simtune.calibration.workload import (LOG_PREFIX, EngineMeasurement, TimeStats, WorkloadCalibration,
                                          WorkloadCalibrationError)
from simtune.probe.argv import ProbeUsageError, parse_probe_argv
from simtune.probe.main import run_as_main
from simtune.probe.protocol import write_json_atomically


def _resize(value: Any, size: int, batch: int) -> Any:
    """``value`` with its first dimension made ``size`` when it is the batch dimension."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        repeats = -(-size // batch)
        return torch.cat([value] * repeats, dim=0)[:size] if repeats > 1 else value[:size]
    return value


def batch_maker(args: tuple[Any, ...], kwargs: dict[str, Any], batch: int) -> MakeBatch:
    """A function of the micro-batch size giving keyword inputs for the module (positional
    inputs become ``__arg0``, ... and are passed back positionally by :func:`call_module`)."""
    inputs = {f"__arg{i}": a for i, a in enumerate(args)}
    inputs.update(kwargs)

    def make(size: int) -> Batch:
        return {k: _resize(v, size, batch) for k, v in inputs.items()}

    return make


class _Positional:
    """Calls the module with ``__argN`` keys turned back into positional arguments."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __call__(self, **inputs: Any) -> Any:
        positional = [inputs.pop(f"__arg{i}") for i in range(len(inputs)) if f"__arg{i}" in inputs]
        return self.module(*positional, **inputs)


def loss_of(output: Any) -> Any:
    if getattr(output, "loss", None) is not None:
        return output.loss
    if isinstance(output, (tuple, list)):
        output = output[0]
    elif isinstance(output, dict):
        output = next(iter(output.values()))
    if hasattr(output, "logits"):
        output = output.logits
    return output.float().sum()


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise WorkloadCalibrationError("The engine's first forward call passed no tensor with a batch dimension.")


WARM_STEPS = 2
"""Steps of the script before its own work is timed (first steps allocate and compile)."""
TIMED_STEPS = 6
"""Steps over which the script's own work per step is timed."""


class StepClock:
    """Times what the script does between the engine's calls. Each micro-step is the wall time
    from the end of one ``engine.step()`` to the end of the next; less the time inside the
    engine's forward, backward and step calls, the rest is the script's own work (the measuring
    launch runs without accumulation, so a micro-step is an optimizer step). On a GPU ``sync``
    waits for the device at each boundary, so that GPU work the engine queued is counted as the
    engine's and not as the script's next synchronising call."""

    def __init__(self, sync: Callable[[], None] = lambda: None) -> None:
        self.sync = sync
        self.inside = 0.0
        self.last_end: Optional[float] = None
        self.steps = 0
        self.samples: list[float] = []

    def wrap(self, call: Any, is_step: bool = False) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.sync()
                ended = time.perf_counter()
                self.inside += ended - started
                if is_step:
                    self.step_ended(ended)

        return timed

    def step_ended(self, now: float) -> None:
        self.steps += 1
        if self.last_end is not None and self.steps > WARM_STEPS:
            self.samples.append(max(0.0, now - self.last_end - self.inside))
        self.last_end, self.inside = now, 0.0

    @property
    def done(self) -> bool:
        return len(self.samples) >= TIMED_STEPS


def measure_engine(engine: Any, args: tuple[Any, ...], kwargs: dict[str, Any], request: dict[str, Any],
                   script_overhead: Sequence[float] = ()) -> WorkloadCalibration:
    """Measure ``engine.module`` on a batch captured from the script (every rank runs this);
    ``script_overhead``: the script's own seconds per step as :class:`StepClock` timed them."""
    started = time.perf_counter()
    module = engine.module
    batch = _batch_size(args, kwargs)
    make = batch_maker(args, kwargs, batch)
    adapter = keyword_module(module)
    count, numels, largest = parameter_facts(module)
    results, flops, counter, notes = measure_module(
        adapter, make, micro_batch_sizes=request["micro_batch_sizes"], repeats=request["repeats"],
        memory_limit_bytes=request["memory_limit_bytes"], loss_of=loss_of, checkpointing=hf_checkpointing(module))
    engines = stage_engines(module, adapter, make, [m.micro_batch_size for m in results], request["precision"])
    total, per_layer = derived_activations(results)
    seq_len = request.get("seq_len")
    if not seq_len:
        ids = kwargs.get("input_ids", args[0] if args else None)
        seq_len = int(ids.shape[1]) if isinstance(ids, torch.Tensor) and ids.dim() > 1 else 1
    device = next(module.parameters()).device
    return WorkloadCalibration(
        fingerprint=request["fingerprint"], name=request["name"], mode="script", seq_len=seq_len,
        precision=request["precision"], profile_name=request["profile_name"],
        device=device.type if device.type == "cpu" else f"cuda {torch.cuda.get_device_name()}",
        threads=torch.get_num_threads(), shape=model_shape(module), parameter_count=count,
        param_tensor_numels=numels, largest_layer_params=largest,
        flops_per_sample_forward=flops_per_sample(flops), flops_counter=counter, flops_by_micro_batch=tuple(flops),
        saved_bytes_per_sample=total, saved_bytes_per_sample_per_layer=per_layer, measurements=tuple(results),
        engines=engines, ranks=int(os.environ.get("WORLD_SIZE", "1")), base_rss_bytes=0, program_overhead_bytes=0,
        zero_runtime_bytes=0,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch_version=torch.__version__, seconds=time.perf_counter() - started,
        notes=tuple(notes) + (f"measured on a batch of {batch} captured from the script's forward after "
                              f"{len(script_overhead)} timed step(s)",),
        script_overhead=TimeStats.of(script_overhead) if script_overhead else None,
        script_overhead_micro_batch_size=batch if script_overhead else None, hf_config=hf_config_of(module))


def hf_config_of(module: Any) -> Optional[dict[str, Any]]:
    """The module's Hugging Face config as a JSON-able dict (None without one)."""
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "to_json_string"):
        return None
    try:
        data = json.loads(config.to_json_string(use_diff=False))
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("model_type") else None


def keyword_module(module: Any) -> Any:
    """``module`` behind keyword calls (what measure_module and the engines are given): the
    ``__argN`` inputs of :func:`batch_maker` go back in positionally."""
    class KeywordModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module
            self.call = _Positional(module)

        def forward(self, **inputs: Any) -> Any:
            return self.call(**inputs)

    return KeywordModule()


def stage_engines(module: torch.nn.Module, adapter: torch.nn.Module, make: MakeBatch, measured_sizes: Sequence[int],
                  precision: str) -> tuple[EngineMeasurement, ...]:
    """Real engines of copies of the script's model at every ZeRO stage, measured as model mode
    measures its engines (:func:`simtune.calib.engines.measure_stage_engines`)."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    device = next(module.parameters()).device
    sync = device_sync(device)
    module.zero_grad(set_to_none=True)
    return measure_stage_engines(lambda: keyword_module(copy.deepcopy(module)), adapter, make, loss_of, precision,
                                 world, device, sync, list(measured_sizes))


def _finish(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        invocation = parse_probe_argv(argv)
        with open(invocation.settings_path, encoding="utf-8") as handle:
            request = json.load(handle)
    except (ProbeUsageError, OSError, ValueError) as exc:
        print(f"{LOG_PREFIX} cannot start: {exc}", file=sys.stderr)
        return 2
    script = os.path.abspath(invocation.script)
    original = deepspeed.initialize

    clock = StepClock()
    last: dict[str, Any] = {}

    def measure_and_end(engine: Any, f_args: tuple[Any, ...], f_kwargs: dict[str, Any]) -> None:
        deepspeed.initialize = original  # the measuring engines are not the script's
        try:
            calibration = measure_engine(engine, f_args, f_kwargs, request, clock.samples)
            rank = int(os.environ.get("RANK", "0"))
            if rank == 0:
                write_json_atomically(request["out"], calibration.to_dict())
                print(f"{LOG_PREFIX} wrote {request['out']}", flush=True)
            if comm.is_initialized():
                comm.barrier()
        except BaseException as exc:  # report and end every rank: the launch must not hang
            traceback.print_exc()
            print(f"{LOG_PREFIX} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            _finish(1)
        _finish(0)

    @functools.wraps(original)
    def initialize(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        engine = result[0]
        clock.sync = device_sync(getattr(engine, "device", "cpu"))
        forward = clock.wrap(engine.forward)

        def watched_forward(*f_args: Any, **f_kwargs: Any) -> Any:
            # the script's steps run (and are timed) until TIMED_STEPS are in; the forward after
            # them is the batch the model is measured on
            if clock.done:
                engine.forward = forward
                measure_and_end(engine, f_args, f_kwargs)
            last.update(engine=engine, args=f_args, kwargs=f_kwargs)
            return forward(*f_args, **f_kwargs)

        engine.forward = watched_forward
        engine.backward = clock.wrap(engine.backward)
        engine.step = clock.wrap(engine.step, is_step=True)
        return result

    deepspeed.initialize = initialize
    run_as_main(script, invocation.script_argv(), _finish)
    if last:  # the script ended within the timed steps: measure on its last batch
        measure_and_end(last["engine"], last["args"], last["kwargs"])
    print(f"{LOG_PREFIX} failed: the script ended without calling the engine's forward.", file=sys.stderr)
    _finish(4)
    return 4


if __name__ == "__main__":
    sys.exit(main())
