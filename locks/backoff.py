"""Wait intervals for lock waiters: pure functions, the random source passed in."""

from __future__ import annotations

from collections.abc import Callable


def jittered(interval: float, rand: Callable[[], float]) -> float:
    """``interval`` spread uniformly over [0.5, 1.5) x itself, so waiters do not poll in step."""
    return interval * (0.5 + rand())


def poll_interval(*, ahead: int, head_polls: int, minimum: float, maximum: float) -> float:
    """How long a queued waiter sleeps before it polls again (before jitter).

    The first in line (``ahead == 0``) polls at ``minimum`` and backs off by 25% per failed poll
    (``head_polls``), so a hand-off is noticed within a few ms while a long hold costs little. A
    waiter further back polls ``minimum x (1 + ahead)``: it only needs to notice when it has
    become first, and that takes at least one critical section per waiter ahead of it.
    """
    if ahead <= 0:
        interval = minimum * 1.25 ** min(head_polls, 40)
    else:
        interval = minimum * (1 + ahead)
    return max(minimum, min(maximum, interval))
