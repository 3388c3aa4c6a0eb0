"""Claude's search_conversations tool sees exactly what the user's own search box sees."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.conversations import lifecycle, search
from chat.models import Conversation, Message
from chat.replies import tools

pytestmark = pytest.mark.django_db


def chat(owner, title: str, *texts: str) -> Conversation:
    conversation = lifecycle.conversation_create(owner=owner)
    Conversation.objects.filter(pk=conversation.pk).update(title=title)
    for role, text in zip(["user", "assistant"] * len(texts), texts, strict=False):
        Message.objects.create(
            conversation=conversation, role=role, content=[{"type": "text", "text": text}]
        )
    conversation.refresh_from_db()
    return conversation


def ask_tool(user, query: str, *, here: Conversation) -> str:
    context = tools.ToolContext(user_id=user.pk, conversation_id=here.pk)
    result = tools.REGISTRY.run("search_conversations", {"query": query}, context)
    assert not result.is_error, result.content
    return result.content


def unaliased(sql: str) -> str:
    """SQL with the message table's name or alias (U0, U1, …) dropped before its columns."""
    return re.sub(r'(?:\bU\d+|"chat_message")\.(?=")', "", sql)


def titles_in(answer: str) -> list[str]:
    return re.findall(r'^- "(.*?)" \(', answer, flags=re.MULTILINE)


@pytest.fixture
def here(alice):
    return chat(alice, "Current chat", "sourdough mentioned right here")


def test_a_deleted_conversations_text_is_not_returned(alice, here):
    kept = chat(alice, "Kept", "How do I bake sourdough bread?")
    gone = chat(alice, "Binned", "sourdough secret recipe, deleted")
    lifecycle.conversation_trash(conversation=gone)
    answer = ask_tool(alice, "sourdough", here=here)
    assert titles_in(answer) == [kept.title]
    assert "secret recipe" not in answer and "Binned" not in answer


def test_another_users_conversations_are_not_returned(alice, bob, here):
    chat(bob, "Bob's bakery", "sourdough from bob")
    answer = ask_tool(alice, "sourdough", here=here)
    assert titles_in(answer) == [] and "bob" not in answer.lower()
    assert answer.startswith("No earlier conversations mention")


@pytest.mark.parametrize("query", ["sourdough", "starter", "lisbon", "baking", "Lisb", "nothing"])
def test_the_tools_results_are_the_search_boxs_conversations(client, alice, bob, here, query):
    chat(alice, "Bread", "How do I bake sourdough bread?", "Feed the starter the night before.")
    chat(alice, "Trip to Lisbon", "Where should we stay?")
    shelved = chat(alice, "Shelved loaf", "sourdough, archived")
    Conversation.objects.filter(pk=shelved.pk).update(archived=True)
    chat(alice, "Plain", "nothing about bread")
    chat(bob, "Bob's sourdough", "sourdough in Lisbon, starter baking")
    lifecycle.conversation_trash(conversation=chat(alice, "Deleted Lisbon", "sourdough starter"))

    client.force_login(alice)
    page = client.get(reverse("chat:index"), {"q": query})
    expected = [c.title for c in page.context["conversations"] if c.pk != here.pk]
    assert titles_in(ask_tool(alice, query, here=here)) == expected


def test_the_current_conversation_is_left_out_and_a_title_match_says_so(alice, here):
    chat(alice, "Sourdough notes", "Which flour?")
    answer = ask_tool(alice, "sourdough", here=here)
    assert titles_in(answer) == ["Sourdough notes"]
    assert "the title matches" in answer and "right here" not in answer


def test_each_conversation_shows_its_newest_matching_message(alice, here):
    chat(alice, "Bread", "sourdough first question", "sourdough newest answer", "unrelated")
    answer = ask_tool(alice, "sourdough", here=here)
    assert "sourdough newest answer" in answer and "first question" not in answer
    assert "(assistant)" not in answer and ", assistant):" in answer


def test_the_tool_asks_the_indexed_query(alice, here):
    """The tool's query filters messages by the very expression index message_text_search holds
    (test_history_path proves that expression is answered by the index). Whether the planner then
    takes that index or the conversation_id one depends on table statistics, so the plan of the
    whole query is not asserted."""
    chat(alice, "Bread", "sourdough")
    with CaptureQueriesContext(connection) as queries:
        ask_tool(alice, "sourdough", here=here)
    searches = [q["sql"] for q in queries if "chat_conversation" in q["sql"]]
    assert searches, "the tool asked no query of the conversations"
    if connection.vendor != "postgresql":  # SQLite: a substring of the stored blocks
        assert "LIKE" in searches[0]
        return
    indexed = search.matching_messages("sourdough").query
    where, params = indexed.where.as_sql(indexed.get_compiler(connection.alias), connection)
    expression = connection.ops.compose_sql(where, params)
    assert unaliased(expression) in unaliased(searches[0])
    assert '"content")::' not in searches[0]  # no cast of the blocks to text for a substring scan
