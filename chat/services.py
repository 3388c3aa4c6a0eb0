"""Writes that touch several rows: keyword-only functions, each one transaction.

Sync functions; async callers wrap them with database_sync_to_async.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from chat import catalogue
from chat.claude import CallRecord, Usage
from chat.models import ApiCall, Conversation, Message, SystemPrompt


class Busy(Exception):
    """A reply is already running in this conversation."""


@dataclass
class TurnStart:
    user_message: Message
    assistant_message: Message | None  # None: the client_id was seen before, nothing started
    duplicate: bool = False


def current_system_prompt(*, name: str = "default") -> SystemPrompt:
    """The newest version of a prompt; a changed setting text makes a new version.

    Conversations pin the version they started with, so their prefix stays byte-identical.
    """
    text = settings.CLAUDE_SYSTEM_PROMPT
    latest = SystemPrompt.objects.filter(name=name).order_by("-version").first()
    if latest is not None and latest.text == text:
        return latest
    with transaction.atomic():
        version = (latest.version if latest else 0) + 1
        try:
            with transaction.atomic():
                return SystemPrompt.objects.create(name=name, version=version, text=text)
        except IntegrityError:  # another process made it first
            return SystemPrompt.objects.get(name=name, version=version)


def conversation_create(*, owner: AbstractBaseUser, model: str | None = None) -> Conversation:
    model_id = model or settings.CLAUDE_DEFAULT_MODEL
    catalogue.get_model(model_id)  # raises UnknownModel
    return Conversation.objects.create(
        owner=owner, model=model_id, system_prompt=current_system_prompt()
    )


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation and its messages; its ledger rows stay (conversation set null)."""
    conversation.delete()


def turn_start(
    *, conversation: Conversation, text: str, client_id: uuid.UUID, model: str | None = None
) -> TurnStart:
    """Save the user's message and an empty streaming reply, in one transaction.

    A client_id seen before returns the saved message with duplicate=True and starts nothing.
    Raises Busy when a reply is already streaming (the unique constraint decides, so two
    processes cannot both start one).
    """
    existing = Message.objects.filter(conversation=conversation, client_id=client_id).first()
    if existing is not None:
        return TurnStart(user_message=existing, assistant_message=None, duplicate=True)
    try:
        with transaction.atomic():
            if model and model != conversation.model:
                catalogue.get_model(model)
                conversation.model = model
            conversation.updated_at = timezone.now()
            conversation.save(update_fields=["model", "updated_at"])
            user_message = Message.objects.create(
                conversation=conversation,
                role=Message.Role.USER,
                content=[{"type": "text", "text": text}],
                client_id=client_id,
            )
            assistant_message = Message.objects.create(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                content=[],
                status=Message.Status.STREAMING,
            )
    except IntegrityError:
        existing = Message.objects.filter(conversation=conversation, client_id=client_id).first()
        if existing is not None:
            return TurnStart(user_message=existing, assistant_message=None, duplicate=True)
        raise Busy from None
    return TurnStart(user_message=user_message, assistant_message=assistant_message)


def request_messages(*, conversation_id: int, before_message_id: int) -> list[dict]:
    """The history sent to Claude: saved turns before the reply, alternating roles.

    Replies that produced no text (failed before the first token) are left out, and adjacent
    turns of one role are merged, so a failed reply never breaks the alternation.
    """
    rows = Message.objects.filter(
        conversation_id=conversation_id, id__lt=before_message_id
    ).order_by("id")
    merged: list[dict] = []
    for message in rows.only("role", "content"):
        blocks = [b for b in message.content if not (b.get("type") == "text" and not b["text"])]
        if not blocks:
            continue
        if merged and merged[-1]["role"] == message.role:
            merged[-1]["content"].extend(blocks)
        else:
            merged.append({"role": message.role, "content": list(blocks)})
    if merged and merged[-1]["role"] == "assistant":
        merged.pop()
    return merged


