"""Tests of the pure failure detectors: phi math, growth with silence, adaptation, the window, bad input."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.detector import PHI_MAX, FixedTimeoutDetector, PhiAccrualDetector


def exact_phi(elapsed: float, mean: float, std: float) -> float:
    """The paper's phi with the exact normal tail: -log10(P(X > elapsed)), X ~ N(mean, std)."""
    return -math.log10(0.5 * math.erfc((elapsed - mean) / (std * math.sqrt(2.0))))


def regular(interval: float, count: int, **options: float) -> PhiAccrualDetector:
    """A detector whose window holds only ``interval`` (window=2 evicts the first-interval seeds)."""
    detector = PhiAccrualDetector(window=2, **options)
    for i in range(count + 1):
        detector.heartbeat(i * interval)
    return detector


# Known inputs, worked by hand from Akka's approximation phi = log10(1 + e^z),
# z = y * (1.5976 + 0.070566 * y^2), y = (elapsed - mean) / std:
#   y = 0: z = 0, phi = log10(2) = 0.30103
#   y = 2: z = 2 * (1.5976 + 0.282264) = 3.759728, phi = log10(1 + e^3.759728) = log10(43.93683) = 1.64283
#   y = 5: z = 5 * (1.5976 + 1.76415) = 16.80875, phi = log10(1 + e^16.80875) = 16.80875 / ln 10 = 7.29995
HAND_WORKED = [(0.0, 0.30103), (2.0, 1.64283), (5.0, 7.29995)]


@pytest.mark.parametrize(("y", "expected"), HAND_WORKED)
def test_phi_matches_hand_worked_values_for_mean_1_std_01(y: float, expected: float) -> None:
    detector = regular(1.0, 3, acceptable_pause=0.0, min_std=0.1)  # mean 1.0, std 0 floored to 0.1
    last = 3.0
    assert detector.phi(last + 1.0 + y * 0.1) == pytest.approx(expected, abs=1e-5), "phi differs from the formula"


@pytest.mark.parametrize("y", [-3.0, -1.0, 0.0, 1.0, 2.0])
def test_phi_is_close_to_the_exact_normal_tail_near_the_mean(y: float) -> None:
    detector = regular(1.0, 3, acceptable_pause=0.0, min_std=0.1)
    assert detector.phi(4.0 + y * 0.1) == pytest.approx(exact_phi(1.0 + y * 0.1, 1.0, 0.1), abs=1e-3)


@pytest.mark.parametrize("y", [3.0, 4.0, 5.0, 8.0])
def test_phi_is_steeper_than_the_exact_normal_tail_far_out(y: float) -> None:
    detector = regular(1.0, 3, acceptable_pause=0.0, min_std=0.1)
    assert detector.phi(4.0 + y * 0.1) > exact_phi(1.0 + y * 0.1, 1.0, 0.1), "documented: the logistic tail is steeper"


def test_phi_uses_the_window_std_and_acceptable_pause() -> None:
    detector = PhiAccrualDetector(window=2, acceptable_pause=0.5, min_std=0.01)
    for t in (0.0, 0.8, 2.0):  # intervals 0.8 and 1.2: mean 1.0, std 0.2
        detector.heartbeat(t)
    assert detector.interval_mean == pytest.approx(1.0)
    assert detector.interval_std == pytest.approx(0.2)
    # mean + pause = 1.5 and std 0.2, so 1.9 s of silence is y = 2.
    assert detector.phi(2.0 + 1.9) == pytest.approx(1.64283, abs=1e-5), "std or acceptable_pause not applied"


def test_first_heartbeat_is_judged_against_the_seeded_estimate() -> None:
    detector = PhiAccrualDetector(acceptable_pause=0.0, first_interval=1.0)
    detector.heartbeat(10.0)
    assert (detector.interval_mean, detector.interval_std) == pytest.approx((1.0, 0.25)), "seed is not Akka's"
    assert detector.phi(10.0 + 1.5) == pytest.approx(1.64283, abs=1e-5), "y = 0.5 / 0.25 = 2"


