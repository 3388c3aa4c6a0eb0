"""Admin for conversations, their messages and the system prompts they pin."""

from __future__ import annotations

from django.contrib import admin

from chat.admin.links import changelist_link
from chat.models import Conversation, Message, SystemPrompt


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
        return changelist_link("chat_apicall", "calls", conversation__id__exact=obj.pk)


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


@admin.register(SystemPrompt)
class SystemPromptAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "created_at")
    list_filter = ("name",)
    search_fields = ("name", "text")
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        # A saved version is immutable: conversations pin it for prompt caching.
        return ("name", "version", "text", "created_at") if obj else ("created_at",)
