"""What the model-driven search needs before it can predict: a hardware profile, the workload's
numbers and the residual model.

- Profile: the one named (``--profile`` / ``autotuning.profile``), else the one
  :func:`simtune.hardware.find_profile_for` finds for this machine's device and process count
  (a measured profile wins over a spec one, one measured on the search's nodes first), else a quick calibration of this machine
  (:func:`simtune.calibration.run_calibration` with ``quick=True``), saved to the user profile
  folder so the next search finds it; searches sharing a simtune home calibrate one at a time
  and a search that waited takes the profile the other saved. When the workload must be measured too (model mode, one
  node), both run in one launch
  (:func:`simtune.calibration.machine_and_workload.calibrate_machine_and_workload`).
- Workload: measured on this machine (:func:`simtune.calibration.workload_launch.calibrate_workload`,
  cached) when the search runs experiments here with a profile of this machine; otherwise a
  cached measurement of the same inputs if there is one, else the closed-form analysis of the
  preset (nothing is measured when predictions are all that is asked for). In script mode the
  model of the user's script is measured in one launch
  (:func:`simtune.calibration.workload_script.calibrate_script`, cached).
- Residual model: ``~/.simtune/profiles/residuals/<profile>.json`` (:mod:`simtune.prediction.residual`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from simtune.calibration import run_calibration
from simtune.calibration import workload as wc
from simtune.calibration.machine_and_workload import calibrate_machine_and_workload
from simtune.calibration.workload import MeasureScope
from simtune.calibration.workload_launch import calibrate_workload
from simtune.calibration.workload_script import calibrate_script
from simtune.errors import InputError
from simtune.file_lock import exclusive
from simtune.hardware import HardwareProfile, find_profile_for, load_profile
from simtune.hardware.serialize import profile_fingerprint
from simtune.hardware.registry import simtune_home
from simtune.prediction.engine_costs import framework_costs_of, param_pass_costs
from simtune.prediction.learnt_engine_costs import learnt_engine_costs, record_engine_costs
from simtune.prediction.predictor import Predictor
from simtune.prediction.residual import ResidualModel, residual_path
from simtune.runner.interference import Load, load_note, watched
from simtune.runner.resources import Resources, cpu_model_name, detect_accelerator

ENGINE_REFERENCE = ("gpt2-tiny", 64)
"""(preset, tokens per sample) whose real DeepSpeed engines stand in for a large workload's when a
machine learns what the engine costs per unit (``simtune calibrate``; the first search of a large
workload): a tiny model builds and steps its seven engines in seconds."""

ENGINE_REFERENCE_HEAVY = ("gpt2-tiny-heavy", 64)
"""The reference with a 65,536-row position table: the same modules, tensors and compute, 16x the
parameters. Its engines measured beside the reference's show what DeepSpeed does per parameter
(:func:`simtune.prediction.engine_costs.param_pass_costs`), which per-unit costs read off a
0.5M-parameter model cannot carry to a large one."""

ENGINE_REFERENCE_ABOVE = 10
"""A workload with more than this many times the reference's parameters has the reference's
engines measured in its place on a machine that has learnt no engine costs yet: its own seven
engines would cost more than the reference's plus one more start of the ranks."""

CALIBRATION_LOCK_FILE = ".calibration.lock"
"""In the simtune home: held by the search calibrating this machine; another search that finds no
profile waits for it, then takes the profile it saved instead of calibrating again."""


def local_device_name(accelerator: str | None = None) -> str:
    """The device name a calibration of this machine records: the CUDA device's name, or
    ``CPU <model>`` (``accelerator`` defaults to what this machine runs experiments on)."""
    if accelerator is None:
        accelerator = detect_accelerator()
    if accelerator == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return f"CPU {cpu_model_name()}"


