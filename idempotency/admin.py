"""Django admin for the ``idempotency`` app: browse records, expire or delete them in bulk.

The table grows with traffic, so no changelist query scans it (measured at a million rows on
PostgreSQL: each page loads in tens of milliseconds):

- the paginator counts at most ``COUNT_LIMIT`` rows (a ``LIMIT`` in a subquery) and
  ``show_full_result_count`` is off, so there is no full ``COUNT(*)``;
- search is a case-sensitive key prefix (``LIKE 'abc%'`` on the key's pattern index), not
  Django's default ``ILIKE '%abc%'`` scan;
- the date hierarchy lists the periods between the first and the last record (two index
  lookups) instead of Django's ``SELECT DISTINCT date_trunc(...)`` over every row; a period
  may show with no record in it;
- the scope filter offers the kinds of principal (a static list), not a ``DISTINCT`` of scopes,
  and an exact scope (``?scope=user:42 POST transfers/``) uses the unique index;
- the default ordering walks the created_at index.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from .models import IdempotencyRecord
from .services import records_expire

PREVIEW_CHARS = 200


class CappedCountPaginator(Paginator):
    """Counts at most ``COUNT_LIMIT`` rows: past that the admin shows the cap, not a full-table COUNT(*)."""

    COUNT_LIMIT = 1000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.COUNT_LIMIT].count()


class ScopeFilter(admin.SimpleListFilter):
    """Scopes by kind of principal; any other ``?scope=`` value is one exact scope (on the unique index)."""

    title = "scope"
    parameter_name = "scope"
    KINDS = {
        "user:": "HTTP, users",
        "token:": "HTTP, API tokens",
        "node:": "HTTP, nodes",
        "anonymous": "HTTP, anonymous",
        "fn:": "functions (@idempotent)",
        "task:": "cluster tasks",
    }

    def lookups(self, request, model_admin):
        return list(self.KINDS.items())

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(scope__startswith=value) if value in self.KINDS else queryset.filter(scope=value)


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"
    AGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}

    def lookups(self, request, model_admin):
        return [
            ("1h", "last hour"),
            ("24h", "last 24 hours"),
            ("7d", "last 7 days"),
            ("older", "older than 7 days"),
            ("expired", "expired"),
        ]

    def queryset(self, request, queryset):
        value, now = self.value(), timezone.now()
        if value in self.AGES:
            return queryset.filter(created_at__gte=now - self.AGES[value])
        if value == "older":
            return queryset.filter(created_at__lt=now - self.AGES["7d"])
        if value == "expired":
            return queryset.filter(expires_at__lte=now)
        return queryset


class PeriodsQuerySet(QuerySet):
    """``datetimes()`` for the date hierarchy without a DISTINCT scan (see the module docstring)."""

    STEPS = ("year", "month", "day")

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        if kind not in self.STEPS:
            return super().datetimes(field_name, kind, order=order, tzinfo=tzinfo)
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        zone = tzinfo or timezone.get_current_timezone()
        first, last = (timezone.localtime(bounds[end], zone) for end in ("first", "last"))
        periods = []
        current = _truncate(first, kind)
        while current <= last:
            periods.append(current)
            current = _next_period(current, kind)
        return periods if order == "ASC" else periods[::-1]


def _truncate(moment: datetime, kind: str) -> datetime:
    moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind in ("year", "month"):
        moment = moment.replace(day=1)
    if kind == "year":
        moment = moment.replace(month=1)
    return moment


def _next_period(moment: datetime, kind: str) -> datetime:
    if kind == "day":
        return _truncate(moment + timedelta(days=1, hours=3), "day")  # +3 h: safe across DST changes
    if kind == "month":
        return moment.replace(year=moment.year + moment.month // 12, month=moment.month % 12 + 1)
    return moment.replace(year=moment.year + 1)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ("key", "scope", "state", "outcome_status", "replay_count", "created_at", "expires_at")
    list_filter = ("state", ScopeFilter, AgeFilter)
    search_fields = ("key",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 100
    actions = ("expire_records", "delete_records")
    fields = (
        "scope",
        "key",
        "state",
        "fingerprint",
        "outcome_preview",
        "response_status",
        "response_headers",
        "replay_count",
        "owner",
        "fencing_token",
        "locked_until",
        "created_at",
        "completed_at",
        "expires_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        return PeriodsQuerySet(model=queryset.model, query=queryset.query, using=queryset.db)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        return (queryset.filter(key__startswith=term) if term else queryset), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # records are written by the system only

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        # Django's delete_selected loads every object into memory to list it; delete_records does not.
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="status", ordering="response_status")
    def outcome_status(self, record: IdempotencyRecord) -> str:
        if record.state != IdempotencyRecord.State.COMPLETED:
            return "-"
        return str(record.response_status) if record.is_http else "result"

    @admin.display(description="outcome")
    def outcome_preview(self, record: IdempotencyRecord) -> str:
        if record.state != IdempotencyRecord.State.COMPLETED:
            return "(not completed)"
        if record.is_http:
            text = bytes(record.response_body or b"").decode("utf-8", errors="replace")
        else:
            text = json.dumps(record.result)
        if len(text) > PREVIEW_CHARS:
            text = text[:PREVIEW_CHARS] + "…"
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", text)

    @admin.action(description="Expire selected records (their keys may be used afresh)", permissions=["change"])
    def expire_records(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = records_expire(ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Expired {count} idempotency records.", messages.SUCCESS)

    @admin.action(description="Delete selected records", permissions=["delete"])
    def delete_records(self, request: HttpRequest, queryset: QuerySet) -> None:
        count, _ = queryset.delete()
        self.message_user(request, f"Deleted {count} idempotency records.", messages.SUCCESS)
