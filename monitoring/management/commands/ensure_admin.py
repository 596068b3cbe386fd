"""Create the first staff superuser when there is none (used by ``make run``)."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create an 'admin' superuser if no superuser exists; password from RINGMASTER_ADMIN_PASSWORD or generated."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default="http://127.0.0.1:8000/admin/", help="where to log in (printed)")

    def handle(self, *args, username: str, url: str, **options) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("An admin user exists already; log in at " + url)
            return
        password = os.environ.get("RINGMASTER_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"Created the admin user {username!r}. Log in at {url}"))
        if "RINGMASTER_ADMIN_PASSWORD" in os.environ:
            self.stdout.write("Its password is the one in RINGMASTER_ADMIN_PASSWORD.")
        else:
            self.stdout.write(f"Its password (shown only this once): {password}")
