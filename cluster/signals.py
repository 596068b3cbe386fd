"""Signals the cluster app sends; the monitoring app listens (cluster never imports monitoring)."""

from django.dispatch import Signal

# Sent after commit with: node (name), from_state, to_state, epoch, incarnation, reason, actor, ring_changed.
membership_changed = Signal()

# Sent after commit with: job_id, task_name, state, owner_node, attempts.
job_state_changed = Signal()
