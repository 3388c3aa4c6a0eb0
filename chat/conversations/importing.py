"""Import of a conversation exported as Messages API JSON.

The JSON is validated first (chat/conversations/export.py, parse_import)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from chat.claude import context
from chat.conversations.lifecycle import conversation_create
from chat.models import Conversation, Message, SystemPrompt
from chat.text import storable, storable_json


def conversation_import(
    *, owner: AbstractBaseUser, model: str, system: str, messages: list[dict], title: str = ""
) -> Conversation:
    """A new conversation from validated API-shaped messages (chat/conversations/export.py
    validates them).

    A user message holding only tool results belongs to the assistant turn around it, as the
    app stores a whole turn in one message. Parents are chained and the leaf is set. Every text
    is made storable (chat/text.py): an export may hold model output with NUL or a lone
    surrogate, and the conversation is imported with U+FFFD in their place.
    """
    system, title = storable(system), storable(title)
    stored: list[tuple[str, list[dict]]] = []
    for message in messages:
        blocks = storable_json(message["content"])
        results_only = all(b.get("type") == "tool_result" for b in blocks)
        continues_turn = message["role"] == "assistant" or results_only
        if continues_turn and stored and stored[-1][0] == "assistant":
            stored[-1][1].extend(blocks)
        else:
            stored.append((message["role"], list(blocks)))
    with transaction.atomic():
        prompt = None
        if system:
            name = f"import:{owner.pk}"
            prompt = SystemPrompt.objects.filter(name=name, text=system).first()
            if prompt is None:
                latest = SystemPrompt.objects.filter(name=name).order_by("-version").first()
                prompt = SystemPrompt.objects.create(
                    name=name, version=(latest.version if latest else 0) + 1, text=system
                )
        conversation = conversation_create(owner=owner, model=model)
        if prompt is not None:
            conversation.system_prompt = prompt
        conversation.title = title
        parent = None
        for role, blocks in stored:
            parent = Message.objects.create(
                conversation=conversation,
                parent=parent,
                role=role,
                content=blocks,
                token_count=context.estimate_tokens(blocks),
            )
        conversation.leaf = parent
        conversation.save(update_fields=["system_prompt", "title", "leaf"])
    return conversation
