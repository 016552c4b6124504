"""The two ways a search finds its best configuration, behind one small protocol.

- ``measure`` (:class:`Measured`): every candidate runs for real, in DeepSpeed's order
  (:mod:`.measured`), bounded by the memory that exists (:mod:`.memory_bound`);
- ``simulate`` (:class:`Simulated`): a hardware profile and the workload's numbers are chosen
  (calibrating this machine first when no profile fits it, :mod:`.model_inputs`), an Optuna
  study searches the cost model and the top predictions are verified (:mod:`.simulated`).

Both return a :class:`StrategyResult` whose :class:`~.outcome.SearchOutcome` the outputs read;
after an interrupt, :meth:`Strategy.partial_outcome` gives what finished (None: nothing started).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Protocol

from simtune.errors import InputError
from simtune.hardware.serialize import profile_fingerprint
from simtune.prediction.learnt_engine_costs import learnt_engine_costs, with_learnt_engine_costs
from simtune.prediction.predictor import Predictor
from simtune.progress import Progress
from simtune.runner import Runner
from simtune.runner.interference import load_note
from simtune.search.measured import MeasuredSearch, MeasureOptions
from simtune.search.memory_bound import search_memory_bound
from simtune.search.model_inputs import (ENGINE_REFERENCE_ABOVE, HEAVY_SCOPE, ProfileChoice, WorkloadChoice,
                                         choose_profile, choose_script_workload, choose_workload, engine_reference,
                                         engine_reference_heavy, engines_by_reference, here,
                                         learn_reference_engine_costs, load_residual, measure_scope, reference_scope,
                                         remember_engine_costs, residual_workload)
from simtune.search.outcome import SearchOutcome
from simtune.search.outputs import ModelReport
from simtune.search.request import SearchRequest
from simtune.search.simulated import SimulatedSearch, SimulateOptions, model_report
from simtune.search.study_storage import StudyStorage


@dataclass(frozen=True)
class StrategyResult:
    """What a strategy found, as the outputs take it."""

    outcome: SearchOutcome
    model: ModelReport | None = None
    """The model's side (simulate): predictions, calibration, the study."""
    predictions: dict[str, float] | None = None
    """Experiment name -> predicted metric value (simulate)."""


class Strategy(Protocol):
    name: str

    def run(self) -> StrategyResult: ...

    def partial_outcome(self) -> SearchOutcome | None:
        """What finished before an interrupt; None when the search itself had not started."""

    def kept(self) -> str:
        """What an interrupted search keeps besides its experiments ("" or "the study in X and ")."""


def strategy_for(request: SearchRequest, runner: Runner, progress: Progress, started: float) -> Strategy:
    if request.strategy == "simulate":
        return Simulated(request, runner, progress, started)
    return Measured(request, runner, progress)


class Measured:
    """Every candidate run for real, in DeepSpeed's order."""

    name = "measure"

    def __init__(self, request: SearchRequest, runner: Runner, progress: Progress) -> None:
        self.request = request
        self.runner = runner
        self.progress = progress
        self.search: MeasuredSearch | None = None

    def run(self) -> StrategyResult:
        request, program = self.request, self.request.program
        memory = search_memory_bound(
            request.space, request.resources, parallel=self.runner.parallel, precision=request.precision,
            profile=request.autotuning.profile,
            budget_bytes=request.autotuning.memory_budget_bytes,
            workload=program.workload(),
            script=(program.script, program.args, request.ds_config) if program.mode == "script" else None,
            say=self.progress.note)
        self.search = MeasuredSearch(request.space, self.runner,
                                     MeasureOptions(stop_at_worse_stage=request.flags.stop_at_worse_stage,
                                                    parallel=self.runner.parallel),
                                     memory=memory, progress=self.progress)
        return StrategyResult(self.search.run())

    def partial_outcome(self) -> SearchOutcome | None:
        return self.search.outcome() if self.search is not None else None

    def kept(self) -> str:
        return ""


