"""Script mode's step clock on a rank: what the script does between the engine's calls (no launch)."""

from simtune.calib import script_rank as ws


def test_the_step_clock_counts_only_what_runs_outside_the_engine():
    clock = ws.StepClock()
    now = [0.0]
    engine_call = clock.wrap(lambda seconds: now.__setitem__(0, now[0] + seconds))
    step_call = clock.wrap(lambda seconds: now.__setitem__(0, now[0] + seconds), is_step=True)
    real = ws.time.perf_counter
    ws.time.perf_counter = lambda: now[0]
    try:
        for _ in range(ws.WARM_STEPS + ws.TIMED_STEPS + 1):
            now[0] += 0.5  # the script's own work (data, bookkeeping)
            engine_call(1.0)  # forward
            engine_call(2.0)  # backward
            step_call(0.25)
    finally:
        ws.time.perf_counter = real
    assert clock.done and clock.samples[:ws.TIMED_STEPS] == [0.5] * ws.TIMED_STEPS


def test_the_step_clock_waits_for_the_device_so_queued_work_counts_as_the_engines():
    now, queued = [0.0], [0.0]

    def drain():  # a device synchronisation: the wall clock moves by the work still queued
        now[0] += queued[0]
        queued[0] = 0.0

    def launch(seconds):  # an asynchronous engine call: returns at once, its work is queued
        queued[0] += seconds

    def script_own(clock):
        engine_call, step_call = clock.wrap(launch), clock.wrap(launch, is_step=True)
        real = ws.time.perf_counter
        ws.time.perf_counter = lambda: now[0]
        try:
            for _ in range(ws.WARM_STEPS + ws.TIMED_STEPS + 1):
                now[0] += 0.5
                drain()  # the script's own work ends in a synchronising call (loss.item())
                engine_call(1.0)
                step_call(0.25)
        finally:
            ws.time.perf_counter = real
        return clock.samples[:ws.TIMED_STEPS]

    assert script_own(ws.StepClock(sync=drain)) == [0.5] * ws.TIMED_STEPS
    assert script_own(ws.StepClock()) == [1.75] * ws.TIMED_STEPS  # without it the queue is the script's
