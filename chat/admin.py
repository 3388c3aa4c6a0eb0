"""Django admin: conversations, messages, the read-only usage ledger, budgets, the dashboard.

Every changelist runs a fixed number of queries whatever the number of rows: related rows come
through list_select_related, links are built from foreign key ids, and the "budget used" column is
computed for the whole page at once (chat.usage.budget_percent).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Generator
from itertools import islice
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Model, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from chat import usage
from chat.admin_dashboard import dashboard_view
from chat.models import ApiCall, Conversation, Message, SystemPrompt, UserBudget

USAGE_CSS = {"all": ["admin/chat/usage.css"]}


def _changelist_link(model: str, label: str, **filters) -> str:
    url = reverse(f"admin:{model}_changelist") + "?" + urlencode(filters)
    return format_html('<a href="{}">{}</a>', url, label)


def _change_link(model: str, pk: int | None, label: str) -> str:
    if pk is None:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse(f"admin:{model}_change", args=[pk]), label)


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("role", "status", "stop_reason", "error_code", "token_count", "preview", "created_at")
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    @admin.display(description="text")
    def preview(self, obj: Message) -> str:
        text = obj.text
        return text[:200] + ("…" if len(text) > 200 else "")

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "owner",
        "model",
        "updated_at",
        "input_tokens",
        "output_tokens",
        "cost",
        "api_calls",
    )
    list_filter = ("model", "archived", "pinned")
    search_fields = ("title", "owner__username")
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    readonly_fields = (
        "created_at",
        "updated_at",
        "input_tokens",
        "output_tokens",
        "cache_creation_tokens",
        "cache_read_tokens",
        "cost",
    )
    inlines = [MessageInline]

    @admin.display(description="API calls")
    def api_calls(self, obj: Conversation) -> str:
        return _changelist_link("chat_apicall", "calls", conversation__id__exact=obj.pk)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "conversation",
        "role",
        "status",
        "stop_reason",
        "error_code",
        "created_at",
    )
    list_filter = ("role", "status", "stop_reason", "error_code")
    search_fields = ("conversation__title", "conversation__owner__username")
    date_hierarchy = "created_at"
    list_select_related = ("conversation",)
    raw_id_fields = ("conversation",)
    readonly_fields = ("created_at", "updated_at")


# The CSV export: header → column. Timestamps and costs come as the database prints them (UTC;
# exact decimals, never "1E-8"), which also spares parsing a million datetimes in Python.
EXPORT_COLUMNS = {
    "id": "id",
    "created_at": Cast("created_at", TextField()),
    "user_id": "user_id",
    "username": "user__username",
    "conversation_id": "conversation_id",
    "message_id": "message_id",
    "purpose": "purpose",
    "model": "model",
    "request_id": "request_id",
    "round": "round",
    "input_tokens": "input_tokens",
    "cache_write_5m_tokens": "cache_write_5m_tokens",
    "cache_write_1h_tokens": "cache_write_1h_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "output_tokens": "output_tokens",
    "stop_reason": "stop_reason",
    "error_code": "error_code",
    "ttft_ms": "ttft_ms",
    "duration_ms": "duration_ms",
    "cost": Cast("cost", TextField()),
}
EXPORT_CHUNK_ROWS = 2000
USERNAME_COLUMN = list(EXPORT_COLUMNS).index("username")
# A cell starting with one of these is a formula to a spreadsheet; such names get a quote first.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defused(row: tuple) -> tuple:
    name = row[USERNAME_COLUMN]
    if name and name.startswith(FORMULA_START):
        return (*row[:USERNAME_COLUMN], "'" + name, *row[USERNAME_COLUMN + 1 :])
    return row


def csv_chunks(calls: QuerySet[ApiCall]) -> Generator[str, None, None]:
    """The calls as CSV text: the header, then one chunk per EXPORT_CHUNK_ROWS rows.

    The rows come from a server-side cursor, so memory stays flat however many rows there are.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    rows = calls.values_list(*EXPORT_COLUMNS.values()).iterator(chunk_size=EXPORT_CHUNK_ROWS)
    while True:
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        chunk = list(islice(rows, EXPORT_CHUNK_ROWS))
        if not chunk:
            return
        writer.writerows(map(_defused, chunk))


async def _in_request_thread(chunks: Generator[str, None, None]) -> AsyncIterator[str]:
    """Under ASGI a sync iterator would be read whole into a list; step it chunk by chunk
    in the request's thread instead (its database connection holds the cursor)."""
    step = sync_to_async(next)
    try:
        while (chunk := await step(chunks, None)) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close)()


def csv_response(request: HttpRequest, calls: QuerySet[ApiCall]) -> StreamingHttpResponse:
    chunks = csv_chunks(calls)
    content = _in_request_thread(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="api-calls-{stamp}.csv"'
    return response


@admin.register(ApiCall)
class ApiCallAdmin(admin.ModelAdmin):
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
        return _change_link("chat_conversation", obj.conversation_id, f"#{obj.conversation_id}")

    @admin.display(description="message", ordering="message_id")
    def message_link(self, obj: ApiCall) -> str:
        return _change_link("chat_message", obj.message_id, f"#{obj.message_id}")

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

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SystemPrompt)
class SystemPromptAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "created_at")
    list_filter = ("name",)
    search_fields = ("name", "text")
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        # A saved version is immutable: conversations pin it for prompt caching.
        return ("name", "version", "text", "created_at") if obj else ("created_at",)


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


class UserBudgetInline(admin.StackedInline):
    model = UserBudget
    max_num = 1
    extra = 1
    fields = ("daily_tokens", "monthly_tokens", "daily_cost", "monthly_cost", "alerted_level")
    readonly_fields = ("alerted_level",)
    verbose_name_plural = "Budget (an empty limit: the default from settings; 0: no limit)"


User = get_user_model()
admin.site.unregister(User)


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
        return [UserBudgetInline] if obj is not None else []

    @admin.display(description="usage")
    def usage_links(self, obj) -> str:
        if obj.pk is None:
            return "—"
        return format_html(
            "{} · {}",
            _changelist_link("chat_conversation", "conversations", owner__id__exact=obj.pk),
            _changelist_link("chat_apicall", "API calls", user__id__exact=obj.pk),
        )


# The dashboard is one more admin view: admin_view gives it the login redirect for non-staff.
_site_urls = admin.site.get_urls


def _urls_with_dashboard() -> list:
    dashboard = admin.site.admin_view(dashboard_view)
    return [path("usage/", dashboard, name="usage_dashboard"), *_site_urls()]


admin.site.get_urls = _urls_with_dashboard


from chat import admin_attachments  # noqa: E402, F401  (registers the Attachment admin)
