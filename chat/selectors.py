"""Reads: every lookup of a user's data goes through here, so ownership is checked in one place."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from chat.models import Conversation, Message


def conversations_of(user: AbstractBaseUser) -> QuerySet[Conversation]:
    return Conversation.objects.filter(owner=user).order_by("-updated_at", "-id")


def get_conversation(user: AbstractBaseUser, pk: int) -> Conversation:
    """The user's conversation, or Http404 — the same answer whether it is foreign or missing."""
    try:
        return Conversation.objects.get(pk=pk, owner=user)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


def get_conversation_for_update(user: AbstractBaseUser, pk: int) -> Conversation:
    """The user's conversation with its pinned system prompt, or Http404."""
    try:
        return Conversation.objects.select_related("system_prompt").get(pk=pk, owner=user)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


def history(conversation: Conversation) -> QuerySet[Message]:
    return Message.objects.filter(conversation=conversation).order_by("id")


def message_to_dict(message: Message) -> dict:
    """A saved message as the socket and the page send it to the browser."""
    return {
        "id": message.pk,
        "role": message.role,
        "text": message.text,
        "content": message.content,
        "status": message.status,
        "stop_reason": message.stop_reason,
        "error_code": message.error_code,
        "error_message": message.error_message,
        "token_count": message.token_count,
        "seq": message.stream_seq,
        "client_id": str(message.client_id) if message.client_id else None,
        "created_at": message.created_at.isoformat() if message.created_at else None,
    }
