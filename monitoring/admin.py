"""Django admin for the ``monitoring`` app: the operators' audit log, read-only."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "action", "target", "source", "detail")
    list_filter = ("action", "source")
    search_fields = ("actor", "=action", "target", "detail")
    date_hierarchy = "at"
    show_full_result_count = False
    list_per_page = 100
    readonly_fields = ("at", "actor", "user", "action", "target", "source", "detail")
    raw_id_fields = ("user",)

    # The log is written by the system only; nobody edits or deletes history from the admin.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
