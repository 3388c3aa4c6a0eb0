"""Conversations, messages, the usage ledger and versioned system prompts.

Business logic lives in the packages beside this module (docs/architecture.md); these classes
only describe the data.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

# Text blocks of one turn (e.g. before and after a tool call) read as separate paragraphs.
TEXT_BLOCK_SEPARATOR = "\n\n"


class SystemPrompt(models.Model):
    """One immutable version of a named system prompt.

    A conversation pins a version so the bytes sent as `system` never change under it, which is
    what keeps the prompt-cache prefix valid across turns.
    """

    name = models.CharField(max_length=100, default="default")
    version = models.PositiveIntegerField()
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="system_prompt_name_version")
        ]
        ordering = ["name", "-version"]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class Conversation(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True, default="")
    model = models.CharField(max_length=100)
    system_prompt = models.ForeignKey(
        SystemPrompt, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now_add=True, db_index=True)
    archived = models.BooleanField(default=False)
    pinned = models.BooleanField(default=False)
    # Soft delete: set when the owner deletes it; such a conversation is never shown or reached,
    # can be restored for a few seconds (undo) and is purged later.
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Running totals over the conversation's API calls, kept by the ledger's
    # record_calls (chat/ledger/entries.py).
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    # The thinking effort asked of the model on each reply (low … max, one the model takes);
    # blank: none asked, the model does what it does by default (always-thinking models think).
    thinking_effort = models.CharField(max_length=8, blank=True, default="")
    # The owner's web search toggle; searches run only where the server allows them.
    web_search = models.BooleanField(default=False)
    # A token cap an admin set on this conversation; null: settings.CONVERSATION_TOKEN_BUDGET
    # (0 there: no cap).
    token_budget = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1000)],
        help_text="Tokens this conversation may use (at least 1,000); empty: the default.",
    )
    # Older turns folded into a summary to fit the context window: messages with id ≤
    # summary_upto_id are represented by `summary` in requests.
    summary = models.TextField(blank=True, default="")
    summary_upto_id = models.BigIntegerField(null=True, blank=True)
    # Input size of the last request (all input tokens, cached or not), for the context gauge.
    context_tokens = models.PositiveIntegerField(default=0)
    # The newest message of the active branch: the conversation shown and sent is the path from
    # the root to it (edits and regenerations make siblings, kept as versions).
    leaf = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-updated_at", "-id"], name="conversation_list"),
        ]
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"

    @property
    def display_title(self) -> str:
        return self.title or "New conversation"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        DONE = "done"
        INTERRUPTED = "interrupted"
        ERROR = "error"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # The message this one follows (null: the first); siblings with the same parent and role
    # are versions of each other (an edit, a regeneration).
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    # Content blocks shaped as the Messages API shapes them (text, image, tool_use, tool_result).
    content = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DONE)
    stop_reason = models.CharField(max_length=32, blank=True, default="")
    error_code = models.CharField(max_length=40, blank=True, default="")
    error_message = models.CharField(max_length=500, blank=True, default="")
    token_count = models.PositiveIntegerField(null=True, blank=True)
    # The highest delta seq streamed for this message (a Continue numbers on from it).
    stream_seq = models.PositiveIntegerField(default=0)
    # The sender's idempotency key: a repeated client_id does not start a second reply.
    client_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status="streaming"),
                name="one_streaming_reply_per_conversation",
            ),
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_once",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "id"], name="message_history"),
            models.Index(fields=["status"], name="message_status", condition=Q(status="streaming")),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"

    @property
    def text(self) -> str:
        """The text a user sees: the text blocks joined; other blocks are shown beside it. The
        text a Continue added (after a `continuation` block) joins the cut text without a seam."""
        parts: list[str] = []
        glue = False
        for block in self.content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "continuation":
                glue = True
            elif block.get("type") == "text" and block.get("text"):
                if glue and parts:
                    parts[-1] += block["text"]
                else:
                    parts.append(block["text"])
                glue = False
        return TEXT_BLOCK_SEPARATOR.join(parts)


class ApiCall(models.Model):
    """One upstream request, append-only: the usage ledger admins and budgets rely on.

    Token figures are the API's own (the final message_delta's usage), never recomputed from text.
    `input_tokens` excludes cache tokens, as in the API.
    """

    class Purpose(models.TextChoices):
        REPLY = "reply"
        TOOL_ROUND = "tool_round"
        CONTINUATION = "continuation"
        TITLE = "title"
        SUMMARY = "summary"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="api_calls"
    )
    conversation = models.ForeignKey(
        Conversation, on_delete=models.SET_NULL, null=True, blank=True, related_name="api_calls"
    )
    message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="api_calls"
    )
    purpose = models.CharField(max_length=20, choices=Purpose.choices, default=Purpose.REPLY)
    model = models.CharField(max_length=100)
    request_id = models.CharField(max_length=100, blank=True, default="")
    round = models.PositiveSmallIntegerField(default=0)
    input_tokens = models.PositiveIntegerField(default=0)
    cache_write_5m_tokens = models.PositiveIntegerField(default=0)
    cache_write_1h_tokens = models.PositiveIntegerField(default=0)
    cache_read_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    # usage.server_tool_use.web_search_requests: searches billed per 1,000 on top of tokens.
    web_search_requests = models.PositiveIntegerField(default=0)
    stop_reason = models.CharField(max_length=32, blank=True, default="")
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    # Prices per million tokens (and per 1,000 web searches) in force when the call was
    # recorded; cost never changes after.
    prices = models.JSONField(default=dict)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    error_code = models.CharField(max_length=40, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["created_at"], name="apicall_created"),
            models.Index(fields=["user", "created_at"], name="apicall_user_created"),
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.model} {self.purpose} #{self.pk}"

    @property
    def cache_creation_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens


# A PDF page's tokens, estimated: the documentation gives "1,500–3,000 tokens per page" for the
# text, and each page is also read as an image (about 650 tokens for a letter page at 72 dpi).
# The real figure replaces the estimate once the first request has been answered.
PDF_PAGE_TOKENS = 2_200


class Attachment(models.Model):
    """An image or document uploaded straight to S3 by the browser, verified before use.

    The S3 key is made by the server (`uploads/<user id>/<uuid>.<ext>`), never from the user's
    file name; `original_name` is for display only (and a document's title for Claude). Images
    have width and height; documents (PDF, plain text, Markdown) a page count (PDF) and whether
    the PDF has text Claude can cite (`has_text_layer`).
    """

    class State(models.TextChoices):
        PENDING = "pending"
        VERIFIED = "verified"
        REJECTED = "rejected"

    class Kind(models.TextChoices):
        IMAGE = "image"
        DOCUMENT = "document"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments"
    )
    message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="attachments"
    )
    key = models.CharField(max_length=255, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.IMAGE)
    content_type = models.CharField(max_length=50)
    byte_size = models.PositiveIntegerField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    page_count = models.PositiveIntegerField(null=True, blank=True)  # PDFs
    # PDFs: text could be extracted from the first pages (a scan has none and cannot be cited).
    has_text_layer = models.BooleanField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    original_name = models.CharField(max_length=255, blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    reject_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["owner", "state", "created_at"], name="attachment_owner_state"),
            models.Index(fields=["state", "created_at"], name="attachment_cleanup"),
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.original_name or self.key

    @property
    def max_upload_bytes(self) -> int:
        """The largest upload its kind takes: images, PDFs and text files have their own limit."""
        if self.kind == self.Kind.IMAGE:
            return settings.IMAGE_UPLOAD_MAX_BYTES
        if self.content_type == "application/pdf":
            return settings.DOCUMENT_MAX_BYTES
        return settings.TEXT_DOCUMENT_MAX_BYTES

    @property
    def token_estimate(self) -> int | None:
        """What the attachment adds to a request, estimated: an image width × height / 750
        (Claude's own formula), a PDF PDF_PAGE_TOKENS a page, a text file 4 bytes a token;
        None before verification."""
        if self.kind == self.Kind.DOCUMENT:
            if self.content_type == "application/pdf":
                return self.page_count * PDF_PAGE_TOKENS if self.page_count else None
            return (self.byte_size + 3) // 4 if self.byte_size else None
        if not self.width or not self.height:
            return None
        return (self.width * self.height + 749) // 750


def money_limit(label: str) -> models.DecimalField:
    """A budget in dollars: blank for none of its own, never negative (check E018 refuses a
    negative setting the same way)."""
    return models.DecimalField(
        label,
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
    )


class UserBudget(models.Model):
    """Per-user limits set by admins; a null limit means the default from settings."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget"
    )
    daily_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    monthly_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    daily_cost = money_limit("daily cost (USD)")
    monthly_cost = money_limit("monthly cost (USD)")
    # The highest alert sent (0, 80 or 100 percent) and the period it was sent for.
    alerted_level = models.PositiveSmallIntegerField(default=0)
    alerted_period = models.CharField(max_length=20, blank=True, default="")

    def __str__(self) -> str:
        return f"Budget of {self.user}"


class BudgetReservation(models.Model):
    """Tokens and money held for a call in flight; deleted when the call settles or fails."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reservations"
    )
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    tokens = models.PositiveIntegerField()
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["user", "created_at"], name="reservation_user")]

    def __str__(self) -> str:
        return f"{self.tokens} tokens held for {self.user_id}"


class UserSettings(models.Model):
    """A user's preferences: default model, own system prompt, time zone, theme."""

    class Theme(models.TextChoices):
        SYSTEM = "system"
        LIGHT = "light"
        DARK = "dark"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_settings"
    )
    default_model = models.CharField(max_length=100, blank=True, default="")
    system_prompt = models.ForeignKey(
        SystemPrompt, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    time_zone = models.CharField(max_length=64, default="UTC")
    theme = models.CharField(max_length=8, choices=Theme.choices, default=Theme.SYSTEM)

    def __str__(self) -> str:
        return f"Settings of {self.user}"


class Feedback(models.Model):
    """A user's rating of a reply: thumbs up or down, with an optional comment (untrusted text,
    shown to admins as text). One per user and message; rating again changes it."""

    class Rating(models.TextChoices):
        UP = "up"
        DOWN = "down"

    COMMENT_MAX_CHARS = 2000

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="feedback"
    )
    rating = models.CharField(max_length=4, choices=Rating.choices)
    comment = models.TextField(max_length=COMMENT_MAX_CHARS, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user"], name="feedback_once_per_user"),
        ]
        indexes = [models.Index(fields=["updated_at"], name="feedback_updated")]
        verbose_name_plural = "feedback"

    def __str__(self) -> str:
        return f"{self.rating} on message #{self.message_id}"


