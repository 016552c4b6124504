import io

from simtune.progress import Progress, format_value


def test_one_line_per_event_with_counts_outcome_and_best():
    stream = io.StringIO()
    progress = Progress(metric="latency", stream=stream)
    progress.note("stage 0: tuning")
    progress.started(["z0_gas1_tmbspg1", "z0_gas1_tmbspg2"])
    progress.finished("z0_gas1_tmbspg1", "ok", "", 12.5, ("z0_gas1_tmbspg1", 12.5))
    progress.finished("z0_gas1_tmbspg2", "oom", "out of memory: 2 GB > 1 GB", None, ("z0_gas1_tmbspg1", 12.5))
    assert stream.getvalue().splitlines() == [
        "simtune: stage 0: tuning",
        "simtune: [0/1] z0_gas1_tmbspg1 running",
        "simtune: [0/2] z0_gas1_tmbspg2 running",
        "simtune: [1/2] z0_gas1_tmbspg1 ok  latency 12.5 ms  (best so far: z0_gas1_tmbspg1 12.5)",
        "simtune: [2/2] z0_gas1_tmbspg2 oom  out of memory: 2 GB > 1 GB  (best so far: z0_gas1_tmbspg1 12.5)",
    ]


def test_quiet_prints_nothing():
    stream = io.StringIO()
    progress = Progress(quiet=True, stream=stream)
    progress.note("x")
    progress.started(["a"])
    progress.finished("a", "ok", "", 1.0, None)
    assert stream.getvalue() == "" and progress.done == 1


def test_format_value():
    assert format_value(72.3612) == "72.36"
    assert format_value(4686.73) == "4686.7"
    assert format_value(1.6156e9) == "1.616e+09"
