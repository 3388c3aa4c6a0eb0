"""Abuse limits: sends a minute, replies at once, uploads a minute — each a clear error."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse

from chat.conversations import lifecycle
from chat.models import Message
from tests.conftest import open_socket, recv_until, send_frame

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]


async def test_sends_a_minute_are_limited(alice, settings):
    settings.RATE_SENDS_PER_MINUTE = 2
    conversation = await sync_to_async(lifecycle.conversation_create)(owner=alice)
    async with open_socket(conversation.pk, alice) as ws:
        repeated = send_frame("[[offline words=2]]")
        await ws.send_json_to(repeated)
        await recv_until(ws, "done")
        await ws.send_json_to(send_frame("[[offline words=2]]"))
        await recv_until(ws, "done")
        await ws.send_json_to(send_frame("one too many"))
        error = (await recv_until(ws, "error"))[-1]
        assert error["code"] == "rate_limited" and error["retryable"] is True
        assert "limit is 2" in error["message"]
        await ws.send_json_to(repeated)  # a repeat of a saved send is still acknowledged
        assert (await recv_until(ws, "message"))[-1]["client_id"] == repeated["client_id"]
    count = await sync_to_async(Message.objects.filter(conversation=conversation).count)()
    assert count == 4


async def test_replies_at_once_are_capped(alice, settings):
    settings.RATE_MAX_CONCURRENT_REPLIES = 1
    first, second = [
        await sync_to_async(lifecycle.conversation_create)(owner=alice) for _ in range(2)
    ]
    async with open_socket(first.pk, alice) as a, open_socket(second.pk, alice) as b:
        await a.send_json_to(send_frame("[[offline words=300 pace_ms=5]]"))
        await recv_until(a, "start")
        await b.send_json_to(send_frame("hello"))
        error = (await recv_until(b, "error"))[-1]
        assert error["code"] == "rate_limited" and "1 at once" in error["message"]
        await a.send_json_to({"type": "stop"})
        await recv_until(a, "done")
        await b.send_json_to(send_frame("[[offline words=2]]"))
        assert (await recv_until(b, "done", "error"))[-1]["type"] == "done"


@pytest.mark.django_db
def test_uploads_a_minute_are_limited(client, alice, settings):
    settings.RATE_UPLOADS_PER_MINUTE = 2
    client.force_login(alice)
    body = {"content_type": "image/png", "byte_size": 100, "name": "a.png"}
    url = reverse("chat:attachment_start")
    statuses = [
        client.post(url, body, content_type="application/json").status_code for _ in range(3)
    ]
    assert statuses == [201, 201, 429]
    last = client.post(url, body, content_type="application/json").json()
    assert last["error"]["code"] == "rate_limited" and "limit is 2" in last["error"]["message"]
