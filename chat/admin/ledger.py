"""Admin for the usage ledger (read-only, with its CSV export) and the budgets.

Every changelist runs a fixed number of queries whatever the number of rows: related rows come
through list_select_related, links are built from foreign key ids, and the "budget used" column is
computed for the whole page at once (chat.ledger.usage.budget_percent).
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.urls import path
from django.utils.html import format_html

from chat.admin.links import USAGE_CSS, ReadOnlyAdmin, change_link
from chat.ledger import usage
from chat.ledger.csv_export import csv_response
from chat.models import ApiCall, UserBudget


@admin.register(ApiCall)
class ApiCallAdmin(ReadOnlyAdmin):
    """The ledger is append-only: admins read it, nobody edits it."""

    change_list_template = "admin/chat/apicall/change_list.html"
    list_display = (
        "created_at",
        "user",
        "conversation_link",
        "message_link",
        "model",
        "purpose",
        "round",
        "input_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "cache_read_tokens",
        "output_tokens",
        "web_search_requests",
        "stop_reason",
        "error_code",
        "cost",
        "ttft_ms",
        "duration_ms",
    )
    list_filter = ("model", "purpose", "stop_reason", "error_code")
    search_fields = ("request_id", "user__username")
    date_hierarchy = "created_at"
    list_select_related = ("user",)

    @admin.display(description="conversation", ordering="conversation_id")
    def conversation_link(self, obj: ApiCall) -> str:
        return change_link("chat_conversation", obj.conversation_id, f"#{obj.conversation_id}")

    @admin.display(description="message", ordering="message_id")
    def message_link(self, obj: ApiCall) -> str:
        return change_link("chat_message", obj.message_id, f"#{obj.message_id}")

    def get_urls(self):
        export = self.admin_site.admin_view(self.export_view)
        return [path("export/", export, name="chat_apicall_export"), *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The calls the changelist shows with the same query string (filters, search, dates,
        order), all pages, as CSV."""
        if not request.user.has_perm("chat.view_apicall"):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("These filters are not valid.")
        return csv_response(request, changelist.get_queryset(request))


class BudgetChangeList(ChangeList):
    """Computes "budget used" for the whole page in two queries instead of two per row."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        page = list(self.result_list)  # evaluated once; the template reuses these instances
        percents = usage.budget_percent({self.model_admin.budget_user_id(obj) for obj in page})
        for obj in page:
            obj.budget_used_percent = percents.get(self.model_admin.budget_user_id(obj), 0)


def budget_flag(percent: int) -> str:
    if percent >= usage.OVER_PERCENT:
        return format_html('<span class="budget-over">{} % (over)</span>', percent)
    if percent >= usage.WARN_PERCENT:
        return format_html('<span class="budget-near">{} % (near)</span>', percent)
    return f"{percent} %"


class BudgetUsedMixin:
    """A "budget used" column: the largest share of a daily or monthly limit used."""

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return BudgetChangeList

    def budget_user_id(self, obj: Model) -> int:
        raise NotImplementedError

    @admin.display(description="budget used")
    def budget_used(self, obj: Model) -> str:
        if obj.pk is None:
            return "—"
        percent = getattr(obj, "budget_used_percent", None)
        if percent is None:  # a change form, not the list
            user_id = self.budget_user_id(obj)
            percent = usage.budget_percent([user_id])[user_id]
        return budget_flag(percent)


@admin.register(UserBudget)
class UserBudgetAdmin(BudgetUsedMixin, admin.ModelAdmin):
    """Per-user limits; an empty limit means the default from settings, 0 means no limit."""

    list_display = (
        "user",
        "daily_tokens",
        "monthly_tokens",
        "daily_cost",
        "monthly_cost",
        "budget_used",
    )
    list_editable = ("daily_tokens", "monthly_tokens", "daily_cost", "monthly_cost")
    search_fields = ("user__username", "user__email")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    readonly_fields = ("budget_used", "alerted_level", "alerted_period")

    class Media:
        css = USAGE_CSS

    def budget_user_id(self, obj: UserBudget) -> int:
        return obj.user_id
