"""Tool use, pause_turn, Continue after max_tokens, model choice and titles, end to end."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async

from chat.claude import catalogue
from chat.conversations import lifecycle
from chat.models import ApiCall, Message
from chat.replies import tools
from tests.conftest import open_socket, recv_until, run_turn

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]


@sync_to_async
def saved(message_id: int) -> tuple[Message, list[ApiCall]]:
    message = Message.objects.get(pk=message_id)
    return message, list(ApiCall.objects.filter(message=message).order_by("id"))


def text_of(frames: list[dict]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "delta")


async def test_a_parallel_two_tool_round(alice, titled_conversation, offline_requests):
    frames = await run_turn(
        alice,
        titled_conversation,
        "What is 6*7? [[offline call=calculator,current_time]]",
        timeout=20,
    )
    done = frames[-1]
    assert done["type"] == "done" and done["stop_reason"] == "end_turn"
    tool_frames = [f for f in frames if f["type"] == "tool"]
    finished = {f["name"]: f for f in tool_frames if f["result"] is not None}
    assert set(finished) == {"calculator", "current_time"}
    assert finished["calculator"]["result"] == "42" and not finished["calculator"]["is_error"]
    assert "UTC" in finished["current_time"]["result"]

    message, calls = await saved(done["message_id"])
    kinds = [b["type"] for b in message.content]
    assert kinds == ["text", "tool_use", "tool_use", "tool_result", "tool_result", "text"]
    uses = [b for b in message.content if b["type"] == "tool_use"]
    results = [b for b in message.content if b["type"] == "tool_result"]
    assert [r["tool_use_id"] for r in results] == [u["id"] for u in uses]
    assert [(c.purpose, c.round) for c in calls] == [("reply", 0), ("tool_round", 1)]
    # The second request carried the tool results bound to their ids, after the tool_use turn.
    second = offline_requests.all()[-1]["body"]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert [b["tool_use_id"] for b in second[-1]["content"]] == [u["id"] for u in uses]
    assert text_of(frames) == message.text


async def test_an_unknown_tool_is_answered_with_an_error_result(alice, titled_conversation):
    frames = await run_turn(alice, titled_conversation, "[[offline call=teleport]]", timeout=20)
    [result] = [f for f in frames if f["type"] == "tool" and f["result"] is not None]
    assert result["is_error"] and "Unknown tool 'teleport'" in result["result"]
    assert frames[-1]["type"] == "done" and frames[-1]["stop_reason"] == "end_turn"


async def test_a_tool_that_raises_is_answered_with_an_error_result(
    alice, titled_conversation, monkeypatch
):
    def explode(tool_input, context):
        raise RuntimeError("boom")

    registry = tools.default_registry()
    registry.register(
        tools.Tool("explode", "Always fails.", {"type": "object", "properties": {}}, explode)
    )
    monkeypatch.setattr(tools, "REGISTRY", registry)
    frames = await run_turn(alice, titled_conversation, "[[offline call=explode]]", timeout=20)
    [result] = [f for f in frames if f["type"] == "tool" and f["result"] is not None]
    assert result["is_error"] and result["result"] == "The tool explode failed: RuntimeError."
    assert frames[-1]["type"] == "done"


async def test_the_tool_loop_stops_at_the_iteration_cap(
    alice, titled_conversation, settings, offline_requests
):
    settings.CLAUDE_MAX_TOOL_ITERATIONS = 2
    frames = await run_turn(
        alice, titled_conversation, "2+2 [[offline call=calculator rounds=99]]", timeout=20
    )
    done = frames[-1]
    assert done["type"] == "done" and done["stop_reason"] == "end_turn"
    message, calls = await saved(done["message_id"])
    assert [c.round for c in calls] == [0, 1, 2, 3]
    requests = offline_requests.all()
    assert requests[-1]["body"]["tool_choice"] == {"type": "none"}
    limit_results = [b for b in message.content if b["type"] == "tool_result" and b.get("is_error")]
    assert len(limit_results) == 1 and "limit of 2 tool rounds" in limit_results[0]["content"]
    assert message.content[-1]["type"] == "text"


async def test_pause_turn_continues_the_turn(alice, titled_conversation, offline_requests):
    frames = await run_turn(
        alice, titled_conversation, "[[offline words=30 pause_after=7]]", timeout=20
    )
    done = frames[-1]
    assert done["stop_reason"] == "end_turn"
    message, calls = await saved(done["message_id"])
    assert [c.stop_reason for c in calls] == ["pause_turn", "end_turn"]
    assert [c.purpose for c in calls] == ["reply", "continuation"]
    assert len(message.text.split()) == 30 and text_of(frames) == message.text
    assert offline_requests.all()[-1]["body"]["messages"][-1]["role"] == "assistant"


async def test_max_tokens_then_continue_makes_one_joined_reply(
    alice, titled_conversation, settings
):
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 20
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to(
            {"type": "send", "client_id": str(uuid.uuid4()), "text": "[[offline words=50]]"}
        )
        first = await recv_until(ws, "done")
        assert first[-1]["stop_reason"] == "max_tokens"
        message, _ = await saved(first[-1]["message_id"])
        assert message.stop_reason == "max_tokens" and len(message.text.split()) == 20
        await ws.send_json_to({"type": "continue"})
        second = await recv_until(ws, "done", "error")
    assert second[0]["type"] == "start" and second[0]["continuation"] is True
    deltas = [f for f in second if f["type"] == "delta"]
    last_seq = max(f["seq"] for f in first if f["type"] == "delta")
    assert deltas[0]["seq"] == last_seq + 1  # numbering goes on: one reply
    assert second[-1]["stop_reason"] == "end_turn"
    message, calls = await saved(first[-1]["message_id"])
    assert len(message.text.split()) == 50
    assert message.text.split() == (text_of(first) + text_of(second)).split()
    assert [c.purpose for c in calls] == ["reply", "continuation"]
    count = await sync_to_async(Message.objects.filter(conversation=titled_conversation).count)()
    assert count == 2


async def test_continue_without_a_cut_reply_is_refused(alice, titled_conversation):
    await run_turn(alice, titled_conversation, "[[offline words=3]]", timeout=20)
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "continue"})
        error = (await recv_until(ws, "error"))[-1]
    assert error["code"] == "invalid_frame" and "nothing to continue" in error["message"]


@pytest.mark.parametrize("reason", ["refusal", "stop_sequence"])
async def test_refusals_and_stop_sequences_keep_their_state(alice, titled_conversation, reason):
    frames = await run_turn(
        alice, titled_conversation, f"[[offline words=5 stop={reason}]]", timeout=20
    )
    assert frames[-1]["stop_reason"] == reason
    message, _ = await saved(frames[-1]["message_id"])
    assert message.stop_reason == reason and message.status == "done"


async def test_a_model_chosen_for_the_conversation_is_used(
    alice, titled_conversation, offline_requests
):
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to(
            {
                "type": "send",
                "client_id": str(uuid.uuid4()),
                "text": "hi [[offline words=3]]",
                "model": "claude-haiku-4-5",
            }
        )
        await recv_until(ws, "done")
    assert offline_requests.all()[-1]["body"]["model"] == "claude-haiku-4-5"
    await sync_to_async(titled_conversation.refresh_from_db)()
    assert titled_conversation.model == "claude-haiku-4-5"


async def test_a_title_is_made_after_the_first_exchange(alice, offline_requests, settings):
    conversation = await sync_to_async(lifecycle.conversation_create)(owner=alice)
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(
            {"type": "send", "client_id": str(uuid.uuid4()), "text": "Plan a trip to Lyon"}
        )
        frames = await recv_until(ws, "title")
    kinds = [f["type"] for f in frames]
    assert kinds.index("done") < kinds.index("title")  # the reply never waits for it
    await sync_to_async(conversation.refresh_from_db)()
    assert conversation.title == frames[-1]["title"] and 0 < len(conversation.title) <= 81
    [side] = offline_requests.side()
    assert side["body"]["model"] == settings.CLAUDE_FAST_MODEL
    purposes = await sync_to_async(
        lambda: list(
            ApiCall.objects.filter(conversation=conversation).values_list("purpose", flat=True)
        )
    )()
    assert sorted(purposes) == ["reply", "title"]


async def test_a_failed_reply_with_tool_uses_keeps_the_history_valid(
    alice, titled_conversation, offline_requests
):
    await run_turn(
        alice,
        titled_conversation,
        "[[offline call=calculator error_after=0 rounds=1]] 1+1",
        timeout=20,
    )
    frames = await run_turn(alice, titled_conversation, "again [[offline words=3]]", timeout=20)
    assert frames[-1]["type"] == "done"


async def test_done_carries_the_context_gauge_and_budget_left(alice, titled_conversation, settings):
    frames = await run_turn(alice, titled_conversation, "[[offline words=8]]", timeout=20)
    meters = frames[-1]["meters"]
    usage = frames[-1]["usage"]
    prompt = (
        usage["input_tokens"]
        + usage["cache_creation_input_tokens"]
        + usage["cache_read_input_tokens"]
    )
    assert meters["context_tokens"] == prompt + usage["output_tokens"]
    assert meters["context_window"] == catalogue.get_model(titled_conversation.model).context_window
    assert meters["budget_used"] == prompt + usage["output_tokens"]
    assert meters["budget_limit"] == settings.CONVERSATION_TOKEN_BUDGET
