"""Which conversations a user may see: every lookup of a user's conversations goes through here,
so ownership (and soft delete) is checked in one place; and the list's date groups."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef, QuerySet
from django.http import Http404

from chat.models import Conversation, Message


def conversations_of(user: AbstractBaseUser) -> QuerySet[Conversation]:
    return Conversation.objects.filter(owner=user, deleted_at__isnull=True).order_by(
        "-updated_at", "-id"
    )


def get_conversation(user: AbstractBaseUser, pk: int) -> Conversation:
    """The user's conversation, or Http404 — the same answer whether it is foreign or missing."""
    try:
        return Conversation.objects.get(pk=pk, owner=user, deleted_at__isnull=True)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


def get_conversation_for_update(user: AbstractBaseUser, pk: int) -> Conversation:
    """The user's conversation with its pinned system prompt, or Http404."""
    try:
        return Conversation.objects.select_related("system_prompt").get(
            pk=pk, owner=user, deleted_at__isnull=True
        )
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


def visible_conversations(
    user: AbstractBaseUser, *, archived: bool = False
) -> QuerySet[Conversation]:
    """The user's conversations for the list: never deleted ones, never empty ones; pinned
    first, newest first.

    A conversation is created by its first message, so an empty one is a leftover (made by an
    older New chat button, or whose first message never arrived): a row for it would open a
    blank page. It stays reachable by its URL and is not deleted.
    """
    return (
        Conversation.objects.filter(owner=user, deleted_at__isnull=True, archived=archived)
        .filter(has_messages())
        .order_by("-pinned", "-updated_at", "-id")
    )


def has_messages() -> Exists:
    """A filter: the conversation holds at least one message."""
    return Exists(Message.objects.filter(conversation=OuterRef("pk")))


def get_deleted_conversation(user: AbstractBaseUser, pk: int) -> Conversation:
    """The user's soft-deleted conversation (for undo), or Http404."""
    try:
        return Conversation.objects.get(pk=pk, owner=user, deleted_at__isnull=False)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


def conversation_groups(conversations, *, now=None, tz=None) -> list[tuple[str, list]]:
    """Conversations in the list's date groups: Pinned, Today, Previous 7 days, Older.

    `conversations` is already ordered (pinned first, newest first); empty groups are left out.
    """
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.localtime(now or timezone.now(), tz)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    week = today - timedelta(days=7)
    groups: dict[str, list] = {"Pinned": [], "Today": [], "Previous 7 days": [], "Older": []}
    for c in conversations:
        if c.pinned:
            groups["Pinned"].append(c)
        elif c.updated_at >= today:
            groups["Today"].append(c)
        elif c.updated_at >= week:
            groups["Previous 7 days"].append(c)
        else:
            groups["Older"].append(c)
    return [(name, items) for name, items in groups.items() if items]
