"""Retry: a failed reply is tried again in its place (docs/protocol.md, `retry`), and error
messages name the conversation's model."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat.claude import catalogue
from chat.conversations import lifecycle, tree
from chat.models import ApiCall, Message
from tests.conftest import open_socket, recv_until, send_and_wait

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]

# Fails after two deltas on its first request only: the retry's request succeeds.
FAILS_ONCE = "[[offline words=6 error_after=2 fail_times=1 pace_ms=1]]"


@sync_to_async
def path_of(conversation) -> list[Message]:
    conversation.refresh_from_db()
    return tree.active_path(conversation).messages


@sync_to_async
def message_exists(message_id: int) -> bool:
    return Message.objects.filter(pk=message_id).exists()


@sync_to_async
def calls_of(conversation) -> list[ApiCall]:
    return list(ApiCall.objects.filter(conversation=conversation).order_by("id"))


async def test_retry_redoes_a_failed_reply_in_its_place(
    alice, titled_conversation, offline_requests
):
    async with open_socket(titled_conversation.pk, alice) as ws:
        failed = await send_and_wait(ws, FAILS_ONCE)
        error = failed[-1]
        assert error["type"] == "error" and error["retryable"]
        await ws.send_json_to({"type": "retry", "message_id": error["message_id"]})
        frames = await recv_until(ws, "done", "error")
    history = frames[0]
    assert history["type"] == "history"
    user_id = failed[0]["message"]["id"]
    assert history["from_parent_id"] == user_id
    [attempt] = history["messages"]
    # A new attempt, not a version beside the failure: the failed reply is gone.
    assert attempt["status"] == "streaming" and attempt["versions"] == [attempt["id"]]
    assert frames[-1]["type"] == "done" and frames[-1]["message_id"] == attempt["id"]
    assert [f["seq"] for f in frames if f["type"] == "delta"][0] == 1
    assert not await message_exists(error["message_id"])
    path = await path_of(titled_conversation)
    assert [m.pk for m in path] == [user_id, attempt["id"]]
    assert len(path[1].text.split()) == 6 and path[1].status == Message.Status.DONE
    # Both attempts stay in the ledger; the same request was sent again.
    failed_call, retried_call = await calls_of(titled_conversation)
    assert failed_call.error_code and failed_call.message_id is None
    assert retried_call.message_id == attempt["id"] and not retried_call.error_code
    first, second = (r["body"]["messages"] for r in offline_requests.all())
    assert first == second


async def test_a_reply_that_did_not_fail_cannot_be_retried_and_nothing_starts(
    alice, titled_conversation, offline_requests
):
    async with open_socket(titled_conversation.pk, alice) as ws:
        done = await send_and_wait(ws, "[[offline words=3 pace_ms=1]]")
        offline_requests.clear()
        await ws.send_json_to({"type": "retry", "message_id": done[-1]["message_id"]})
        [error] = await recv_until(ws, "error")
    assert error["code"] == "invalid_frame" and error["message_id"] is None
    assert "can be retried" in error["message"]
    assert offline_requests.all() == []
    assert len(await path_of(titled_conversation)) == 2


async def test_a_stale_or_forged_retry_is_refused_and_starts_nothing(
    alice, bob, titled_conversation, offline_requests
):
    theirs = await sync_to_async(lifecycle.conversation_create)(owner=bob)
    async with open_socket(theirs.pk, bob) as ws:
        bobs = await send_and_wait(ws, "[[offline status=500 fail_times=9]]", timeout=15)
    async with open_socket(titled_conversation.pk, alice) as ws:
        failed = await send_and_wait(ws, FAILS_ONCE)
        await ws.send_json_to({"type": "retry", "message_id": failed[-1]["message_id"]})
        await recv_until(ws, "done")
        offline_requests.clear()
        stale = {"type": "retry", "message_id": failed[-1]["message_id"]}
        forged = {"type": "retry", "message_id": bobs[-1]["message_id"]}
        for frame in (stale, forged, {"type": "retry"}, {"type": "retry", "message_id": "1"}):
            await ws.send_json_to(frame)
            [error] = await recv_until(ws, "error")
            assert error["code"] == "invalid_frame" and error["message_id"] is None, frame
    assert offline_requests.all() == []
    assert await message_exists(bobs[-1]["message_id"])
    assert len(await path_of(titled_conversation)) == 2


async def test_an_interrupted_reply_can_be_retried(alice, titled_conversation):
    async with open_socket(titled_conversation.pk, alice) as ws:
        done = await send_and_wait(ws, "[[offline words=3 pace_ms=1]]")
        await sync_to_async(Message.objects.filter(pk=done[-1]["message_id"]).update)(
            status=Message.Status.INTERRUPTED
        )
        await ws.send_json_to({"type": "retry", "message_id": done[-1]["message_id"]})
        frames = await recv_until(ws, "done", "error")
    assert frames[0]["type"] == "history" and frames[-1]["type"] == "done"
    assert not await message_exists(done[-1]["message_id"])


async def test_an_error_message_names_the_conversations_model(alice, titled_conversation):
    label = catalogue.get_model(titled_conversation.model).label
    async with open_socket(titled_conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "[[offline status=500 fail_times=9]]", timeout=15)
    error = frames[-1]
    assert error["code"] == "upstream_error"
    assert error["message"] == f"{label} had a server error. Try again."
    assert "Claude had" not in error["message"]
