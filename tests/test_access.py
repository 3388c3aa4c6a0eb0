"""Who gets in: every page and the socket require login and check ownership."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse

from chat.conversations import lifecycle
from chat.models import Conversation, Message
from tests.conftest import open_socket, recv

pytestmark = pytest.mark.django_db(transaction=True)


def owned_urls(pk: int) -> list[tuple[str, str]]:
    return [
        ("get", reverse("chat:conversation", args=[pk])),
        ("post", reverse("chat:rename", args=[pk])),
        ("post", reverse("chat:delete", args=[pk])),
    ]


def test_pages_require_login(client, conversation):
    urls = [("get", reverse("chat:index")), ("post", reverse("chat:new"))]
    for method, url in urls + owned_urls(conversation.pk):
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_another_users_conversation_is_not_found(client, bob, conversation):
    client.force_login(bob)
    for method, url in owned_urls(conversation.pk) + owned_urls(999999):
        assert getattr(client, method)(url, {"title": "x"}).status_code == 404, url
    conversation.refresh_from_db()
    assert conversation.title == ""


def test_it_checks_ownership_of_the_list(client, alice, bob, conversation):
    Message.objects.create(conversation=conversation, role="user", content=[])
    theirs = lifecycle.conversation_create(owner=bob)
    Message.objects.create(conversation=theirs, role="user", content=[])
    client.force_login(bob)
    page = client.get(reverse("chat:index"))
    assert page.status_code == 200
    assert list(page.context["conversations"]) == list(Conversation.objects.filter(owner=bob))


async def test_the_socket_refuses_anonymous_users(conversation):
    async with open_socket(conversation.pk, None, connect=False) as ws:
        connected, _ = await ws.connect()
        assert connected
        assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}


async def test_the_socket_hides_other_users_and_missing_conversations(bob, conversation):
    for pk in (conversation.pk, 999999):
        async with open_socket(pk, bob, connect=False) as ws:
            await ws.connect()
            assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}


async def test_the_socket_refuses_a_foreign_origin(alice, conversation):
    async with open_socket(
        conversation.pk, alice, origin=(b"origin", b"http://evil.example"), connect=False
    ) as ws:
        connected, _ = await ws.connect()
        assert not connected


BAD_FRAMES = [
    "not json",
    "[]",
    "42",
    '"send"',
    "{}",
    '{"type": 5}',
    '{"type": "explode"}',
    '{"type": "send"}',
    '{"type": "send", "client_id": "x", "text": "hi"}',
    '{"type": "send", "client_id": 7, "text": "hi"}',
    '{"type": "send", "client_id": "6f1c1b1e-2f5e-4b8a-9a43-0c1d2e3f4a5b"}',
    '{"type": "send", "client_id": "6f1c1b1e-2f5e-4b8a-9a43-0c1d2e3f4a5b", "text": "   "}',
    '{"type": "send", "client_id": "6f1c1b1e-2f5e-4b8a-9a43-0c1d2e3f4a5b", "text": ["hi"]}',
    '{"type": "send", "client_id": "6f1c1b1e-2f5e-4b8a-9a43-0c1d2e3f4a5b", "text": "hi", "model": "gpt-4"}',
    '{"type": "send", "client_id": "6f1c1b1e-2f5e-4b8a-9a43-0c1d2e3f4a5b", "text": "hi", "attachments": "a"}',
    '{"type": "resume", "after_seq": -1}',
    '{"type": "resume", "after_seq": "3"}',
    '{"type": "resume", "after_seq": true}',
]


async def test_malformed_frames_get_an_error_and_the_socket_stays_open(
    alice, conversation, settings
):
    settings.MESSAGE_MAX_CHARS = 1000
    frames = BAD_FRAMES + [
        json.dumps(
            {
                "type": "send",
                "client_id": "6f1c1b1e-2f5e-4b8a-9a43-0c1d2e3f4a5b",
                "text": "x" * 1001,
            }
        )
    ]
    async with open_socket(conversation.pk, alice) as ws:
        for raw in frames:
            await ws.send_to(text_data=raw)
            error = await recv(ws)
            assert error["type"] == "error" and error["code"] == "invalid_frame", raw
            assert error["message"] and error["retryable"] is False
        await ws.send_to(bytes_data=b"\x00\x01")
        assert (await recv(ws))["code"] == "invalid_frame"
        # still open and answering
        await ws.send_json_to({"type": "resume", "after_seq": 0})
        assert await ws.receive_nothing(timeout=0.2)
    assert await sync_to_async(conversation.messages.count)() == 0


async def test_unknown_attachments_are_refused(alice, conversation):
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(
            {
                "type": "send",
                "client_id": "6f1c1b1e-2f5e-4b8a-9a43-0c1d2e3f4a5b",
                "text": "hi",
                "attachments": [1],
            }
        )
        error = await recv(ws)
    assert error["code"] == "attachment_invalid"
    assert await sync_to_async(conversation.messages.count)() == 0
