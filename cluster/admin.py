"""Django admin for the cluster: nodes with rebalance previews, the event log, and a key lookup."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from . import services
from .exceptions import IllegalTransition, UnknownNode
from .jobs import job_requeue, job_retry
from .models import Job, MembershipEvent, Node, NodeState, RingEpoch
from .ring import HashRing, RebalancePlan
from .selectors import current_ring
from .signals import action_performed


def _planned_ring(ring: HashRing, nodes: list[Node], action: str) -> HashRing:
    """The ring the action would produce, so the admin can show the plan before anything moves."""
    for node in nodes:
        if action in ("drain", "remove") and node.name in ring:
            ring = ring.remove_node(node.name)
        elif action == "activate" and node.state == NodeState.JOINING and node.name not in ring:
            ring = ring.add_node(node.name, weight=node.weight, zone=node.zone or services.DEFAULT_ZONE)
    return ring


def _audited(request: HttpRequest, *, sender: type, action: str, target: str, apply, describe) -> None:
    """Apply an operator's action and announce it (the audit log) in one transaction."""
    with transaction.atomic():
        result = apply()
        action_performed.send(
            sender=sender,
            action=action,
            target=target,
            actor=request.user,
            source="admin",
            detail=describe(result),
        )


def _describe_events(result: MembershipEvent | list[MembershipEvent]) -> str:
    events = result if isinstance(result, list) else [result]
    return ", ".join(f"{e.from_state or '-'} -> {e.to_state} (epoch {e.epoch})" for e in events)


def _describe_job(job: Job) -> str:
    return f"dispatch {job.dispatch} to {job.owner_node or 'the shared queue'}"


