"""Per-node liveness state machine (active, suspect, dead, joining) that the sweeper drives (pure, clock passed in)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from monitoring.detector import DEFAULT_ACCEPTABLE_PAUSE, Detector, FixedTimeoutDetector, PhiAccrualDetector

ACTIVE = "active"
SUSPECT = "suspect"
DEAD = "dead"
JOINING = "joining"
STATES = (ACTIVE, SUSPECT, DEAD, JOINING)

DETECTORS = ("phi", "fixed")


@dataclass(frozen=True)
class LivenessPolicy:
    """Thresholds and periods of the state machine; times in seconds.

    The defaults were checked with benchmarks/sim_detector.py against 1 s heartbeats (see
    benchmarks/results/detector.md): a real death is suspected after ~4.5 s and convicted after
    ~7.7 s (p50), and a live node's 5 s stop-the-world pause may make it suspect but not dead. A
    silence of ~8 s (that pause right after two lost heartbeats) is convicted: no rule that
    convicts real deaths within 8 s can tell the two apart.
    """

    suspect_phi: float = 5.0  # stop routing new work to the node
    dead_phi: float = 8.0  # convict once phi stays here for dead_stable_period
    # Outlasts the pause-plus-lost-beat silences phi alone would still convict (see the simulation).
    dead_stable_period: float = 3.0
    # A sweep later than this after the previous one convicts nobody: the silence may be our own pause.
    pause_guard: float = 3.0
    flap_window: float = 600.0
    flap_limit: int = 3  # this many rejoins within flap_window ...
    flap_hold: float = 60.0  # ... and the node must stay healthy this long before it is active again
    rejoin_heartbeats: int = 3  # on-time heartbeats of a new incarnation before a dead node is joining
    rejoin_stable_period: float = 3.0  # health required before joining -> active
    detector: str = "phi"  # "phi" (PhiAccrualDetector) or "fixed" (FixedTimeoutDetector)
    fixed_timeout: float = 4.0
    acceptable_pause: float = DEFAULT_ACCEPTABLE_PAUSE
    min_std: float = 0.1
    window: int = 1000
    first_interval: float = 1.0

    def __post_init__(self) -> None:
        _require(0 < self.suspect_phi < math.inf, "suspect_phi", "a finite number > 0", self.suspect_phi)
        _require(self.suspect_phi <= self.dead_phi < math.inf, "dead_phi", "finite and >= suspect_phi", self.dead_phi)
        for name in ("dead_stable_period", "flap_window", "flap_hold", "rejoin_stable_period"):
            value = getattr(self, name)
            _require(0 <= value < math.inf, name, "a finite number >= 0", value)
        _require(0 < self.pause_guard < math.inf, "pause_guard", "a finite number > 0", self.pause_guard)
        for name in ("flap_limit", "rejoin_heartbeats"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, "an int >= 1", value)
        _require(self.detector in DETECTORS, "detector", f"one of {DETECTORS}", self.detector)
        _require(0 < self.fixed_timeout < math.inf, "fixed_timeout", "a finite number > 0", self.fixed_timeout)
        # The phi options are checked by building a detector (its messages name them) so that they
        # fail here, not at the first add().
        self._phi_detector()

    def new_detector(self) -> Detector:
        """A fresh detector for one node (incarnation), of the configured kind."""
        return self._phi_detector() if self.detector == "phi" else self._fixed_detector()

    def _phi_detector(self) -> PhiAccrualDetector:
        return PhiAccrualDetector(
            window=self.window,
            min_std=self.min_std,
            acceptable_pause=self.acceptable_pause,
            first_interval=self.first_interval,
        )

    def _fixed_detector(self) -> FixedTimeoutDetector:
        return FixedTimeoutDetector(timeout=self.fixed_timeout)


@dataclass(frozen=True)
class Verdict:
    """One state transition decided by a sweep."""

    node: str
    from_state: str
    to_state: str
    phi: float
    reason: str
    at: float


@dataclass
class _Node:
    state: str
    detector: Detector
    incarnation: int
    convicted_incarnation: int | None = None  # the incarnation declared dead; it may never come back
    restarted_from: int | None = None  # set when a live node shows up with a new incarnation
    streak: int = 0  # consecutive on-time heartbeats of the current incarnation
    dead_phi_since: float | None = None  # first sweep of the current run of phi >= dead_phi
    healthy_since: float | None = None  # while joining: start of the current run of health
    rejoins: deque[float] = field(default_factory=deque)  # times of dead -> joining, for flap damping


class LivenessTracker:
    """One detector and one state per node; ``sweep(now)`` decides the transitions.

    Feed every heartbeat with ``heartbeat()``, call ``sweep(now)`` about once a second and apply the
    verdicts it returns. Nothing here reads a clock: every method takes ``now`` (seconds, any
    monotonic clock, the same one for heartbeats and sweeps).

    Incarnations identify a node's process: a restarted node must send a higher one. A dead node
    rejoins only with a new incarnation, because its old process's work has been handed to others.
    A live node that shows up with a new incarnation has lost its old process's work too, so the
    next sweep declares it dead ("restarted") and it rejoins like any dead node.
    """

    def __init__(self, policy: LivenessPolicy | None = None) -> None:
        self.policy = policy if policy is not None else LivenessPolicy()
        self._nodes: dict[str, _Node] = {}
        self._last_sweep: float | None = None
        self._held_until = -math.inf

    @classmethod
    def from_states(
        cls,
        states: Mapping[str, str],
        *,
        now: float,
        policy: LivenessPolicy | None = None,
        incarnations: Mapping[str, int] | None = None,
    ) -> LivenessTracker:
        """A tracker seeded with persisted states, e.g. after a sweeper restart (see ``add``)."""
        tracker = cls(policy)
        for node, state in states.items():
            tracker.add(node, now, state=state, incarnation=(incarnations or {}).get(node, 0))
        return tracker

    def add(self, node: str, now: float, *, state: str = ACTIVE, incarnation: int = 0) -> None:
        """Start tracking ``node`` in ``state``; for a dead node, ``incarnation`` is the convicted one.

        Adding counts as a heartbeat at ``now`` (as Akka's expected-first-heartbeat does): with no
        heartbeat phi would stay 0.0 and a node that never sends one would never be suspected.
        """
        _require(state in STATES, "state", f"one of {STATES}", state)
        if node in self._nodes:
            raise ValueError(f"node {node!r} is already tracked; forget() it first")
        detector = self.policy.new_detector()
        detector.heartbeat(now)
        self._nodes[node] = _Node(
            state=state,
            detector=detector,
            incarnation=incarnation,
            convicted_incarnation=incarnation if state == DEAD else None,
        )

    def forget(self, node: str) -> None:
        """Stop tracking ``node``; forgetting an untracked node does nothing."""
        self._nodes.pop(node, None)

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def state(self, node: str) -> str:
        return self._get(node).state

    def incarnation(self, node: str) -> int:
        return self._get(node).incarnation

    def phi(self, node: str, now: float) -> float:
        return self._get(node).detector.phi(now)

    @property
    def held_until(self) -> float:
        return self._held_until

    def hold(self, until: float) -> None:
        """Convict nobody (no new suspect or dead) before ``until``.

        For the sweeper to call while its heartbeat store is unavailable, with ``until`` = now + a
        grace period, and once more when the store is back: the missing heartbeats say nothing
        about the nodes. Holds only extend, never shorten.
        """
        _require(not math.isnan(until), "until", "a number", until)
        self._held_until = max(self._held_until, until)

    def heartbeat(self, node: str, now: float, *, incarnation: int = 0) -> bool:
        """Record a heartbeat from ``node``; return False if it was ignored.

        Ignored: heartbeats from an older incarnation, and from the incarnation that was declared
        dead (a process back from a long pause must restart before it may rejoin).
        """
        rec = self._get(node)
        if incarnation < rec.incarnation or (rec.state == DEAD and incarnation == rec.convicted_incarnation):
            return False
        if incarnation > rec.incarnation:
            if rec.state in (ACTIVE, SUSPECT) and rec.restarted_from is None:
                rec.restarted_from = rec.incarnation
            rec.incarnation = incarnation
            rec.detector = self.policy.new_detector()
            rec.detector.heartbeat(now)
            rec.streak = 1
            rec.healthy_since = None
            return True
        phi = rec.detector.phi(now)
        # An interval that ended after phi had reached dead_phi is a failure or an outage, not a
        # sample of normal arrivals: keep it out of the window (Akka does the same).
        rec.detector.heartbeat(now, record_interval=phi < self.policy.dead_phi)
        rec.streak = rec.streak + 1 if phi < self.policy.suspect_phi else 1
        return True

    def sweep(self, now: float) -> list[Verdict]:
        """Decide this sweep's transitions, apply them to the tracker and return them in order."""
        if self._last_sweep is not None and now < self._last_sweep:
            raise ValueError(f"now went backwards: {now!r} is before the previous sweep at {self._last_sweep!r}")
        late = self._last_sweep is not None and now - self._last_sweep > self.policy.pause_guard
        self._last_sweep = now
        guarded = late or now < self._held_until
        verdicts: list[Verdict] = []
        for name, rec in self._nodes.items():
            self._sweep_node(name, rec, now, guarded, verdicts)
        return verdicts

    def _sweep_node(self, name: str, rec: _Node, now: float, guarded: bool, out: list[Verdict]) -> None:
        p = self.policy
        phi = rec.detector.phi(now)
        if rec.restarted_from is not None:
            # Told by the node itself, so not subject to the pause guard or a hold.
            reason = f"restarted: incarnation {rec.incarnation} replaced {rec.restarted_from}"
            self._convict(name, rec, phi, reason, now, out, incarnation=rec.restarted_from)
            rec.restarted_from = None

        # The stable-period clock only runs while we trust our own view of the silence.
        if phi >= p.dead_phi and not guarded:
            if rec.dead_phi_since is None:
                rec.dead_phi_since = now
        else:
            rec.dead_phi_since = None
        convict = rec.dead_phi_since is not None and now - rec.dead_phi_since >= p.dead_stable_period

        if rec.state == ACTIVE and phi >= p.suspect_phi and not guarded:
            self._move(name, rec, SUSPECT, phi, f"phi {phi:.1f} >= {p.suspect_phi:g}", now, out)
        if rec.state == SUSPECT:
            if phi < p.suspect_phi:
                self._move(name, rec, ACTIVE, phi, f"refuted: phi {phi:.1f} < {p.suspect_phi:g}", now, out)
            elif convict:
                self._convict(name, rec, phi, self._silence_reason(rec, now), now, out, incarnation=rec.incarnation)
        elif rec.state == JOINING:
            if convict:
                self._convict(name, rec, phi, self._silence_reason(rec, now), now, out, incarnation=rec.incarnation)
            elif phi >= p.suspect_phi or rec.streak < p.rejoin_heartbeats:
                rec.healthy_since = None
            else:
                if rec.healthy_since is None:
                    rec.healthy_since = now
                needed, why = self._health_needed(rec, now)
                if now - rec.healthy_since >= needed:
                    self._move(name, rec, ACTIVE, phi, f"healthy for {needed:g}s{why}", now, out)
        elif rec.state == DEAD:
            new_incarnation = rec.convicted_incarnation is None or rec.incarnation > rec.convicted_incarnation
            if new_incarnation and rec.streak >= p.rejoin_heartbeats and phi < p.suspect_phi:
                reason = f"rejoin: incarnation {rec.incarnation}, {rec.streak} on-time heartbeats"
                self._move(name, rec, JOINING, phi, reason, now, out)
                rec.rejoins.append(now)
                rec.healthy_since = now

    def _silence_reason(self, rec: _Node, now: float) -> str:
        return f"phi >= {self.policy.dead_phi:g} for {now - (rec.dead_phi_since or now):g}s"

    def _health_needed(self, rec: _Node, now: float) -> tuple[float, str]:
        p = self.policy
        while rec.rejoins and rec.rejoins[0] <= now - p.flap_window:
            rec.rejoins.popleft()
        if len(rec.rejoins) >= p.flap_limit:
            return p.flap_hold, f" (flapping: {len(rec.rejoins)} rejoins in {p.flap_window:g}s)"
        return p.rejoin_stable_period, ""

    def _convict(
        self, name: str, rec: _Node, phi: float, reason: str, now: float, out: list[Verdict], *, incarnation: int
    ) -> None:
        self._move(name, rec, DEAD, phi, reason, now, out)
        rec.convicted_incarnation = incarnation
        rec.dead_phi_since = None
        rec.healthy_since = None
        if incarnation == rec.incarnation:
            rec.streak = 0

    def _move(self, name: str, rec: _Node, to: str, phi: float, reason: str, now: float, out: list[Verdict]) -> None:
        out.append(Verdict(node=name, from_state=rec.state, to_state=to, phi=phi, reason=reason, at=now))
        rec.state = to

    def _get(self, node: str) -> _Node:
        try:
            return self._nodes[node]
        except KeyError:
            raise KeyError(f"node {node!r} is not tracked; add() it first") from None


def _require(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")
