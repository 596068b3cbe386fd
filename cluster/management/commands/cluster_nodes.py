"""``manage.py cluster_nodes``: add, list, drain, remove nodes and look keys up, from a shell."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from cluster import services
from cluster.exceptions import IllegalTransition, UnknownNode
from cluster.models import Node
from cluster.selectors import current_ring


class Command(BaseCommand):
    help = "Manage cluster nodes: add, list, drain, remove, rotate-token, lookup."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, parser_class=parser.__class__)
        add = sub.add_parser("add", help="register a node and print its API token once")
        add.add_argument("name")
        add.add_argument("--zone", default="")
        add.add_argument("--weight", type=float, default=1.0)
        add.add_argument("--address", default="")
        add.add_argument("--joining", action="store_true", help="leave it joining instead of activating it")
        sub.add_parser("list", help="list nodes with state, weight and share of the key space")
        for action in ("drain", "remove", "rotate-token"):
            sub.add_parser(action).add_argument("name")
        lookup = sub.add_parser("lookup", help="the owner and preference list of a key")
        lookup.add_argument("key")
        lookup.add_argument("--n", type=int, default=3)

    def handle(self, *args, action: str, **options) -> None:
        actor = "manage.py cluster_nodes"
        try:
            if action == "add":
                self._add(options, actor)
            elif action == "list":
                self._list()
            elif action == "drain":
                services.node_drain(node=options["name"], actor=actor)
                self.stdout.write(f"{options['name']}: draining")
            elif action == "remove":
                services.node_remove(node=options["name"], actor=actor)
                self.stdout.write(f"{options['name']}: left")
            elif action == "rotate-token":
                token = services.node_rotate_token(node=options["name"])
                self.stdout.write(f"new token for {options['name']} (shown once): {token}")
            elif action == "lookup":
                self._lookup(options["key"], options["n"])
        except (IllegalTransition, UnknownNode, ValueError, LookupError) as exc:
            # One line, non-zero exit: scripts can tell what went wrong.
            raise CommandError(str(exc)) from exc

    def _add(self, options: dict, actor: str) -> None:
        node, token = services.node_join(
            name=options["name"],
            zone=options["zone"],
            weight=options["weight"],
            address=options["address"],
            actor=actor,
        )
        if not options["joining"]:
            services.node_activate(node=node, actor=actor)
        self.stdout.write(f"added {node.name} ({node.state}, weight {node.weight:g}, zone {node.zone or '-'})")
        self.stdout.write(f"token (shown only once): {token}")

    def _list(self) -> None:
        ring = current_ring()
        now = timezone.now()
        self.stdout.write(f"{'name':24} {'state':9} {'zone':10} {'weight':>6} {'share':>7} {'inc':>4}  heartbeat")
        for node in Node.objects.order_by("name"):
            share = ring.share(node.name) if node.name in ring else 0.0
            age = f"{(now - node.last_heartbeat_at).total_seconds():.1f}s ago" if node.last_heartbeat_at else "never"
            self.stdout.write(
                f"{node.name:24} {node.state:9} {node.zone or '-':10} {node.weight:6g} {share:7.2%} "
                f"{node.incarnation:4}  {age}"
            )
        self.stdout.write(f"ring epoch {ring.epoch}, {len(ring)} nodes in the ring")

    def _lookup(self, key: str, n: int) -> None:
        ring = current_ring()
        if len(ring) == 0:
            raise LookupError("the ring is empty: no active node")
        nodes = ring.get_nodes(key, n)
        self.stdout.write(f"owner: {nodes[0]}")
        self.stdout.write(f"preference list: {', '.join(nodes)}")
