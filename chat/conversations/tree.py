"""Reads of a conversation's message tree: its branches, the active path, versions, and the
messages as the socket and the page send them to the browser. Callers get the conversation
from chat/conversations/access.py, which checks ownership."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Max, QuerySet, Sum

from chat.models import ApiCall, Conversation, Message


def history(conversation: Conversation) -> QuerySet[Message]:
    """Every message of the conversation, all branches, oldest first."""
    return Message.objects.filter(conversation=conversation).order_by("id")


Node = tuple[int, int | None, str]  # a message's id, parent id and role


def tree(conversation: Conversation) -> list[Node]:
    """The shape of the conversation, oldest first: enough to walk its branches.

    Without the content, so a long conversation costs a few milliseconds, not every row.
    """
    return list(history(conversation).values_list("id", "parent_id", "role"))


@dataclass
class Branch:
    """The ids of a path from the root, oldest first, with each message's versions."""

    ids: list[int]
    versions: dict[int, list[int]]  # message id → ids of its versions (itself included)


@dataclass
class Path:
    """The active branch of a conversation, oldest first, with each message's versions."""

    messages: list[Message]
    versions: dict[int, list[int]]  # message id → ids of its versions (itself included)


def path_to(nodes: list[Node], leaf_id: int | None) -> Branch:
    """The path from the root to `leaf_id` (None or unknown: the newest message) through `nodes`.

    One pass over the tree already loaded: no query per message.
    """
    if not nodes:
        return Branch([], {})
    parent = {pk: parent_id for pk, parent_id, _ in nodes}
    siblings: dict[tuple[int | None, str], list[int]] = {}
    version_key = {}
    for pk, parent_id, role in nodes:
        version_key[pk] = (parent_id, role)
        siblings.setdefault((parent_id, role), []).append(pk)
    node = leaf_id if leaf_id in parent else nodes[-1][0]
    chain = []
    while node is not None:
        chain.append(node)
        node = parent[node]
    chain.reverse()
    return Branch(chain, {pk: siblings[version_key[pk]] for pk in chain})


def messages_in_order(
    conversation: Conversation, ids: list[int], nodes: list[Node]
) -> list[Message]:
    """The full rows of messages `ids` of the tree `nodes`, in the order of `ids`: one query.

    When no other message lies between the lowest and the highest id (one branch, the usual
    case) the rows are read by id range: a list of thousands of ids costs more than the rows.
    Otherwise by id list (on SQLite, one query per 999 ids).
    """
    if not ids:
        return []
    low, high = min(ids), max(ids)
    if sum(1 for pk, _, _ in nodes if low <= pk <= high) == len(ids):
        rows = {m.pk: m for m in history(conversation).filter(pk__gte=low, pk__lte=high)}
    else:
        rows = history(conversation).in_bulk(ids)
    return [rows[pk] for pk in ids if pk in rows]


def active_path(conversation: Conversation, *, upto_id: int | None = None) -> Path:
    """The conversation as shown and sent: the active branch (or the path to `upto_id`).

    Two queries: the tree, then the full rows of the path's messages only.
    """
    nodes = tree(conversation)
    branch = path_to(nodes, upto_id if upto_id is not None else conversation.leaf_id)
    return Path(messages_in_order(conversation, branch.ids, nodes), branch.versions)


def latest_leaf_under(conversation: Conversation, message_id: int) -> int:
    """The newest message of the newest branch below `message_id` (a version to switch to)."""
    children: dict[int, list[int]] = {}
    for pk, parent_id in history(conversation).values_list("id", "parent_id"):
        if parent_id is not None:
            children.setdefault(parent_id, []).append(pk)
    node = message_id
    while children.get(node):
        node = max(children[node])
    return node


# Opaque tokens the API needs back unchanged and a browser has no use for: a web search result's
# page (`encrypted_content`) and a web citation's pointer into it (`encrypted_index`).
_OPAQUE_KEYS = frozenset({"encrypted_content", "encrypted_index"})


def _without_opaque(value):
    if isinstance(value, list):
        return [_without_opaque(item) for item in value]
    if isinstance(value, dict):
        return {k: _without_opaque(v) for k, v in value.items() if k not in _OPAQUE_KEYS}
    return value


