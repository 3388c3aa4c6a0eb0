"""Malformed and hostile WebSocket frames: a clear error each, the socket survives, nothing stored.

Every case sends one frame on the real ASGI stack (origin and login checked), expects one `error`
frame with its code, then a valid `resume`, which must still be answered (with the saved last
reply), and finally checks that no message was stored or changed.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from contextlib import asynccontextmanager

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from chat.conversations import lifecycle
from chat.models import Attachment, Message
from tests.conftest import ORIGIN, open_socket, recv, recv_until, session_cookie

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]

UID = "6f1c1b1e-2f5e-4b8a-9a43-0c1d2e3f4a5b"
MAX_CHARS = 100_000


def send(**extra) -> str:
    return json.dumps({"type": "send", "client_id": UID, "text": "hi", **extra})


def exchange(conversation, text: str = "hello") -> tuple[Message, Message]:
    """A finished user → assistant exchange, saved as the app saves one."""
    user = Message.objects.create(
        conversation=conversation,
        role="user",
        content=[{"type": "text", "text": text}],
        status="done",
        client_id=uuid.uuid4(),
    )
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        parent=user,
        content=[{"type": "text", "text": "saved reply"}],
        status="done",
        stop_reason="end_turn",
    )
    conversation.leaf = reply
    conversation.save(update_fields=["leaf"])
    return user, reply


@pytest.fixture
def world(alice, bob, settings):
    settings.MESSAGE_MAX_CHARS = MAX_CHARS
    settings.STREAM_REPLAY_KEEP_S = 0  # resume answers at once with the saved message
    mine = lifecycle.conversation_create(owner=alice)
    exchange(mine)
    theirs = lifecycle.conversation_create(owner=bob)
    their_user, their_reply = exchange(theirs, "bob's secret")
    their_image = Attachment.objects.create(
        owner=bob,
        key=f"images/{bob.pk}/{uuid.uuid4().hex}.png",
        content_type="image/png",
        byte_size=10,
        width=1,
        height=1,
        state="verified",
        verified_at=timezone.now(),
    )
    return {
        "conversation": mine,
        "their_user_message": their_user.pk,
        "their_reply": their_reply.pk,
        "their_image": their_image.pk,
    }


# (id, frame — a str, bytes, or a callable of the world giving one —, expected error code)
HOSTILE = [
    ("not-json", "hello", "invalid_frame"),
    ("empty", "", "invalid_frame"),
    ("json-array", "[]", "invalid_frame"),
    ("json-number", "42", "invalid_frame"),
    ("json-null", "null", "invalid_frame"),
    ("json-string", '"send"', "invalid_frame"),
    ("no-type", "{}", "invalid_frame"),
    ("type-number", '{"type": 5}', "invalid_frame"),
    ("type-null", '{"type": null}', "invalid_frame"),
    ("type-object", '{"type": {"send": 1}}', "invalid_frame"),
    ("unknown-type", '{"type": "explode"}', "invalid_frame"),
    ("type-wrong-case", f'{{"type": "SEND", "client_id": "{UID}", "text": "hi"}}', "invalid_frame"),
    ("type-huge", json.dumps({"type": "x" * 200_000}), "invalid_frame"),
    ("dunder-type", '{"type": "__init__"}', "invalid_frame"),
    ("handler-name", '{"type": "cmd_send"}', "invalid_frame"),
    ("send-no-client-id", '{"type": "send", "text": "hi"}', "invalid_frame"),
    ("send-client-id-not-uuid", send(client_id="x"), "invalid_frame"),
    ("send-client-id-int", send(client_id=7), "invalid_frame"),
    ("send-client-id-huge", send(client_id="a" * 100_000), "invalid_frame"),
    ("send-no-text", json.dumps({"type": "send", "client_id": UID}), "invalid_frame"),
    ("send-whitespace", send(text=" \n\t\u3000 "), "invalid_frame"),
    ("send-text-list", send(text=["hi"]), "invalid_frame"),
    ("send-text-object", send(text={"$gt": ""}), "invalid_frame"),
    ("send-over-limit", send(text="x" * (MAX_CHARS + 1)), "invalid_frame"),
    ("send-1mib", send(text="é" * (1 << 20)), "invalid_frame"),
    ("send-unknown-model", send(model="gpt-4"), "invalid_frame"),
    ("send-model-huge", send(model="claude-" + "x" * 100_000), "invalid_frame"),
    ("send-model-int", send(model=4), "invalid_frame"),
    ("send-attachments-string", send(attachments="1"), "invalid_frame"),
    ("send-attachments-nested", send(attachments=[[1]]), "attachment_invalid"),
    ("send-attachments-bool", send(attachments=[True]), "attachment_invalid"),
    ("send-attachments-huge-id", send(attachments=[2**70]), "attachment_invalid"),
    ("send-attachments-negative", send(attachments=[-1]), "attachment_invalid"),
    ("send-attachments-many", send(attachments=list(range(1, 10_000))), "attachment_invalid"),
    (
        "send-attachment-of-another-user",
        lambda w: send(attachments=[w["their_image"]]),
        "attachment_invalid",
    ),
    (
        "send-lone-surrogate",
        f'{{"type": "send", "client_id": "{UID}", "text": "\\ud800"}}',
        "invalid_frame",
    ),
    ("send-nul-char", send(text="a\u0000b"), "invalid_frame"),
    ("resume-negative", '{"type": "resume", "after_seq": -1}', "invalid_frame"),
    ("resume-string", '{"type": "resume", "after_seq": "3"}', "invalid_frame"),
    ("resume-bool", '{"type": "resume", "after_seq": true}', "invalid_frame"),
    ("resume-float", '{"type": "resume", "after_seq": 1.5}', "invalid_frame"),
    ("resume-nan", '{"type": "resume", "after_seq": NaN}', "invalid_frame"),
    ("resume-infinity", '{"type": "resume", "after_seq": Infinity}', "invalid_frame"),
    ("resume-huge-float", '{"type": "resume", "after_seq": 1e400}', "invalid_frame"),
    ("duplicate-keys", '{"type": "resume", "type": "explode"}', "invalid_frame"),
    (
        "deeply-nested",
        '{"type": "send", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "invalid_frame",
    ),
    ("deeply-nested-unclosed", "[" * 200_000, "invalid_frame"),
    ("continue-nothing", '{"type": "continue"}', "invalid_frame"),
    ("edit-no-id", '{"type": "edit", "text": "x"}', "invalid_frame"),
    ("edit-id-string", '{"type": "edit", "message_id": "1", "text": "x"}', "invalid_frame"),
    (
        "edit-id-huge",
        json.dumps({"type": "edit", "message_id": 2**70, "text": "x"}),
        "invalid_frame",
    ),
    (
        "edit-another-users-message",
        lambda w: json.dumps({"type": "edit", "message_id": w["their_user_message"], "text": "x"}),
        "invalid_frame",
    ),
    ("switch-bool", '{"type": "switch", "message_id": true}', "invalid_frame"),
    ("switch-id-huge", json.dumps({"type": "switch", "message_id": 2**70}), "invalid_frame"),
    (
        "switch-to-another-users-message",
        lambda w: json.dumps({"type": "switch", "message_id": w["their_reply"]}),
        "invalid_frame",
    ),
    ("binary-frame", b"\x00\x01\x02", "invalid_frame"),
    ("binary-json", b'{"type": "resume", "after_seq": 0}', "invalid_frame"),
]


async def push(ws, frame: str | bytes) -> None:
    """Send one frame as the server receives it (the communicator refuses an empty text)."""
    key = "bytes" if isinstance(frame, bytes) else "text"
    await ws.send_input({"type": "websocket.receive", key: frame})


@asynccontextmanager
async def hostile_socket(conversation_id: int, user):
    """Like open_socket, but a consumer that crashed does not crash the teardown as well."""
    from claudeweb.asgi import application

    cookie = await sync_to_async(session_cookie)(user)
    comm = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation_id}/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await comm.connect(timeout=10)
    assert connected
    try:
        yield comm
    finally:
        with contextlib.suppress(BaseException):
            await comm.disconnect()


async def answer(ws) -> dict:
    """The next frame; a crash of the consumer becomes a short failure (a RecursionError's
    traceback is too deep for pytest to print)."""
    try:
        return await recv(ws)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"the socket crashed: {type(exc).__name__}: {str(exc)[:300]}", pytrace=False)


async def snapshot(conversation_id: int) -> list[tuple]:
    @sync_to_async
    def rows():
        return list(
            Message.objects.order_by("pk").values_list(
                "pk", "conversation_id", "status", "content", "client_id"
            )
        )

    return await rows()


@pytest.mark.parametrize(
    ("frame", "code"), [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE]
)
async def test_a_hostile_frame_gets_an_error_and_nothing_changes(alice, world, frame, code):
    if callable(frame):
        frame = frame(world)
    conversation = world["conversation"]
    before = await snapshot(conversation.pk)
    async with hostile_socket(conversation.pk, alice) as ws:
        await push(ws, frame)
        error = await answer(ws)
        assert error["type"] == "error", error
        assert error["code"] == code, error
        assert error["retryable"] is False and error["message_id"] is None
        assert isinstance(error["message"], str) and 0 < len(error["message"]) < 300
        assert "bob's secret" not in json.dumps(error)
        # the socket survives: a valid resume is still answered with the saved reply
        await ws.send_json_to({"type": "resume", "after_seq": 0})
        reply = await answer(ws)
        assert reply["type"] == "message", reply
        assert reply["message"]["text"] == "saved reply"
    assert await snapshot(conversation.pk) == before


def test_the_table_is_big_enough():
    assert len(HOSTILE) >= 30
    assert len({case[0] for case in HOSTILE}) == len(HOSTILE)


async def test_many_bad_frames_in_a_row_on_one_socket(alice, world):
    """One socket, every hostile frame back to back: one error each, in order, then resume."""
    conversation = world["conversation"]
    before = await snapshot(conversation.pk)
    frames = [f(world) if callable(f) else f for _, f, _ in HOSTILE]
    async with hostile_socket(conversation.pk, alice) as ws:
        for frame in frames:
            await push(ws, frame)
        codes = [(await answer(ws))["code"] for _ in frames]
        assert codes == [code for _, _, code in HOSTILE]
        await ws.send_json_to({"type": "resume", "after_seq": 0})
        assert (await answer(ws))["type"] == "message"
    assert await snapshot(conversation.pk) == before


async def test_a_client_id_reused_in_another_conversation_starts_a_new_turn_there(
    alice, world, offline_claude_url
):
    """client_id is an idempotency key per conversation: reusing it elsewhere never answers
    with (or reveals) the other conversation's message."""
    first = world["conversation"]
    second = await sync_to_async(lifecycle.conversation_create)(owner=alice)
    client_id = str(uuid.uuid4())
    async with open_socket(first.pk, alice) as ws:
        await ws.send_json_to(
            {"type": "send", "client_id": client_id, "text": "one [[offline words=3]]"}
        )
        frames = await recv_until(ws, "done", "error")
        assert frames[-1]["type"] == "done"
        first_ack = frames[0]["message"]
    async with open_socket(second.pk, alice) as ws:
        await ws.send_json_to(
            {"type": "send", "client_id": client_id, "text": "two [[offline words=3]]"}
        )
        frames = await recv_until(ws, "done", "error")
        assert frames[-1]["type"] == "done"
        ack = frames[0]
    assert ack["type"] == "message" and ack["client_id"] == client_id
    assert ack["message"]["id"] != first_ack["id"]
    assert ack["message"]["text"].startswith("two")
    counts = await sync_to_async(lambda: (first.messages.count(), second.messages.count()))()
    assert counts == (4, 2)


