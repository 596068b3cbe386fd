"""Membership changed by several real processes at once loses no epoch and no event."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cluster.models import MembershipEvent, Node, RingEpoch
from cluster.selectors import current_epoch, current_ring

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKERS, NODES, DRAINS = 4, 5, 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_membership_changes_never_lose_an_epoch_or_event(child_env):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.cluster.membership_worker", str(w), str(NODES), str(DRAINS)],
            cwd=ROOT,
            env=child_env,
        )
        for w in range(WORKERS)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * WORKERS, "every worker process finished cleanly"

    ring_changes = WORKERS * (NODES + DRAINS)  # each activate and each drain is one new epoch
    assert current_epoch() == ring_changes
    assert sorted(RingEpoch.objects.values_list("epoch", flat=True)) == list(range(1, ring_changes + 1))
    assert MembershipEvent.objects.count() == WORKERS * (NODES + NODES + DRAINS)
    epoch_changing = MembershipEvent.objects.filter(to_state__in=["active", "draining"])
    epochs = sorted(epoch_changing.values_list("epoch", flat=True))
    assert epochs == list(range(1, ring_changes + 1)), "each ring change has its own epoch, none lost or reused"
    active = set(Node.objects.filter(state="active").values_list("name", flat=True))
    assert len(active) == WORKERS * (NODES - DRAINS)
    assert set(current_ring().nodes) == active, "the final ring is exactly the active nodes"
