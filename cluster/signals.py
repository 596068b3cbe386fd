"""Signals the cluster app sends; the monitoring app listens (cluster never imports monitoring)."""

from django.dispatch import Signal

# Sent after commit with: node (name), from_state, to_state, epoch, incarnation, reason, actor, ring_changed.
membership_changed = Signal()

# Sent after commit with: job_id, task_name, state, owner_node, attempts.
job_state_changed = Signal(use_caching=True)  # sent twice per job: receivers cached per sender

# An operator acted on the cluster (an admin or dashboard action). Sent inside the transaction of the
# change, so a receiver's writes (monitoring's audit log) commit with it or not at all, with: action
# ("node.drain", "node.activate", "node.remove", "job.retry", "job.requeue"), target (a node name or
# job id), actor (the user), source ("admin", "dashboard"), detail (a short free text).
action_performed = Signal()
