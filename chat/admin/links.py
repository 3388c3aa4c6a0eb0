"""Links, styles and the read-only base the admin pages share."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

USAGE_CSS = {"all": ["admin/chat/usage.css"]}


def changelist_link(model: str, label: str, **filters) -> str:
    url = reverse(f"admin:{model}_changelist") + "?" + urlencode(filters)
    return format_html('<a href="{}">{}</a>', url, label)


def change_link(model: str, pk: int | None, label: str) -> str:
    if pk is None:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse(f"admin:{model}_change", args=[pk]), label)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records nobody adds, edits or deletes in admin (the ledger, users' ratings): viewed only."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
