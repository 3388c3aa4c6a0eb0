"""Regenerate, edit and resend, and switching between versions: the branch sent to Claude."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async

from chat.conversations import lifecycle, tree
from tests.conftest import open_socket, recv, recv_until, send_and_wait

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]


@sync_to_async
def path_texts(conversation) -> list[str]:
    conversation.refresh_from_db()
    return [m.text for m in tree.active_path(conversation).messages]


async def test_regenerate_makes_a_new_version_of_the_last_reply(
    alice, titled_conversation, offline_requests
):
    async with open_socket(titled_conversation.pk, alice) as ws:
        first = await send_and_wait(ws, "[[offline words=4]]")
        await ws.send_json_to({"type": "regenerate"})
        frames = await recv_until(ws, "done")
    history = frames[0]
    assert history["type"] == "history"
    assert history["from_parent_id"] == first[0]["message"]["id"]  # after the user message
    [new_reply] = history["messages"]
    old_id = first[-1]["message_id"]
    assert new_reply["versions"] == [old_id, new_reply["id"]] and new_reply["status"] == "streaming"
    assert frames[-1]["message_id"] == new_reply["id"]
    # The regenerated request is the same conversation without the old reply.
    first_request, second_request = (r["body"]["messages"] for r in offline_requests.all())
    assert first_request == second_request
    assert len(await path_texts(titled_conversation)) == 2


async def test_editing_a_message_continues_from_there_and_keeps_the_old_branch(
    alice, titled_conversation, offline_requests
):
    async with open_socket(titled_conversation.pk, alice) as ws:
        one = await send_and_wait(ws, "one [[offline words=2]]")
        await send_and_wait(ws, "two [[offline words=2]]")
        await ws.send_json_to(
            {
                "type": "edit",
                "message_id": one[0]["message"]["id"],
                "text": "uno [[offline words=3]]",
            }
        )
        frames = await recv_until(ws, "done")
    history = frames[0]
    assert history["from_parent_id"] is None  # the first message changed: everything after it
    edited, reply = history["messages"]
    assert edited["text"] == "uno [[offline words=3]]"
    assert edited["versions"] == [one[0]["message"]["id"], edited["id"]]
    assert reply["id"] == frames[-1]["message_id"]
    sent = offline_requests.all()[-1]["body"]["messages"]
    assert len(sent) == 1 and "uno" in sent[0]["content"][0]["text"]
    texts = await path_texts(titled_conversation)
    assert texts[0].startswith("uno") and len(texts) == 2

    # Switching back to the first version brings its whole branch back.
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "switch", "message_id": one[0]["message"]["id"]})
        switched = await recv(ws)
    assert switched["type"] == "history"
    assert [m["text"].split()[0] for m in switched["messages"][::2]] == ["one", "two"]
    texts = await path_texts(titled_conversation)
    assert len(texts) == 4 and texts[2].startswith("two")


async def test_the_next_message_follows_the_active_branch(
    alice, titled_conversation, offline_requests
):
    async with open_socket(titled_conversation.pk, alice) as ws:
        one = await send_and_wait(ws, "one [[offline words=2]]")
        await send_and_wait(ws, "two [[offline words=2]]")
        await ws.send_json_to(
            {
                "type": "edit",
                "message_id": one[0]["message"]["id"],
                "text": "uno [[offline words=2]]",
            }
        )
        await recv_until(ws, "done")
        await send_and_wait(ws, "dos [[offline words=2]]")
    sent = offline_requests.all()[-1]["body"]["messages"]
    words = [m["content"][0]["text"].split()[0] for m in sent if m["role"] == "user"]
    assert words == ["uno", "dos"]


async def test_versions_cannot_be_changed_while_a_reply_runs(alice, titled_conversation):
    async with open_socket(titled_conversation.pk, alice) as ws:
        first = await send_and_wait(ws, "[[offline words=2]]")
        await ws.send_json_to(
            {
                "type": "send",
                "client_id": str(uuid.uuid4()),
                "text": "[[offline words=300 pace_ms=5]]",
            }
        )
        await recv_until(ws, "start")
        for frame in (
            {"type": "regenerate"},
            {"type": "switch", "message_id": first[-1]["message_id"]},
            {"type": "edit", "message_id": first[0]["message"]["id"], "text": "x"},
        ):
            await ws.send_json_to(frame)
            error = (await recv_until(ws, "error"))[-1]
            assert error["code"] == "busy", frame
        await ws.send_json_to({"type": "stop"})
        await recv_until(ws, "done")


async def test_only_the_users_own_messages_can_be_edited(alice, bob, titled_conversation):
    other = await sync_to_async(lifecycle.conversation_create)(owner=bob)
    async with open_socket(other.pk, bob) as ws:
        theirs = await send_and_wait(ws, "[[offline words=2]]")
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to(
            {"type": "edit", "message_id": theirs[0]["message"]["id"], "text": "mine now"}
        )
        error = await recv(ws)
        await ws.send_json_to({"type": "switch", "message_id": theirs[0]["message"]["id"]})
        error2 = await recv(ws)
    assert error["code"] == "invalid_frame" and error2["code"] == "invalid_frame"
    assert await path_texts(titled_conversation) == []
