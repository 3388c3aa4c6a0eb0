"""Continue on every model, and thinking blocks through the app, against the offline Claude."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat.claude import catalogue, request_body
from chat.conversations import lifecycle
from chat.models import ApiCall, Conversation, Message
from offline_claude import lineup
from offline_claude.replies import filler_chunks
from tests.conftest import open_socket, recv_until, send_and_wait

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]

OPUS_55 = "claude-opus-5-5"


@pytest.fixture
def served():
    """The models the app lists are the ones the offline Claude serves (as GET /v1/models would
    tell of Claude): a row the API lacks could not be tested here."""
    assert {m.id for m in catalogue.all_models()} == set(lineup.models())


async def new_conversation(user, title: str = "Test") -> Conversation:
    @sync_to_async
    def make():
        conversation = lifecycle.conversation_create(owner=user)
        conversation.title = title
        conversation.save()
        return conversation

    return await make()


@sync_to_async
def saved(message_id: int) -> tuple[Message, list[ApiCall], int]:
    message = Message.objects.get(pk=message_id)
    calls = list(ApiCall.objects.filter(message=message).order_by("id"))
    count = Message.objects.filter(conversation_id=message.conversation_id).count()
    return message, calls, count


def deltas(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["type"] == "delta"]


async def continue_until_done(user, model: str) -> None:
    """A reply cut by max_tokens, continued until it ends: one message, its text whole."""
    conversation = await new_conversation(user)
    words = 60
    async with open_socket(conversation.pk, user) as ws:
        first = await send_and_wait(ws, f"[[offline words={words}]]", model=model, timeout=30)
        assert first[-1]["type"] == "done" and first[-1]["stop_reason"] == "max_tokens", model
        message_id = first[-1]["message_id"]
        seen = deltas(first)
        for _ in range(6):
            await ws.send_json_to({"type": "continue"})
            frames = await recv_until(ws, "done", "error", timeout=30)
            assert frames[0]["type"] == "start" and frames[0]["continuation"] is True
            assert frames[-1]["type"] == "done", (model, frames[-1])
            assert frames[-1]["message_id"] == message_id
            seen += deltas(frames)
            if frames[-1]["stop_reason"] == "end_turn":
                break
    assert frames[-1]["stop_reason"] == "end_turn", model
    # seq numbering goes on across the continuations: one reply, no gaps.
    assert [d["seq"] for d in seen] == list(range(1, len(seen) + 1))
    message, calls, count = await saved(message_id)
    full = "".join(filler_chunks(words))
    assert message.text == full and "".join(d["text"] for d in seen) == full, model
    assert count == 2  # the request to go on is not a visible message
    assert [c.purpose for c in calls][0] == "reply"
    assert {c.purpose for c in calls[1:]} == {"continuation"} and len(calls) >= 2
    assert message.stream_seq == len(seen) and message.stop_reason == "end_turn"


@pytest.mark.parametrize("model", list(lineup.models()))
async def test_continue_ends_in_done_on_every_offline_model(alice, served, settings, model):
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 40
    await continue_until_done(alice, model)


async def test_continue_ends_in_done_on_every_catalogue_model(alice, served, settings):
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 40
    models = catalogue.all_models()
    assert models
    for model in models:
        await continue_until_done(alice, model.id)


async def test_continue_sends_the_cut_reply_and_a_user_turn_never_a_prefill(
    alice, served, settings, offline_requests
):
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 40
    conversation = await new_conversation(alice)
    async with open_socket(conversation.pk, alice) as ws:
        first = await send_and_wait(
            ws, "[[offline words=50]]", model="claude-sonnet-4-6", timeout=30
        )
        cut, _, _ = await saved(first[-1]["message_id"])
        await ws.send_json_to({"type": "continue"})
        await recv_until(ws, "done", "error", timeout=30)
    sent = offline_requests.all()[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    unmarked = [{k: v for k, v in b.items() if k != "cache_control"} for b in sent[1]["content"]]
    assert unmarked == [b for b in cut.content if b["type"] == "text"]  # whole, not stripped
    assert sent[-1]["content"] == [{"type": "text", "text": request_body.CONTINUE_PROMPT}]


async def test_a_three_round_tool_loop_on_opus_5_5_sends_thinking_back_unmodified(
    alice, served, offline_requests
):
    conversation = await new_conversation(alice)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(
            ws, "[[offline call=calculator rounds=3]] calculate 2 + 3", model=OPUS_55, timeout=30
        )
    assert frames[-1]["type"] == "done" and frames[-1]["stop_reason"] == "end_turn"
    message, calls, _ = await saved(frames[-1]["message_id"])
    assert [c.round for c in calls] == [0, 1, 2, 3]
    thinking = [b for b in message.content if b["type"] == "thinking"]
    assert len(thinking) == 4 and all(b["signature"] for b in thinking)
    assert message.content[0]["type"] == "thinking"
    requests = [r["body"] for r in offline_requests.all()]
    assert len(requests) == 4
    for index, body in enumerate(requests):
        assistants = [m for m in body["messages"] if m["role"] == "assistant"]
        assert len(assistants) == index
        # Each round's blocks went back first in their assistant message, as returned, in order.
        assert [m["content"][0] for m in assistants] == thinking[:index]
    # The text users see derives from text blocks only.
    assert message.text == Message(content=[b for b in message.content if b["type"] == "text"]).text


async def test_summarized_thinking_streams_as_thinking_frames(alice, served, offline_requests):
    conversation = await new_conversation(alice)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(
            ws, "[[offline words=6]] think about it", model=OPUS_55, effort="high", timeout=30
        )
    assert frames[-1]["type"] == "done"
    thinking_frames = [f for f in frames if f["type"] == "thinking"]
    assert thinking_frames and all("seq" not in f for f in thinking_frames)
    message, _, _ = await saved(frames[-1]["message_id"])
    block = message.content[0]
    assert block["type"] == "thinking" and block["signature"]
    assert "".join(f["text"] for f in thinking_frames) == block["thinking"]
    assert "".join(d["text"] for d in deltas(frames)) == message.text
    assert block["thinking"] not in message.text
    body = offline_requests.all()[-1]["body"]
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert body["output_config"] == {"effort": "high"}


async def test_the_next_turn_and_a_model_change_after_thinking_replies_succeed(
    alice, served, offline_requests
):
    conversation = await new_conversation(alice)
    async with open_socket(conversation.pk, alice) as ws:
        first = await send_and_wait(ws, "[[offline words=5]] one", model=OPUS_55, timeout=30)
        second = await send_and_wait(ws, "[[offline words=5]] two", model=OPUS_55, timeout=30)
        third = await send_and_wait(
            ws, "[[offline words=5]] three", model="claude-sonnet-4-6", timeout=30
        )
        fourth = await send_and_wait(
            ws, "[[offline words=5]] four", model="claude-fable-5-2", timeout=30
        )
    assert [f[-1]["type"] for f in (first, second, third, fourth)] == ["done"] * 4
    for record in offline_requests.all()[1:]:
        for m in record["body"]["messages"]:
            if m["role"] == "assistant":  # earlier turns' thinking is never sent again
                assert all(b["type"] not in request_body.THINKING_TYPES for b in m["content"])
    saved_first, _, _ = await saved(first[-1]["message_id"])
    assert saved_first.content[0]["type"] == "thinking"  # kept in the saved reply


async def test_redacted_thinking_round_trips_through_a_tool_loop(alice, served, offline_requests):
    conversation = await new_conversation(alice)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(
            ws, "[[offline call=calculator redact]] calculate 1 + 1", model=OPUS_55, timeout=30
        )
    assert frames[-1]["type"] == "done" and frames[-1]["stop_reason"] == "end_turn"
    message, _, _ = await saved(frames[-1]["message_id"])
    redacted = message.content[0]
    assert redacted["type"] == "redacted_thinking" and redacted["data"]
    second = offline_requests.all()[-1]["body"]["messages"]
    assert second[1]["content"][0] == redacted


async def test_continue_on_a_thinking_model_leaves_the_cut_replys_thinking_out(
    alice, served, settings, offline_requests
):
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 40
    conversation = await new_conversation(alice)
    async with open_socket(conversation.pk, alice) as ws:
        first = await send_and_wait(ws, "[[offline words=50]]", model=OPUS_55, timeout=30)
        await ws.send_json_to({"type": "continue"})
        second = await recv_until(ws, "done", "error", timeout=30)
    assert second[-1]["type"] == "done"
    sent = offline_requests.all()[-1]["body"]["messages"]
    assert all(b["type"] == "text" for b in sent[1]["content"])
    message, _, _ = await saved(first[-1]["message_id"])
    kinds = [b["type"] for b in message.content]
    assert kinds[:3] == ["thinking", "text", "continuation"] and kinds[3] == "thinking"


def test_thinking_params_ask_only_what_the_model_takes():
    # Always-thinking models refuse "disabled": with no effort they are asked nothing.
    assert request_body.thinking_params(support="always", effort=None) == {}
    assert request_body.thinking_params(support="none", effort=None) == {}
    for support in ("manual", "manual-and-adaptive", "adaptive"):
        assert request_body.thinking_params(support=support, effort=None) == {
            "thinking": {"type": "disabled"}
        }
    assert request_body.thinking_params(support="manual", effort="high") == {}
    assert request_body.thinking_params(support="none", effort="low") == {}
    for support in ("adaptive", "manual-and-adaptive", "always"):
        params = request_body.thinking_params(support=support, effort="max")
        assert params["thinking"] == {"type": "adaptive", "display": "summarized"}
        assert params["output_config"] == {"effort": "max"}
