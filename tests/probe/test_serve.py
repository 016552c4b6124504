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