def test_phi_is_zero_before_any_heartbeat() -> None:
    assert PhiAccrualDetector().phi(1e6) == 0.0, "no heartbeat means no information, not suspicion"
    assert PhiAccrualDetector().is_available(1e6)


@given(
    intervals=st.lists(st.floats(0.01, 20.0), max_size=30),
    pause=st.floats(0.0, 5.0),
    min_std=st.floats(0.001, 2.0),
)
def test_phi_is_zero_right_after_a_heartbeat(intervals: list[float], pause: float, min_std: float) -> None:
    detector = PhiAccrualDetector(acceptable_pause=pause, min_std=min_std)
    now = 0.0
    detector.heartbeat(now)
    for interval in intervals:
        now += interval
        detector.heartbeat(now)
        assert detector.phi(now) == 0.0, "phi must be 0.0 at the instant of a heartbeat"


@given(
    intervals=st.lists(st.floats(0.01, 10.0), max_size=30),
    pause=st.floats(0.0, 5.0),
    min_std=st.floats(0.001, 2.0),
    silences=st.lists(st.floats(0.0, 1e12), min_size=2, max_size=10),
)
def test_phi_never_decreases_with_silence_and_stays_finite(
    intervals: list[float], pause: float, min_std: float, silences: list[float]
) -> None:
    detector = PhiAccrualDetector(acceptable_pause=pause, min_std=min_std)
    last = 0.0
    detector.heartbeat(last)
    for interval in intervals:
        last += interval
        detector.heartbeat(last)
    readings = [detector.phi(last + s) for s in sorted(silences)]
    assert all(0.0 <= phi <= PHI_MAX for phi in readings), f"phi out of [0, PHI_MAX]: {readings}"
    assert readings == sorted(readings), f"phi decreased with silence: {readings}"


def test_phi_grows_with_silence_and_caps_at_phi_max() -> None:
    detector = regular(1.0, 10)
    readings = [detector.phi(10.0 + s) for s in (1.0, 4.0, 4.5, 5.0, 8.0, 60.0)]
    assert readings == sorted(readings) and len(set(readings)) == len(readings), f"not growing: {readings}"
    assert detector.phi(10.0 + 1e300) == PHI_MAX, "a silence of any length must give a finite phi"


def test_jittery_node_gets_lower_phi_than_a_regular_one_for_the_same_silence() -> None:
    steady, jittery = PhiAccrualDetector(), PhiAccrualDetector()
    t_steady = t_jittery = 0.0
    steady.heartbeat(0.0)
    jittery.heartbeat(0.0)
    for i in range(200):
        t_steady += 1.0
        t_jittery += 0.5 if i % 2 else 1.5  # same mean, std 0.5
        steady.heartbeat(t_steady)
        jittery.heartbeat(t_jittery)
    silence = 4.5
    assert jittery.phi(t_jittery + silence) < 1.0 < 5.0 < steady.phi(t_steady + silence), "phi did not adapt"


@given(
    window=st.integers(1, 8),
    intervals=st.lists(st.floats(0.001, 100.0), max_size=40),
)
def test_window_keeps_only_the_latest_intervals(window: int, intervals: list[float]) -> None:
    detector = PhiAccrualDetector(window=window, first_interval=1.0)
    seeds = [0.75, 1.25] if window >= 2 else [1.0]
    now = 0.0
    detector.heartbeat(now)
    for interval in intervals:
        now += interval
        detector.heartbeat(now)
    kept = (seeds + intervals)[-window:]
    # Running sums carry rounding from the intervals of the last two windows (they are recounted
    # once per window): the std is exact to ~1e-7 of the largest of those, far below any min_std.
    scale = max((seeds + intervals)[-2 * window :])
    assert detector.interval_mean == pytest.approx(statistics.fmean(kept), rel=1e-9, abs=1e-9 * scale)
    assert detector.interval_std == pytest.approx(statistics.pstdev(kept), rel=1e-6, abs=1e-6 * scale)