def checkpoint(*, message_id: int, text: str) -> None:
    """Save the partial text of a streaming reply (one UPDATE); also its heartbeat."""
    Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
        content=[{"type": "text", "text": text}] if text else [], updated_at=timezone.now()
    )


@dataclass
class TurnResult:
    usage: Usage
    cost: Decimal


def record_calls(
    *,
    calls: list[CallRecord],
    user_id: int,
    conversation_id: int | None,
    message_id: int | None,
    purpose: str = ApiCall.Purpose.REPLY,
) -> TurnResult:
    """One ApiCall row per upstream request, priced from the catalogue now; totals returned."""
    total = Usage()
    total_cost = Decimal(0)
    rows = []
    for index, call in enumerate(calls):
        try:
            prices = catalogue.get_model(call.model).prices()
        except catalogue.UnknownModel:
            prices = {}
        usage = call.usage
        cost = (
            catalogue.cost_of(
                prices,
                input_tokens=usage.input_tokens,
                cache_write_5m_tokens=usage.cache_write_5m_tokens,
                cache_write_1h_tokens=usage.cache_write_1h_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                output_tokens=usage.output_tokens,
            )
            if prices
            else Decimal(0)
        )
        total.add(usage)
        total_cost += cost
        rows.append(
            ApiCall(
                user_id=user_id,
                conversation_id=conversation_id,
                message_id=message_id,
                purpose=purpose if index == 0 else ApiCall.Purpose.TOOL_ROUND,
                model=call.model,
                request_id=call.request_id,
                round=index,
                input_tokens=usage.input_tokens,
                cache_write_5m_tokens=usage.cache_write_5m_tokens,
                cache_write_1h_tokens=usage.cache_write_1h_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                output_tokens=usage.output_tokens,
                stop_reason=call.stop_reason,
                ttft_ms=call.ttft_ms,
                duration_ms=call.duration_ms,
                prices=prices,
                cost=cost,
                error_code=call.error_code,
            )
        )
    ApiCall.objects.bulk_create(rows)
    if conversation_id is not None:
        Conversation.objects.filter(pk=conversation_id).update(
            input_tokens=F("input_tokens") + total.input_tokens,
            output_tokens=F("output_tokens") + total.output_tokens,
            cache_creation_tokens=F("cache_creation_tokens") + total.cache_creation_tokens,
            cache_read_tokens=F("cache_read_tokens") + total.cache_read_tokens,
            cost=F("cost") + total_cost,
        )
    return TurnResult(usage=total, cost=total_cost)


def turn_finish(
    *,
    message_id: int,
    conversation_id: int,
    user_id: int,
    text: str,
    status: str,
    stop_reason: str = "",
    error_code: str = "",
    error_message: str = "",
    calls: list[CallRecord],
) -> TurnResult:
    """Save the reply's final text and outcome and its ledger rows, in one transaction."""
    with transaction.atomic():
        output_tokens = sum(call.usage.output_tokens for call in calls)
        Message.objects.filter(pk=message_id).update(
            content=[{"type": "text", "text": text}] if text else [],
            status=status,
            stop_reason=stop_reason,
            error_code=error_code,
            error_message=error_message[:500],
            token_count=output_tokens or None,
            updated_at=timezone.now(),
        )
        result = record_calls(
            calls=calls,
            user_id=user_id,
            conversation_id=conversation_id,
            message_id=message_id,
        )
        Conversation.objects.filter(pk=conversation_id).update(updated_at=timezone.now())
    return result


def reap_stale_replies(*, stale_seconds: float, conversation_id: int | None = None) -> int:
    """Mark replies whose process stopped checkpointing as interrupted; their text is kept."""
    cutoff = timezone.now() - timedelta(seconds=stale_seconds)
    rows = Message.objects.filter(status=Message.Status.STREAMING, updated_at__lte=cutoff)
    if conversation_id is not None:
        rows = rows.filter(conversation_id=conversation_id)
    return rows.update(
        status=Message.Status.INTERRUPTED,
        error_code="interrupted",
        error_message="The server stopped while writing this reply; the text so far is kept.",
    )
