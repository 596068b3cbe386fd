"""``manage.py chaos --kill NODE | --pause NODE | --resume NODE | --restart NODE``: watch detection and recovery."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from cluster import chaos
from cluster.exceptions import UnknownNode


class Command(BaseCommand):
    help = "Inject faults into worker nodes started by the run command (manage.py run_node)."

    def add_arguments(self, parser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--kill", metavar="NODE", help="SIGKILL the node's worker and keep it down")
        group.add_argument("--pause", metavar="NODE", help="SIGSTOP the node's worker")
        group.add_argument("--resume", metavar="NODE", help="SIGCONT a paused worker")
        group.add_argument("--restart", metavar="NODE", help="start the node's worker again")

    def handle(self, *args, kill=None, pause=None, resume=None, restart=None, **options) -> None:
        try:
            if kill:
                self.stdout.write(f"killed {kill} (pid {chaos.kill(kill)}); it stays down until --restart {kill}")
            elif pause:
                self.stdout.write(f"paused {pause} (pid {chaos.pause(pause)}); --resume {pause} wakes it")
            elif resume:
                self.stdout.write(f"resumed {resume} (pid {chaos.resume(resume)})")
            else:
                chaos.restart(restart)
                self.stdout.write(f"{restart} restarts within a second (it rejoins with a new incarnation)")
        except (UnknownNode, ValueError) as exc:
            raise CommandError(str(exc)) from exc
