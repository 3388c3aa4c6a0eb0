"""The conversation list, long conversations, export / import and the settings page."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.http import Http404
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chat.conversations import access, export, lifecycle, tree
from chat.models import ApiCall, Conversation, Message, SystemPrompt, UserSettings

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/json"}


def say(conversation, role: str, text: str, parent=None, **fields) -> Message:
    message = Message.objects.create(
        conversation=conversation,
        role=role,
        parent=parent,
        content=[{"type": "text", "text": text}],
        **fields,
    )
    conversation.leaf = message
    conversation.save(update_fields=["leaf"])
    return message


def chat(conversation, n: int) -> list[Message]:
    """n messages alternating user / assistant, chained."""
    made, parent = [], None
    rows = [
        Message(
            conversation=conversation,
            role="user" if i % 2 == 0 else "assistant",
            content=[{"type": "text", "text": f"message {i}"}],
        )
        for i in range(n)
    ]
    for row in rows:  # each parent needs its id first
        row.parent = parent
        row.save()
        parent = row
        made.append(row)
    conversation.leaf = parent
    conversation.save(update_fields=["leaf"])
    return made


def owned_urls(pk: int) -> list[tuple[str, str]]:
    return [
        ("get", reverse("chat:messages", args=[pk])),
        ("get", reverse("chat:export_json", args=[pk])),
        ("get", reverse("chat:export_md", args=[pk])),
        ("post", reverse("chat:trash", args=[pk])),
        ("post", reverse("chat:pin", args=[pk])),
        ("post", reverse("chat:archive", args=[pk])),
        ("post", reverse("chat:rename", args=[pk])),
        ("post", reverse("chat:thinking", args=[pk])),
    ]


# --- access -------------------------------------------------------------------------------------


def test_every_new_url_requires_login(client, conversation):
    urls = owned_urls(conversation.pk) + [
        ("post", reverse("chat:restore", args=[conversation.pk])),
        ("post", reverse("chat:import")),
        ("get", reverse("chat:settings")),
        ("post", reverse("chat:settings")),
    ]
    for method, url in urls:
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_it_checks_ownership(client, bob, conversation):
    client.force_login(bob)
    data = {"pinned": "1", "archived": "1", "title": "mine"}
    for method, url in owned_urls(conversation.pk) + owned_urls(999999):
        assert getattr(client, method)(url, data).status_code == 404, url
    lifecycle.conversation_trash(conversation=conversation)
    assert client.post(reverse("chat:restore", args=[conversation.pk])).status_code == 404
    conversation.refresh_from_db()
    assert conversation.title == "" and not conversation.pinned and not conversation.archived


def test_posts_need_a_csrf_token(alice, conversation):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    for method, url in owned_urls(conversation.pk):
        if method == "post":
            assert client.post(url, {"pinned": "1", "archived": "1"}).status_code == 403, url
    assert client.post(reverse("chat:import")).status_code == 403
    assert client.post(reverse("chat:settings"), {"theme": "dark"}).status_code == 403


# --- the list: pin, archive, rename, delete with undo, groups, search ---------------------------


def test_pin_and_archive(client, alice, conversation):
    other = lifecycle.conversation_create(owner=alice)
    say(conversation, "user", "Pin me")
    say(other, "user", "Leave me")
    client.force_login(alice)
    response = client.post(reverse("chat:pin", args=[conversation.pk]), {"pinned": "1"}, **JSON)
    assert response.json() == {"id": conversation.pk, "pinned": True}
    listed = client.get(reverse("chat:index")).context["groups"]
    assert listed[0][0] == "Pinned" and [c.pk for c in listed[0][1]] == [conversation.pk]

    client.post(reverse("chat:archive", args=[conversation.pk]), {"archived": "1"})
    active = [c.pk for c in client.get(reverse("chat:index")).context["conversations"]]
    archived = [
        c.pk for c in client.get(reverse("chat:index") + "?archived=1").context["conversations"]
    ]
    assert active == [other.pk] and archived == [conversation.pk]
    conversation.refresh_from_db()
    assert conversation.archived and not conversation.pinned  # archiving unpins
    assert (
        client.post(reverse("chat:pin", args=[conversation.pk]), {"pinned": "x"}).status_code == 400
    )


def test_rename_answers_json(client, alice, conversation):
    client.force_login(alice)
    url = reverse("chat:rename", args=[conversation.pk])
    response = client.post(url, {"title": "  Trip   plans "}, **JSON)
    assert response.json() == {"id": conversation.pk, "title": "Trip plans"}


def test_delete_hides_at_once_and_can_be_undone(client, alice, conversation):
    client.force_login(alice)
    response = client.post(reverse("chat:trash", args=[conversation.pk]), **JSON)
    assert response.json()["undo_url"] == reverse("chat:restore", args=[conversation.pk])
    assert client.get(reverse("chat:conversation", args=[conversation.pk])).status_code == 404
    assert client.get(reverse("chat:messages", args=[conversation.pk])).status_code == 404
    assert list(client.get(reverse("chat:index")).context["conversations"]) == []
    with pytest.raises(Http404):
        access.get_conversation_for_update(alice, conversation.pk)  # the socket's lookup

    response = client.post(reverse("chat:restore", args=[conversation.pk]), **JSON)
    assert response.json()["restored"] is True
    assert client.get(reverse("chat:conversation", args=[conversation.pk])).status_code == 200


def test_undo_has_a_time_limit_and_old_deletes_are_purged(client, alice, conversation):
    client.force_login(alice)
    client.post(reverse("chat:trash", args=[conversation.pk]))
    Conversation.objects.filter(pk=conversation.pk).update(
        deleted_at=timezone.now() - timedelta(seconds=lifecycle.UNDO_DELETE_SECONDS + 1)
    )
    assert client.post(reverse("chat:restore", args=[conversation.pk]), **JSON).status_code == 409
    Conversation.objects.filter(pk=conversation.pk).update(
        deleted_at=timezone.now() - timedelta(seconds=lifecycle.PURGE_AFTER_SECONDS + 1)
    )
    another = lifecycle.conversation_create(owner=alice)
    client.post(reverse("chat:trash", args=[another.pk]))  # a delete purges the old ones
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert Conversation.objects.filter(pk=another.pk).exists()


def test_delete_without_javascript_offers_undo_on_the_list(client, alice, conversation):
    client.force_login(alice)
    response = client.post(reverse("chat:trash", args=[conversation.pk]), follow=True)
    assert response.context["undo_conversation"] == conversation
    assert b'data-testid="undo-form"' in response.content


def test_the_list_is_grouped_by_date(client, alice):
    now = timezone.now()
    made = {}
    for name, age in [("old", 30), ("week", 3), ("today", 0)]:
        c = lifecycle.conversation_create(owner=alice)
        say(c, "user", name)
        Conversation.objects.filter(pk=c.pk).update(
            updated_at=now - timedelta(days=age), title=name
        )
        made[name] = c
    pinned = lifecycle.conversation_create(owner=alice)
    say(pinned, "user", "pinned")
    lifecycle.conversation_set_flags(conversation=pinned, pinned=True)
    client.force_login(alice)
    groups = client.get(reverse("chat:index")).context["groups"]
    assert [(name, [c.pk for c in items]) for name, items in groups] == [
        ("Pinned", [pinned.pk]),
        ("Today", [made["today"].pk]),
        ("Previous 7 days", [made["week"].pk]),
        ("Older", [made["old"].pk]),
    ]


def test_search_finds_titles_and_message_text_of_own_conversations(client, alice, bob):
    trip = lifecycle.conversation_create(owner=alice)
    say(trip, "user", "Where should we stay?")
    Conversation.objects.filter(pk=trip.pk).update(title="Trip to Lisbon")
    recipes = lifecycle.conversation_create(owner=alice)
    say(recipes, "user", "How do I bake sourdough bread?")
    say(recipes, "assistant", "Feed the starter the night before.")
    lifecycle.conversation_create(owner=alice)
    foreign = lifecycle.conversation_create(owner=bob)
    say(foreign, "user", "sourdough secrets from bob")
    gone = lifecycle.conversation_create(owner=alice)
    say(gone, "user", "sourdough in a deleted chat")
    lifecycle.conversation_trash(conversation=gone)

    client.force_login(alice)

    def found(q: str) -> list[int]:
        return [c.pk for c in client.get(reverse("chat:index"), {"q": q}).context["conversations"]]

    assert found("sourdough") == [recipes.pk]
    assert found("starter") == [recipes.pk]  # assistant text too
    assert found("lisbon") == [trip.pk]
    assert found("baking") == [recipes.pk]  # stemmed: bake / baking
    assert found("nothing-like-this") == []


# --- long conversations ------------------------------------------------------------------------


def test_the_page_shows_the_newest_messages_and_older_ones_load_on_request(
    client, alice, conversation
):
    made = chat(conversation, 120)
    client.force_login(alice)
    config = client.get(reverse("chat:conversation", args=[conversation.pk])).context["chat_config"]
    assert [m["id"] for m in config["messages"]] == [m.pk for m in made[-50:]]
    assert config["has_more"] is True

    url = reverse("chat:messages", args=[conversation.pk])
    page = client.get(url, {"before": made[-50].pk}).json()
    assert [m["id"] for m in page["messages"]] == [m.pk for m in made[20:70]]
    assert page["has_more"] is True
    last = client.get(url, {"before": made[20].pk}).json()
    assert [m["id"] for m in last["messages"]] == [m.pk for m in made[:20]]
    assert last["has_more"] is False
    assert set(last["messages"][0]) >= {"id", "parent_id", "versions", "role", "text", "seq"}
    assert client.get(url, {"before": "x"}).status_code == 400


@pytest.mark.parametrize("url_name", ["chat:conversation", "chat:messages"])
def test_query_count_is_the_same_for_10_and_500_messages(
    client, alice, django_assert_num_queries, url_name
):
    counts = []
    client.force_login(alice)
    for n in (10, 500):
        conversation = lifecycle.conversation_create(owner=alice)
        made = chat(conversation, n)
        for m in made[1::2]:
            ApiCall.objects.create(
                user=alice,
                conversation=conversation,
                message=m,
                model="m",
                input_tokens=5,
                output_tokens=7,
                cost=Decimal("0.001"),
            )
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse(url_name, args=[conversation.pk])).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_replies_carry_their_usage_model_and_cost(client, alice, conversation):
    question = say(conversation, "user", "hi")
    reply = say(conversation, "assistant", "hello", parent=question)
    for tokens in (10, 20):
        ApiCall.objects.create(
            user=alice,
            conversation=conversation,
            message=reply,
            model="claude-sonnet-4-6",
            input_tokens=tokens,
            output_tokens=3,
            cache_read_tokens=4,
            cache_write_5m_tokens=1,
            cost=Decimal("0.5"),
        )
    assert tree.usage_by_message([reply.pk]) == {
        reply.pk: {
            "input_tokens": 30,
            "output_tokens": 6,
            "cache_read_input_tokens": 8,
            "cache_creation_input_tokens": 2,
            "cost": "1.00000000",
            "model": "claude-sonnet-4-6",
            "calls": 2,
        }
    }
    client.force_login(alice)
    config = client.get(reverse("chat:conversation", args=[conversation.pk])).context["chat_config"]
    assert "usage" not in config["messages"][0]
    assert config["messages"][1]["usage"]["output_tokens"] == 6


def test_the_page_says_whether_search_is_allowed_and_shows_the_toggle_only_then(
    client, alice, conversation, settings
):
    Conversation.objects.filter(pk=conversation.pk).update(web_search=True)
    client.force_login(alice)
    url = reverse("chat:conversation", args=[conversation.pk])

    settings.CLAUDE_WEB_SEARCH = True
    page = client.get(url)
    config = page.context["chat_config"]
    assert config["web_search_allowed"] is True
    assert config["web_search"] is True
    assert config["web_search_url"] == reverse("chat:web_search", args=[conversation.pk])
    assert b'data-testid="web-search-toggle"' in page.content

    settings.CLAUDE_WEB_SEARCH = False
    page = client.get(url)
    config = page.context["chat_config"]
    assert config["web_search_allowed"] is False
    assert config["web_search"] is False  # a toggle left on from before does not search
    assert b'data-testid="web-search-toggle"' not in page.content


# --- export and import ---------------------------------------------------------------------------


def tool_conversation(alice) -> Conversation:
    conversation = lifecycle.conversation_create(owner=alice)
    Conversation.objects.filter(pk=conversation.pk).update(title="Sums")
    question = say(conversation, "user", "What is 2+2?")
    question.content.append({"type": "image", "attachment_id": 5, "width": 10, "height": 20})
    question.save()
    say(conversation, "assistant", "", parent=question)  # a failed try, then its regeneration
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        parent=question,
        content=[
            {"type": "text", "text": "Let me compute."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "calculator",
                "input": {"expression": "2+2"},
            },
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4"},
            {"type": "text", "text": "It is **4**."},
        ],
    )
    Conversation.objects.filter(pk=conversation.pk).update(leaf=reply)
    conversation.refresh_from_db()
    return conversation


def test_export_json_is_a_messages_api_body(client, alice):
    conversation = tool_conversation(alice)
    client.force_login(alice)
    response = client.get(reverse("chat:export_json", args=[conversation.pk]))
    assert "attachment" in response["Content-Disposition"]
    data = response.json()
    assert set(data) == {"model", "title", "system", "messages"}
    assert data["model"] == conversation.model and data["system"] == conversation.system_prompt.text
    assert data["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is 2+2?"},
                {"type": "text", "text": "[image 10×20 not included in the export]"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me compute."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "calculator",
                    "input": {"expression": "2+2"},
                },
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "4"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "It is **4**."}]},
    ]


def test_export_markdown(client, alice):
    conversation = tool_conversation(alice)
    client.force_login(alice)
    text = client.get(reverse("chat:export_md", args=[conversation.pk])).content.decode()
    assert text.startswith("# Sums\n")
    assert "## You\n\nWhat is 2+2?" in text and "**Tool call** `calculator`" in text
    assert "It is **4**." in text


def test_import_round_trips_an_export(client, alice, bob):
    conversation = tool_conversation(alice)
    client.force_login(alice)
    exported = client.get(reverse("chat:export_json", args=[conversation.pk])).content
    client.force_login(bob)
    response = client.post(reverse("chat:import"), exported, content_type="application/json")
    assert response.status_code == 201
    imported = Conversation.objects.get(pk=response.json()["id"])
    assert imported.owner == bob and imported.model == conversation.model
    path = tree.active_path(imported).messages
    assert [m.role for m in path] == ["user", "assistant"]  # tool results folded into the turn
    assert path[1].parent_id == path[0].pk and imported.leaf_id == path[1].pk
    assert path[1].text == "Let me compute.\n\nIt is **4**."
    assert json.loads(
        client.get(reverse("chat:export_json", args=[imported.pk])).content
    ) == json.loads(exported)


def test_import_as_an_uploaded_file(client, alice):
    from django.core.files.uploadedfile import SimpleUploadedFile

    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello"}]}
    client.force_login(alice)
    upload = SimpleUploadedFile("chat.json", json.dumps(body).encode(), "application/json")
    response = client.post(reverse("chat:import"), {"file": upload})
    imported = Conversation.objects.get(owner=alice)
    assert response["Location"] == reverse("chat:conversation", args=[imported.pk])
    assert imported.system_prompt.name == "default"  # no system: the site's prompt


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (
            json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}).encode(),
            "not one this site offers",
        ),
        (json.dumps({"model": "claude-sonnet-4-6", "messages": []}).encode(), "non-empty list"),
        (
            json.dumps(
                {"model": "claude-sonnet-4-6", "messages": [{"role": "assistant", "content": "x"}]}
            ).encode(),
            "alternate",
        ),
        (
            json.dumps(
                {
                    "model": "claude-sonnet-4-6",
                    "extra": 1,
                    "messages": [{"role": "user", "content": "x"}],
                }
            ).encode(),
            "Unknown keys",
        ),
        (
            json.dumps(
                {
                    "model": "claude-sonnet-4-6",
                    "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
                }
            ).encode(),
            "block",
        ),
        (
            json.dumps(
                {
                    "model": "claude-sonnet-4-6",
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}],
                        }
                    ],
                }
            ).encode(),
            "assistant messages",
        ),
        (b" " * (export.IMPORT_MAX_BYTES + 1), "larger than"),
    ],
)
def test_import_refuses_anything_else_with_a_clear_error(client, alice, body, error):
    client.force_login(alice)
    response = client.post(reverse("chat:import"), body, content_type="application/json")
    assert response.status_code == 400
    assert error in response.json()["error"]
    assert not Conversation.objects.filter(owner=alice).exists()


# --- settings ----------------------------------------------------------------------------------


def test_settings_save_a_versioned_prompt_and_new_conversations_use_it(client, alice):
    client.force_login(alice)
    assert client.get(reverse("chat:settings")).status_code == 200
    data = {
        "default_model": "claude-haiku-4-5",
        "system_prompt": "Be brief.",
        "time_zone": "Europe/Paris",
        "theme": "dark",
    }
    assert client.post(reverse("chat:settings"), data).status_code == 302
    client.post(reverse("chat:settings"), {**data, "system_prompt": "Be very brief."})
    client.post(reverse("chat:settings"), {**data, "system_prompt": "Be very brief."})  # unchanged
    prefs = UserSettings.objects.get(user=alice)
    name = f"user:{alice.pk}"
    assert list(SystemPrompt.objects.filter(name=name).values_list("version", "text")) == [
        (2, "Be very brief."),
        (1, "Be brief."),
    ]
    assert prefs.system_prompt.version == 2 and prefs.time_zone == "Europe/Paris"

    conversation = lifecycle.conversation_create(owner=alice)
    assert conversation.model == "claude-haiku-4-5"
    assert conversation.system_prompt == prefs.system_prompt
    page = client.get(reverse("chat:index"))
    assert b'data-theme="dark"' in page.content


def test_settings_validate_time_zone_model_and_theme(client, alice):
    client.force_login(alice)
    data = {
        "default_model": "nope",
        "system_prompt": "",
        "time_zone": "Mars/Olympus",
        "theme": "neon",
    }
    response = client.post(reverse("chat:settings"), data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert set(errors) == {"default_model", "time_zone", "theme"}
    assert not UserSettings.objects.filter(user=alice).exists()


def test_an_empty_prompt_goes_back_to_the_sites(client, alice):
    client.force_login(alice)
    data = {"default_model": "", "system_prompt": "Mine", "time_zone": "UTC", "theme": "system"}
    client.post(reverse("chat:settings"), data)
    client.post(reverse("chat:settings"), {**data, "system_prompt": ""})
    conversation = lifecycle.conversation_create(owner=alice)
    assert conversation.system_prompt.name == "default"
