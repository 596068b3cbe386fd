"""Tests of the liveness state machine with a fake clock: suspicion, conviction, guards, rejoin, flap damping."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.liveness import ACTIVE, DEAD, JOINING, SUSPECT, LivenessPolicy, LivenessTracker, Verdict

LEGAL_MOVES = {
    (ACTIVE, SUSPECT),
    (SUSPECT, ACTIVE),
    (SUSPECT, DEAD),
    (ACTIVE, DEAD),  # only for a restart
    (JOINING, DEAD),
    (DEAD, JOINING),
    (JOINING, ACTIVE),
}


def run(tracker: LivenessTracker, start: float, end: float, beating: dict[str, int] | None = None) -> list[Verdict]:
    """Sweep at every whole second in (start, end]; each node of ``beating`` (node -> incarnation)
    sends a heartbeat just before each sweep."""
    verdicts: list[Verdict] = []
    now = start
    while now < end:
        now += 1.0
        for node, incarnation in (beating or {}).items():
            tracker.heartbeat(node, now, incarnation=incarnation)
        verdicts += tracker.sweep(now)
    return verdicts


def moves(verdicts: list[Verdict]) -> list[tuple[float, str, str, str]]:
    return [(v.at, v.node, v.from_state, v.to_state) for v in verdicts]


def healthy(*nodes: str, policy: LivenessPolicy | None = None) -> LivenessTracker:
    """Nodes added at 0 that heartbeat every second up to and including 10."""
    tracker = LivenessTracker(policy)
    for node in nodes:
        tracker.add(node, 0.0, incarnation=1)
    assert run(tracker, 0.0, 10.0, dict.fromkeys(nodes, 1)) == [], "healthy nodes must not be suspected"
    return tracker


# With the defaults and beats every second up to t=10, the window holds the two first-interval seeds
# and ten 1 s intervals: mean 1.0, std 0.102. phi passes 5 after 4.42 s and 8 after 4.53 s of
# silence, so a node silent from t=10 is suspected at the t=15 sweep, and convicted 3 s later.


def test_silent_node_is_suspected_and_a_fresh_heartbeat_refutes_it() -> None:
    tracker = healthy("a")
    assert run(tracker, 10.0, 14.0) == [], "4 s of silence is within the acceptable pause"
    suspected = tracker.sweep(15.0)
    assert moves(suspected) == [(15.0, "a", ACTIVE, SUSPECT)]
    assert suspected[0].phi >= 5.0
    tracker.heartbeat("a", 15.5, incarnation=1)
    refuted = tracker.sweep(16.0)
    assert moves(refuted) == [(16.0, "a", SUSPECT, ACTIVE)]
    assert refuted[0].reason.startswith("refuted"), refuted[0].reason
    assert tracker.state("a") == ACTIVE


def test_dead_only_after_phi_held_above_dead_phi_for_the_stable_period() -> None:
    tracker = healthy("a", "b")
    verdicts = run(tracker, 10.0, 30.0, {"b": 1})
    assert moves(verdicts) == [(15.0, "a", ACTIVE, SUSPECT), (18.0, "a", SUSPECT, DEAD)], "dead at 15 + 3 s"
    assert verdicts[1].phi >= 8.0 and "for 3s" in verdicts[1].reason, verdicts[1].reason
    assert tracker.state("a") == DEAD and tracker.state("b") == ACTIVE


def test_a_heartbeat_restarts_the_stable_period() -> None:
    tracker = healthy("a")
    verdicts = run(tracker, 10.0, 16.0)
    tracker.heartbeat("a", 16.5, incarnation=1)  # refutes the suspicion of t=15 before it is a conviction
    verdicts += run(tracker, 16.0, 30.0)
    # Silent again from 16.5: phi passes 5 at 20.92 and 8 at 21.03, so suspect at 21, the stable
    # period starts at 22 and the conviction comes at 25, not at 18.
    assert moves(verdicts) == [
        (15.0, "a", ACTIVE, SUSPECT),
        (17.0, "a", SUSPECT, ACTIVE),
        (21.0, "a", ACTIVE, SUSPECT),
        (25.0, "a", SUSPECT, DEAD),
    ]


def test_silence_judged_a_failure_does_not_make_the_detector_lenient() -> None:
    tracker = healthy("a")
    tracker.hold(70.0)
    assert run(tracker, 10.0, 60.0) == [], "held: convicts nobody"
    # The 50 s gap is kept out of the window, so the next silence is judged as before (4.53 s).
    verdicts = run(tracker, 59.0, 70.0, {"a": 1})
    assert verdicts == []
    assert tracker.phi("a", 70.0 + 4.4) < 5.0 <= tracker.phi("a", 70.0 + 4.5), "the 50 s gap was learned"


def test_a_conviction_within_one_sweep_still_reports_suspect_first() -> None:
    tracker = healthy("a", policy=LivenessPolicy(dead_stable_period=0.0))
    assert moves(run(tracker, 10.0, 15.0)) == [(15.0, "a", ACTIVE, SUSPECT), (15.0, "a", SUSPECT, DEAD)]


def test_a_late_sweep_convicts_nobody_and_restarts_the_stable_period() -> None:
    tracker = healthy("a", "b")
    assert moves(run(tracker, 10.0, 15.0, {"b": 1})) == [(15.0, "a", ACTIVE, SUSPECT)]
    # The sweeper itself stalls for 6 s (> pause_guard 3 s); b's heartbeats went unread meanwhile.
    assert tracker.phi("b", 21.0) >= 8.0
    assert tracker.sweep(21.0) == [], "without the guard: a dead (21 - 15 >= 3) and b suspect"
    assert tracker.state("a") == SUSPECT and tracker.state("b") == ACTIVE
    verdicts = run(tracker, 21.0, 30.0, {"b": 1})
    assert moves(verdicts) == [(25.0, "a", SUSPECT, DEAD)], "the stable period restarts at the next sweep, 22"


def test_hold_convicts_nobody_until_the_grace_period_ends() -> None:
    tracker = healthy("a", "b")
    # Heartbeat store unavailable from t=10: the sweeper holds, with a grace period until 30.
    tracker.hold(30.0)
    tracker.hold(20.0)
    assert tracker.held_until == 30.0, "a hold only extends"
    assert run(tracker, 10.0, 29.0) == [], "no suspect or dead while held"
    # The store is back at 29.5 with b's heartbeats, not a's.
    tracker.heartbeat("b", 29.5, incarnation=1)
    verdicts = run(tracker, 29.0, 40.0, {"b": 1})
    assert moves(verdicts) == [(30.0, "a", ACTIVE, SUSPECT), (33.0, "a", SUSPECT, DEAD)]


def test_a_suspect_node_can_be_refuted_during_a_hold() -> None:
    tracker = healthy("a")
    assert moves(run(tracker, 10.0, 15.0)) == [(15.0, "a", ACTIVE, SUSPECT)]
    tracker.hold(100.0)
    tracker.heartbeat("a", 15.5, incarnation=1)
    assert moves(tracker.sweep(16.0)) == [(16.0, "a", SUSPECT, ACTIVE)]


def convicted(policy: LivenessPolicy | None = None) -> LivenessTracker:
    tracker = healthy("a", policy=policy)
    assert moves(run(tracker, 10.0, 18.0)) == [(15.0, "a", ACTIVE, SUSPECT), (18.0, "a", SUSPECT, DEAD)]
    return tracker


def test_the_convicted_incarnation_never_comes_back() -> None:
    tracker = convicted()
    assert run(tracker, 18.0, 30.0, {"a": 1}) == [], "back from a long pause, but its work was handed over"
    assert tracker.heartbeat("a", 30.5, incarnation=1) is False
    assert tracker.state("a") == DEAD


def test_dead_node_rejoins_with_a_new_incarnation_after_three_on_time_heartbeats() -> None:
    tracker = convicted()
    verdicts = run(tracker, 30.0, 40.0, {"a": 2})
    # Heartbeats at 31, 32, 33: joining at 33, active after 3 s of health.
    assert moves(verdicts) == [(33.0, "a", DEAD, JOINING), (36.0, "a", JOINING, ACTIVE)]
    assert "incarnation 2" in verdicts[0].reason
    assert tracker.incarnation("a") == 2


def test_a_late_heartbeat_restarts_the_rejoin_count() -> None:
    tracker = convicted()
    assert run(tracker, 30.0, 32.0, {"a": 2}) == [], "two on-time heartbeats are not enough"
    assert run(tracker, 32.0, 39.0) == []
    # 40 is 8 s after 32: late, so it counts as the first of a new run; 41 and 42 complete it.
    assert moves(run(tracker, 39.0, 42.0, {"a": 2})) == [(42.0, "a", DEAD, JOINING)]


def test_a_joining_node_that_goes_silent_is_dead_again() -> None:
    tracker = convicted(LivenessPolicy(rejoin_stable_period=30.0))
    assert moves(run(tracker, 30.0, 34.0, {"a": 2})) == [(33.0, "a", DEAD, JOINING)]
    verdicts = run(tracker, 34.0, 60.0)
    assert [(v.from_state, v.to_state) for v in verdicts] == [(JOINING, DEAD)]
    assert run(tracker, 60.0, 70.0, {"a": 2}) == [], "incarnation 2 was convicted too"


def die_and_rejoin(tracker: LivenessTracker, node: str, start: float, incarnation: int) -> tuple[float, float]:
    """From active at ``start``: silence until dead, then a restart with ``incarnation`` that
    heartbeats every second. Returns the times of dead -> joining and of joining -> active."""
    now = start
    while tracker.state(node) != DEAD:
        now += 1.0
        tracker.sweep(now)
        assert now < start + 30.0, "the silent node was never convicted"
    times = {}
    while tracker.state(node) != ACTIVE:
        now += 1.0
        tracker.heartbeat(node, now, incarnation=incarnation)
        for verdict in tracker.sweep(now):
            times[verdict.to_state] = verdict.at
        assert now < start + 200.0, "the restarted node never became active"
    return times[JOINING], times[ACTIVE]


def test_a_flapping_node_must_stay_healthy_for_flap_hold() -> None:
    tracker = healthy("a")  # defaults: 3 rejoins in 600 s -> 60 s of health instead of 3 s
    now = 10.0
    held = []
    for incarnation in (2, 3, 4):
        joined, active = die_and_rejoin(tracker, "a", now, incarnation)
        held.append(active - joined)
        now = active
    assert held == [3.0, 3.0, 60.0], "the third rejoin within 600 s must wait flap_hold"
    # Once the old rejoins leave the flap window, the normal stable period applies again.
    assert run(tracker, now, now + 600.0, {"a": 4}) == []
    joined, active = die_and_rejoin(tracker, "a", now + 600.0, 5)
    assert active - joined == 3.0


def test_a_live_node_with_a_new_incarnation_restarted_and_rejoins() -> None:
    tracker = healthy("a")
    assert tracker.heartbeat("a", 10.5, incarnation=2) is True
    restarted = tracker.sweep(11.0)
    assert moves(restarted) == [(11.0, "a", ACTIVE, DEAD)], "the old process's work must move"
    assert restarted[0].reason == "restarted: incarnation 2 replaced 1"
    # 10.5, 12, 13: three on-time heartbeats of incarnation 2.
    assert moves(run(tracker, 11.0, 20.0, {"a": 2})) == [(13.0, "a", DEAD, JOINING), (16.0, "a", JOINING, ACTIVE)]


def test_heartbeats_from_an_older_incarnation_are_ignored() -> None:
    tracker = LivenessTracker()
    tracker.add("a", 0.0, incarnation=5)
    assert tracker.heartbeat("a", 1.0, incarnation=4) is False
    verdicts = run(tracker, 1.0, 12.0, {"a": 4})
    assert (ACTIVE, SUSPECT) in [(v.from_state, v.to_state) for v in verdicts], "stale beats must not keep it alive"


def test_a_node_that_never_heartbeats_is_still_convicted() -> None:
    tracker = LivenessTracker()
    tracker.add("a", 0.0)
    assert [v.to_state for v in run(tracker, 0.0, 20.0)] == [SUSPECT, DEAD], "add() counts as a first heartbeat"


def test_a_new_node_joins_after_heartbeats_and_the_stable_period() -> None:
    tracker = LivenessTracker()
    tracker.add("idle", 0.0, state=JOINING, incarnation=1)
    tracker.add("n", 0.0, state=JOINING, incarnation=1)
    verdicts = run(tracker, 0.0, 4.0, {"n": 1})
    assert moves(verdicts) == [], "three heartbeats (1, 2, 3), then 3 s of health"
    assert moves(run(tracker, 4.0, 8.0, {"n": 1})) == [(6.0, "n", JOINING, ACTIVE)]
    assert tracker.state("idle") == JOINING, "no heartbeats, no activation"


@pytest.mark.parametrize("stable_period", [3.0, 0.0])
def test_fixed_timeout_mode(stable_period: float) -> None:
    policy = LivenessPolicy(detector="fixed", fixed_timeout=4.0, dead_stable_period=stable_period)
    tracker = healthy("a", policy=policy)
    verdicts = run(tracker, 10.0, 30.0)
    assert moves(verdicts) == [(14.0, "a", ACTIVE, SUSPECT), (14.0 + stable_period, "a", SUSPECT, DEAD)]


def test_tracker_seeded_from_persisted_states() -> None:
    states = {"a": ACTIVE, "b": DEAD, "c": JOINING, "d": SUSPECT}
    tracker = LivenessTracker.from_states(states, now=100.0, incarnations={"b": 7})
    assert {node: tracker.state(node) for node in tracker} == states
    assert len(tracker) == 4 and "b" in tracker and "z" not in tracker
    assert tracker.heartbeat("b", 100.5, incarnation=7) is False, "b's incarnation 7 was convicted"
    assert tracker.heartbeat("d", 100.5) is True
    assert moves(tracker.sweep(101.0)) == [(101.0, "d", SUSPECT, ACTIVE)]
    assert moves(run(tracker, 101.0, 104.0, {"b": 8, "c": 0})) == [(104.0, "b", DEAD, JOINING)]


def test_nodes_can_be_added_and_forgotten() -> None:
    tracker = LivenessTracker()
    tracker.add("a", 0.0)
    with pytest.raises(ValueError, match="already tracked"):
        tracker.add("a", 1.0)
    with pytest.raises(ValueError, match="state"):
        tracker.add("b", 1.0, state="zombie")
    tracker.forget("a")
    tracker.forget("a")
    assert "a" not in tracker and list(tracker) == []
    with pytest.raises(KeyError, match="not tracked"):
        tracker.heartbeat("a", 2.0)
    with pytest.raises(KeyError, match="not tracked"):
        tracker.state("a")
    tracker.add("a", 3.0, state=DEAD, incarnation=2)
    assert tracker.state("a") == DEAD and tracker.incarnation("a") == 2


def test_time_must_not_go_backwards() -> None:
    tracker = healthy("a")
    with pytest.raises(ValueError, match="now went backwards"):
        tracker.sweep(9.0)
    with pytest.raises(ValueError, match="now went backwards"):
        tracker.heartbeat("a", 9.0, incarnation=1)
    with pytest.raises(ValueError, match="until"):
        tracker.hold(math.nan)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"suspect_phi": 0.0}, "suspect_phi"),
        ({"suspect_phi": math.nan}, "suspect_phi"),
        ({"dead_phi": 4.0}, "dead_phi"),
        ({"dead_phi": math.inf}, "dead_phi"),
        ({"dead_stable_period": -1.0}, "dead_stable_period"),
        ({"pause_guard": 0.0}, "pause_guard"),
        ({"flap_window": math.nan}, "flap_window"),
        ({"flap_limit": 0}, "flap_limit"),
        ({"flap_limit": 2.5}, "flap_limit"),
        ({"flap_hold": -1.0}, "flap_hold"),
        ({"rejoin_heartbeats": 0}, "rejoin_heartbeats"),
        ({"rejoin_stable_period": math.inf}, "rejoin_stable_period"),
        ({"detector": "gossip"}, "detector"),
        ({"fixed_timeout": 0.0}, "fixed_timeout"),
        ({"acceptable_pause": -1.0}, "acceptable_pause"),
        ({"min_std": 0.0}, "min_std"),
        ({"window": 0}, "window"),
        ({"first_interval": math.nan}, "first_interval"),
    ],
)
def test_bad_policy_is_rejected_naming_the_field(options: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        LivenessPolicy(**options)  # type: ignore[arg-type]


@given(gaps=st.lists(st.floats(0.05, 2.0), min_size=1, max_size=80))
def test_a_node_heard_from_at_least_every_2s_is_never_suspected(gaps: list[float]) -> None:
    tracker = LivenessTracker()
    tracker.add("a", 0.0)
    now, next_sweep = 0.0, 1.0
    for gap in gaps:
        while next_sweep < now + gap:
            assert tracker.sweep(next_sweep) == [], f"suspected at {next_sweep} although heard from at {now}"
            next_sweep += 1.0
        now += gap
        tracker.heartbeat("a", now)


@given(gaps=st.lists(st.floats(0.9, 1.1), max_size=80))
def test_a_node_that_stops_is_dead_within_10s(gaps: list[float]) -> None:
    tracker = LivenessTracker()
    tracker.add("a", 0.0)
    last = 0.0
    for gap in gaps:
        last += gap
        tracker.heartbeat("a", last)
    now = math.ceil(last)
    tracker.sweep(now)
    while tracker.state("a") != DEAD:
        now += 1.0
        tracker.sweep(now)
        assert now - last <= 10.0, f"still {tracker.state('a')} {now - last:.1f} s after the last heartbeat"


step = st.one_of(
    st.tuples(st.just("beat"), st.sampled_from("abc"), st.integers(0, 3), st.floats(0.0, 3.0)),
    st.tuples(st.just("sweep"), st.just(""), st.just(0), st.floats(0.0, 5.0)),
    st.tuples(st.just("hold"), st.just(""), st.just(0), st.floats(0.0, 10.0)),
)


def play(steps: list[tuple[str, str, int, float]]) -> list[Verdict]:
    tracker = LivenessTracker(LivenessPolicy(flap_hold=10.0))
    for node in "abc":
        tracker.add(node, 0.0, incarnation=1)
    now, verdicts = 0.0, []
    for kind, node, incarnation, dt in steps:
        now += dt
        if kind == "beat":
            tracker.heartbeat(node, now, incarnation=incarnation)
        elif kind == "hold":
            tracker.hold(now + dt)
        else:
            verdicts += tracker.sweep(now)
    return verdicts


@given(steps=st.lists(step, max_size=120))
def test_every_verdict_is_a_legal_move_from_the_current_state(steps: list[tuple[str, str, int, float]]) -> None:
    verdicts = play(steps)
    state = dict.fromkeys("abc", ACTIVE)
    for v in verdicts:
        assert v.from_state == state[v.node], f"{v} does not start from {state[v.node]}"
        assert (v.from_state, v.to_state) in LEGAL_MOVES, f"illegal move {v}"
        if (v.from_state, v.to_state) == (ACTIVE, DEAD):
            assert v.reason.startswith("restarted"), f"only a restart convicts without suspicion: {v}"
        assert math.isfinite(v.phi)
        state[v.node] = v.to_state
    assert play(steps) == verdicts, "same inputs, different verdicts"
