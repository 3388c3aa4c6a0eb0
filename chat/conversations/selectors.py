"""Reads: every lookup of a user's data goes through here, so ownership is checked in one place."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from chat.models import ApiCall, Conversation, Message


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


def page_content(content: list) -> list:
    """A message's blocks as pages see them: thinking keeps its text, never its signature, and
    redacted thinking only its type. Both are for the API alone (they go back to it as they
    were saved), not for a browser."""
    shown = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            block = {"type": "thinking", "thinking": block.get("thinking", "")}
        elif kind == "redacted_thinking":
            block = {"type": "redacted_thinking"}
        shown.append(block)
    return shown


def message_to_dict(
    message: Message, versions: list[int] | None = None, *, usage: dict | None = None
) -> dict:
    """A saved message as the socket and the page send it to the browser.

    `usage` (from usage_by_message) adds the reply's tokens, cost and model under "usage".
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
    return out


# --- the conversation list, pages of a long conversation, usage per reply -----------------------


def visible_conversations(
    user: AbstractBaseUser, *, archived: bool = False
) -> QuerySet[Conversation]:
    """The user's conversations for the list: never deleted ones; pinned first, newest first."""
    return Conversation.objects.filter(
        owner=user, deleted_at__isnull=True, archived=archived
    ).order_by("-pinned", "-updated_at", "-id")


def get_deleted_conversation(user: AbstractBaseUser, pk: int) -> Conversation:
    """The user's soft-deleted conversation (for undo), or Http404."""
    try:
        return Conversation.objects.get(pk=pk, owner=user, deleted_at__isnull=False)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


SEARCH_CONFIG = "english"
# The text blocks of a message's content, for full-text search (PostgreSQL jsonpath).
_TEXT_BLOCKS_PATH = '$[*] ? (@.type == "text").text'


def message_text_doc():
    """The tsvector of a message's text blocks (PostgreSQL), as index message_text_search has it.

    to_tsvector(regconfig, jsonb) reads the JSON strings themselves (a cast to text would leave
    escapes such as \\n glued to the next word) and is immutable, so it can be indexed. This
    expression and the index of migration 0006 must stay the same, or the index goes unused.
    """
    from django.contrib.postgres.search import SearchConfig, SearchVectorField
    from django.db.models import F, Func, JSONField, Value

    text_blocks = Func(
        F("content"),
        Value(_TEXT_BLOCKS_PATH),
        function="jsonb_path_query_array",
        output_field=JSONField(),
    )
    return Func(
        SearchConfig(SEARCH_CONFIG),
        text_blocks,
        function="to_tsvector",
        output_field=SearchVectorField(),
    )


def title_doc():
    """The title as a tsvector (PostgreSQL), as index conversation_title_search has it."""
    from django.contrib.postgres.search import SearchVector

    return SearchVector("title", config=SEARCH_CONFIG)


def search_query(raw: str) -> str:
    """A search as typed, ready for the database: whitespace collapsed, and each character no
    column can hold (NUL, a surrogate: chat/text.py) read as a space, so `a<NUL>b` searches
    `a b` and never fails the query."""
    from chat.text import storable

    return " ".join(storable(raw, replacement=" ").split())


def _search_terms(query: str):
    from django.contrib.postgres.search import SearchQuery

    return SearchQuery(query, search_type="websearch", config=SEARCH_CONFIG)


def matching_messages(query: str) -> QuerySet[Message]:
    """Messages whose text matches `query` (a non-empty search_query), of every owner: callers
    narrow it to conversations the user may see.

    PostgreSQL: full-text search (stemmed, web-search syntax) through the GIN index
    message_text_search; other databases: a substring of the stored blocks.
    """
    from django.db import connection

    if connection.vendor == "postgresql":
        return Message.objects.alias(doc=message_text_doc()).filter(doc=_search_terms(query))
    return Message.objects.filter(content__icontains=query)


def search_conversations(
    user: AbstractBaseUser, query: str, *, archived: bool | None = None
) -> QuerySet[Conversation]:
    """The user's conversations whose title or any message text matches `query`.

    PostgreSQL: full-text search (stemmed, web-search syntax) through GIN indexes; other
    databases: a substring match. Deleted conversations never match; `archived` None searches
    both lists. The search box and Claude's search_conversations tool both ask this.
    """
    from django.db import connection
    from django.db.models import Exists, OuterRef, Q

    rows = Conversation.objects.filter(owner=user, deleted_at__isnull=True)
    if archived is not None:
        rows = rows.filter(archived=archived)
    query = search_query(query)
    if not query:
        return rows.none()
    messages = Exists(matching_messages(query).filter(conversation=OuterRef("pk")))
    if connection.vendor == "postgresql":
        # A subquery of its own, so that the title index answers it (in the OR it would not).
        titles = (
            Conversation.objects.filter(owner=user)
            .alias(doc=title_doc())
            .filter(doc=_search_terms(query))
        )
        match = Q(pk__in=titles.values("pk")) | Q(title__icontains=query) | messages
    else:
        match = Q(title__icontains=query) | messages
    return rows.filter(match).order_by("-pinned", "-updated_at", "-id")


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


def usage_by_message(message_ids: list[int]) -> dict[int, dict]:
    """Per reply: its API calls' tokens (in the API's names), cost and model — one query."""
    from django.db.models import Count, Max, Sum

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

    Three queries whatever the conversation's length: its tree, the page's messages, their usage.
    """
    nodes = tree(conversation)
    branch = path_to(nodes, conversation.leaf_id)
    chain = branch.ids
    if before_id is not None:
        chain = chain[: chain.index(before_id)] if before_id in chain else []
    page = messages_in_order(conversation, chain[-limit:] if limit > 0 else [], nodes)
    usage = usage_by_message([m.pk for m in page if m.role == Message.Role.ASSISTANT])
    return PathPage(
        messages=[message_to_dict(m, branch.versions[m.pk], usage=usage.get(m.pk)) for m in page],
        has_more=len(chain) > len(page),
    )
