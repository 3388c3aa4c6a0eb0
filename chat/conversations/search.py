"""Full-text search of a user's conversations: titles and message text (PostgreSQL GIN indexes of
migration 0006; other databases a substring match)."""

from __future__ import annotations

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
