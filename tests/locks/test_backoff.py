"""The pure wait-interval helpers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from locks.backoff import jittered, poll_interval

MIN, MAX = 0.002, 0.05


@given(ahead=st.integers(0, 10_000), head_polls=st.integers(0, 10_000))
def test_interval_stays_within_bounds(ahead, head_polls):
    assert MIN <= poll_interval(ahead=ahead, head_polls=head_polls, minimum=MIN, maximum=MAX) <= MAX


def test_first_in_line_starts_fast_and_backs_off():
    intervals = [poll_interval(ahead=0, head_polls=n, minimum=MIN, maximum=MAX) for n in range(30)]
    assert intervals[0] == MIN
    assert intervals == sorted(intervals), "the first waiter's interval never shrinks while it keeps failing"
    assert intervals[-1] == MAX


def test_waiters_further_back_poll_less_often():
    intervals = [poll_interval(ahead=n, head_polls=0, minimum=MIN, maximum=MAX) for n in range(10)]
    assert intervals == sorted(intervals) and intervals[1] > intervals[0]


@given(st.floats(0, 1, exclude_max=True))
def test_jitter_spreads_around_the_interval(r):
    assert 0.05 <= jittered(0.1, lambda: r) <= 0.15 + 1e-9
