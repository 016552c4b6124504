"""A run's step time over its measured window: steady, or moved by a transient."""

import pytest

from simtune.runner.steadiness import MAX_WINDOW_SHIFT, shift_note, unsteady_shift, window_shift


def unsteady_note(name, step_times_s):
    """The warning a run's record gives (``Measurement.unsteady_note``): none for a steady window."""
    shift = unsteady_shift(step_times_s)
    return None if shift is None else shift_note(name, shift)

# a run of the README's main search on this machine: z1 at micro-batch 16, no other process busy
TRANSIENT_MS = [120, 128, 132, 120, 116, 122, 121, 113, 124, 114, 124, 120, 121, 96, 83, 92, 96, 94, 99, 114]
STEADY_MS = [87, 83, 80, 81, 79, 81, 82, 82, 78, 82, 89, 77, 82, 88, 82, 81, 85, 87, 85, 80]


def test_a_window_whose_halves_differ_by_more_than_the_limit_is_unsteady():
    shift = window_shift([t / 1e3 for t in TRANSIENT_MS])
    assert shift is not None and (shift.first_s, shift.second_s) == pytest.approx((0.1205, 0.0975))
    assert shift.relative > MAX_WINDOW_SHIFT
    note = unsteady_note("z1_gas1_tmbspg16", [t / 1e3 for t in TRANSIENT_MS])
    assert note is not None and note.startswith("z1_gas1_tmbspg16: its step time moved 24% within the measured window")
    assert "first half 120.5 ms, second half 97.5 ms" in note


def test_a_steady_window_or_one_too_short_to_tell_has_no_note():
    assert unsteady_note("z0", [t / 1e3 for t in STEADY_MS]) is None
    assert window_shift([0.1, 0.2, 0.1]) is None and unsteady_note("z0", [0.1, 0.3] * 3) is None
    assert unsteady_note("z0", None) is None and unsteady_note("z0", []) is None
    # a shift just inside the limit is steady
    assert unsteady_note("z0", [0.100] * 5 + [0.100 * (1 + MAX_WINDOW_SHIFT) - 1e-9] * 5) is None
