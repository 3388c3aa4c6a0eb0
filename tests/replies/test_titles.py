"""Titles name what the user asked, from the first message; the title call is a budgeted call."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat.conversations import lifecycle
from chat.models import ApiCall
from chat.replies import titles
from tests.conftest import open_socket, recv_until, send_frame

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]


async def titled(user, text: str) -> str:
    conversation = await sync_to_async(lifecycle.conversation_create)(owner=user)
    async with open_socket(conversation.pk, user) as ws:
        await ws.send_json_to(send_frame(text))
        frames = await recv_until(ws, "title", timeout=20)
    await sync_to_async(conversation.refresh_from_db)()
    assert conversation.title == frames[-1]["title"]
    return conversation.title


async def test_a_title_names_the_user_s_request_not_the_reply(alice, offline_requests):
    assert await titled(alice, "can you plan a trip to Lyon? Three days.") == "Plan a trip to Lyon"
    [side] = offline_requests.side()
    assert "title" in side["body"]["system"]
    [message] = side["body"]["messages"]
    assert "<request>\ncan you plan a trip to Lyon? Three days.\n</request>" in message["content"]
    reply = offline_requests.all()[-1]
    assert "Offline Claude" not in message["content"]  # the reply is not sent to be titled
    assert reply["body"]["stream"] and side["body"]["max_tokens"] == titles.TITLE_MAX_TOKENS


async def test_different_requests_get_different_titles(alice):
    first = await titled(alice, "Explain quicksort in Python")
    second = await titled(alice, "please write a haiku about rain")
    assert (first, second) == ("Explain quicksort in Python", "Write a haiku about rain")


async def test_the_title_call_is_in_the_ledger_beside_the_reply(alice):
    await titled(alice, "Summarise the French revolution")
    purposes = await sync_to_async(
        lambda: sorted(ApiCall.objects.filter(user=alice).values_list("purpose", flat=True))
    )()
    assert purposes == ["reply", "title"]


def test_a_request_without_text_is_titled_by_what_it_attaches():
    content = [
        {"type": "image", "attachment_id": 1, "width": 10, "height": 10},
        {"type": "document", "attachment_id": 2, "title": "Q3 report.pdf"},
    ]
    assert titles._attachments_named(content) == "(no text; attached: Q3 report.pdf, an image)"
    assert titles._attachments_named([]) == ""


def test_a_model_s_title_is_cleaned_to_one_short_line():
    assert titles.clean_title('Title: "**Trip to Lyon**"\nmore') == "Trip to Lyon"
    long = "word " * 40
    assert len(titles.clean_title(long)) <= titles.TITLE_MAX_CHARS + 1
