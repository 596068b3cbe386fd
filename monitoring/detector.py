"""Failure detectors that turn heartbeat arrival times into a suspicion level, phi (pure, clock passed in)."""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

# The ceiling of every phi reading, so that phi is always a finite float (never inf or nan) and a
# FixedTimeoutDetector can report "timed out" on the same scale. Any sensible threshold is far below it.
PHI_MAX = 1e9

# Chosen with benchmarks/sim_detector.py (results in benchmarks/results/detector.md): 1 s heartbeats,
# 0-100 ms delay, 1% lost, 2 s and 5 s stop-the-world pauses. With 3.0 s, phi passes 8 about 4.5 s after
# the last heartbeat (mean 1 s + 3 s + 5.2 std), so with LivenessPolicy's 3 s stable period a live node
# is convicted only after 7.5-8.5 s of silence, depending on the sweep's phase: a 5 s pause, even right
# after a lost heartbeat (~7.1 s), is safe. Real deaths are convicted after ~7.7 s (p50) and ~8.8 s (p99).
# 2.0 s convicted a live node whose pause followed a lost beat, 2.5 s leaves that case almost no margin,
# 3.5 s misses the dead-p50 <= 8 s target. Akka Cluster's default acceptable-heartbeat-pause is also 3 s.
DEFAULT_ACCEPTABLE_PAUSE = 3.0

# phi = log10(1 + e^z) overflows exp() past z ~ 709. Beyond this seam log10(1 + e^z) equals z / ln 10
# to double precision; max() with the seam's own value keeps phi monotonic across it.
_Z_SEAM = 700.0
_PHI_AT_SEAM = math.log10(1.0 + math.exp(_Z_SEAM))


class Detector(Protocol):
    """What LivenessTracker needs from a failure detector."""

    def heartbeat(self, now: float, *, record_interval: bool = True) -> None: ...

    def phi(self, now: float) -> float: ...

    def is_available(self, now: float, threshold: float = 8.0) -> bool: ...


