"""The user admin, with each user's budget and links to their usage."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.utils.html import format_html

from chat.admin.ledger import BudgetUsedMixin
from chat.admin.links import USAGE_CSS, changelist_link
from chat.models import Identity, UserBudget


class UserBudgetInline(admin.StackedInline):
    model = UserBudget
    max_num = 1
    extra = 1
    fields = ("daily_tokens", "monthly_tokens", "daily_cost", "monthly_cost", "alerted_level")
    readonly_fields = ("alerted_level",)
    verbose_name_plural = "Budget (an empty limit: the default from settings; 0: no limit)"


class IdentityInline(admin.TabularInline):
    """The user's single sign-on accounts, read-only: they are made and matched by sign-in."""

    model = Identity
    fields = ("issuer", "subject", "created_at", "last_login_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Single sign-on identities"

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


User = get_user_model()
admin.site.unregister(User)  # registered again below, with budgets and usage


@admin.register(User)
class UserAdmin(BudgetUsedMixin, auth_admin.UserAdmin):
    list_display = (*auth_admin.UserAdmin.list_display, "budget_used", "usage_links")
    readonly_fields = ("budget_used", "usage_links")
    fieldsets = (*auth_admin.UserAdmin.fieldsets, ("Usage", {"fields": readonly_fields}))

    class Media:
        css = USAGE_CSS

    def budget_user_id(self, obj) -> int:
        return obj.pk

    def get_inlines(self, request: HttpRequest, obj=None) -> list:
        if obj is None:
            return []
        # The single sign-on identities only for a user who has one: nothing to show otherwise.
        return [UserBudgetInline, *([IdentityInline] if obj.identities.exists() else [])]

    @admin.display(description="usage")
    def usage_links(self, obj) -> str:
        if obj.pk is None:
            return "—"
        return format_html(
            "{} · {}",
            changelist_link("chat_conversation", "conversations", owner__id__exact=obj.pk),
            changelist_link("chat_apicall", "API calls", user__id__exact=obj.pk),
        )