async def test_a_repeated_client_id_is_acknowledged_again_and_starts_nothing(
    alice, world, offline_claude_url
):
    conversation = world["conversation"]
    client_id = str(uuid.uuid4())
    async with open_socket(conversation.pk, alice) as ws:
        frame = {"type": "send", "client_id": client_id, "text": "once [[offline words=3]]"}
        await ws.send_json_to(frame)
        assert (await recv_until(ws, "done", "error"))[-1]["type"] == "done"
        before = await snapshot(conversation.pk)
        await ws.send_json_to({**frame, "text": "changed text"})
        ack = await recv(ws)
        assert ack["type"] == "message" and ack["client_id"] == client_id
        assert ack["message"]["text"].startswith("once")
        assert await ws.receive_nothing(timeout=0.3)
    assert await snapshot(conversation.pk) == before


async def test_a_send_while_a_reply_runs_is_busy_and_stores_nothing(
    alice, world, offline_claude_url
):
    conversation = world["conversation"]
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(
            {
                "type": "send",
                "client_id": str(uuid.uuid4()),
                "text": "[[offline words=200 pace_ms=10]]",
            }
        )
        await recv_until(ws, "start")
        before = await sync_to_async(conversation.messages.count)()
        await ws.send_json_to({"type": "send", "client_id": str(uuid.uuid4()), "text": "again"})
        for kind in ("regenerate", "continue"):
            await ws.send_json_to({"type": kind})
        errors = []
        while len(errors) < 3:
            frame = await recv(ws)
            if frame["type"] == "error" and frame["message_id"] is None:
                errors.append(frame)
        assert errors[0]["code"] == "busy" and errors[0]["retryable"] is True
        assert await sync_to_async(conversation.messages.count)() == before
        await ws.send_json_to({"type": "stop"})
        assert (await recv_until(ws, "done"))[-1]["stop_reason"] == "stopped"
