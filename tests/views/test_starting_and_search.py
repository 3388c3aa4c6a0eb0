"""Starting a chat on the first page (the conversation is created by its first message), the list
without empty conversations, the list alone for searching in place with snippets, and an export's
title surviving an import."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from chat.conversations import lifecycle, search
from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/json"}


def chat(owner, text: str, *, title: str = "") -> Conversation:
    conversation = lifecycle.conversation_create(owner=owner)
    message = Message.objects.create(
        conversation=conversation, role="user", content=[{"type": "text", "text": text}]
    )
    Conversation.objects.filter(pk=conversation.pk).update(leaf=message, title=title)
    conversation.refresh_from_db()
    return conversation


def config_of(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="chat-config" type="application/json">')
    return json.loads(html[html.index(">", start) + 1 : html.index("</script>", start)])


# --- the first page ---------------------------------------------------------------------------


def test_the_first_page_has_a_message_box_and_stores_nothing(client, alice, settings):
    client.force_login(alice)
    response = client.get(reverse("chat:index"))
    html = response.content.decode()
    assert 'data-testid="composer"' in html and "autofocus" in html
    assert 'data-testid="model-picker"' in html
    config = config_of(response)
    assert config["conversation_id"] is None and config["ws_path"] is None
    assert config["create_url"] == reverse("chat:new")
    assert config["model"] == settings.CLAUDE_DEFAULT_MODEL
    assert not Conversation.objects.exists()


def test_new_chat_is_a_link_to_the_first_page_not_a_post(client, alice, conversation):
    client.force_login(alice)
    html = client.get(reverse("chat:conversation", args=[conversation.pk])).content.decode()
    link = html[html.rindex("<a", 0, html.index('data-testid="new-chat"')) :]
    assert link.startswith(f'<a href="{reverse("chat:index")}"')
    assert f'action="{reverse("chat:new")}"' not in html
    assert (
        config_of(client.get(reverse("chat:conversation", args=[conversation.pk])))["create_url"]
        is None
    )


def test_the_first_message_creates_the_conversation_with_the_choices_made(client, alice, settings):
    settings.CLAUDE_WEB_SEARCH = True
    client.force_login(alice)
    response = client.post(
        reverse("chat:new"),
        {"model": "claude-haiku-5-5", "effort": "low", "web_search": "1"},
        **JSON,
    )
    assert response.status_code == 201
    conversation = Conversation.objects.get(owner=alice)
    assert (conversation.model, conversation.thinking_effort, conversation.web_search) == (
        "claude-haiku-5-5",
        "low",
        True,
    )
    pk = conversation.pk
    assert response.json() == {
        "id": pk,
        "url": f"/c/{pk}/",
        "ws_path": f"/ws/conversations/{pk}/",
        "messages_url": f"/c/{pk}/messages/",
        "thinking_url": f"/c/{pk}/thinking/",
        "web_search_url": f"/c/{pk}/web-search/",
        "rename_url": f"/c/{pk}/rename/",
        "trash_url": f"/c/{pk}/trash/",
        "export_md_url": f"/c/{pk}/export.md",
        "export_json_url": f"/c/{pk}/export.json",
    }


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        ({"model": "gpt-4"}, 400, "Unknown model"),
        ({"model": "claude-haiku-4-5", "effort": "low"}, 400, "does not take a thinking effort"),
        ({"model": "claude-sonnet-4-6", "effort": "xhigh"}, 400, "not xhigh"),
        ({"effort": "extreme"}, 400, "effort is blank or one of"),
        ({"web_search": "maybe"}, 400, "web_search is 1 or 0"),
        ({"web_search": "1"}, 403, "Web search is turned off"),
    ],
)
def test_choices_that_are_not_taken_store_nothing(client, alice, settings, fields, status, error):
    settings.CLAUDE_WEB_SEARCH = False
    client.force_login(alice)
    response = client.post(reverse("chat:new"), fields, **JSON)
    assert response.status_code == status and error in response.json()["error"]
    assert not Conversation.objects.exists()


def test_creating_needs_login_and_the_csrf_token(alice):
    anonymous = Client()
    assert anonymous.post(reverse("chat:new"), **JSON).status_code == 302
    checked = Client(enforce_csrf_checks=True)
    checked.force_login(alice)
    assert checked.post(reverse("chat:new"), **JSON).status_code == 403
    assert not Conversation.objects.exists()


def test_empty_conversations_are_left_out_of_the_list_and_search_but_still_open(client, alice):
    kept = chat(alice, "Tell me about zebras")
    empty = lifecycle.conversation_create(owner=alice)
    Conversation.objects.filter(pk=empty.pk).update(title="Zebras, never written in")
    client.force_login(alice)
    listed = client.get(reverse("chat:index")).context["conversations"]
    assert [c.pk for c in listed] == [kept.pk]
    found = client.get(reverse("chat:index"), {"q": "zebras"}).context["conversations"]
    assert [c.pk for c in found] == [kept.pk]
    assert client.get(reverse("chat:conversation", args=[empty.pk])).status_code == 200
    assert Conversation.objects.filter(pk=empty.pk).exists()


# --- the list alone: search in place ----------------------------------------------------------


def test_the_list_alone_answers_a_search_with_a_snippet_of_the_match(client, alice):
    zebra = chat(alice, "Before that, tell me everything about zebras and their stripes please")
    chat(alice, "Lighthouses at night")
    client.force_login(alice)
    response = client.get(reverse("chat:list"), {"q": "zebra", "current": str(zebra.pk)})
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert html.count('data-testid="conversation-item"') == 1
    assert f'data-conversation-id="{zebra.pk}"' in html and 'aria-current="page"' in html
    assert "about <mark>zebras</mark> and their stripes" in html
    assert "Results for “zebra”" in html


def test_a_snippet_is_text_however_the_message_reads(client, alice):
    chat(alice, 'zebra <img src=x onerror="alert(1)"> if a < b && c > "d" <script')
    client.force_login(alice)
    html = client.get(reverse("chat:list"), {"q": "zebra"}).content.decode()
    snippet = html[html.index('data-testid="conversation-snippet"') :]
    snippet = snippet[: snippet.index("</span>")]
    assert "<img" not in snippet and "<script" not in snippet and "onerror=" not in snippet
    assert (
        "<mark>zebra</mark>" in snippet and "&amp;&amp;" in snippet and "&quot;d&quot;" in snippet
    )


def test_the_list_alone_is_the_users_own_and_needs_login(client, alice, bob):
    chat(bob, "zebra secrets of bob")
    mine = chat(alice, "my zebra")
    client.force_login(alice)
    html = client.get(reverse("chat:list"), {"q": "zebra"}).content.decode()
    assert html.count('data-testid="conversation-item"') == 1 and f'="{mine.pk}"' in html
    assert "bob" not in html
    client.logout()
    assert client.get(reverse("chat:list"), {"q": "zebra"}).status_code == 302


def test_the_list_alone_pages_and_shows_the_archived(client, alice, settings):
    settings.CONVERSATIONS_PER_PAGE = 2
    made = [chat(alice, f"chat {i}") for i in range(4)]
    lifecycle.conversation_set_flags(conversation=made[0], archived=True)
    client.force_login(alice)
    second = client.get(reverse("chat:list"), {"page": "2"}).content.decode()
    assert "Page 2 of 2" in second and 'data-list-link data-testid="page-newer"' in second
    assert second.count('data-testid="conversation-item"') == 1
    assert f'data-conversation-id="{made[1].pk}"' in second  # the oldest active one
    archived = client.get(reverse("chat:list"), {"archived": "1"}).content.decode()
    assert archived.count('data-testid="conversation-item"') == 1
    assert f'data-conversation-id="{made[0].pk}"' in archived


def test_a_title_match_has_no_snippet_and_a_message_match_marks_each_hit(alice):
    titled = chat(alice, "What flour should I use?", title="Sourdough notes")
    text = "My sourdough starter died; is sourdough hard?"
    texted = chat(alice, text)
    snippets = search.match_snippets([titled.pk, texted.pk], "sourdough")
    assert titled.pk not in snippets
    parts = snippets[texted.pk]
    assert [t for t, hit in parts if hit] == ["sourdough", "sourdough"]
    assert "".join(t for t, _ in parts) in text  # the message's own words, in order
    assert (" starter died; is ", False) in parts


# --- export and import keep the title -----------------------------------------------------------


def test_a_json_export_imported_keeps_its_title(client, alice):
    original = chat(alice, "Plan the trip", title="Trip to Lisbon")
    client.force_login(alice)
    exported = client.get(reverse("chat:export_json", args=[original.pk])).content
    assert json.loads(exported)["title"] == "Trip to Lisbon"
    upload = SimpleUploadedFile("trip.json", exported, "application/json")
    response = client.post(reverse("chat:import"), {"file": upload}, **JSON)
    assert response.status_code == 201
    imported = Conversation.objects.get(pk=response.json()["id"])
    assert imported.title == "Trip to Lisbon" and imported.pk != original.pk


def test_a_failed_import_from_the_page_gets_its_reason_as_json(client, alice):
    client.force_login(alice)
    upload = SimpleUploadedFile("notes.json", b"not json at all", "application/json")
    response = client.post(reverse("chat:import"), {"file": upload}, **JSON)
    assert response.status_code == 400
    assert response.json() == {"error": "The file is not JSON (UTF-8)."}
    assert not Conversation.objects.exists()
