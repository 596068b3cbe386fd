"""Django admin for the ``locks`` app: the "Held locks" page over every backend, force-release, the audit log.

"Held locks" is the changelist of ``LockLease`` replaced by a page that merges what every
configured backend holds (the database table is only one of them). Force-release is a POST
behind a confirmation page; each release is checked against the token the operator saw, so a
lock that changed hands in between is left alone, and is written to the audit log.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from .exceptions import LockBackendUnavailable
from .handler import backends
from .models import LockAudit, LockCounter, LockLease, LockWaiter
from .selectors import backend_groups, held_lock_list
from .services import lock_force_release

FORCE_RELEASE_PERMISSION = "locks.force_release_locklease"


def selection_value(alias: str, token: int, name: str) -> str:
    return f"{alias}|{token}|{name}"


def parse_selection(value: str) -> tuple[str, int, str] | None:
    parts = value.split("|", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
        return None
    return parts[0], int(parts[1]), parts[2]


class ReadOnlyAdmin(admin.ModelAdmin):
    """The system owns these rows: they can be browsed, not edited."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(LockLease)
class HeldLockAdmin(ReadOnlyAdmin):
    list_display = ("name", "owner", "token", "acquired_at", "expires_at")
    search_fields = ("name", "owner")

    def has_force_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(FORCE_RELEASE_PERMISSION)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "force-release/",
                self.admin_site.admin_view(self.force_release_view),
                name="{}_{}_force_release".format(*info),
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        backend = request.GET.get("backend") or None
        search = request.GET.get("q", "")
        rows, errors = held_lock_list(backend=backend, search=search)
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Held locks",
            "rows": [
                {
                    "lock": row,
                    "value": selection_value(row.alias, row.info.token, row.info.name),
                    "age": max(0.0, row.age(now).total_seconds()),
                    "expires_in": max(0.0, row.expires_in(now).total_seconds()),
                }
                for row in rows
            ],
            "errors": errors,
            "groups": backend_groups(),
            "backend": backend,
            "q": search,
            "can_force_release": self.has_force_release_permission(request),
            "force_release_url": reverse("admin:locks_locklease_force_release"),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/locks/held_locks.html", context)

    def force_release_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_force_release_permission(request):
            raise PermissionDenied
        changelist = reverse("admin:locks_locklease_changelist")
        raw = request.POST.getlist("lock") if request.method == "POST" else request.GET.getlist("lock")
        selected = [item for item in map(parse_selection, raw) if item is not None]
        known = set(backends.aliases())
        selected = [item for item in selected if item[0] in known]
        if not selected:
            self.message_user(request, "No lock was selected.", messages.WARNING)
            return HttpResponseRedirect(changelist)
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            return self._force_release(request, selected, changelist)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Force-release locks?",
            "selected": [
                {"alias": a, "token": t, "name": n, "value": selection_value(a, t, n)} for a, t, n in selected
            ],
        }
        return TemplateResponse(request, "admin/locks/force_release_confirm.html", context)

    def _force_release(self, request: HttpRequest, selected: list, changelist: str) -> HttpResponse:
        released, gone, failed = 0, [], []
        for alias, token, name in selected:
            try:
                if lock_force_release(backend=alias, name=name, token=token, actor=request.user, source="admin"):
                    released += 1
                else:
                    gone.append(name)
            except LockBackendUnavailable as exc:
                failed.append(f"{name} ({exc})")
        if released:
            self.message_user(request, f"Force-released {released} lock(s); see the lock audit log.", messages.SUCCESS)
        if gone:
            self.message_user(
                request,
                f"Not released, no longer held with the token shown: {', '.join(gone)}.",
                messages.WARNING,
            )
        if failed:
            self.message_user(request, f"Backend unavailable for: {'; '.join(failed)}.", messages.ERROR)
        return HttpResponseRedirect(changelist)


@admin.register(LockAudit)
class LockAuditAdmin(ReadOnlyAdmin):
    list_display = ("at", "action", "name", "backend", "token", "owner", "actor")
    list_filter = ("action", "backend")
    search_fields = ("name", "owner", "actor")
    date_hierarchy = "at"
    readonly_fields = ("action", "name", "backend", "token", "owner", "actor", "at")

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return super().has_view_permission(request, obj) or request.user.has_perm(FORCE_RELEASE_PERMISSION)


@admin.register(LockCounter)
class LockCounterAdmin(ReadOnlyAdmin):
    list_display = ("name", "last_token")
    search_fields = ("name",)
    readonly_fields = ("name", "last_token")


@admin.register(LockWaiter)
class LockWaiterAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "owner", "expires_at")
    search_fields = ("name", "owner")
    date_hierarchy = "expires_at"
    readonly_fields = ("name", "owner", "expires_at")