class LookupForm(forms.Form):
    key = forms.CharField(max_length=1024)
    n = forms.IntegerField(min_value=1, max_value=100, initial=3, label="replicas")


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("name", "state", "zone", "weight", "key_share", "heartbeat_age", "incarnation", "address")
    list_filter = ("state", "zone")
    search_fields = ("name", "address")
    date_hierarchy = "joined_at"
    readonly_fields = (
        "state",
        "incarnation",
        "joined_at",
        "last_heartbeat_at",
        "state_changed_at",
        "token_hash",
        "weight",
    )
    fields = (
        "name",
        "address",
        "zone",
        "weight",
        "state",
        "incarnation",
        "metadata",
        "joined_at",
        "last_heartbeat_at",
        "state_changed_at",
    )
    actions = ("drain_nodes", "activate_nodes", "remove_nodes")
    change_list_template = "admin/cluster/node/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Nodes join through cluster_nodes add, the API, or a worker starting: each gets a token.
        return False

    # Each action needs its own permission (Meta.permissions), not "change": editing a node's address
    # is not the right to take it out of the ring.
    def has_drain_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("cluster.drain_node")

    def has_activate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("cluster.activate_node")

    def has_remove_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("cluster.remove_node")

    def get_queryset(self, request: HttpRequest):
        self._ring = current_ring()
        return super().get_queryset(request)

    @admin.display(description="share of keys")
    def key_share(self, node: Node) -> str:
        ring = getattr(self, "_ring", None) or current_ring()
        return f"{ring.share(node.name):.2%}" if node.name in ring else "—"

    @admin.display(description="last heartbeat", ordering="last_heartbeat_at")
    def heartbeat_age(self, node: Node) -> str:
        if node.last_heartbeat_at is None:
            return "never"
        return f"{(timezone.now() - node.last_heartbeat_at).total_seconds():.1f} s ago"

    def get_urls(self):
        return [
            path("lookup/", self.admin_site.admin_view(self.lookup_view), name="cluster_node_lookup"),
            *super().get_urls(),
        ]

    def lookup_view(self, request: HttpRequest) -> HttpResponse:
        form = LookupForm(request.GET or None)
        result = None
        ring = current_ring()
        if form.is_valid():
            if len(ring) == 0:
                form.add_error(None, "The ring is empty: no node is active.")
            else:
                nodes = ring.get_nodes(form.cleaned_data["key"], form.cleaned_data["n"])
                result = {"owner": nodes[0], "preference": nodes}
        context = {
            **self.admin_site.each_context(request),
            "title": "Key lookup",
            "opts": self.model._meta,
            "form": form,
            "result": result,
            "ring": ring,
        }
        return TemplateResponse(request, "admin/cluster/node/lookup.html", context)

    def _with_preview(self, request: HttpRequest, queryset, action: str, apply) -> HttpResponse | None:
        nodes = list(queryset)
        if request.POST.get("confirm") != "yes":
            ring = current_ring()
            plan: RebalancePlan = ring.diff(_planned_ring(ring, nodes, action))
            context = {
                **self.admin_site.each_context(request),
                "title": f"Confirm: {action} {len(nodes)} node(s)",
                "opts": self.model._meta,
                "nodes": nodes,
                "action": action,
                "action_name": f"{action}_nodes",
                "plan": plan,
                "moves": [(m.source or "—", m.target or "—", f"{m.fraction:.2%}") for m in plan.moves],
                "fraction": f"{plan.fraction_moved:.2%}",
                "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            }
            return TemplateResponse(request, "admin/cluster/node/rebalance_preview.html", context)
        done, failed = 0, []
        actor = request.user.get_username()
        for node in nodes:
            try:
                _audited(
                    request,
                    sender=Node,
                    action=f"node.{action}",
                    target=node.name,
                    apply=lambda node=node: apply(node=node, actor=actor),
                    describe=_describe_events,
                )
                done += 1
            except (IllegalTransition, UnknownNode, ValueError) as exc:
                failed.append(str(exc))
        if done:
            self.message_user(request, f"{action}: {done} node(s) done.", messages.SUCCESS)
        for error in failed:
            self.message_user(request, error, messages.ERROR)
        return None

    @admin.action(description="Drain selected nodes (preview first)", permissions=["drain"])
    def drain_nodes(self, request, queryset):
        return self._with_preview(request, queryset, "drain", services.node_drain)

    @admin.action(description="Activate selected nodes (preview first)", permissions=["activate"])
    def activate_nodes(self, request, queryset):
        return self._with_preview(request, queryset, "activate", services.node_activate)

    @admin.action(description="Remove selected nodes from the cluster (preview first)", permissions=["remove"])
    def remove_nodes(self, request, queryset):
        return self._with_preview(request, queryset, "remove", services.node_remove)


@admin.register(MembershipEvent)
class MembershipEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "node", "from_state", "to_state", "epoch", "incarnation", "reason", "actor")
    list_filter = ("to_state", "from_state", ("node", admin.RelatedOnlyFieldListFilter), "epoch")
    search_fields = ("node__name", "reason", "actor", "=epoch")
    date_hierarchy = "created_at"
    list_select_related = ("node",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(RingEpoch)
class RingEpochAdmin(admin.ModelAdmin):
    list_display = ("epoch", "created_at", "reason")
    search_fields = ("reason", "=epoch")
    date_hierarchy = "created_at"
    show_full_result_count = False
    exclude = ("ring",)
    readonly_fields = ("epoch", "created_at", "reason")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "task_name", "state", "owner_node", "ran_on", "attempts", "dispatch", "created_at", "took")
    list_filter = ("state", "task_name", "owner_node")
    search_fields = ("=id", "routing_key", "idempotency_key", "lock_name")
    date_hierarchy = "created_at"
    show_full_result_count = False
    list_per_page = 50
    actions = ("retry_jobs", "requeue_jobs")
    readonly_fields = [f.name for f in Job._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # The list needs the permission (the actions have their own); a job's own fields are the system's.
        return obj is None and super().has_change_permission(request)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("cluster.retry_job")

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("cluster.requeue_job")

    @admin.display(description="took")
    def took(self, job: Job) -> str:
        if job.started_at and job.finished_at:
            return f"{(job.finished_at - job.started_at).total_seconds():.2f} s"
        return "—"

    def _act(self, request: HttpRequest, queryset, action, label: str) -> None:
        done, errors = 0, []
        for job in queryset:
            try:
                _audited(
                    request,
                    sender=Job,
                    action=f"job.{label.lower()}",
                    target=str(job.pk),
                    apply=lambda job=job: action(job=job, actor=request.user.get_username()),
                    describe=_describe_job,
                )
                done += 1
            except ValueError as exc:
                errors.append(str(exc))
        if done:
            self.message_user(request, f"{label}: {done} job(s) sent again.", messages.SUCCESS)
        for error in errors:
            self.message_user(request, error, messages.ERROR)

    @admin.action(description="Retry selected failed jobs", permissions=["retry"])
    def retry_jobs(self, request, queryset):
        self._act(request, queryset, job_retry, "Retry")

    @admin.action(description="Requeue selected open jobs to their key's current owner", permissions=["requeue"])
    def requeue_jobs(self, request, queryset):
        self._act(request, queryset, job_requeue, "Requeue")