class Identity(models.Model):
    """A user's account at a single sign-on provider: the (issuer, sub) pair the provider
    promises never to reassign. Users are found by it, never by their (mutable) email."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identities"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)  # the `sub` claim
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="identity_issuer_subject"),
        ]
        verbose_name_plural = "identities"

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class SsoGroupMembership(models.Model):
    """A group membership that single sign-on made (the group was in the user's groups claim
    and the user was not in it yet). Only these are removed when the claim stops naming the
    group; memberships an admin set by hand are never touched."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_group_memberships"
    )
    group = models.ForeignKey("auth.Group", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "group"], name="sso_membership_once"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.group} (from single sign-on)"


class GroupPolicy(models.Model):
    """What the members of a group may use; a user in several groups gets the most generous of
    each field (chat/policies.py). A blank field means no restriction of that kind: the
    server's own limit or default applies."""

    class Effort(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"
        XHIGH = "xhigh"
        MAX = "max"

    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="chat_policy")
    # Model ids of the catalogue (chat/claude/models.json); empty: every model.
    allowed_models = models.JSONField(default=list, blank=True)
    max_effort = models.CharField(
        "highest thinking effort", max_length=10, choices=Effort.choices, blank=True
    )
    web_search = models.BooleanField("web search allowed", default=True)
    documents = models.BooleanField("documents (PDF and text) allowed", default=True)
    max_files_per_message = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    max_file_bytes = models.PositiveBigIntegerField(
        "max bytes per file", null=True, blank=True, validators=[MinValueValidator(1)]
    )
    daily_cost = money_limit("daily cost (USD)")
    monthly_cost = money_limit("monthly cost (USD)")

    class Meta:
        verbose_name = "group policy"
        verbose_name_plural = "group policies"

    def __str__(self) -> str:
        return f"Policy of {self.group}"


class UserSession(models.Model):
    """Which user a session belongs to: written at login, gone with its session.

    The database session backend stores the user inside the signed session data, so finding a
    user's sessions would mean decoding every row. This map answers it with one indexed query
    (chat/accounts/sessions.py). Deleting a session deletes its row (the cascade).
    """

    session = models.OneToOneField("sessions.Session", on_delete=models.CASCADE, primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="login_sessions"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"session of user {self.user_id}"
