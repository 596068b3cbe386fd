"""Child process for the concurrent-membership test: joins, activates and drains its own nodes."""

from __future__ import annotations

import sys

import django


def main(worker: int, nodes: int, drains: int) -> None:
    django.setup()
    from cluster import services

    names = [f"w{worker}-n{i}" for i in range(nodes)]
    for name in names:
        services.node_join(name=name, actor=f"worker-{worker}")
        services.node_activate(node=name, actor=f"worker-{worker}")
    for name in names[:drains]:
        services.node_drain(node=name, actor=f"worker-{worker}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
