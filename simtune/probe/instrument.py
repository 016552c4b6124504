"""Timing a DeepSpeed engine from the outside: its ``forward``, ``backward`` and ``step`` calls.

:meth:`Instrument.attach` replaces the three methods on the engine instance (``engine(x)``
reaches the replaced ``forward`` through ``nn.Module.__call__``). Optimizer steps are counted
from 1 from the moment ``deepspeed.initialize`` returned: a step ends at the ``step()`` call that
advances the engine's ``global_steps`` (so the count equals ``global_steps`` unless the script
loads a checkpoint). At every step boundary it

1. synchronises the device and stamps the boundary, when the boundary belongs to the window;
2. reads the rank's peak memory and, with a budget, takes the maximum over ranks (one
   all-reduce, so every rank reaches the same verdict and none waits in a collective for a rank
   that left): above the budget every rank prints nothing but rank 0's line and exits with
   :data:`EXIT_OUT_OF_MEMORY`;
3. after step ``end``: gathers every rank's peak memory, writes metrics.json on global rank 0,
   waits at a barrier and ends every rank with ``os._exit(0)`` (this also skips ZeRO-3's abort
   at interpreter exit), or, in a shared launch, hands the rank back to its loop.

The probe's own work at a boundary (steps 2-3, resolving CUDA events) is subtracted from the
clock, so it never counts in a step's time.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any, Callable, NoReturn

from simtune.probe.flops import MicroStepFlops
from simtune.probe.metrics import RunFacts, summarize
from simtune.probe.protocol import (
    EXIT_NO_METRICS,
    EXIT_OUT_OF_MEMORY,
    LINE_PREFIX,
    NO_METRICS_PREFIX,
    OUT_OF_MEMORY_PREFIX,
    ProbeSettings,
    write_json_atomically,
)
from simtune.probe.window import StepWindow

WRAPPED = (("forward", "fwd"), ("backward", "bwd"), ("step", "step"))


class RunEnded(BaseException):
    """Raised by a shared launch's ``end`` (:mod:`simtune.probe.serve`) when a run's window
    closed: it unwinds the script back to the loop, as ``SystemExit`` would unwind to the
    interpreter (a ``BaseException``, so the script's own ``except Exception`` lets it pass)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def end_process(code: int) -> NoReturn:
    """Flush the standard streams and leave at once, skipping interpreter shutdown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _bytes_text(value: int) -> str:
    unit, scale = ("GiB", 2**30) if value >= 2**30 else ("MiB", 2**20)
    return f"{value} bytes ({value / scale:.2f} {unit})"


class Instrument:
    def __init__(self, settings: ProbeSettings, end: Callable[[int], NoReturn] = end_process) -> None:
        """``end(code)`` ends the run: by default the process; a shared launch
        (:mod:`simtune.probe.serve`) unwinds to its loop instead when the window closed."""
        self.settings = settings
        self.end = end
        self.memory_kind: str | None = None
        """metrics.json's ``memory_kind`` when not the device's (a shared launch's later runs)."""
        self.window = StepWindow(settings.start_profile_step, settings.end_profile_step)
        self.flops = MicroStepFlops()
        self.engine: Any = None
        self.device: Any = None
        self.collectives: Any = None
        self._pending: list[tuple[int, str, Any]] = []
        self._excluded_s = 0.0
        self._busy = False
        self.completed_steps = 0

    # -- set-up ---------------------------------------------------------------------------------
    def attach(self, engine: Any) -> None:
        """Time ``engine`` from now on (called with the engine ``deepspeed.initialize`` returned)."""
        if self.device is None:
            from simtune.probe.collectives import Collectives
            from simtune.probe.device import current_device

            self.device = current_device()
            self.collectives = Collectives()
        self.engine = engine
        for name, kind in WRAPPED:
            setattr(engine, name, self._wrapped(engine, getattr(engine, name), kind))
        completed = self.completed_steps
        if self.window.needs_boundary(completed) and completed not in self.window.boundaries_s:
            self.device.synchronize()
            self.window.mark_boundary(completed, self._now())

    def _wrapped(self, engine: Any, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._busy:  # a call made from inside another timed call is part of it
                return original(*args, **kwargs)
            self._busy = True
            try:
                result, advanced = self._call(engine, kind, original, args, kwargs)
            finally:
                self._busy = False
            if advanced:
                self.completed_steps += 1
                self._boundary(engine)
            return result

        return timed

    # -- per call -------------------------------------------------------------------------------
    def _now(self) -> float:
        return time.perf_counter() - self._excluded_s

    def _call(self, engine: Any, kind: str, original: Callable[..., Any], args: tuple,
              kwargs: dict) -> tuple[Any, bool]:
        step = self.completed_steps + 1  # the optimizer step this call belongs to
        global_steps = engine.global_steps
        call = original
        if kind == "fwd" and not self.flops.done and step < self.window.start:
            call = functools.partial(self.flops.forward, original)
        elif kind == "bwd" and self.flops.awaiting_backward:
            call = functools.partial(self.flops.backward, original)
        timed = self.window.measures(step)
        token = self.device.begin() if timed else None
        result = call(*args, **kwargs)
        if timed:
            self._pending.append((step, kind, self.device.finish(token)))
        return result, kind == "step" and engine.global_steps != global_steps

    # -- per step boundary ----------------------------------------------------------------------
    def _boundary(self, engine: Any) -> None:
        completed = self.completed_steps
        measured = self.window.needs_boundary(completed)
        if measured:
            self.device.synchronize()
        paused_at = time.perf_counter()
        if measured:
            self.window.mark_boundary(completed, paused_at - self._excluded_s)
        for step, kind, handle in self._pending:
            self.window.add_split(step, kind, self.device.seconds(handle))
        self._pending.clear()
        peak = self.device.peak_bytes()
        budget = self.settings.memory_budget_bytes
        if budget is not None:
            worst = self.collectives.max_int(peak)
            if worst > budget:
                if self.collectives.rank == 0:
                    print(f"{OUT_OF_MEMORY_PREFIX} peak {_bytes_text(worst)} exceeds the budget "
                          f"{_bytes_text(budget)} at step {completed}", file=sys.stderr)
                self.end(EXIT_OUT_OF_MEMORY)
        if completed >= self.window.end:
            self._finish(engine, peak)
        self._excluded_s += time.perf_counter() - paused_at

    def _finish(self, engine: Any, peak: int) -> None:
        reserved = self.device.peak_reserved_bytes()
        per_rank = self.collectives.gather_ints([peak, reserved or 0])
        if self.collectives.rank == 0:
            facts = RunFacts(
                train_batch_size=int(engine.train_batch_size()),
                micro_batch_size=int(engine.train_micro_batch_size_per_gpu()),
                gradient_accumulation_steps=int(engine.gradient_accumulation_steps()),
                world_size=self.collectives.world_size,
                zero_stage=int(engine.zero_optimization_stage()),
                flops_per_micro_step=self.flops.total_flops,
                peak_memory_per_rank=tuple(p[0] for p in per_rank),
                peak_reserved_per_rank=None if reserved is None else tuple(p[1] for p in per_rank),
                memory_kind=self.memory_kind or self.device.memory_kind,
            )
            metrics = summarize(self.window, facts)
            write_json_atomically(self.settings.metrics_path, metrics)
            print(f"{LINE_PREFIX} steps {self.window.start}..{self.window.end}: median "
                  f"{metrics['step_time_s'] * 1000:.2f} ms, {metrics['throughput']:.4g} samples/s; "
                  f"wrote {self.settings.metrics_path}", flush=True)
        self.collectives.barrier()
        self.end(0)

    # -- the script ended early -----------------------------------------------------------------
    def report_no_metrics(self) -> NoReturn:
        """Say why no metrics were written and leave with :data:`EXIT_NO_METRICS`."""
        if self.engine is None:
            why = "the script ended without calling deepspeed.initialize"
        else:
            why = (f"the script ended after {self.completed_steps} optimizer steps, before "
                   f"end_profile_step {self.window.end}")
        if os.environ.get("RANK", "0") == "0":
            print(f"{NO_METRICS_PREFIX} {why}", file=sys.stderr)
        self.end(EXIT_NO_METRICS)
