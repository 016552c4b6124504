"""Between two runs of a shared launch: what the finished run's engine leaves must go, or the
launch must end (the runs themselves: tests/runner/test_shared_launch.py)."""

from simtune.probe import serve


class Engine:
    destroyed = False

    def destroy(self):
        self.destroyed = True


class Instrument:
    def __init__(self, engine):
        self.engine = engine


def running(engine):
    current = serve._Current()
    current.instrument = Instrument(engine)
    return current


def test_an_engine_nothing_else_holds_is_destroyed_and_gone():
    current = running(Engine())
    assert serve.release(current) is True and current.instrument is None


def test_an_engine_still_held_elsewhere_is_reported_as_outliving_its_run():
    keeper = [Engine()]
    current = running(keeper[0])
    assert serve.release(current) is False and keeper[0].destroyed and current.instrument is None


def test_deepspeeds_stack_of_zero3_models_is_emptied_between_runs():
    from deepspeed.runtime.zero import parameter_offload

    parameter_offload.FWD_MODULE_STACK.append(object())
    serve.forget_zero3_model()
    assert parameter_offload.FWD_MODULE_STACK == []


def test_a_run_that_leaves_device_memory_allocated_ends_the_launch():
    mib = 2**20
    assert serve.left_behind(True, 0, 63 * mib) is None  # a generator's state, small buffers
    assert serve.left_behind(True, 100 * mib, 300 * mib) == "200 MiB of device memory still allocated after it"
    assert serve.left_behind(False, 0, 0) == "its engine outlived it"
    assert serve.left_behind(True, None, None) is None  # the host's resident set cannot say


def test_the_host_reports_no_allocated_bytes():
    from simtune.probe.device import HostDevice

    assert HostDevice().allocated_bytes() is None
