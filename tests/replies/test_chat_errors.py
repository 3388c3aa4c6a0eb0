"""Upstream failures reach the user as clear `error` frames; partial text and usage are kept."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async

from chat.models import ApiCall, Message
from tests.conftest import open_socket, recv_until, run_turn

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]


@sync_to_async
def saved(message_id: int) -> tuple[Message, list[ApiCall]]:
    return Message.objects.get(pk=message_id), list(ApiCall.objects.filter(message_id=message_id))


BEFORE_STREAM = [
    ("status=429 retry_after=7", "upstream_rate_limited", True),
    ("status=529", "upstream_overloaded", True),
    ("status=500", "upstream_error", True),
    ("status=401", "upstream_auth", False),
    ("status=403", "upstream_auth", False),
    ("status=400", "upstream_invalid", False),
    ("status=413", "context_too_long", False),
    (
        "status=429 error_type=rate_limit_error message=enforced_spend_limit_reached",
        "spend_limit",
        False,
    ),
]


@pytest.mark.parametrize(("directive", "code", "retryable"), BEFORE_STREAM)
async def test_an_http_error_before_the_stream_is_a_clear_error(
    alice, conversation, directive, code, retryable
):
    frames = await run_turn(alice, conversation, f"[[offline {directive}]]", timeout=15)
    error = frames[-1]
    assert error["type"] == "error"
    assert (error["code"], error["retryable"]) == (code, retryable)
    assert error["message"] and error["message_id"] == frames[1]["message_id"]
    message, [call] = await saved(error["message_id"])
    assert message.status == Message.Status.ERROR and message.error_code == code
    assert message.error_message == error["message"]
    assert call.error_code == code and call.output_tokens == 0 and call.cost == 0


async def test_rate_limit_tells_when_to_retry(alice, conversation):
    frames = await run_turn(alice, conversation, "[[offline status=429 retry_after=7]]", timeout=15)
    assert "7 s" in frames[-1]["message"]


MID_STREAM = [
    ("error_after=10", "upstream_overloaded"),
    ("error_after=10 error_type=api_error", "upstream_error"),
    ("drop_after=10", "upstream_disconnected"),
    ("stall_after=10 stall_s=30", "upstream_timeout"),
]


@pytest.mark.parametrize(("directive", "code"), MID_STREAM)
async def test_a_failure_mid_stream_keeps_the_partial_text_and_usage(
    alice, conversation, settings, directive, code
):
    settings.CLAUDE_READ_TIMEOUT_S = 1.0
    frames = await run_turn(
        alice, conversation, f"[[offline words=100 pace_ms=1 {directive}]]", timeout=15
    )
    error = frames[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", code, True)
    streamed = "".join(f["text"] for f in frames if f["type"] == "delta")
    assert len(streamed.split()) == 10
    message, [call] = await saved(error["message_id"])
    assert message.status == Message.Status.ERROR and message.text == streamed
    assert call.error_code == code
    assert call.input_tokens > 0  # message_start's usage, as the API reported it


async def test_after_an_error_the_conversation_goes_on(alice, conversation, offline_requests):
    await run_turn(alice, conversation, "[[offline status=500]]", timeout=15)
    frames = await run_turn(alice, conversation, "again [[offline words=4]]", timeout=15)
    assert frames[-1]["type"] == "done"
    last_request = offline_requests.all()[-1]["body"]
    # The failed reply had no text: the two user turns are merged, roles still alternate.
    assert [m["role"] for m in last_request["messages"]] == ["user"]


async def test_a_calls_ledger_row_is_written_when_the_api_reports_its_input(alice, conversation):
    # A process killed mid-reply never settles: the row written at message_start remains,
    # with the input the API reported and `interrupted` as its error.
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(
            {
                "type": "send",
                "client_id": str(uuid.uuid4()),
                "text": "[[offline words=500 pace_ms=5]]",
            }
        )
        frames = await recv_until(ws, "delta")
        call = await sync_to_async(ApiCall.objects.get)(message_id=frames[-1]["message_id"])
        assert call.error_code == "interrupted" and call.input_tokens > 0
        await ws.send_json_to({"type": "stop"})
        await recv_until(ws, "done")
    await sync_to_async(call.refresh_from_db)()
    assert call.error_code == "" and call.output_tokens >= 1
