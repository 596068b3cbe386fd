"""Fault injection for the demo: kill, pause, resume and restart worker nodes started by ``run_node``.

Each node's supervisor reads a small control file under ``var/chaos/``: ``stopped`` keeps a killed
worker down until ``restart``. The worker's pid comes from its node metadata (written at start).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from django.conf import settings

from .exceptions import UnknownNode
from .models import Node


def _control_file(name: str) -> Path:
    folder = Path(settings.VAR_DIR) / "chaos"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def control_state(name: str) -> str:
    path = _control_file(name)
    return path.read_text().strip() if path.exists() else "run"


def _set_control(name: str, state: str) -> None:
    _control_file(name).write_text(state)


def _pid(name: str) -> int:
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise UnknownNode(name)
    pid = (node.metadata or {}).get("pid")
    if not isinstance(pid, int):
        raise ValueError(f"node {name!r} has no worker pid in its metadata (is it a worker started by run_node?)")
    return pid


def _signal(name: str, sig: signal.Signals) -> int:
    pid = _pid(name)
    try:
        os.killpg(pid, sig)  # run_node starts each worker in its own process group
    except ProcessLookupError:
        raise ValueError(f"node {name!r}: no process {pid} (already gone)") from None
    return pid


def kill(name: str) -> int:
    """SIGKILL the node's worker and keep it down (no graceful drain: a crash)."""
    _set_control(name, "stopped")
    return _signal(name, signal.SIGKILL)


def pause(name: str) -> int:
    """SIGSTOP the node's worker: it stops heartbeating and working but keeps its locks and state."""
    return _signal(name, signal.SIGSTOP)


def resume(name: str) -> int:
    """SIGCONT a paused worker: it wakes up and finds out whether it was declared dead."""
    return _signal(name, signal.SIGCONT)


def restart(name: str) -> None:
    """Let the supervisor start the node's worker again (after kill), or kill a live one so it restarts."""
    _set_control(name, "run")
    try:
        os.killpg(_pid(name), signal.SIGCONT)
        os.killpg(_pid(name), signal.SIGKILL)
    except (ProcessLookupError, ValueError):
        pass  # nothing running: the supervisor starts a fresh worker
