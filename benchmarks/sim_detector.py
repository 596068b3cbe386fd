"""Trace simulation of LivenessTracker: time to detect real deaths and false verdicts, phi accrual vs fixed timeouts.

Run by hand from the repository root:

    .venv/bin/python benchmarks/sim_detector.py            # 1,000 nodes, one simulated hour: ~3 minutes
    .venv/bin/python benchmarks/sim_detector.py --quick    # 200 nodes, 20 minutes: ~5 seconds

The trace: every node sends a heartbeat each second from a sleep loop (so a pause shifts its
schedule); each heartbeat takes 0-100 ms to arrive and 1% are lost. Live nodes have 2 s
stop-the-world pauses (one per node every 10 minutes on average) and 5 s ones (one per node per
hour; pauses never overlap); a heartbeat due during a pause goes out when the pause ends. 5% of
the nodes die at a random time and never come back. The sweeper runs every simulated second: it
feeds the heartbeats that arrived since the previous sweep to the real LivenessTracker, then
sweeps. The same trace is replayed for each policy. Trace B makes a tenth of the nodes' links
congested, to show phi adapting; further seeds of trace A show how often the rare compound
silences (a 5 s pause right after two lost heartbeats) occur.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script from anywhere: the project is not an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitoring.liveness import ACTIVE, DEAD, SUSPECT, LivenessPolicy, LivenessTracker  # noqa: E402

TARGETS = "suspect p50 <= 5 s; dead p50 <= 8 s and p99 <= 10 s; no false convictions"


@dataclass(frozen=True)
class TraceSpec:
    nodes: int = 1000
    duration: float = 3600.0
    interval: float = 1.0
    max_delay: float = 0.1
    loss: float = 0.01
    short_pause: float = 2.0
    short_pause_every: float = 600.0
    long_pause: float = 5.0
    long_pause_every: float = 3600.0
    death_fraction: float = 0.05
    jittery_fraction: float = 0.0  # nodes behind a congested link, whose heartbeats take ...
    jittery_mean_delay: float = 0.5  # ... an exponentially distributed delay with this mean to arrive
    seed: int = 2004


@dataclass
class Trace:
    arrivals: list[array]  # per node, arrival times in order
    deaths: dict[int, float]  # node index -> time of death
    sent: int = 0
    lost: int = 0
    short_pauses: int = 0
    long_pauses: int = 0
    gaps: list[float] = field(default_factory=list)  # arrival gaps of live nodes, for the trace summary


def make_trace(spec: TraceSpec) -> Trace:
    fleet = random.Random(spec.seed)
    dying = set(fleet.sample(range(spec.nodes), round(spec.nodes * spec.death_fraction)))
    jittery = set(fleet.sample(range(spec.nodes), round(spec.nodes * spec.jittery_fraction)))
    trace = Trace(arrivals=[], deaths={})
    for node in range(spec.nodes):
        # One generator per node, drawing as much for a congested node as for a good one, so that
        # trace B differs from trace A only in the delays of its congested nodes.
        rng = random.Random(f"{spec.seed}/{node}")
        # Deaths stay clear of both ends so that every one is detected inside the run.
        death = rng.uniform(300.0, spec.duration - 300.0) if node in dying else math.inf
        if node in dying:
            trace.deaths[node] = death
        pauses = _pauses(rng, spec, trace)
        arrivals = array("d")
        send = rng.uniform(0.0, spec.interval)
        while True:
            for start, end in pauses:
                if start <= send < end:
                    send = end
            if send >= min(death, spec.duration):
                break
            trace.sent += 1
            if rng.random() < spec.loss:
                trace.lost += 1
            else:
                if node in jittery:
                    arrival = send + rng.expovariate(1.0 / spec.jittery_mean_delay)
                else:
                    arrival = send + rng.uniform(0.0, spec.max_delay)
                if arrivals:
                    # The sweeper stamps heartbeats as it reads them: a reordered one reads as simultaneous.
                    arrival = max(arrival, arrivals[-1])
                    if math.isinf(death):
                        trace.gaps.append(arrival - arrivals[-1])
                arrivals.append(arrival)
            send += spec.interval
        trace.arrivals.append(arrivals)
    return trace


def _pauses(rng: random.Random, spec: TraceSpec, trace: Trace) -> list[tuple[float, float]]:
    """Stop-the-world pauses of one node: one Poisson process, so that pauses never overlap."""
    short_rate, long_rate = 1.0 / spec.short_pause_every, 1.0 / spec.long_pause_every
    pauses = []
    start = rng.expovariate(short_rate + long_rate)
    while start < spec.duration:
        if rng.random() < long_rate / (short_rate + long_rate):
            length = spec.long_pause
            trace.long_pauses += 1
        else:
            length = spec.short_pause
            trace.short_pauses += 1
        pauses.append((start, start + length))
        start += length + rng.expovariate(short_rate + long_rate)
    return pauses


@dataclass
class Result:
    name: str
    to_suspect: list[float] = field(default_factory=list)
    to_dead: list[float] = field(default_factory=list)
    missed: int = 0
    false_suspicions: int = 0
    falsely_suspected_nodes: int = 0
    false_convictions: int = 0
    seconds: float = 0.0


def replay(name: str, trace: Trace, spec: TraceSpec, policy: LivenessPolicy) -> Result:
    started = time.perf_counter()
    names = [f"node-{i:04d}" for i in range(spec.nodes)]
    index = {n: i for i, n in enumerate(names)}
    tracker = LivenessTracker(policy)
    for n in names:
        tracker.add(n, 0.0, incarnation=1)
    position = [0] * spec.nodes
    suspected_at: dict[int, float] = {}
    dead_at: dict[int, float] = {}
    falsely_suspected: set[int] = set()
    result = Result(name)
    for second in range(1, int(spec.duration) + 1):
        now = float(second)
        for i, arrivals in enumerate(trace.arrivals):
            p = position[i]
            while p < len(arrivals) and arrivals[p] <= now:
                tracker.heartbeat(names[i], arrivals[p], incarnation=1)
                p += 1
            position[i] = p
        for verdict in tracker.sweep(now):
            i = index[verdict.node]
            died = trace.deaths.get(i, math.inf)
            if now < died:
                if verdict.to_state == SUSPECT:
                    result.false_suspicions += 1
                    falsely_suspected.add(i)
                elif verdict.to_state == DEAD:
                    result.false_convictions += 1
            elif verdict.to_state in (SUSPECT, DEAD):
                suspected_at.setdefault(i, now)
                if verdict.to_state == DEAD:
                    dead_at.setdefault(i, now)
        # A node already suspect (or falsely convicted) when it dies counts as detected at its death.
        for i, died in trace.deaths.items():
            if now - 1.0 < died <= now and tracker.state(names[i]) != ACTIVE:
                suspected_at.setdefault(i, died)
                if tracker.state(names[i]) == DEAD:
                    dead_at.setdefault(i, died)
    for i, died in trace.deaths.items():
        if i in dead_at:
            result.to_dead.append(dead_at[i] - died)
            result.to_suspect.append(suspected_at[i] - died)
        else:
            result.missed += 1
    result.falsely_suspected_nodes = len(falsely_suspected)
    result.seconds = time.perf_counter() - started
    return result


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100.0 * len(ordered)) - 1, 0)]


def policies() -> list[tuple[str, LivenessPolicy]]:
    return [
        ("phi, defaults (acceptable_pause 3.0 s)", LivenessPolicy()),
        ("phi, acceptable_pause 2.0 s", LivenessPolicy(acceptable_pause=2.0)),
        ("phi, acceptable_pause 2.5 s", LivenessPolicy(acceptable_pause=2.5)),
        ("phi, acceptable_pause 3.5 s", LivenessPolicy(acceptable_pause=3.5)),
        ("phi, defaults but no stable period", LivenessPolicy(dead_stable_period=0.0)),
        ("fixed 4 s timeout + 3 s stable period", LivenessPolicy(detector="fixed", fixed_timeout=4.0)),
        (
            "fixed 4 s timeout, convict at once (Celery/Flower)",
            LivenessPolicy(detector="fixed", fixed_timeout=4.0, dead_stable_period=0.0),
        ),
    ]


def report(title: str, spec: TraceSpec, runs: list[tuple[str, LivenessPolicy]]) -> None:
    trace = make_trace(spec)
    gaps = sorted(trace.gaps)
    jittery = (
        f" {spec.jittery_fraction:.0%} of the nodes have a congested link: exponential delay, mean "
        f"{spec.jittery_mean_delay * 1000:g} ms."
        if spec.jittery_fraction
        else ""
    )
    print(f"## {title}\n")
    print(
        f"{spec.nodes} nodes, {spec.duration:g} s, heartbeat every {spec.interval:g} s, arrival delay "
        f"0-{spec.max_delay * 1000:g} ms, {spec.loss:.0%} lost, seed {spec.seed}.{jittery} "
        f"{trace.sent} heartbeats sent, {trace.lost} lost; {trace.short_pauses} pauses of {spec.short_pause:g} s "
        f"and {trace.long_pauses} of {spec.long_pause:g} s; {len(trace.deaths)} nodes die. "
        f"Arrival gaps of live nodes: p99.99 {percentile(gaps, 99.99):.2f} s, max {gaps[-1]:.2f} s.\n"
    )
    print(
        "| policy | suspect p50 | suspect p99 | dead p50 | dead p99 | dead max | missed "
        "| false suspicions (nodes) | false convictions | run time |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, policy in runs:
        r = replay(name, trace, spec, policy)
        print(
            f"| {r.name} | {statistics.median(r.to_suspect):.2f} s | {percentile(r.to_suspect, 99):.2f} s "
            f"| {statistics.median(r.to_dead):.2f} s | {percentile(r.to_dead, 99):.2f} s | {max(r.to_dead):.2f} s "
            f"| {r.missed} | {r.false_suspicions} ({r.falsely_suspected_nodes}) | {r.false_convictions} "
            f"| {r.seconds:.0f} s |",
            flush=True,
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 nodes for 20 simulated minutes")
    parser.add_argument("--seed", type=int, default=TraceSpec.seed)
    parser.add_argument("--more-seeds", type=int, default=3, help="replay trace A with this many other seeds")
    args = parser.parse_args()
    size = {"nodes": 200, "duration": 1200.0} if args.quick else {}
    spec = TraceSpec(seed=args.seed, **size)

    print("# Failure detector simulation\n")
    print(f"`{' '.join(['python', 'benchmarks/sim_detector.py', *sys.argv[1:]])}` on Python {sys.version.split()[0]}.")
    print(
        "Sweeps every 1 s; detection times run from the death to the sweep that reports it; p99 is nearest-rank. "
        "A false suspicion or conviction is a verdict against a node that is still alive.\n"
    )
    print(f"Targets for the defaults: {TARGETS}.\n")
    report("Trace A: every node on a good link", spec, policies())
    jittery = TraceSpec(seed=args.seed, jittery_fraction=0.1, **size)
    report(
        "Trace B: as A, but a tenth of the nodes on a congested link",
        jittery,
        [policies()[0], policies()[-2], policies()[-1]],
    )
    for seed in range(args.seed + 1, args.seed + 1 + args.more_seeds):
        report(f"Trace A with seed {seed}", TraceSpec(seed=seed, **size), [policies()[0], policies()[-2]])


if __name__ == "__main__":
    main()