class PhiAccrualDetector:
    """Phi accrual failure detector (Hayashibara et al. 2004), computed the way Akka does.

    phi(now) = -log10(P(the next heartbeat arrives later than now - last_heartbeat)) where the
    inter-arrival time is taken as normal with the window's mean plus ``acceptable_pause`` and the
    window's standard deviation, floored at ``min_std``. The normal CDF is Akka's logistic
    approximation 1 / (1 + e^-z), z = y * (1.5976 + 0.070566 * y^2), y = (elapsed - mean) / std
    (Bowling et al. 2009; absolute error below 1.5e-4), which gives phi = log10(1 + e^z) with no
    underflow to log10(0) however long the silence. It matches the exact erfc-based phi to 1e-3
    up to 2 standard deviations but is steeper in the tail: phi reaches 8 at 5.2 standard
    deviations where the exact form needs 5.6. The defaults were tuned with this formula.

    phi is 0.0 before the first heartbeat (there is no information to suspect anything on) and
    at the instant of a heartbeat (the formula itself gives a negligible positive value there).
    It never decreases while the node stays silent and is capped at PHI_MAX.
    """

    def __init__(
        self,
        *,
        window: int = 1000,
        min_std: float = 0.1,
        acceptable_pause: float = DEFAULT_ACCEPTABLE_PAUSE,
        first_interval: float = 1.0,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        # Chained comparisons are False for nan, so these also reject nan and infinities.
        _require(0 < min_std < math.inf, "min_std", "a finite number > 0", min_std)
        _require(0 <= acceptable_pause < math.inf, "acceptable_pause", "a finite number >= 0", acceptable_pause)
        _require(0 < first_interval < math.inf, "first_interval", "a finite number > 0", first_interval)
        self._window = window
        self._min_std = min_std
        self._acceptable_pause = acceptable_pause
        self._intervals: deque[float] = deque()
        self._sum = 0.0
        self._sum_sq = 0.0
        self._evictions = 0
        self._last: float | None = None
        # Akka seeds the window with first_interval -/+ first_interval/4 so that the first silences
        # are judged against a plausible distribution (mean first_interval, std first_interval/4).
        seeds = (first_interval * 0.75, first_interval * 1.25) if window >= 2 else (first_interval,)
        for seed in seeds:
            self._record(seed)

    @property
    def last_heartbeat(self) -> float | None:
        return self._last

    @property
    def interval_mean(self) -> float:
        """Mean of the inter-arrival times in the window (without acceptable_pause)."""
        return self._sum / len(self._intervals)

    @property
    def interval_std(self) -> float:
        """Population standard deviation of the window (before the min_std floor).

        Computed from running sums, so exact to about 1e-7 of the largest recent interval: far
        below any sensible min_std.
        """
        mean = self.interval_mean
        # Clamped because sum-of-squares minus square-of-mean can round a few ulps below zero.
        return math.sqrt(max(self._sum_sq / len(self._intervals) - mean * mean, 0.0))

    def heartbeat(self, now: float, *, record_interval: bool = True) -> None:
        """Record a heartbeat received at ``now``.

        ``record_interval=False`` keeps the interval that ended here out of the window. Akka does
        this for a silence the detector had already judged a failure, so that one outage (of the
        node or of the heartbeat store) does not teach the detector that outages are normal.
        """
        _require_finite("now", now)
        if self._last is not None:
            if now < self._last:
                raise ValueError(f"now went backwards: {now!r} is before the previous heartbeat at {self._last!r}")
            if record_interval:
                self._record(now - self._last)
        self._last = now

    def phi(self, now: float) -> float:
        """Suspicion level at ``now``: 0.0 right after a heartbeat, growing with silence."""
        _require_finite("now", now)
        if self._last is None or now <= self._last:
            return 0.0
        mean = self.interval_mean + self._acceptable_pause
        std = max(self.interval_std, self._min_std)
        return _phi(now - self._last, mean, std)

    def is_available(self, now: float, threshold: float = 8.0) -> bool:
        _require_threshold(threshold)
        return self.phi(now) < threshold

    def _record(self, interval: float) -> None:
        # A running sum and sum of squares over a deque keep each update O(1) for any window size.
        if len(self._intervals) == self._window:
            old = self._intervals.popleft()
            self._sum -= old
            self._sum_sq -= old * old
            self._evictions += 1
        self._intervals.append(interval)
        self._sum += interval
        self._sum_sq += interval * interval
        if self._evictions == self._window:
            # Subtracting leaves the rounding error of every interval that ever passed through;
            # an exact recount once per window's worth of evictions (amortized O(1)) discards it.
            self._evictions = 0
            self._sum = math.fsum(self._intervals)
            self._sum_sq = math.fsum(x * x for x in self._intervals)


class FixedTimeoutDetector:
    """A node is available until ``timeout`` seconds pass without a heartbeat (Celery/Flower's rule).

    Speaks phi so the same thresholds work: phi(now) is 0.0 before the first heartbeat and while
    now - last_heartbeat < timeout, and PHI_MAX from the timeout on.
    """

    def __init__(self, *, timeout: float = 4.0) -> None:
        _require(0 < timeout < math.inf, "timeout", "a finite number > 0", timeout)
        self._timeout = timeout
        self._last: float | None = None

    @property
    def last_heartbeat(self) -> float | None:
        return self._last

    def heartbeat(self, now: float, *, record_interval: bool = True) -> None:
        """Record a heartbeat at ``now``; ``record_interval`` is accepted for symmetry and unused."""
        _require_finite("now", now)
        if self._last is not None and now < self._last:
            raise ValueError(f"now went backwards: {now!r} is before the previous heartbeat at {self._last!r}")
        self._last = now

    def phi(self, now: float) -> float:
        _require_finite("now", now)
        if self._last is None or now - self._last < self._timeout:
            return 0.0
        return PHI_MAX

    def is_available(self, now: float, threshold: float = 8.0) -> bool:
        _require_threshold(threshold)
        return self.phi(now) < threshold


def _phi(elapsed: float, mean: float, std: float) -> float:
    y = (elapsed - mean) / std
    z = y * (1.5976 + 0.070566 * y * y)
    if z > _Z_SEAM:
        return min(max(z / math.log(10.0), _PHI_AT_SEAM), PHI_MAX)
    return min(math.log10(1.0 + math.exp(z)), PHI_MAX)


def _require(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _require_finite(name: str, value: float) -> None:
    _require(math.isfinite(value), name, "a finite number", value)


def _require_threshold(threshold: float) -> None:
    # `not threshold > 0` also rejects nan, which would make every comparison False.
    _require(threshold > 0, "threshold", "a number > 0", threshold)