class Simulated:
    """The cost model searched, its top predictions verified."""

    name = "simulate"

    def __init__(self, request: SearchRequest, runner: Runner, progress: Progress, started: float) -> None:
        self.request = request
        self.runner = runner
        self.progress = progress
        self.started = started
        self.search: SimulatedSearch | None = None

    def run(self) -> StrategyResult:
        request, program, autotuning = self.request, self.request.program, self.request.autotuning
        resources, verify_top, precision = request.resources, autotuning.verify_top, request.precision
        workload = program.workload()
        scope = measure_scope(request.space, workload) if workload is not None else None
        # Calibrations run where the experiments run (a job of their own with --executor slurm).
        measuring = here if self.runner.executor.name == "local" else self.runner.measuring
        # A large workload's engines cost more than a tiny reference's: where the machine has learnt
        # no engine costs yet, the reference's engines are measured in their place.
        ref_scope = (reference_scope(scope) if workload is not None and scope is not None and verify_top > 0
                     and engines_by_reference(workload) else None)
        first, first_scope = (engine_reference(), ref_scope) if ref_scope is not None else (workload, scope)
        choice = choose_profile(autotuning.profile, resources, say=self.progress.note, measure_workload=(
            (first, precision) if first is not None and verify_top > 0 else None), scope=first_scope,
            measuring=measuring)
        profile = choice.profile
        if verify_top > 0 and not choice.local:
            raise InputError(f"Hardware profile {profile.name!r} describes {profile.device.count} x "
                             f"{profile.device.name}, not this machine's {resources.world_size} process(es), so its "
                             f"predictions cannot be verified here: use --verify-top 0 or a profile of this machine.")
        learnt = learnt_engine_costs(profile, precision)
        reference_s, stand_in = 0.0, None
        if ref_scope is not None:
            reference, measured = engine_reference(), None
            if choice.workload is not None:  # measured in the calibration's launch
                measured = choice.workload
                stand_in = (f"{reference.name}'s engines were measured in the calibration's launch in place of "
                            f"the workload's")
                self.progress.note(f"{stand_in}: the workload has over {ENGINE_REFERENCE_ABOVE}x its parameters")
                choice = dataclasses.replace(choice, workload=None)
            elif learnt is None or not learnt.covers(bucket_engines=ref_scope.bucket_engines):
                self.progress.note(f"the workload has over {ENGINE_REFERENCE_ABOVE}x {reference.name}'s parameters "
                                   f"and {profile.name} has no engine costs learnt yet: measuring {reference.name}'s "
                                   f"engines in place of the workload's")
                measured = choose_workload(reference, profile, precision=precision, measure=True,
                                           say=self.progress.note, num_gpus=resources.num_gpus, scope=ref_scope,
                                           measuring=measuring)
                reference_s = measured.seconds
                stand_in = (f"{reference.name}'s engines were measured in place of the workload's "
                            f"({reference_s:.1f} s{', cached' if measured.how == 'cached' else ''})")
            if measured is not None:
                heavy_reference = engine_reference_heavy()
                heavy = choose_workload(heavy_reference, profile, precision=precision, measure=True,
                                        say=self.progress.note, num_gpus=resources.num_gpus, scope=HEAVY_SCOPE,
                                        measuring=measuring)
                reference_s += heavy.seconds
                stand_in = (f"{stand_in}; {heavy_reference.name}'s beside them for the costs per parameter "
                            f"({heavy.seconds:.1f} s{', cached' if heavy.how == 'cached' else ''})")
                learn_reference_engine_costs(measured.model, profile, precision, say=self.progress.note,
                                             heavy=heavy.model)
                learnt = learnt_engine_costs(profile, precision)
        if scope is not None and learnt is not None and learnt.covers(bucket_engines=scope.bucket_engines):
            scope = dataclasses.replace(scope, engines=False)
            if verify_top > 0 and choice.local and choice.workload is None:
                self.progress.note(f"{learnt.describe()} on {profile.name}: the workload's engines are not measured")
        if choice.workload is not None:
            chosen = choice.workload
        elif program.mode == "script":
            chosen = choose_script_workload(program.script, program.args, request.ds_config, profile,
                                            precision=precision, num_gpus=resources.num_gpus, local=choice.local,
                                            say=self.progress.note, arg_mappings=autotuning.arg_mappings,
                                            timeout_s=autotuning.experiment_timeout_s)
        else:
            chosen = choose_workload(workload, profile, precision=precision,
                                     measure=verify_top > 0 and choice.local, say=self.progress.note,
                                     num_gpus=resources.num_gpus, scope=scope, measuring=measuring)
        predictor = Predictor.from_parts(request.space, chosen.model, with_learnt_engine_costs(profile, learnt),
                                         world_size=resources.world_size, precision=precision,
                                         nodes=resources.num_nodes)
        remember_engine_costs(profile, predictor, chosen.key, say=self.progress.note)
        options = SimulateOptions(verify_top=verify_top, search_trials=autotuning.search_trials,
                                  parallel=self.runner.parallel, confirm_close_calls=autotuning.confirm_close_calls)
        identity = {"profile": profile.name, "profile_numbers": profile_fingerprint(profile),
                    "workload": chosen.key, "workload_source": numbers_source(chosen.how), "precision": precision,
                    "world_size": resources.world_size, "nodes": resources.num_nodes, "program": program.args}
        self.search = SimulatedSearch(request.space, predictor, self.runner, results_dir=autotuning.results_dir,
                                      residual=load_residual(profile), identity=identity,
                                      workload=residual_workload(chosen.key, request.space.optimizer.algorithm),
                                      options=options, memory_budget_bytes=autotuning.memory_budget_bytes,
                                      progress=self.progress,
                                      storage=StudyStorage.chosen(autotuning.storage, autotuning.results_dir))
        if verify_top > 0:  # its start overlaps the study
            self.runner.start_shared_launch()
        # an interrupt in here leaves the residual model unsaved: a resumed search predicts as this one did
        result = self.search.run()
        saved = self.search.save_residual()
        if saved is not None:
            self.progress.note(self.search.residual_note(saved))
        report = model_report(result, request.space, profile=profile.name, profile_kind=profile.kind,
                              calibration_s=choice.seconds + reference_s + chosen.seconds,
                              total_s=time.monotonic() - self.started,
                              calibration_note=calibration_note(choice, chosen, stand_in),
                              residual_file=str(saved) if saved else None,
                              launches=self.runner.shared_launch.describe() if self.runner.shared_launch else None,
                              optimizer_note=predictor.optimizer_note())
        return StrategyResult(result.outcome, report, result.predictions)

    def partial_outcome(self) -> SearchOutcome | None:
        return self.search.partial_outcome() if self.search is not None else None

    def kept(self) -> str:
        return f"the study in {self.search.storage_place} and " if self.search is not None else ""


