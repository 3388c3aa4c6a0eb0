"""Full-text search of a user's conversations: titles and message text (PostgreSQL GIN indexes of
migration 0006; other databases a substring match)."""

from __future__ import annotations

import re

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from chat.models import Conversation, Message

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
    databases: a substring match. Deleted and empty conversations never match; `archived` None
    searches both lists. The search box and Claude's search_conversations tool both ask this.
    """
    from django.db import connection
    from django.db.models import Exists, OuterRef, Q

    from chat.conversations.access import has_messages

    # An empty conversation is left out, as from the list (access.visible_conversations).
    rows = Conversation.objects.filter(owner=user, deleted_at__isnull=True).filter(has_messages())
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


# --- snippets: the words around a match, for the list of results --------------------------------

# Around each match ts_headline puts these (private-use characters, which typed text does not
# hold in practice); the page turns them into <mark> around escaped text, never into HTML.
HIT_START, HIT_END = "\ue000", "\ue001"
# Up to two passages of 4–12 words around matches, joined by an ellipsis.
SNIPPET_FRAGMENTS, SNIPPET_WORDS = 2, (4, 12)
SNIPPET_MAX_CHARS = 240

Snippet = list[tuple[str, bool]]  # (text, is it a matched word), in order


def match_snippets(conversation_ids: list[int], query: str) -> dict[int, Snippet]:
    """For each conversation, the words around the match in its first matching message, as
    parts to show (text, matched?). Conversations matched by their title alone have none.

    One query for a page of results: the first matching message of each conversation is picked
    in a subquery, so ts_headline runs once per conversation, not once per matching message.
    """
    from django.db import connection
    from django.db.models import Min

    query = search_query(query)
    if not query or not conversation_ids:
        return {}
    firsts = (
        matching_messages(query)
        .filter(conversation_id__in=conversation_ids)
        .values("conversation_id")
        .annotate(first=Min("id"))
        .values("first")
    )
    if connection.vendor != "postgresql":
        rows = Message.objects.filter(pk__in=firsts).values_list("conversation_id", "content")
        return {cid: _substring_snippet(_blocks_text(content), query) for cid, content in rows}
    rows = (
        Message.objects.filter(pk__in=firsts)
        .annotate(headline=_headline(query))
        .values_list("conversation_id", "headline")
    )
    return {cid: _parts(_first_hit(texts)) for cid, texts in rows if texts}


def _headline(query: str):
    """ts_headline over the message's text blocks: a JSON list, each string shortened around
    its matches with HIT_START / HIT_END. Its parser drops what reads as an HTML tag (`<b>`),
    so a snippet may lack one; the rest is the message's text as written."""
    from django.contrib.postgres.search import SearchConfig
    from django.db.models import F, Func, JSONField, Value

    text_blocks = Func(
        F("content"),
        Value(_TEXT_BLOCKS_PATH),
        function="jsonb_path_query_array",
        output_field=JSONField(),
    )
    low, high = SNIPPET_WORDS
    options = (
        f"StartSel={HIT_START}, StopSel={HIT_END}, MinWords={low}, MaxWords={high}, "
        f'MaxFragments={SNIPPET_FRAGMENTS}, FragmentDelimiter=" … "'
    )
    return Func(
        SearchConfig(SEARCH_CONFIG),
        text_blocks,
        _search_terms(query),
        Value(options),
        function="ts_headline",
        output_field=JSONField(),
    )


def _first_hit(texts: list) -> str:
    strings = [t for t in texts if isinstance(t, str)]
    return next((t for t in strings if HIT_START in t), strings[0] if strings else "")


def _parts(marked: str) -> Snippet:
    """`a \ue000b\ue001 c` as [("a ", False), ("b", True), (" c", False)], at most
    SNIPPET_MAX_CHARS of text, whitespace collapsed."""
    parts: Snippet = []
    budget = SNIPPET_MAX_CHARS
    for i, chunk in enumerate(marked.replace(HIT_END, HIT_START).split(HIT_START)):
        text = re.sub(r"\s+", " ", chunk)
        if not text or budget <= 0:
            continue
        parts.append((text[:budget], i % 2 == 1))
        budget -= len(text)
    return parts


def _blocks_text(content: list) -> str:
    return " ".join(
        b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
    )


def _substring_snippet(text: str, query: str, *, around: int = 60) -> Snippet:
    """Other databases: the characters around the first occurrence of the query."""
    at = text.lower().find(query.lower())
    if at < 0:
        return _parts(text[: 2 * around])
    start, end = max(0, at - around), at + len(query)
    return _parts(f"{text[start:at]}{HIT_START}{text[at:end]}{HIT_END}{text[end : end + around]}")
