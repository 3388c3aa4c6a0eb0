"""Fitting the history to the context window; calculator safety; caching prefix."""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import sync_to_async

from chat.claude import context, request_body
from chat.conversations import lifecycle
from chat.models import ApiCall, Conversation, Message
from chat.replies import tools
from tests.conftest import open_socket, recv_until

TINY = {
    "id": "claude-haiku-4-5",  # a served id, with a window small enough to fold
    "label": "Tiny test model",
    "context_window": 4000,
    "max_output": 400,
    "price_input": "1.00",
    "price_cache_write_5m": "1.25",
    "price_cache_write_1h": "2.00",
    "price_cache_read": "0.10",
    "price_output": "5.00",
    "price_web_search_per_1k": "10.00",
}


@pytest.fixture
def tiny_model(settings, tmp_path):
    catalogue_file = tmp_path / "models.json"
    catalogue_file.write_text(json.dumps({"models": [TINY]}))
    settings.CLAUDE_MODEL_CATALOGUE = catalogue_file
    settings.CLAUDE_DEFAULT_MODEL = settings.CLAUDE_FAST_MODEL = TINY["id"]
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 300
    return TINY


def filler(words: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(words))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_older_turns_are_folded_into_a_stored_summary(alice, tiny_model, offline_requests):
    conversation = await sync_to_async(lifecycle.conversation_create)(owner=alice)

    @sync_to_async
    def seed():
        conversation.title = "Long"
        conversation.save()
        parent = None
        for i in range(8):  # 8 × 2 × ~300 tokens ≈ 4,800: over 75 % of a 4,000 window
            for role in ("user", "assistant"):
                text = filler(200, f"{role[0]}{i}w")
                parent = Message.objects.create(
                    conversation=conversation,
                    parent=parent,
                    role=role,
                    content=[{"type": "text", "text": text}],
                )

    await seed()
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(
            {"type": "send", "client_id": str(uuid.uuid4()), "text": "and now? [[offline words=5]]"}
        )
        frames = await recv_until(ws, "done", "error", timeout=20)
    assert frames[-1]["type"] == "done"
    await sync_to_async(conversation.refresh_from_db)()
    assert conversation.summary and conversation.summary_upto_id
    [summary_call] = offline_requests.side()
    folded_text = summary_call["body"]["messages"][0]["content"]
    assert "u0w0" in folded_text  # the oldest turn went into the summary
    reply_request = offline_requests.all()[-1]
    messages = reply_request["body"]["messages"]
    first_text = messages[0]["content"][0]["text"]
    assert first_text.startswith(request_body.SUMMARY_PREFIX)
    # folded turns are not sent again (only the summary speaks of them)
    assert "u0w0" not in json.dumps([messages[0]["content"][1:], *messages[1:]])
    assert "and now?" in json.dumps(messages[-1])
    call = await sync_to_async(ApiCall.objects.get)(
        message_id=frames[-1]["message_id"], purpose="reply"
    )
    sent = call.input_tokens + call.cache_write_5m_tokens + call.cache_read_tokens
    assert sent <= TINY["context_window"] * context.FOLD_THRESHOLD
    purposes = await sync_to_async(
        lambda: sorted(
            ApiCall.objects.filter(conversation=conversation).values_list("purpose", flat=True)
        )
    )()
    assert purposes == ["reply", "summary"]


def turn(id, role, *blocks, tokens=None):
    return context.StoredTurn(id=id, role=role, content=list(blocks), token_count=tokens)


def text(s):
    return {"type": "text", "text": s}


def image(n):
    return {"type": "image", "attachment_id": n, "width": 1000, "height": 1500}


def test_images_in_old_turns_are_dropped_before_text_is_folded():
    turns = [
        turn(1, "user", text("a"), image(1)),
        turn(2, "assistant", text("b")),
        turn(3, "user", text("c")),
        turn(4, "assistant", text("d")),
        turn(5, "user", text("e"), image(2)),
    ]
    fit = context.fit(
        turns=turns,
        summary="",
        system_tokens=10,
        window=4000,
        max_tokens=300,
        resolve_attachment=lambda block: {
            "type": "image",
            "source": {"id": block["attachment_id"]},
        },
    )
    assert fit.images_dropped and not fit.fold
    sent = json.dumps(fit.messages)
    assert '"id": 2' in sent and '"id": 1' not in sent


def test_an_assistant_turn_is_split_around_its_tool_results():
    use = {"type": "tool_use", "id": "t1", "name": "calculator", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "2"}
    messages = request_body.to_api_messages(
        [turn(1, "user", text("hi")), turn(2, "assistant", text("x"), use, result, text("y"))],
        lambda b: None,
    )
    assert [(m["role"], [b["type"] for b in m["content"]]) for m in messages] == [
        ("user", ["text"]),
        ("assistant", ["text", "tool_use"]),
        ("user", ["tool_result"]),
        ("assistant", ["text"]),
    ]


def test_a_dangling_tool_use_gets_an_error_result():
    use = {"type": "tool_use", "id": "t9", "name": "calculator", "input": {}}
    content = request_body.answer_dangling_tool_uses([text("x"), use])
    assert content[-1]["tool_use_id"] == "t9" and content[-1]["is_error"]


def test_the_cache_breakpoint_is_on_the_stable_prefix_and_never_stored():
    stored = [text("old reply")]
    messages = [
        {"role": "user", "content": [text("q")]},
        {"role": "assistant", "content": stored},
        {"role": "user", "content": [text("new")]},
    ]
    marked = request_body.mark_cache_breakpoint(messages)
    assert marked[1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in stored[0]


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2+3*4", "14"), ("(1+1)**10", "1024"), ("sqrt(16)", "4"), ("7/2", "3.5"), ("2^8", "256")],
)
def test_the_calculator_computes(expression, value):
    assert tools.calculator({"expression": expression}, None) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('id')",
        "().__class__",
        "open('/etc/passwd')",
        "9**9**9",
        "1/0",
        "a" * 600,
        "lambda: 1",
    ],
)
def test_the_calculator_refuses_anything_else(expression):
    with pytest.raises(tools.ToolError):
        tools.evaluate(expression)


@pytest.mark.django_db
def test_tool_input_is_validated_against_the_schema():
    context_ = tools.ToolContext(user_id=1, conversation_id=1)
    result = tools.REGISTRY.run("calculator", {"expr": "1"}, context_)
    assert result.is_error and result.content.startswith("Invalid input for calculator")
    assert tools.REGISTRY.run("current_time", {"time_zone": "Mars/Base"}, context_).is_error


@pytest.mark.django_db
def test_search_finds_only_the_users_own_messages(alice, bob):
    mine = lifecycle.conversation_create(owner=alice)
    theirs = lifecycle.conversation_create(owner=bob)
    for conversation, word in ((mine, "zebra mine"), (theirs, "zebra theirs")):
        Message.objects.create(conversation=conversation, role="user", content=[text(word)])
    here = Conversation.objects.create(owner=alice, model="claude-haiku-4-5")
    found = tools.search_conversations(
        {"query": "zebra"}, tools.ToolContext(user_id=alice.pk, conversation_id=here.pk)
    )
    assert "zebra mine" in found and "theirs" not in found
