"""What the composer's meters show: the context window in use and the budget left."""

from __future__ import annotations

from django.conf import settings

from chat.claude import catalogue, context
from chat.ledger import budgets, headroom
from chat.ledger.entries import last_measured
from chat.models import Conversation, Message
from chat.policies import Policy


def context_in_use(conversation: Conversation) -> int:
    """The context the conversation fills, as its gauge shows it: on the active branch, the
    last call's real input and output plus an estimate of only the messages after it (what
    plan_turn counts too); the conversation's stored figure when no call of the branch is
    known."""
    from chat.conversations.tree import path_to, tree

    ids = path_to(tree(conversation), conversation.leaf_id).ids
    measured = last_measured(conversation_id=conversation.pk, message_ids=ids) if ids else None
    if measured is None:
        return conversation.context_tokens
    after = ids[ids.index(measured.message_id) + 1 :]
    rows = Message.objects.filter(pk__in=after).values_list("pk", "role", "content", "token_count")
    return context.known_total(
        [
            context.StoredTurn(id=measured.message_id, role="assistant", content=[]),
            *(context.StoredTurn(*row) for row in rows),
        ],
        measured,
    )


def conversation_meters(conversation: Conversation, policy: Policy | None = None) -> dict:
    """What the composer shows: the context window in use, the budget left (`budget`: the
    tightest of the conversation's cap and its owner's limits, null when none applies; see
    docs/protocol.md), the cache hits and the conversation's cost."""
    # A retired id: the window of the model its next message will run on.
    info = catalogue.find_model(conversation.model) or catalogue.get_model(
        settings.CLAUDE_DEFAULT_MODEL
    )
    cached = conversation.cache_read_tokens
    prompt = conversation.input_tokens + conversation.cache_creation_tokens + cached
    left = headroom.tightest(conversation, policy)
    return {
        "context_tokens": context_in_use(conversation),
        "context_window": info.context_window,
        "budget": left.as_meter() if left else None,
        "budget_used": budgets.conversation_spent(conversation),
        "budget_limit": budgets.conversation_limit(conversation),
        "cache_hit_ratio": round(cached / prompt, 3) if prompt else None,
        "cost": str(conversation.cost),
    }
