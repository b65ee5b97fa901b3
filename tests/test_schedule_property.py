"""Property test of the Self-MoA-Seq window schedule."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from selfmoa.nodes.schedule import window_calls, window_schedule


@st.composite
def settings(draw):
    window = draw(st.integers(min_value=2, max_value=40))
    reserved = draw(st.integers(min_value=1, max_value=window - 1))
    return draw(st.integers(min_value=1, max_value=2000)), window, reserved


@given(settings())
def test_every_sample_in_exactly_one_step_and_call_count_matches(args):
    n, window, reserved = args
    steps = window_schedule(n, window, reserved)
    flat = [i for step in steps for i in step]
    assert flat == list(range(n))
    assert len(steps) == window_calls(n, window, reserved) == 1 + math.ceil(max(0, n - window) / (window - reserved))
    assert len(steps[0]) == min(n, window)
    assert all(1 <= len(s) <= window - reserved for s in steps[1:])