def test_window_evicts_old_intervals() -> None:
    detector = PhiAccrualDetector(window=3)
    now = 0.0
    detector.heartbeat(now)
    for interval in (1.0, 1.0, 1.0, 5.0, 5.0, 5.0):
        now += interval
        detector.heartbeat(now)
    assert detector.interval_mean == pytest.approx(5.0), "1 s intervals should have left the window"
    assert detector.interval_std == pytest.approx(0.0, abs=1e-6)


def test_running_sums_stay_accurate_over_a_long_run() -> None:
    detector = PhiAccrualDetector(window=10)
    now = 0.0
    detector.heartbeat(now)
    for i in range(100_000):
        now += 1000.0 + (i % 3) * 0.1
        detector.heartbeat(now)
    # The window now holds ten intervals cycling 1000.0, 1000.1, 1000.2.
    assert detector.interval_std == pytest.approx(statistics.pstdev([1000.0, 1000.1, 1000.2] * 3 + [1000.0]), rel=1e-3)


def test_an_interval_can_be_kept_out_of_the_window() -> None:
    detector = regular(1.0, 5)
    detector.heartbeat(65.0, record_interval=False)
    assert detector.interval_mean == pytest.approx(1.0), "the skipped 60 s interval was recorded"
    assert detector.phi(65.0) == 0.0 and detector.last_heartbeat == 65.0


def test_is_available_compares_phi_with_the_threshold() -> None:
    detector = regular(1.0, 5, acceptable_pause=0.0)  # mean 1.0, std 0.1
    assert detector.is_available(5.0 + 1.2), "phi 1.64 is below the default threshold 8"
    assert not detector.is_available(5.0 + 1.2, threshold=1.5)
    assert not detector.is_available(5.0 + 3.0)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"window": 0}, "window"),
        ({"window": -5}, "window"),
        ({"window": 2.0}, "window"),
        ({"window": True}, "window"),
        ({"min_std": 0.0}, "min_std"),
        ({"min_std": -0.1}, "min_std"),
        ({"min_std": math.nan}, "min_std"),
        ({"min_std": math.inf}, "min_std"),
        ({"acceptable_pause": -0.001}, "acceptable_pause"),
        ({"acceptable_pause": math.nan}, "acceptable_pause"),
        ({"acceptable_pause": math.inf}, "acceptable_pause"),
        ({"first_interval": 0.0}, "first_interval"),
        ({"first_interval": -1.0}, "first_interval"),
        ({"first_interval": math.nan}, "first_interval"),
        ({"first_interval": math.inf}, "first_interval"),
    ],
)
def test_bad_options_are_rejected_naming_the_argument(options: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PhiAccrualDetector(**options)


@pytest.mark.parametrize("detector_class", [PhiAccrualDetector, FixedTimeoutDetector])
def test_bad_times_are_rejected(detector_class: type) -> None:
    detector = detector_class()
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="now"):
            detector.heartbeat(bad)
        with pytest.raises(ValueError, match="now"):
            detector.phi(bad)
    detector.heartbeat(10.0)
    detector.heartbeat(10.0)  # a duplicate is not time going backwards
    with pytest.raises(ValueError, match="now went backwards"):
        detector.heartbeat(9.999)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="threshold"):
            detector.is_available(11.0, threshold=bad)


def test_fixed_timeout_speaks_phi() -> None:
    detector = FixedTimeoutDetector(timeout=4.0)
    assert detector.phi(100.0) == 0.0, "no heartbeat, no information"
    detector.heartbeat(100.0)
    assert detector.phi(100.0) == 0.0
    assert detector.phi(103.999) == 0.0 and detector.is_available(103.999)
    assert detector.phi(104.0) == PHI_MAX and not detector.is_available(104.0), "timed out at 4 s"
    assert not detector.is_available(1e12, threshold=1e6), "PHI_MAX is above any sensible threshold"


@pytest.mark.parametrize("timeout", [0.0, -1.0, math.nan, math.inf])
def test_fixed_timeout_rejects_bad_timeout(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        FixedTimeoutDetector(timeout=timeout)
