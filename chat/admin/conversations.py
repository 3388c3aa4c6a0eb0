"""Admin for conversations, their messages and the system prompts they pin."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Q

from chat.admin.links import ReadOnlyAdmin, change_link, changelist_link
from chat.models import Conversation, Feedback, Message, SystemPrompt


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = (
        "role",
        "status",
        "stop_reason",
        "error_code",
        "token_count",
        "preview",
        "rating",
        "created_at",
    )
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("feedback")

    @admin.display(description="rating")
    def rating(self, obj: Message) -> str:
        """The owner's rating of a reply and its comment (the user's text, escaped)."""
        return "; ".join(
            f"{f.get_rating_display()}{': ' + f.comment if f.comment else ''}"
            for f in obj.feedback.all()
        )

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
        "ratings",
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

    @admin.display(description="ratings of replies")
    def ratings(self, obj: Conversation) -> str:
        found = Feedback.objects.filter(message__conversation=obj).aggregate(
            up=Count("id", filter=Q(rating=Feedback.Rating.UP)),
            down=Count("id", filter=Q(rating=Feedback.Rating.DOWN)),
        )
        label = f"{found['up']} up, {found['down']} down"
        return changelist_link("chat_feedback", label, message__conversation__id__exact=obj.pk)


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


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyAdmin):
    """Ratings of replies, read-only (nobody adds, edits or deletes one here): what users
    said, as they said it (escaped)."""

    list_display = (
        "id",
        "rating",
        "comment_preview",
        "reply",
        "conversation",
        "user",
        "updated_at",
    )
    list_filter = ("rating",)
    search_fields = ("comment", "user__username", "message__conversation__title")
    date_hierarchy = "updated_at"
    list_select_related = ("user", "message__conversation")
    fields = ("rating", "comment", "reply", "conversation", "user", "created_at", "updated_at")
    readonly_fields = fields

    @admin.display(description="comment")
    def comment_preview(self, obj: Feedback) -> str:
        return obj.comment[:120] + ("…" if len(obj.comment) > 120 else "")

    @admin.display(description="reply")
    def reply(self, obj: Feedback) -> str:
        return change_link("chat_message", obj.message_id, f"#{obj.message_id}")

    @admin.display(description="conversation")
    def conversation(self, obj: Feedback) -> str:
        conversation = obj.message.conversation
        return change_link("chat_conversation", conversation.pk, str(conversation))

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        # A conversation's ratings: the link beside the conversation filters by it.
        if lookup == "message__conversation__id__exact":
            return True
        return super().lookup_allowed(lookup, value, request)