def same_device(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


@dataclass(frozen=True)
class ProfileChoice:
    profile: HardwareProfile
    how: str
    """"named", "found" or "calibrated"."""
    local: bool
    """True when the profile describes this machine and process layout (experiments can verify it)."""
    seconds: float = 0.0
    """Calibration wall time (0 unless calibrated now)."""
    path: str = ""
    workload: Optional["WorkloadChoice"] = None
    """The workload measured in the calibration's launch (``measure_workload``), else None."""
    load: Load = Load(None)
    """The load of other processes during the calibration (unknown when none ran)."""


Measuring = Callable[..., Any]
"""``measuring(name, fn, *args, **kwargs)``: runs a measuring launch where the experiments run
(:meth:`simtune.runner.Runner.measuring`: here, or as a Slurm job) and returns its result."""


def here(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The :data:`Measuring` of a search whose experiments run on this machine: a plain call."""
    return fn(*args, **kwargs)


def describes_this_machine(profile: HardwareProfile, resources: Resources) -> bool:
    """Whether ``profile`` is this machine's accelerator, device and process count, so that what it
    predicts can run here."""
    return (profile.device.kind == detect_accelerator() and profile.device.count == resources.world_size
            and same_device(profile.device.name, local_device_name()))


def choose_profile(name: str | None, resources: Resources, *, say: Callable[[str], None],
                   measure_workload: Optional[tuple[Any, str]] = None,
                   scope: Optional[MeasureScope] = None, measuring: Measuring = here) -> ProfileChoice:
    """The hardware profile of the search (see the module docstring). ``measure_workload``:
    (workload, precision) to measure in the calibration's launch if this machine is calibrated
    now (the optional parts in ``scope``, a :class:`~simtune.calibration.workload.MeasureScope`,
    default all); the result is the choice's ``workload``. A calibration runs through
    ``measuring``, where the experiments run."""
    if name is not None:
        profile = load_profile(name)
        return ProfileChoice(profile, "named", describes_this_machine(profile, resources))
    device = local_device_name(resources.accelerator)
    entry = find_profile_for(device, resources.world_size, resources.num_nodes)
    if entry is None:  # calibrate, one search of this simtune home at a time
        with exclusive(simtune_home() / CALIBRATION_LOCK_FILE, on_wait=lambda pid: say(
                f"another search (pid {pid}) is calibrating this machine; waiting for the profile it saves")):
            entry = find_profile_for(device, resources.world_size, resources.num_nodes)  # another search's
            if entry is None:
                return _calibrate_here(device, resources, say, measure_workload, scope, measuring)
    profile = load_profile(entry.path)
    say(f"hardware profile {entry.name} ({entry.kind}) fits this machine ({device}, "
        f"{resources.world_size} process(es)); {entry.path}")
    return ProfileChoice(profile, "found", True, path=str(entry.path))


def _calibrate_here(device: str, resources: Resources, say: Callable[[str], None],
                    measure_workload: Optional[tuple[Any, str]], scope: Optional[MeasureScope],
                    measuring: Measuring) -> ProfileChoice:
    """Calibrate this machine (with the workload in the same launch when asked; through
    ``measuring``, where the experiments run) and save its profile."""
    missing = (f"no hardware profile fits this machine ({device}, {resources.world_size} "
               f"{'GPU' if resources.accelerator == 'cuda' else 'CPU process'}(es))")
    one_node = resources.num_nodes == 1 and (not resources.hostfile or resources.on_this_machine_alone())
    if resources.uses_own_launcher and not one_node:
        raise InputError(f"{missing}, and calibrating runs on the node simtune runs on: run simtune on the "
                         f"allocation's first node (in the sbatch script, or srun inside salloc) with --num_nodes 1, "
                         f"or give --profile.")
    if measure_workload is not None and one_node:
        workload, precision = measure_workload
        say(f"{missing}; calibrating it first (simtune calibrate --quick) in the launch that measures "
            f"{workload.name} (seq {workload.seq_len}, {precision})...")
        both, load = watched(lambda: measuring("calibration", calibrate_machine_and_workload, workload,
                                               resources.num_gpus, precision=precision, scope=scope))
        say(f"calibrated and measured in {both.seconds:.1f} s: profile {both.profile.name} saved to "
            f"{both.profile_path}; workload calibration saved to {both.cache_path}")
        say_load("the calibration", load, say)
        measured = WorkloadChoice(both.calibration, workload_key(workload, precision), "measured", load=load)
        return ProfileChoice(both.profile, "calibrated", True, both.seconds, str(both.profile_path), measured,
                             load)
    say(f"{missing}; calibrating it first (simtune calibrate --quick: one short launch of microbenchmarks)")
    started = time.monotonic()
    result, load = watched(lambda: measuring("calibration", run_calibration, resources.num_gpus, resources.num_nodes,
                                             None if one_node else resources.hostfile, quick=True))
    seconds = time.monotonic() - started
    say(f"calibrated in {seconds:.1f} s: profile {result.profile.name} saved to {result.path}")
    say_load("the calibration", load, say)
    return ProfileChoice(result.profile, "calibrated", True, seconds, str(result.path), load=load)


@dataclass(frozen=True)
class WorkloadChoice:
    model: Any
    """A Workload (closed form) or a WorkloadCalibration (measured)."""
    key: str
    """Names the workload in the residual model and the study."""
    how: str
    """"measured", "cached" or "closed-form"."""
    seconds: float = 0.0
    load: Load = Load(None)
    """The load of other processes during the measurement (unknown when none ran)."""


def remember_engine_costs(profile: HardwareProfile, predictor: Predictor, workload_key: str, *,
                          say: Callable[[str], None], heavy: Optional[Predictor] = None) -> None:
    """Save the engine costs per unit read off the chosen workload's own engines, measured on
    ``profile``'s hardware in the predictor's precision (nothing without them), so that the next
    workload on this machine needs none (:mod:`simtune.prediction.learnt_engine_costs`). With
    ``heavy`` (the same shape, more parameters, its engines measured too) the costs per parameter
    are read off the pair and saved with them; without, those already learnt on the profile are
    taken off before the costs per unit are read, so that every saved workload's per-unit costs
    mean the same."""
    calibration = predictor.calibration
    if calibration is None or not calibration.engines or not predictor.measured_compute_used:
        return
    per_param: tuple[tuple[float, float, float], ...] = ()
    if heavy is not None and heavy.measured_compute_used:
        per_param = param_pass_costs(predictor.model, heavy.model, predictor.hardware.ranks)
        costs = framework_costs_of(predictor.model, predictor.hardware, predictor.precision_label, per_param)
    else:
        learnt = learnt_engine_costs(profile, predictor.precision_label)
        costs = dataclasses.replace(framework_costs_of(predictor.model, predictor.hardware, predictor.precision_label,
                                                       learnt.param_pass_s if learnt is not None else ()),
                                    param_pass_s=())
    buckets = any(e.reduce_bucket_size is not None for e in calibration.engines)
    saved = record_engine_costs(profile, workload_key, predictor.precision_label, costs, buckets_measured=buckets)
    if saved is not None:
        what = " and per parameter" if per_param else ""
        say(f"engine costs per unit{what} read off the engines of {workload_key.split('#')[0]} saved to {saved}: "
            f"the next workload on {profile.name} can be measured without engines")


@functools.lru_cache(maxsize=1)
def engine_reference() -> Any:
    """The :data:`ENGINE_REFERENCE` workload (read once)."""
    from simtune.workloads import load_workload

    name, seq_len = ENGINE_REFERENCE
    return load_workload(name, seq_len=seq_len)


@functools.lru_cache(maxsize=1)
def engine_reference_heavy() -> Any:
    """The :data:`ENGINE_REFERENCE_HEAVY` workload (read once)."""
    from simtune.workloads import load_workload

    name, seq_len = ENGINE_REFERENCE_HEAVY
    return load_workload(name, seq_len=seq_len)


HEAVY_SCOPE = MeasureScope(checkpointing=False, bucket_engines=False, engines=True)
"""What the heavy reference's measurement needs: its engines at the default buckets."""


def engines_by_reference(workload: Any) -> bool:
    """Whether ``workload`` is large enough that the reference's engines are measured in its
    place (:data:`ENGINE_REFERENCE_ABOVE`)."""
    from simtune.workloads.analysis import parameter_count

    return parameter_count(workload) > ENGINE_REFERENCE_ABOVE * parameter_count(engine_reference())


def reference_scope(scope: MeasureScope) -> MeasureScope:
    """What the reference's measurement needs to stand in for a workload measured in ``scope``:
    its engines, with small buckets when the workload's search wants them; no checkpointing."""
    return MeasureScope(checkpointing=False, bucket_engines=scope.bucket_engines, engines=True)


def learn_reference_engine_costs(calibration: Any, profile: HardwareProfile, precision: str, *,
                                 say: Callable[[str], None], heavy: Any = None) -> None:
    """Save the engine costs read off the reference's measured engines (``calibration``, a
    :class:`~simtune.calibration.workload.WorkloadCalibration` of :func:`engine_reference` on
    ``profile``'s machine): per unit, and per parameter with ``heavy`` (the same of
    :func:`engine_reference_heavy`)."""
    def predictor(measured: Any) -> Predictor:
        return Predictor.from_parts(None, measured, profile, world_size=profile.device.count, precision=precision)

    remember_engine_costs(profile, predictor(calibration), workload_key(engine_reference(), precision), say=say,
                          heavy=predictor(heavy) if heavy is not None else None)


def workload_key(workload: Any, precision: str) -> str:
    """``<name>@<seq_len>/<precision>#<hash of the Hugging Face config>``."""
    digest = hashlib.sha256(json.dumps(workload.hf_config, sort_keys=True).encode()).hexdigest()[:8]
    return f"{workload.name}@{workload.seq_len}/{precision}#{digest}"


def residual_workload(key: str, algorithm: str) -> str:
    """What the residual model keeps a search's verified samples under: the workload's key, and
    for another optimizer than AdamW its algorithm too (``gpt2@64/fp32#ab12cd34+sgd_momentum``):
    one optimizer's errors do not correct another's."""
    return key if algorithm == "adamw" else f"{key}+{algorithm}"


def measure_scope(space: Any, workload: Any) -> MeasureScope:
    """The optional parts of the workload measurement this search needs
    (:class:`~simtune.calibration.workload.MeasureScope`): micro-batch sizes up to the space's
    largest; activation checkpointing when it is a choice; the engines with small buckets when
    some stage's reduce_bucket_size (tuned or fixed) makes backward issue another number of
    gradient reductions than DeepSpeed's default bucket, counted on the preset's parameter
    tensors (:meth:`ParamLayout.bucket_count`). A model under 50M parameters issues one reduction
    with every bucket of DeepSpeed's default knob space, and one rank reduces nothing (the
    prediction uses those engines only across ranks)."""
    from simtune.model.layout import ParamLayout
    from simtune.knobs import knob
    from simtune.workloads.analysis import parameter_tensor_numels

    layout = ParamLayout(parameter_tensor_numels(workload))
    default = layout.bucket_count(int(knob("reduce_bucket_size").default_for(1)))  # what the engines run
    sizes = set()
    for stage in space.stages:
        if stage >= 1:
            sizes.update(dict(space.knob_space(stage)).get("reduce_bucket_size", ()))
            sizes.add(dict(dict(space.fixed_knobs)[stage]).get("reduce_bucket_size"))
    buckets = space.world_size > 1 and any(layout.bucket_count(int(s)) != default for s in sizes if s)
    return MeasureScope(checkpointing=True in space.activation_checkpointing_choices, bucket_engines=buckets,
                        largest_micro_batch_size=space.max_micro_batch_size)


def choose_workload(workload: Any, profile: HardwareProfile, *, precision: str, measure: bool,
                    say: Callable[[str], None], num_gpus: int | None = None,
                    scope: Optional[MeasureScope] = None, measuring: Measuring = here) -> WorkloadChoice:
    """The workload as the predictor takes it (see the module docstring); a measurement includes
    the optional parts in ``scope`` (a :class:`~simtune.calibration.workload.MeasureScope`,
    default all) and runs through ``measuring``."""
    key = workload_key(workload, precision)
    fingerprint = wc.fingerprint(wc.model_identity(workload), workload.seq_len, precision, profile.name)
    if measure:
        started = time.monotonic()
        if measuring is not here:  # a cached measurement is read here, not by a job
            _, cached = wc.cached_measurement(
                fingerprint, cache_dir=None, refresh=False,
                what=f"{workload.name} (seq {workload.seq_len}, {precision}, profile {profile.name})", log=say,
                scope=scope or wc.MeasureScope())
            if cached is not None:
                return WorkloadChoice(cached, key, "cached")
        # A job's progress lines go to its own log: the search's printer stays here.
        calibration, load = watched(lambda: measuring("workload", calibrate_workload, workload, profile,
                                                      precision=precision, num_gpus=num_gpus,
                                                      log=say if measuring is here else print, scope=scope))
        if calibration.from_cache:
            return WorkloadChoice(calibration, key, "cached")
        say_load("the workload's measurement", load, say)
        return WorkloadChoice(calibration, key, "measured", time.monotonic() - started, load)
    cached = wc.read_cached(wc.cache_path(None, fingerprint))
    if cached is not None and cached.fingerprint == fingerprint:
        say(f"workload {workload.name}: using the cached measurement {wc.cache_path(None, fingerprint)}")
        return WorkloadChoice(cached, key, "cached")
    return WorkloadChoice(workload, key, "closed-form")


def choose_script_workload(script: str, args: Any, ds_config: Any, profile: HardwareProfile, *, precision: str,
                           num_gpus: int, local: bool, say: Callable[[str], None],
                           arg_mappings: Optional[Mapping[str, str]] = None,
                           timeout_s: Optional[float] = None) -> WorkloadChoice:
    """Script mode: the model of the user's script, measured in one launch here
    (:func:`simtune.calibration.workload_script.calibrate_script`, cached; ``arg_mappings`` set
    the script's flags to the measuring config; stopped at ``timeout_s``, None: no limit), or
    read from the cache."""
    identity = wc.script_identity(script, args)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    key = f"script:{identity['script']}/{precision}#{digest}"
    if not local:
        fingerprint = wc.fingerprint(identity, 0, precision, profile.name)
        cached = wc.read_cached(wc.cache_path(None, fingerprint))
        if cached is None or cached.fingerprint != fingerprint:
            raise InputError(f"Predicting for profile {profile.name!r} in script mode needs the script's model "
                             f"measured first, which takes a launch on the hardware of that profile: use model mode "
                             f"(--model) for hardware you do not have.")
        return WorkloadChoice(cached, key, "cached")
    started = time.monotonic()
    calibration, load = watched(lambda: calibrate_script(script, args, ds_config, profile, precision=precision,
                                                         num_gpus=num_gpus, log=say, arg_mappings=arg_mappings,
                                                         timeout_s=timeout_s))
    if calibration.from_cache:
        return WorkloadChoice(calibration, key, "cached")
    say_load("the measurement of the script's model", load, say)
    return WorkloadChoice(calibration, key, "measured", time.monotonic() - started, load)


def say_load(what: str, load: Load, say: Callable[[str], None]) -> None:
    """Say so when other processes disturbed ``what``: its numbers stand for a slower machine."""
    note = load_note(what, load)
    if note:
        say(f"{note}; measure again on a quiet machine (simtune calibrate) if the predictions look slow")


def load_residual(profile: HardwareProfile) -> ResidualModel:
    """The residual model stored for a profile (empty when none is)."""
    return ResidualModel.load(residual_path(profile.name), profile=profile.name)
