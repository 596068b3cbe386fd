"""``manage.py purge_idempotency``: delete expired idempotency records in batches."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from idempotency.services import records_purge_expired


class Command(BaseCommand):
    help = "Delete expired idempotency records (in batches on the expires_at index); the beat task runs the same."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, default=None, help="Rows per DELETE (default REAPER_BATCH_SIZE).")

    def handle(self, *args, batch_size: int | None = None, **options) -> None:
        if batch_size is not None and batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, got {batch_size}")
        deleted = records_purge_expired(batch_size=batch_size)
        self.stdout.write(f"Deleted {deleted} expired idempotency records.")
