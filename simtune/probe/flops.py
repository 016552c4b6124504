"""FLOPs of one micro-step, counted with ``torch.utils.flop_counter.FlopCounterMode``.

The counter runs around the forward and the backward of the first micro-step (before the
measured window, so its overhead never lands in a timed step). FlopCounterMode counts the
matrix products and convolutions torch dispatches (2 flops per multiply-add), backward included,
so ``forward + backward`` is measured rather than estimated as 3x forward (DeepSpeed's rule).
If the counter cannot run, or ``start_profile_step`` is 1 (no micro-step precedes the window),
the count is None and metrics.json reports null.
"""

from __future__ import annotations

from typing import Any, Callable


class MicroStepFlops:
    """Counts the forward of the first call to :meth:`forward` and the backward that follows."""

    def __init__(self) -> None:
        self.forward_flops: int | None = None
        self.total_flops: int | None = None
        self.done = False

    @property
    def awaiting_backward(self) -> bool:
        return self.forward_flops is not None and not self.done

    def forward(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result, self.forward_flops = _counted(call, args, kwargs)
        if self.forward_flops is None:
            self.done = True
        return result

    def backward(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result, backward_flops = _counted(call, args, kwargs)
        if backward_flops is not None and self.forward_flops is not None:
            self.total_flops = self.forward_flops + backward_flops
        self.done = True
        return result


def _counted(call: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[Any, int | None]:
    """``call(*args, **kwargs)`` under a FlopCounterMode, and the flops it counted (None on failure)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        mode = FlopCounterMode(display=False)
        mode.__enter__()
    except Exception:
        return call(*args, **kwargs), None
    try:
        result = call(*args, **kwargs)
    finally:
        try:
            mode.__exit__(None, None, None)
            flops = int(mode.get_total_flops())
        except Exception:
            flops = None
    return result, flops
