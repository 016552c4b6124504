"""Script mode: measure the model of the user's own training script, unmodified, in one launch.

The DeepSpeed launcher starts every rank as

    python -m simtune.calibration.workload_script --simtune-probe=REQUEST.json SCRIPT ARGS...

with the script's DeepSpeed config rendered at ZeRO stage 0 (so no gradient hook communicates).
Like the probe, this wraps ``deepspeed.initialize`` and runs the script. The script trains
``WARM_STEPS + TIMED_STEPS`` steps while :class:`StepClock` times its own work between the
engine's calls (data loading, a Trainer's bookkeeping: work the cost model adds to every step at
every stage). At the next forward call it takes the batch the script passes (the last one if the
script ends first), and on every rank at once (so ranks that share a machine contend as in
training) measures ``engine.module`` directly, outside the engine, with
:func:`simtune.calibration.workload_measure.measure_module`: other micro-batch sizes are made by
repeating or cutting the captured batch along its first dimension. Rank 0 writes the calibration
JSON; every rank then leaves with ``os._exit(0)``. The loss is the model output's ``.loss`` when
it has one, else the sum of its first tensor (the script's own loss, computed outside the model,
is not seen).
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from simtune.calibration.workload import (DEFAULT_MICRO_BATCH_SIZES, TimeStats, WorkloadCalibration,
                                          WorkloadCalibrationError, _say, cached_measurement, fingerprint, save,
                                          script_identity)

PREFIX = "simtune-workload:"


def _resize(value: Any, size: int, batch: int) -> Any:
    """``value`` with its first dimension made ``size`` when it is the batch dimension."""
    import torch

    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        repeats = -(-size // batch)
        return torch.cat([value] * repeats, dim=0)[:size] if repeats > 1 else value[:size]
    return value


def batch_maker(args: tuple, kwargs: dict, batch: int):
    """A function of the micro-batch size giving keyword inputs for the module (positional
    inputs become ``__arg0``, ... and are passed back positionally by :func:`call_module`)."""
    inputs = {f"__arg{i}": a for i, a in enumerate(args)}
    inputs.update(kwargs)

    def make(size: int) -> dict:
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


def _batch_size(args: tuple, kwargs: dict) -> int:
    import torch

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


def measure_engine(engine: Any, args: tuple, kwargs: dict, request: dict,
                   script_overhead: Sequence[float] = ()) -> WorkloadCalibration:
    """Measure ``engine.module`` on a batch captured from the script (every rank runs this);
    ``script_overhead``: the script's own seconds per step as :class:`StepClock` timed them."""
    import torch

    from simtune.calibration.workload_measure import (derived_activations, flops_per_sample, hf_checkpointing,
                                                      measure_module, model_shape, parameter_facts)

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
        script_overhead_micro_batch_size=batch if script_overhead else None)


def keyword_module(module: Any) -> Any:
    """``module`` behind keyword calls (what measure_module and the engines are given): the
    ``__argN`` inputs of :func:`batch_maker` go back in positionally."""
    import torch

    class KeywordModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module
            self.call = _Positional(module)

        def forward(self, **inputs: Any) -> Any:
            return self.call(**inputs)

    return KeywordModule()


def stage_engines(module: Any, adapter: Any, make: Any, measured_sizes: Sequence[int], precision: str) -> tuple:
    """Real engines of copies of the script's model at every ZeRO stage, measured as model mode
    measures its engines (:func:`simtune.calibration.workload_launch.measure_stage_engines`)."""
    import copy

    import torch

    from simtune.calibration.workload_launch import measure_stage_engines
    from simtune.calibration.workload_measure import device_sync

    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    device = next(module.parameters()).device
    sync = device_sync(device)
    module.zero_grad(set_to_none=True)
    return measure_stage_engines(lambda: keyword_module(copy.deepcopy(module)), adapter, make, loss_of, precision,
                                 world, device, sync, list(measured_sizes))