def page_content(content: list) -> list:
    """A message's blocks as pages see them: thinking keeps its text, never its signature, and
    redacted thinking only its type; web search results and web citations lose their encrypted
    fields. Those are for the API alone (they go back to it as they were saved), not for a
    browser."""
    shown = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            block = {"type": "thinking", "thinking": block.get("thinking", "")}
        elif kind == "redacted_thinking":
            block = {"type": "redacted_thinking"}
        elif kind in ("web_search_tool_result", "text"):
            block = _without_opaque(block)
        shown.append(block)
    return shown


def message_to_dict(
    message: Message,
    versions: list[int] | None = None,
    *,
    usage: dict | None = None,
    feedback: dict | None = None,
) -> dict:
    """A saved message as the socket and the page send it to the browser.

    `usage` (from usage_by_message) adds the reply's tokens, cost and model under "usage";
    `feedback` the owner's rating of a reply ({"rating", "comment"}) under "feedback".
    """
    out = {
        "id": message.pk,
        "parent_id": message.parent_id,
        "versions": versions or [message.pk],
        "role": message.role,
        "text": message.text,
        "content": page_content(message.content),
        "status": message.status,
        "stop_reason": message.stop_reason,
        "error_code": message.error_code,
        "error_message": message.error_message,
        "token_count": message.token_count,
        "seq": message.stream_seq,
        "client_id": str(message.client_id) if message.client_id else None,
        "created_at": message.created_at.isoformat() if message.created_at else None,
    }
    if usage is not None:
        out["usage"] = usage
    if feedback is not None:
        out["feedback"] = feedback
    return out


def usage_by_message(message_ids: list[int]) -> dict[int, dict]:
    """Per reply: its API calls' tokens (in the API's names), cost and model — one query."""
    if not message_ids:
        return {}
    rows = (
        ApiCall.objects.filter(message_id__in=message_ids)
        .exclude(purpose__in=[ApiCall.Purpose.TITLE, ApiCall.Purpose.SUMMARY])
        .order_by()
        .values("message_id")
        .annotate(
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cache_read=Sum("cache_read_tokens"),
            cache_5m=Sum("cache_write_5m_tokens"),
            cache_1h=Sum("cache_write_1h_tokens"),
            cost=Sum("cost"),
            model=Max("model"),
            calls=Count("id"),
        )
    )
    return {
        row["message_id"]: {
            "input_tokens": row["input_tokens"] or 0,
            "output_tokens": row["output_tokens"] or 0,
            "cache_read_input_tokens": row["cache_read"] or 0,
            "cache_creation_input_tokens": (row["cache_5m"] or 0) + (row["cache_1h"] or 0),
            "cost": str(row["cost"] or 0),
            "model": row["model"],
            "calls": row["calls"],
        }
        for row in rows
    }


@dataclass
class PathPage:
    """A page of the active branch, oldest first, as message dicts; `has_more`: older exist."""

    messages: list[dict]
    has_more: bool


def path_page(
    conversation: Conversation, *, before_id: int | None = None, limit: int = 50
) -> PathPage:
    """The newest `limit` messages of the active branch before `before_id` (None: the newest).

    Four queries whatever the conversation's length: its tree, the page's messages, their
    usage and the owner's ratings of them.
    """
    from chat.conversations import feedback

    nodes = tree(conversation)
    branch = path_to(nodes, conversation.leaf_id)
    chain = branch.ids
    if before_id is not None:
        chain = chain[: chain.index(before_id)] if before_id in chain else []
    page = messages_in_order(conversation, chain[-limit:] if limit > 0 else [], nodes)
    replies = [m.pk for m in page if m.role == Message.Role.ASSISTANT]
    usage = usage_by_message(replies)
    rated = feedback.by_message(user_id=conversation.owner_id, message_ids=replies)
    return PathPage(
        messages=[
            message_to_dict(
                m, branch.versions[m.pk], usage=usage.get(m.pk), feedback=rated.get(m.pk)
            )
            for m in page
        ],
        has_more=len(chain) > len(page),
    )