def numbers_source(how: str) -> str:
    """Where the workload's numbers come from, as the study's identity takes it: a measurement
    read from the cache is the one measured when the search first ran ("measured" either way), so
    a search killed after measuring resumes its own study; the closed form is other numbers."""
    return "closed-form" if how == "closed-form" else "measured"


def calibration_note(choice: ProfileChoice, chosen: WorkloadChoice, stand_in: str | None = None) -> str | None:
    """How the profile and the workload's numbers were obtained (``stand_in``: how a reference
    model's engines stood in for the workload's), and the load beside their measurement, in words
    (None: nothing to say)."""
    notes = [stand_in] if stand_in else []
    if choice.workload is not None:
        notes.append(f"this machine was calibrated first and the workload measured in the same launch "
                     f"({choice.seconds:.1f} s; profile saved to {choice.path}, measurement cached for the "
                     f"next search)")
    else:
        if choice.how == "calibrated":
            notes.append(f"this machine was calibrated first ({choice.seconds:.1f} s, profile saved to "
                         f"{choice.path})")
        if chosen.how == "measured":
            notes.append(f"the workload was measured ({chosen.seconds:.1f} s, cached for the next search)")
        elif chosen.how == "closed-form":
            notes.append("the workload's numbers come from the closed-form analysis of the preset")
        else:
            notes.append("the workload's measurement was read from the cache")
    measured = [("the calibration", choice.load)]
    if chosen is not choice.workload:  # else measured in the calibration's launch
        measured.append(("the workload's measurement", chosen.load))
    notes.extend(note for note in (load_note(what, load) for what, load in measured) if note)
    return "; ".join(notes) or None
