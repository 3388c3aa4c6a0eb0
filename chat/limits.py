"""Per-user abuse limits, counted from the rows themselves so they hold across processes.

Each check is one query (counts over indexed ranges); they run when a reply or an upload
starts, never per token.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from chat.errors import UserFacingError
from chat.models import Attachment, Message

WINDOW = timedelta(minutes=1)


class RateLimited(UserFacingError):
    code = "rate_limited"
    retryable = True


def check_reply_start(*, user_id: int, sending: bool) -> None:
    """A reply may start: under the cap on replies at once and (for a new message) on sends a
    minute. Raises RateLimited."""
    recent = Q(role=Message.Role.USER, created_at__gte=timezone.now() - WINDOW)
    streaming = Q(status=Message.Status.STREAMING)
    counts = (
        Message.objects.filter(conversation__owner_id=user_id)
        .filter(streaming | recent if sending else streaming)
        .aggregate(running=Count("pk", filter=streaming), sent=Count("pk", filter=recent))
    )
    running, sent = counts["running"], counts["sent"]
    if running >= settings.RATE_MAX_CONCURRENT_REPLIES:
        raise RateLimited(
            f"You already have {running} replies being written; wait for one to finish "
            f"(the limit is {settings.RATE_MAX_CONCURRENT_REPLIES} at once)."
        )
    if sending and sent >= settings.RATE_SENDS_PER_MINUTE:
        raise RateLimited(
            f"You sent {sent} messages in the last minute (the limit is "
            f"{settings.RATE_SENDS_PER_MINUTE}); wait a moment."
        )


def check_upload_start(*, user_id: int) -> None:
    started = Attachment.objects.filter(
        owner_id=user_id, created_at__gte=timezone.now() - WINDOW
    ).count()
    if started >= settings.RATE_UPLOADS_PER_MINUTE:
        raise RateLimited(
            f"You started {started} uploads in the last minute (the limit is "
            f"{settings.RATE_UPLOADS_PER_MINUTE}); wait a moment."
        )
