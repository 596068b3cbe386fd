"""Admin for the example ledger."""

from __future__ import annotations

from django.contrib import admin

from .models import Account, Transfer


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("name", "balance")
    search_fields = ("name",)


@admin.register(Transfer)
class TransferAdmin(admin.ModelAdmin):
    list_display = ("transfer_id", "from_account", "to_account", "amount", "applied_by", "fencing_token", "applied_at")
    list_filter = ("applied_by",)
    search_fields = ("transfer_id",)
    date_hierarchy = "applied_at"
    list_select_related = ("from_account", "to_account")
    raw_id_fields = ("from_account", "to_account")
    show_full_result_count = False
