"""The chat pages: list, new, rename, delete; model text reaches the page only as data."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.conversations import lifecycle
from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db


def test_login_page_renders_and_logs_in(client, alice):
    assert client.get(reverse("login")).status_code == 200
    response = client.post(
        reverse("login"), {"username": "alice", "password": "alice-password-123"}
    )
    assert response.status_code == 302 and response["Location"] == reverse("chat:index")
    assert client.get(reverse("chat:index")).status_code == 200


def test_it_creates_a_conversation(client, alice, settings):
    client.force_login(alice)
    response = client.post(reverse("chat:new"))
    conversation = Conversation.objects.get(owner=alice)
    assert response["Location"] == reverse("chat:conversation", args=[conversation.pk])
    assert conversation.system_prompt is not None
    assert conversation.model == settings.CLAUDE_DEFAULT_MODEL


def test_it_renames_and_deletes(client, alice, conversation):
    client.force_login(alice)
    client.post(reverse("chat:rename", args=[conversation.pk]), {"title": "  Trip   plans "})
    conversation.refresh_from_db()
    assert conversation.title == "Trip plans"
    client.post(reverse("chat:delete", args=[conversation.pk]))
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_the_list_is_newest_first_and_paginated(client, alice, settings):
    settings.CONVERSATIONS_PER_PAGE = 3
    made = [lifecycle.conversation_create(owner=alice) for _ in range(5)]
    for c in made:
        Message.objects.create(
            conversation=c, role="user", content=[{"type": "text", "text": "Hi"}]
        )
    client.force_login(alice)
    first = client.get(reverse("chat:index")).context["conversations"]
    second = client.get(reverse("chat:index") + "?page=2").context["conversations"]
    assert [c.pk for c in first] == [c.pk for c in reversed(made)][:3]
    assert [c.pk for c in second] == [c.pk for c in reversed(made)][3:]


def test_the_page_query_count_does_not_grow_with_messages(client, alice, conversation):
    client.force_login(alice)
    url = reverse("chat:conversation", args=[conversation.pk])

    def queries_of_the_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        return len(queries)

    Message.objects.create(
        conversation=conversation, role="user", content=[{"type": "text", "text": "m"}]
    )
    one = queries_of_the_page()
    for i in range(30):
        Message.objects.create(
            conversation=conversation, role="user", content=[{"type": "text", "text": f"m{i}"}]
        )
    assert queries_of_the_page() == one
    # Session, user, conversation, settings, the policy, the list, the thread (2), the header's budget
    # (the user's limits, then today's and the month's use in one scan), the ledger's figures.
    assert one <= 14


XSS = (
    '<script>alert(1)</script><img src=x onerror="alert(2)">'
    '</script><a href="javascript:alert(3)">x</a>'
)


def test_model_text_is_stored_verbatim_and_reaches_the_page_only_escaped(
    client, alice, conversation
):
    """As data in the page's JSON and, drawn (chat/views/drawn.py), as text."""
    Message.objects.create(
        conversation=conversation, role="assistant", content=[{"type": "text", "text": XSS}]
    )
    client.force_login(alice)
    html = client.get(reverse("chat:conversation", args=[conversation.pk])).content.decode()
    assert (
        "<script>alert(1)" not in html and "<img" not in html and '<a href="javascript' not in html
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x" in html
    start = html.index('<script id="chat-config" type="application/json">')
    end = html.index("</script>", start)
    config = json.loads(html[html.index(">", start) + 1 : end])
    assert config["messages"][0]["text"] == XSS


def test_the_no_messages_note_is_hidden_when_the_page_has_messages(client, alice, conversation):
    """The page paints before its script draws the messages: the note saying there are none
    must not show for a conversation that has some."""
    client.force_login(alice)
    url = reverse("chat:conversation", args=[conversation.pk])
    note = '<p id="messages-empty" class="messages-empty muted"'
    assert f"{note}>No messages yet." in client.get(url).content.decode()
    Message.objects.create(
        conversation=conversation, role="user", content=[{"type": "text", "text": "Hello"}]
    )
    assert f"{note} hidden>No messages yet." in client.get(url).content.decode()
