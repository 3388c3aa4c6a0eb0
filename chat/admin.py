from django.contrib import admin

from chat.models import ApiCall, Conversation, Message, SystemPrompt


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


@admin.register(ApiCall)
class ApiCallAdmin(admin.ModelAdmin):
    """The ledger is append-only: admins read it, nobody edits it."""

    list_display = (
        "created_at",
        "user",
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


from chat import admin_attachments  # noqa: E402, F401  (registers the Attachment admin)