def calibrate_script(script: str, args: Sequence[str], ds_config: Mapping[str, Any], profile: Any, *,
                     precision: str, num_gpus: int, seq_len: Optional[int] = None,
                     micro_batch_sizes: Sequence[int] = DEFAULT_MICRO_BATCH_SIZES, repeats: int = 10,
                     cache_dir: Optional[os.PathLike | str] = None, refresh: bool = False,
                     timeout_s: Optional[float] = 900.0, log: Optional[Callable[[str], None]] = _say,
                     arg_mappings: Optional[Mapping[str, str]] = None) -> WorkloadCalibration:
    """Measure the model of the user's script in one launch on ``num_gpus`` local ranks (its
    DeepSpeed config at stage 0, micro-batch as the user set it or 1, no accumulation, and the
    ``arg_mappings`` flags set to match, as for an experiment: a Hugging Face Trainer refuses a
    config that disagrees with its arguments), or return the cached measurement for the same
    script, arguments, modification time, sequence length, precision and profile."""
    from simtune.calibration.workload_launch import run_in_own_group
    from simtune.runner.launcher import (deepspeed_launcher, free_port, launch_env, launcher_args, mapped_args,
                                         release_port, with_config_path)
    from simtune.runner.outcome import first_exception
    from simtune.runner.resources import Resources
    from simtune.runner.runner import remove_shm_buffers

    key = fingerprint(script_identity(script, args), seq_len or 0, precision, profile.name)
    path, cached = cached_measurement(key, cache_dir, refresh, f"{script} ({precision}, profile {profile.name})",
                                      log)
    if cached is not None:
        return cached
    resources = Resources.resolve(num_gpus=num_gpus)
    with tempfile.TemporaryDirectory(prefix="simtune-script-") as folder:
        config_path = Path(folder) / "ds_config.json"
        request_path = Path(folder) / "request.json"
        out_path = Path(folder) / "calibration.json"
        config = stage_zero_config(ds_config)
        config_path.write_text(json.dumps(config))
        request_path.write_text(json.dumps({
            "name": str(Path(script).resolve()), "precision": precision, "profile_name": profile.name,
            "fingerprint": key, "micro_batch_sizes": list(micro_batch_sizes), "repeats": repeats,
            "memory_limit_bytes": int(profile.device.usable_memory_bytes), "seq_len": seq_len,
            "out": str(out_path)}))
        port = free_port()
        command = [deepspeed_launcher(), *launcher_args(resources, resources.concurrent_slots()[0], port),
                   "--module", "simtune.calibration.workload_script", f"--simtune-probe={request_path}",
                   os.path.abspath(script), *mapped_args(with_config_path(args, str(config_path)), arg_mappings, config,
                                                          None)]
        if log:
            log(f"measuring the model of {script} in one launch on {num_gpus} rank(s)...")
        try:
            returncode, output = run_in_own_group(command, launch_env(resources, folder), timeout_s,
                                                  out_path.is_file, port)  # written whole before the last barrier
        except subprocess.TimeoutExpired:
            raise WorkloadCalibrationError(f"Measuring the model of {script} took longer than the time-out of "
                                           f"{timeout_s:g} s and was stopped (--timeout sets it).") from None
        finally:
            remove_shm_buffers(port)
            release_port(port)
        if not out_path.is_file():
            lines = [line for line in output.splitlines() if PREFIX in line or "Error" in line]
            reason = first_exception(output) or (lines[-1].strip() if lines else f"exit code {returncode}")
            raise WorkloadCalibrationError(f"Measuring the model of {script} failed: {reason.rstrip('.:')}.")
        calibration = WorkloadCalibration.from_dict(json.loads(out_path.read_text()))
    save(calibration, path)
    if log:
        log(f"workload calibration saved to {path} ({calibration.seconds:.1f} s of measurement).")
    return calibration


def stage_zero_config(ds_config: Mapping[str, Any]) -> dict[str, Any]:
    """The user's config for the measuring launch: ZeRO stage 0 (no gradient hooks, no
    partitioning), no offload, no accumulation, the user's micro-batch size when it is a number
    (else 1), no "autotuning" section and no train_batch_size (DeepSpeed derives it; see
    :meth:`simtune.space.TuningSpace.render`)."""
    config = json.loads(json.dumps(ds_config))
    config.pop("autotuning", None)
    zero = config.get("zero_optimization")
    if isinstance(zero, dict):
        config["zero_optimization"] = {"stage": 0}
    mbs = config.get("train_micro_batch_size_per_gpu")
    if isinstance(mbs, list):
        mbs = min(m for m in mbs if isinstance(m, int)) if any(isinstance(m, int) for m in mbs) else 1
    if isinstance(mbs, bool) or not isinstance(mbs, int) or mbs < 1:
        mbs = 1
    config["train_micro_batch_size_per_gpu"] = mbs
    config["gradient_accumulation_steps"] = 1
    config.pop("train_batch_size", None)
    return config


def _finish(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    from simtune.probe.argv import ProbeUsageError, parse_probe_argv
    from simtune.calibration.workload_measure import device_sync
    from simtune.probe.main import run_as_main
    from simtune.probe.protocol import write_json_atomically

    argv = sys.argv[1:] if argv is None else argv
    try:
        invocation = parse_probe_argv(argv)
        with open(invocation.settings_path, encoding="utf-8") as handle:
            request = json.load(handle)
    except (ProbeUsageError, OSError, ValueError) as exc:
        print(f"{PREFIX} cannot start: {exc}", file=sys.stderr)
        return 2
    script = os.path.abspath(invocation.script)
    import deepspeed

    original = deepspeed.initialize

    clock = StepClock()
    last: dict[str, Any] = {}

    def measure_and_end(engine: Any, f_args: tuple, f_kwargs: dict) -> None:
        deepspeed.initialize = original  # the measuring engines are not the script's
        try:
            calibration = measure_engine(engine, f_args, f_kwargs, request, clock.samples)
            rank = int(os.environ.get("RANK", "0"))
            if rank == 0:
                write_json_atomically(request["out"], calibration.to_dict())
                print(f"{PREFIX} wrote {request['out']}", flush=True)
            import deepspeed.comm as comm

            if comm.is_initialized():
                comm.barrier()
        except BaseException as exc:  # report and end every rank: the launch must not hang
            traceback.print_exc()
            print(f"{PREFIX} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
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
    print(f"{PREFIX} failed: the script ended without calling the engine's forward.", file=sys.stderr)
    _finish(4)
    return 4


if __name__ == "__main__":
    sys.exit(main())
