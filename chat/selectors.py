"""Reads: every lookup of a user's data goes through here, so ownership is checked in one place."""

from __future__ import annotations

from dataclasses import dataclass

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
    """Every message of the conversation, all branches, oldest first."""
    return Message.objects.filter(conversation=conversation).order_by("id")


@dataclass
class Path:
    """The active branch of a conversation, oldest first, with each message's versions."""

    messages: list[Message]
    versions: dict[int, list[int]]  # message id → ids of its versions (itself included)


def path_to(rows: list[Message], leaf_id: int | None) -> Path:
    """The path from the root to `leaf_id` (None: the newest message) through `rows`.

    One pass over rows already loaded: no query per message.
    """
    if not rows:
        return Path([], {})
    by_id = {m.pk: m for m in rows}
    parent = {m.pk: m.parent_id for m in rows}
    siblings: dict[tuple[int | None, str], list[int]] = {}
    for message in rows:
        siblings.setdefault((parent[message.pk], message.role), []).append(message.pk)
    node = leaf_id if leaf_id in by_id else rows[-1].pk
    chain = []
    while node is not None:
        chain.append(by_id[node])
        node = parent[node]
    chain.reverse()
    versions = {m.pk: siblings[(parent[m.pk], m.role)] for m in chain}
    return Path(chain, versions)


def active_path(conversation: Conversation, *, upto_id: int | None = None) -> Path:
    """The conversation as shown and sent: the active branch (or the path to `upto_id`)."""
    rows = list(history(conversation))
    return path_to(rows, upto_id if upto_id is not None else conversation.leaf_id)


def latest_leaf_under(conversation: Conversation, message_id: int) -> int:
    """The newest message of the newest branch below `message_id` (a version to switch to)."""
    children: dict[int, list[int]] = {}
    for row in history(conversation).only("id", "parent_id"):
        if row.parent_id is not None:
            children.setdefault(row.parent_id, []).append(row.pk)
    node = message_id
    while children.get(node):
        node = max(children[node])
    return node


def message_to_dict(message: Message, versions: list[int] | None = None) -> dict:
    """A saved message as the socket and the page send it to the browser."""
    return {
        "id": message.pk,
        "parent_id": message.parent_id,
        "versions": versions or [message.pk],
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
