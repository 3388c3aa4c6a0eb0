"""The offline Claude server, exercised through the real anthropic SDK and raw HTTP.

No Django and no database: the server runs as a subprocess on a free loopback port.
Run alone with ``pytest tests/offline_claude/test_offline_claude.py -p no:django``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import math
import time
import uuid
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message
from PIL import Image

from offline_claude import lineup
from offline_claude.directives import parse_text
from offline_claude.replies import analyse_turn, chunk_text, filler_chunks

MODEL = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"  # the one served model that still accepts a prefill
HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
EPHEMERAL = {"type": "ephemeral"}


def user(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def body(content: Any = "x", **fields: Any) -> dict[str, Any]:
    """A raw Messages request body; ``field=None`` leaves the field out."""
    base = {"model": MODEL, "max_tokens": 5, "messages": user(content), **fields}
    return {k: v for k, v in base.items() if v is not None}


async def ask(
    client: anthropic.AsyncAnthropic, content: Any = None, max_tokens: int = 100, **kw: Any
) -> Message:
    """Non-streamed request; ``content`` is the single user message unless ``messages=``."""
    kw.setdefault("messages", user(content))
    kw.setdefault("model", MODEL)
    return await client.messages.create(max_tokens=max_tokens, **kw)


async def ask_stream(
    client: anthropic.AsyncAnthropic,
    content: Any = None,
    max_tokens: int = 100,
    sink: list[str] | None = None,
    **kw: Any,
) -> Message:
    """Streamed request via ``messages.stream``; text deltas are appended to ``sink``."""
    kw.setdefault("messages", user(content))
    kw.setdefault("model", MODEL)
    async with client.messages.stream(max_tokens=max_tokens, **kw) as stream:
        async for chunk in stream.text_stream:
            if sink is not None:
                sink.append(chunk)
        assert stream.request_id and stream.request_id.startswith("req_")
        return await stream.get_final_message()


def nonce() -> str:
    """Unique text, so tests do not share cache entries or fail_times counters."""
    return uuid.uuid4().hex


def png_b64(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for raw in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in raw.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def assert_maps_to(exc: BaseException, code: str) -> None:
    """The app's error mapping (chat.claude.errors) gives `code`, retryable, for what the SDK raised."""
    from chat.claude.errors import to_claude_error

    mapped = to_claude_error(exc)
    assert mapped is not None, f"unmapped {type(exc).__name__}: {exc!r}"
    assert (mapped.code, mapped.retryable) == (code, True)


async def wait_idle(http: httpx2.AsyncClient, timeout: float = 3.0) -> None:
    """Wait until the only request in flight on the server is the stats request itself."""
    deadline = time.monotonic() + timeout
    while True:
        stats = (await http.get("/_offline/stats")).json()
        if stats["active_requests"] == 1 or time.monotonic() > deadline:
            assert stats["active_requests"] == 1, stats
            return
        await asyncio.sleep(0.05)


# --- directives and chunking --------------------------------------------------------


def test_directive_parsing_and_chunking() -> None:
    parsed = parse_text("hello\n[[offline reply pace_ms=2.5 stop=refusal]]\n  exact <b>text</b>\n")
    assert parsed.directives.reply and parsed.directives.pace_ms == 2.5
    assert parsed.directives.stop == "refusal"
    assert parsed.reply_text == "  exact <b>text</b>\n"
    assert "[[offline" not in parsed.visible
    # The last directive wins (merged user turns), all are stripped from the visible text.
    merged = parse_text("[[offline status=500]]\n\nagain [[offline words=4]]")
    assert merged.directives.words == 4 and merged.directives.status is None
    assert merged.visible.strip() == "again"
    text = " lead\n\nmany   spaces\ttabs ünïcode 🎉\n"
    assert "".join(chunk_text(text)) == text
    assert len(filler_chunks(37)) == 37 and len("".join(filler_chunks(37)).split()) == 37
    tools = parse_text("[[offline call=calc,get_time rounds=3 pause_after=4]]").directives
    assert tools.call == ("calc", "get_time") and tools.rounds == 3 and tools.pause_after == 4
    assert parse_text("[[offline words=1]]").directives.rounds == 1


def test_turn_analysis() -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4"}
    messages = [
        {"role": "user", "content": "old [[offline words=2]]"},
        {"role": "assistant", "content": "lorem ipsum."},
        {"role": "user", "content": [{"type": "text", "text": "new"}]},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [result]},
    ]
    turn = analyse_turn(messages)
    assert (turn.anchor, turn.tool_rounds, turn.after_tool_results) == (2, 1, True)
    assert turn.prefill is None and not turn.first_round
    prefilled = analyse_turn([*messages, {"role": "assistant", "content": [use]}])
    assert prefilled.tool_rounds == 1 and prefilled.prefill == "" and not prefilled.first_round
    # Text next to tool results starts a new turn; so does an image-only message.
    mixed = [*messages[:4], {"role": "user", "content": [result, {"type": "text", "text": "hi"}]}]
    assert analyse_turn(mixed).anchor == 4 and analyse_turn(mixed).tool_rounds == 0
    assert analyse_turn([*messages[:2], {"role": "user", "content": [BMP]}]).anchor == 2
    first = analyse_turn(messages[:3])
    assert first.first_round and first.anchor == 2


# --- replies, streamed and not -------------------------------------------------------


@pytest.mark.asyncio
async def test_stream_reply_mode_is_exact(client: anthropic.AsyncAnthropic) -> None:
    text = "Hi <script>alert(1)</script> **bold**\n\n```py\nprint('x')\n```\n  trailing  "
    prompt = f"[[offline reply]]\n{text}"
    deltas: list[str] = []
    message = await ask_stream(client, prompt, sink=deltas)
    assert "".join(deltas) == text and deltas == chunk_text(text)
    assert message.content[0].type == "text" and message.content[0].text == text
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn"
    usage = message.usage
    assert usage.output_tokens == len(deltas) and usage.input_tokens == math.ceil(len(prompt) / 4)
    assert usage.cache_read_input_tokens == 0 and usage.cache_creation_input_tokens == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [True, False])
async def test_reply_escapes_write_nul_and_lone_surrogates(
    client: anthropic.AsyncAnthropic, stream: bool
) -> None:
    prompt = "[[offline reply escapes]]\nnul\\u0000here lone\\ud800 pair\\ud83d\\ude00 \\u00e9"
    expected = "nul\x00here lone\ud800 pair\U0001f600 \u00e9"  # a pair is one character
    deltas: list[str] = []
    if stream:
        message = await ask_stream(client, prompt, sink=deltas)
        assert "".join(deltas) == expected
    else:
        message = await ask(client, prompt)
    assert message.content[0].text == expected


@pytest.mark.asyncio
async def test_reply_without_escapes_keeps_backslashes(client: anthropic.AsyncAnthropic) -> None:
    message = await ask(client, "[[offline reply]]\nsee \\u0000")
    assert message.content[0].text == "see \\u0000"


@pytest.mark.asyncio
async def test_raw_sse_sequence_and_headers(http: httpx2.AsyncClient) -> None:
    request = body("[[offline words=3]]", stream=True, max_tokens=50)
    response = await http.post("/v1/messages", headers=HEADERS, json=request)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    events = parse_sse(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 1
    assert start["usage"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 0,
    }
    delta = events[-2][1]
    assert delta["delta"] == {
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_details": None,
    }
    assert delta["usage"] == {
        "input_tokens": start["usage"]["input_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 3,
    }


@pytest.mark.asyncio
async def test_non_stream_words(client: anthropic.AsyncAnthropic) -> None:
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=100, messages=user("[[offline words=7]]")
    )
    assert raw.headers["request-id"].startswith("req_")
    message = await raw.parse()
    assert message.content[0].text == "".join(filler_chunks(7))
    assert message.usage.output_tokens == 7 and message.stop_reason == "end_turn"
    assert message.model == MODEL and message.role == "assistant"


@pytest.mark.asyncio
async def test_a_title_request_is_answered_with_a_title_of_the_user_s_words(
    client: anthropic.AsyncAnthropic,
) -> None:
    system = "You write titles for conversations. Reply with the title only."
    text = "<request>\ncan you plan a trip to Lyon? Three days, by train.\n</request>\n\nTitle it."
    message = await ask(client, text, max_tokens=30, system=system)
    assert message.content[0].text == "Plan a trip to Lyon"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 5
    # Without tags, the whole message is the request; a system prompt in blocks counts too.
    blocks = [{"type": "text", "text": system}]
    message = await ask(client, "please explain quicksort. In Python", max_tokens=30, system=blocks)
    assert message.content[0].text == "Explain quicksort"


@pytest.mark.asyncio
async def test_without_a_title_instruction_the_request_is_answered(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await ask(client, "can you plan a trip to Lyon?", max_tokens=300, system="Be brief.")
    assert "Offline Claude" in message.content[0].text
    # Offering tools means a task, not a title, even when the system prompt says "title".
    tool = {"name": "lookup", "description": "d", "input_schema": {"type": "object"}}
    message = await ask(
        client, "plan a trip", max_tokens=300, system="Give each answer a title.", tools=[tool]
    )
    assert "Offline Claude" in message.content[0].text


@pytest.mark.asyncio
async def test_default_reply_describes_the_request(client: anthropic.AsyncAnthropic) -> None:
    png = {"type": "base64", "media_type": "image/png", "data": png_b64(64, 30)}
    text = "What do you see in these two pictures of my cat?\n[[offline pace_ms=0]]"
    blocks = [
        {"type": "image", "source": png},
        {"type": "image", "source": {"type": "url", "url": "https://img.example.org/cat.jpg"}},
        {"type": "text", "text": text},
    ]
    message = await ask(client, blocks, max_tokens=1000, system="Be brief.")
    reply = message.content[0].text
    assert "Offline Claude" in reply and "What do you see in these two pictures" in reply
    assert "`image/png` of 64×30 px" in reply and "`img.example.org`" in reply
    assert "```python" in reply and "[[offline" not in reply
    assert 80 <= len(reply.split()) <= 150
    expected = math.ceil(9 / 4) + math.ceil(64 * 30 / 750) + 1000 + math.ceil(len(text) / 4)
    assert message.usage.input_tokens == expected
    counted = await client.messages.count_tokens(
        model=MODEL, system="Be brief.", messages=user(blocks)
    )
    assert counted.input_tokens == expected


@pytest.mark.asyncio
async def test_count_tokens_includes_tools(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient
) -> None:
    tool = {"name": "calc", "description": "Adds.", "input_schema": {"type": "object"}}
    counted = await client.messages.count_tokens(
        model=MODEL,
        messages=user("x" * 41),
        system=[{"type": "text", "text": "y" * 8}],
        tools=[tool],
    )
    tool_json = json.dumps(tool, sort_keys=True, separators=(",", ":"))
    assert counted.input_tokens == 11 + 2 + math.ceil(len(tool_json) / 4)
    raw = await http.post("/v1/messages/count_tokens", headers=HEADERS, json=body("abcd"))
    assert raw.json() == {"input_tokens": 1}


@pytest.mark.asyncio
async def test_max_tokens_truncates(client: anthropic.AsyncAnthropic) -> None:
    message = await ask(client, "[[offline words=50]]", max_tokens=10)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 10
    assert message.content[0].text == "".join(filler_chunks(50)[:10])
    final = await ask_stream(client, "hello", max_tokens=4)
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 4


@pytest.mark.asyncio
async def test_stop_reasons(client: anthropic.AsyncAnthropic) -> None:
    refused = await ask(client, "[[offline words=2 stop=refusal]]")
    assert refused.stop_reason == "refusal"
    sequence = await ask(client, "[[offline words=2 stop=stop_sequence]]")
    assert (sequence.stop_reason, sequence.stop_sequence) == ("stop_sequence", "###")
    cut = await ask(client, "hi", max_tokens=500, stop_sequences=["code sample"])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == "code sample"
    assert cut.content[0].text.endswith("A small ")


@pytest.mark.asyncio
async def test_thinking_block_when_enabled(client: anthropic.AsyncAnthropic) -> None:
    thinking_on = {"type": "enabled", "budget_tokens": 1024}
    message = await ask_stream(client, "Think about it", max_tokens=3000, thinking=thinking_on)
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature
    assert text.type == "text" and "Offline Claude" in text.text


# --- errors ----------------------------------------------------------------------

SPEND_LIMIT = "status=429 error_code=enforced_spend_limit_reached"
STATUS_CASES = [
    ("status=400", anthropic.BadRequestError, "invalid_request_error"),
    ("status=401", anthropic.AuthenticationError, "authentication_error"),
    ("status=403", anthropic.PermissionDeniedError, "permission_error"),
    ("status=413", anthropic.ContentTooLargeError, "request_too_large"),
    ("status=429 retry_after=7", anthropic.RateLimitError, "rate_limit_error"),
    ("status=500", anthropic.InternalServerError, "api_error"),
    ("status=529", anthropic.OverloadedError, "overloaded_error"),
    (SPEND_LIMIT, anthropic.EnforcedSpendLimitReachedError, "rate_limit_error"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("directive", "error_class", "error_type"), STATUS_CASES)
async def test_status_errors_map_to_sdk_exceptions(
    client: anthropic.AsyncAnthropic,
    directive: str,
    error_class: type,
    error_type: str,
    stream: bool,
) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        await ask(client, f"[[offline {directive}]]", stream=stream)
    error = caught.value
    assert type(error) is error_class and error.type == error_type
    assert error.request_id and error.request_id.startswith("req_")
    assert error.body["type"] == "error" and error.body["request_id"] == error.request_id
    if error.status_code == 429:
        assert error.response.headers["retry-after"] == ("7" if "retry_after" in directive else "1")


@pytest.mark.asyncio
async def test_status_error_custom_message(client: anthropic.AsyncAnthropic) -> None:
    directive = "status=429 error_type=rate_limit_error message=enforced_spend_limit_reached"
    with pytest.raises(anthropic.RateLimitError) as caught:
        await ask(client, f"[[offline {directive}]]")
    assert caught.value.api_message == "enforced_spend_limit_reached"


@pytest.mark.asyncio
async def test_error_event_mid_stream(client: anthropic.AsyncAnthropic) -> None:
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        await ask_stream(client, "[[offline words=20 error_after=5]]", sink=received)
    error = caught.value
    # Exactly APIStatusError, no subclass: the HTTP status of the stream was 200.
    assert type(error) is anthropic.APIStatusError and error.status_code == 200
    assert error.type == "overloaded_error" and error.body["error"]["type"] == "overloaded_error"
    assert received == filler_chunks(20)[:5]


@pytest.mark.asyncio
async def test_error_after_without_stream_is_an_http_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        await ask(client, "[[offline error_after=1 error_type=api_error]]")
    assert caught.value.status_code == 500 and caught.value.type == "api_error"


@pytest.mark.asyncio
async def test_drop_after_cuts_the_stream_and_maps_to_disconnected(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient
) -> None:
    # Whatever the SDK raises for a dropped connection (2.12 let the transport error through,
    # 2.17 wraps it as APIConnectionError), the app's one mapping must call it a lost connection.
    received: list[str] = []
    with pytest.raises(Exception) as caught:
        await ask_stream(client, "[[offline words=20 drop_after=6]]", sink=received)
    assert received == filler_chunks(20)[:6]
    assert_maps_to(caught.value, "upstream_disconnected")
    with pytest.raises(Exception) as caught:
        await ask(client, "[[offline drop_after=0]]")
    assert_maps_to(caught.value, "upstream_disconnected")
    await wait_idle(http)


@pytest.mark.asyncio
async def test_stall_after_trips_the_read_timeout(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient
) -> None:
    received: list[str] = []
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        await ask_stream(
            client, "[[offline words=20 stall_after=3 stall_s=30]]", sink=received, timeout=0.5
        )
    assert received == filler_chunks(20)[:3] and time.monotonic() - started < 5
    assert_maps_to(caught.value, "upstream_timeout")
    # Before the response headers, too.
    with pytest.raises(Exception) as caught:
        await ask(client, "[[offline stall_after=0 stall_s=30]]", timeout=0.5)
    assert_maps_to(caught.value, "upstream_timeout")
    # The stalled handlers were cancelled when the client went away.
    await wait_idle(http)


@pytest.mark.asyncio
async def test_fail_times_lets_sdk_retries_succeed(
    server_url: str, http: httpx2.AsyncClient
) -> None:
    directive = f"[[offline words=2 status=429 retry_after=0.01 fail_times=2]] {nonce()}"
    async with anthropic.AsyncAnthropic(base_url=server_url, api_key="test", max_retries=2) as sdk:
        message = await ask(sdk, directive)
    assert message.stop_reason == "end_turn"
    records = (await http.get("/_offline/requests")).json()
    mine = [r for r in records if r["body"]["messages"] == user(directive)]
    assert [r["headers"]["x-stainless-retry-count"] for r in mine] == ["0", "1", "2"]


# --- prompt caching ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_prompt_caching_writes_then_reads(client: anthropic.AsyncAnthropic) -> None:
    long_system = f"{nonce()} " + "You are a helpful assistant. " * 20
    system = [{"type": "text", "text": long_system, "cache_control": EPHEMERAL}]
    prefix, rest = math.ceil(len(long_system) / 4), math.ceil(len("[[offline words=2]]") / 4)
    first = (await ask(client, "[[offline words=2]]", system=system)).usage
    assert first.cache_creation_input_tokens == prefix
    assert first.cache_creation.ephemeral_5m_input_tokens == prefix
    assert first.cache_read_input_tokens == 0 and first.input_tokens == rest
    second = (await ask_stream(client, "[[offline words=2]]", system=system)).usage
    assert second.cache_read_input_tokens == prefix
    assert second.cache_creation_input_tokens == 0 and second.input_tokens == rest
    # A different prefix misses; a 1h TTL is reported as such.
    one_hour = {"type": "ephemeral", "ttl": "1h"}
    system_1h = [{"type": "text", "text": long_system + "!", "cache_control": one_hour}]
    third = (await ask(client, "hi", max_tokens=5, system=system_1h)).usage
    assert third.cache_read_input_tokens == 0
    assert third.cache_creation.ephemeral_1h_input_tokens == math.ceil((len(long_system) + 1) / 4)


@pytest.mark.asyncio
async def test_prompt_caching_grows_with_the_conversation(
    client: anthropic.AsyncAnthropic,
) -> None:
    system = [{"type": "text", "text": nonce() * 8, "cache_control": EPHEMERAL}]  # 64 tokens
    marked = [{"type": "text", "text": "a" * 40, "cache_control": EPHEMERAL}]
    first = (await ask(client, marked, max_tokens=5, system=system)).usage
    assert (first.cache_creation_input_tokens, first.input_tokens) == (74, 0)
    # The breakpoint moves to the new last user block; the earlier prefix is found by lookback.
    turns = [
        {"role": "user", "content": [{"type": "text", "text": "a" * 40}]},
        {"role": "assistant", "content": "b" * 40},
        {
            "role": "user",
            "content": [{"type": "text", "text": "c" * 40, "cache_control": EPHEMERAL}],
        },
    ]
    second = (await ask(client, max_tokens=5, system=system, messages=turns)).usage
    assert second.cache_read_input_tokens == 74
    assert second.cache_creation_input_tokens == 20 and second.input_tokens == 0


@pytest.mark.asyncio
async def test_short_prefixes_are_not_cached(client: anthropic.AsyncAnthropic) -> None:
    system = [{"type": "text", "text": nonce(), "cache_control": EPHEMERAL}]
    for _ in range(2):
        usage = (await ask(client, "hi", max_tokens=5, system=system)).usage
        assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0


# --- tools -----------------------------------------------------------------------


def tool(name: str, prop: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {prop: {"type": "string"}}, "required": [prop]}
    return {"name": name, "description": f"The {name} tool.", "input_schema": schema}


CALCULATOR, CLOCK = tool("calculator", "expression"), tool("get_time", "timezone")


@pytest.mark.asyncio
async def test_tool_use_flow(client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient) -> None:
    question = user("Please calculate 12 * 7 for me")
    first = await ask_stream(client, messages=question, tools=[CALCULATOR, CLOCK])
    assert first.stop_reason == "tool_use"
    text, call = first.content
    assert text.type == "text" and "calculator" in text.text
    assert call.type == "tool_use" and call.id.startswith("toolu_") and call.name == "calculator"
    assert call.input == {"expression": "12 * 7"}

    result = {"type": "tool_result", "tool_use_id": call.id, "content": "84"}
    followup = [
        *question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [result]},
    ]
    second = await ask(client, messages=followup, tools=[CALCULATOR])
    assert second.stop_reason == "end_turn" and "**84**" in second.content[0].text
    assert "`calculator` returned: 84" in second.content[0].text

    when = await ask(client, "What time is it?", tools=[CALCULATOR, CLOCK])
    assert when.content[1].name == "get_time" and when.content[1].input == {"timezone": "UTC"}
    # The raw stream announces the tool with empty input, then input_json_delta pieces.
    request = body(question[0]["content"], max_tokens=200, stream=True, tools=[CALCULATOR])
    events = parse_sse((await http.post("/v1/messages", headers=HEADERS, json=request)).text)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts[1]["type"] == "tool_use" and starts[1]["input"] == {}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == 1]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert json.loads("".join(d["partial_json"] for d in deltas)) == {"expression": "12 * 7"}


# --- tool loops and continuations -------------------------------------------------


def as_param(message: Message) -> dict[str, Any]:
    """``message`` as the assistant turn of the next request."""
    return {
        "role": "assistant",
        "content": [b.model_dump(exclude_none=True) for b in message.content],
    }


def results_for(message: Message) -> dict[str, Any]:
    """The user message answering every ``tool_use`` of ``message`` (``"<name> ok"``)."""
    uses = [b for b in message.content if b.type == "tool_use"]
    content = [
        {"type": "tool_result", "tool_use_id": b.id, "content": f"{b.name} ok"} for b in uses
    ]
    return {"role": "user", "content": content}


async def tool_loop(
    client: anthropic.AsyncAnthropic, messages: list[dict[str, Any]], limit: int, **kw: Any
) -> list[Message]:
    """Answer tool calls until the reply is not ``tool_use`` or ``limit`` requests were made.

    Requests alternate between streamed and non-streamed.
    """
    replies: list[Message] = []
    while len(replies) < limit:
        send = ask_stream if len(replies) % 2 else ask
        reply = await send(client, messages=messages, **kw)
        replies.append(reply)
        if reply.stop_reason != "tool_use":
            break
        messages = [*messages, as_param(reply), results_for(reply)]
    return replies


async def continue_(
    client: anthropic.AsyncAnthropic,
    messages: list[dict[str, Any]],
    prefill: str | list[dict[str, Any]],
    *,
    stream: bool,
    **kw: Any,
) -> Message:
    """Continue a prefilled final assistant message (on Haiku 4.5, which accepts a prefill)."""
    send = ask_stream if stream else ask
    kw.setdefault("model", HAIKU)
    return await send(client, messages=[*messages, {"role": "assistant", "content": prefill}], **kw)


CONTINUE = "Continue exactly where you stopped, without repeating anything."


async def go_on(
    client: anthropic.AsyncAnthropic,
    messages: list[dict[str, Any]],
    cut: Message,
    *,
    stream: bool,
    **kw: Any,
) -> Message:
    """Continue a cut reply the way every model accepts: the reply as a complete assistant turn,
    then a user turn asking to go on."""
    send = ask_stream if stream else ask
    followed = [*messages, as_param(cut), {"role": "user", "content": CONTINUE}]
    return await send(client, messages=followed, **kw)


@pytest.mark.asyncio
async def test_call_parallel_tools_then_results_report(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient
) -> None:
    question = user("[[offline call=calculator,get_time]] Please calculate 3 + 4")
    first = await ask_stream(client, messages=question, tools=[CALCULATOR, CLOCK])
    assert first.stop_reason == "tool_use"
    text, calc, clock = first.content
    assert (
        text.type == "text"
        and text.text == "I'll use the `calculator` and `get_time` tools for that."
    )
    assert [calc.name, clock.name] == ["calculator", "get_time"]
    assert calc.input == {"expression": "3 + 4"} and clock.input == {"timezone": "UTC"}
    assert calc.id.startswith("toolu_") and clock.id.startswith("toolu_") and calc.id != clock.id

    followup = [*question, as_param(first), results_for(first)]
    second = await ask(client, messages=followup, tools=[CALCULATOR, CLOCK])
    assert second.stop_reason == "end_turn" and len(second.content) == 1
    report = second.content[0].text
    assert "`calculator` returned: calculator ok" in report
    assert "`get_time` returned: get_time ok" in report and "**get_time ok**" in report

    # On the wire: each tool_use starts with empty input, then input_json_delta pieces.
    request = body(question[0]["content"], max_tokens=200, stream=True, tools=[CALCULATOR, CLOCK])
    events = parse_sse((await http.post("/v1/messages", headers=HEADERS, json=request)).text)
    starts = [d for n, d in events if n == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use", "tool_use"]
    assert all(s["content_block"]["input"] == {} for s in starts[1:])
    for index, expected in ((1, {"expression": "3 + 4"}), (2, {"timezone": "UTC"})):
        deltas = [
            d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == index
        ]
        assert {d["type"] for d in deltas} == {"input_json_delta"}
        assert json.loads("".join(d["partial_json"] for d in deltas)) == expected
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.asyncio
async def test_call_unknown_tool_gets_empty_input(client: anthropic.AsyncAnthropic) -> None:
    offered = await ask(client, "[[offline call=web_lookup]] find it", tools=[CALCULATOR])
    assert offered.stop_reason == "tool_use"
    assert (offered.content[1].name, offered.content[1].input) == ("web_lookup", {})
    # Even without any tools in the request.
    messages = user("[[offline call=web_lookup]] find it")
    replies = await tool_loop(client, messages, limit=5)
    assert [r.stop_reason for r in replies] == ["tool_use", "end_turn"]
    assert replies[0].content[1].name == "web_lookup" and replies[0].content[1].input == {}
    assert "`web_lookup` returned: web_lookup ok" in replies[1].content[0].text


@pytest.mark.asyncio
async def test_rounds_gives_that_many_tool_rounds(client: anthropic.AsyncAnthropic) -> None:
    messages = user("[[offline call=calculator rounds=3]] calculate 6 * 7")
    replies = await tool_loop(client, messages, limit=10, tools=[CALCULATOR])
    assert [r.stop_reason for r in replies] == ["tool_use"] * 3 + ["end_turn"]
    ids = [r.content[1].id for r in replies[:3]]
    assert len(set(ids)) == 3 and all(
        r.content[1].input == {"expression": "6 * 7"} for r in replies[:3]
    )
    assert "**calculator ok**" in replies[-1].content[0].text
    # The directive keeps steering the turn: after its tool rounds, words=N applies.
    words = await tool_loop(client, user("[[offline call=calculator words=5]] go"), limit=5)
    assert [r.stop_reason for r in words] == ["tool_use", "end_turn"]
    assert words[-1].content[0].text == "".join(filler_chunks(5))
    # rounds=99: the model never stops calling tools, the client's cap ends the loop.
    endless = await tool_loop(client, user("[[offline call=a,b rounds=99]] go"), limit=6)
    assert [r.stop_reason for r in endless] == ["tool_use"] * 6
    assert all([b.name for b in r.content[1:]] == ["a", "b"] for r in endless)


@pytest.mark.asyncio
async def test_directive_is_read_from_the_latest_user_text(
    client: anthropic.AsyncAnthropic,
) -> None:
    older = [
        {"role": "user", "content": "[[offline words=3]]"},
        {"role": "assistant", "content": "lorem ipsum dolor."},
    ]
    fresh = await ask(client, messages=[*older, *user("no directive this time")], max_tokens=500)
    assert (
        "Offline Claude" in fresh.content[0].text
        and "no directive this time" in fresh.content[0].text
    )
    # A user message with text next to tool results starts a new turn with its directive.
    first = await ask(client, "[[offline call=calculator]] go")
    answer = results_for(first)
    answer["content"].append({"type": "text", "text": "[[offline words=2]]"})
    second = await ask_stream(
        client, messages=[*user("[[offline call=calculator]] go"), as_param(first), answer]
    )
    assert second.stop_reason == "end_turn" and second.content[0].text == "lorem ipsum."


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_pause_after_then_continuation(
    client: anthropic.AsyncAnthropic, stream: bool
) -> None:
    prompt = "[[offline words=30 pause_after=7]]"
    full = "".join(filler_chunks(30))
    send = ask_stream if stream else ask
    paused = await send(client, prompt)
    # A paused turn ends in a server tool call the API has not run yet.
    assert paused.stop_reason == "pause_turn"
    assert [b.type for b in paused.content] == ["text", "server_tool_use"]
    search = paused.content[1]
    assert search.id.startswith("srvtoolu_") and search.name == "web_search"
    partial = paused.content[0].text
    assert partial == "".join(filler_chunks(30)[:7])
    assert paused.usage.output_tokens > 7  # the text's 7 plus the tool call's input
    # Sent back as it stands (no user turn after it): accepted on a model without prefill.
    again = ask if stream else ask_stream
    rest = await again(client, messages=[*user(prompt), as_param(paused)])
    assert rest.stop_reason == "end_turn"  # a continuation never pauses again
    result, text = rest.content
    assert result.type == "web_search_tool_result" and result.tool_use_id == search.id
    assert partial + text.text == full and rest.usage.output_tokens == 30 - 7


@pytest.mark.asyncio
async def test_pause_after_in_a_tool_round(client: anthropic.AsyncAnthropic) -> None:
    messages = user("[[offline call=calculator pause_after=3]] calculate 1 + 2")
    paused = await ask_stream(client, messages=messages, tools=[CALCULATOR])
    assert paused.stop_reason == "pause_turn"
    assert [b.type for b in paused.content] == ["text", "server_tool_use"]
    rest = await ask(client, messages=[*messages, as_param(paused)], tools=[CALCULATOR])
    assert rest.stop_reason == "tool_use"
    assert paused.content[0].text + rest.content[1].text == (
        "I'll use the `calculator` tool for that."
    )
    assert rest.content[2].input == {"expression": "1 + 2"}


@pytest.mark.asyncio
async def test_max_tokens_continuations_join_to_the_full_text(
    client: anthropic.AsyncAnthropic,
) -> None:
    prompt = "[[offline words=40]]"
    full = "".join(filler_chunks(40))
    pieces: list[str] = []
    reasons: list[str | None] = []
    for step in range(5):
        if not pieces:
            reply = await ask(client, prompt, max_tokens=15, model=HAIKU)
        else:
            # Earlier pieces as their own blocks (joined as is), only the last one stripped.
            blocks = [{"type": "text", "text": p} for p in pieces[:-1]]
            blocks.append({"type": "text", "text": pieces[-1].rstrip()})
            pieces[-1] = pieces[-1].rstrip()
            reply = await continue_(
                client, user(prompt), blocks, stream=step % 2 == 1, max_tokens=15
            )
        pieces.append(reply.content[0].text)
        reasons.append(reply.stop_reason)
        if reply.stop_reason != "max_tokens":
            break
    assert reasons == ["max_tokens", "max_tokens", "end_turn"]
    assert "".join(pieces) == full


@pytest.mark.asyncio
@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-opus-5-5"])
async def test_asking_to_continue_after_max_tokens_joins_to_the_full_text(
    client: anthropic.AsyncAnthropic, model: str
) -> None:
    messages = user("[[offline words=40]]")
    replies = [await ask(client, messages=messages, max_tokens=30, model=model)]
    while replies[-1].stop_reason == "max_tokens" and len(replies) < 8:
        messages = [*messages, as_param(replies[-1]), {"role": "user", "content": CONTINUE}]
        send = ask_stream if len(replies) % 2 else ask
        replies.append(await send(client, messages=messages, max_tokens=30, model=model))
    # Each reply is the rest of the same answer: nothing repeated, nothing lost.
    pieces = [b.text for r in replies for b in r.content if b.type == "text"]
    assert replies[-1].stop_reason == "end_turn" and len(replies) >= 2
    assert "".join(pieces) == "".join(filler_chunks(40))
    if model == "claude-opus-5-5":  # every reply is a new assistant message: it thinks first
        assert all(r.content[0].type == "thinking" for r in replies)


@pytest.mark.asyncio
async def test_continuation_of_a_foreign_prefill_emits_the_whole_reply(
    client: anthropic.AsyncAnthropic,
) -> None:
    rest = await continue_(client, user("[[offline words=4]]"), "Something else", stream=True)
    assert rest.content[0].text == "".join(filler_chunks(4)) and rest.stop_reason == "end_turn"
    reply = await continue_(
        client, user("[[offline reply]]\nHello there, friend."), "Hello", stream=False
    )
    assert reply.content[0].text == " there, friend."


@pytest.mark.asyncio
@pytest.mark.parametrize("prefill", ["lorem ipsum ", [{"type": "text", "text": "lorem\n"}], "  "])
async def test_prefill_with_trailing_whitespace_is_rejected(
    client: anthropic.AsyncAnthropic, prefill: Any
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await continue_(client, user("[[offline words=5]]"), prefill, stream=False)
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message == (
        "messages: final assistant content cannot end with trailing whitespace"
    )


@pytest.mark.asyncio
async def test_stop_applies_to_the_first_round_only(client: anthropic.AsyncAnthropic) -> None:
    prompt = "[[offline words=20 stop=refusal]]"
    refused = await ask_stream(client, prompt, max_tokens=8, model=HAIKU)
    assert refused.stop_reason == "refusal" and refused.usage.output_tokens == 8
    prefill = refused.content[0].text.rstrip()
    rest = await continue_(client, user(prompt), prefill, stream=False)
    assert rest.stop_reason == "end_turn" and rest.stop_details is None
    assert prefill + rest.content[0].text == "".join(filler_chunks(20))
    # stop=max_tokens: the continuation of the complete text ends normally, adding nothing.
    cut = await ask(client, "[[offline words=6 stop=max_tokens]]", model=HAIKU)
    assert cut.stop_reason == "max_tokens"
    done = await continue_(
        client, user("[[offline words=6 stop=max_tokens]]"), cut.content[0].text, stream=True
    )
    assert done.stop_reason == "end_turn" and "".join(b.text for b in done.content) == ""
    # Not after tool results either.
    question = user("[[offline call=calculator words=3 stop=refusal]] calculate 2 + 2")
    calling = await ask(client, messages=question)
    assert calling.stop_reason == "refusal" and calling.content[1].type == "tool_use"
    answered = await ask_stream(
        client, messages=[*question, as_param(calling), results_for(calling)]
    )
    assert answered.stop_reason == "end_turn"
    assert answered.content[0].text == "".join(filler_chunks(3))


# --- validation, auth, helpers ---------------------------------------------------

BMP = {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AA=="}}
ORPHAN_RESULT = {"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}
INVALID_BODIES = [
    (body(model=None), "model: Field required"),
    (body(max_tokens=None), "max_tokens: Field required"),
    (body(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
    (body(messages=[]), "messages: at least one message is required"),
    (body(messages=[{"role": "assistant", "content": "x"}]), 'must use the "user" role'),
    (body(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
    (body([{"type": "text", "text": ""}]), "text content blocks must be non-empty"),
    (body([BMP]), "messages.0.content.0.source.base64.media_type"),
    (body(system=[{"type": "image"}]), "system.0.type"),
    (body([ORPHAN_RESULT]), "unexpected `tool_use_id`"),
    (body("[[offline words=many]]"), "offline directive: words"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("request_body", "message"), INVALID_BODIES)
async def test_validation_errors_have_the_real_shape(
    http: httpx2.AsyncClient, request_body: dict, message: str
) -> None:
    response = await http.post("/v1/messages", headers=HEADERS, json=request_body)
    assert response.status_code == 400
    payload = response.json()
    assert set(payload) == {"type", "error", "request_id"} and payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert message in payload["error"]["message"]
    assert payload["request_id"] == response.headers["request-id"]


@pytest.mark.asyncio
async def test_auth_model_and_routing_errors(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient
) -> None:
    no_key = await http.post("/v1/messages", headers={"anthropic-version": "1"}, json=body())
    assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "authentication_error"
    no_version = await http.post("/v1/messages", headers={"x-api-key": "k"}, json=body())
    assert no_version.status_code == 400
    with pytest.raises(anthropic.NotFoundError) as caught:
        await client.messages.create(model="gpt-4o", max_tokens=5, messages=user("x"))
    assert caught.value.type == "not_found_error"
    assert (await http.get("/v1/nope", headers=HEADERS)).status_code == 404
    models = [m.id async for m in client.models.list()]
    assert models and all(m.startswith("claude-") for m in models)


@pytest.mark.asyncio
async def test_requests_are_recorded_without_secrets(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient
) -> None:
    health = await http.get("/_offline/health")
    assert health.json() == {"ok": True} and health.headers["request-id"].startswith("req_")
    assert (await http.delete("/_offline/requests")).status_code == 200
    await ask(client, "recorded", max_tokens=5, metadata={"user_id": "u1"})
    [record] = (await http.get("/_offline/requests")).json()
    assert record["path"] == "/v1/messages" and record["method"] == "POST"
    assert record["body"]["messages"] == user("recorded")
    assert record["body"]["metadata"] == {"user_id": "u1"}
    assert "x-api-key" not in record["headers"] and record["headers"]["anthropic-version"]
    assert isinstance(record["time"], float)
    await http.delete("/_offline/requests")
    assert (await http.get("/_offline/requests")).json() == []


# --- robustness ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_hundreds_of_concurrent_streams(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient
) -> None:
    started = time.monotonic()
    replies = await asyncio.gather(
        *(ask_stream(client, f"[[offline words=20 pace_ms=5]] {i}") for i in range(300))
    )
    assert {r.content[0].text for r in replies} == {"".join(filler_chunks(20))}
    assert time.monotonic() - started < 10  # 20 x 5 ms paced, all at once
    await wait_idle(http)


@pytest.mark.asyncio
async def test_client_leaving_mid_stream_frees_the_server(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient
) -> None:
    for _ in range(5):
        async with client.messages.stream(
            model=MODEL, max_tokens=5000, messages=user("[[offline words=4000 pace_ms=50]]")
        ) as stream:
            async for _chunk in stream.text_stream:
                break
    await wait_idle(http)


# --- per-model behaviour, as the API documents it -------------------------------------

PREFILL_REFUSED = (
    "This model does not support assistant message prefill. The conversation must end with a "
    "user message."
)
NO_PREFILL = [m.id for m in lineup.models().values() if not m.prefill]
ALWAYS_THINKING = [m.id for m in lineup.models().values() if m.thinking == "always"]
ADAPTIVE_ONLY = [m.id for m in lineup.models().values() if "enabled" not in m.thinking_types]
OPUS_55 = "claude-opus-5-5"


async def refused(call: Any) -> anthropic.BadRequestError:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await call
    assert caught.value.status_code == 400 and caught.value.type == "invalid_request_error"
    return caught.value


def test_the_table_serves_the_documented_lineup() -> None:
    table = lineup.models()
    assert {"claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-fable-5-2"} <= set(
        table
    )
    assert {"claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-4-5"} <= set(table)
    assert {"claude-fable-5-2", "claude-opus-5-5", "claude-sonnet-5-5"} <= set(ALWAYS_THINKING)
    assert [m for m in table.values() if m.prefill] == [table[HAIKU]]


@pytest.mark.asyncio
@pytest.mark.parametrize("model", NO_PREFILL)
async def test_a_prefill_is_refused_on_4_6_and_later(
    client: anthropic.AsyncAnthropic, model: str
) -> None:
    error = await refused(
        ask(client, messages=[*user("hi"), {"role": "assistant", "content": "Sure"}], model=model)
    )
    assert error.api_message == PREFILL_REFUSED


@pytest.mark.asyncio
async def test_haiku_4_5_still_accepts_a_prefill(client: anthropic.AsyncAnthropic) -> None:
    reply = await continue_(client, user("[[offline reply]]\nHello there."), "Hello", stream=True)
    assert reply.content[0].text == " there." and reply.stop_reason == "end_turn"


@pytest.mark.asyncio
async def test_a_final_assistant_turn_without_a_paused_server_tool_is_a_prefill(
    client: anthropic.AsyncAnthropic,
) -> None:
    paused = await ask(client, "[[offline words=30 pause_after=5]]")
    # The text alone is not a pause_turn continuation: the server tool call is what says so.
    text_only = {"role": "assistant", "content": [paused.content[0].model_dump()]}
    error = await refused(
        ask(client, messages=[*user("[[offline words=30 pause_after=5]]"), text_only])
    )
    assert error.api_message == PREFILL_REFUSED


@pytest.mark.asyncio
@pytest.mark.parametrize("model", ADAPTIVE_ONLY)
async def test_manual_thinking_is_refused_on_4_7_and_later(
    client: anthropic.AsyncAnthropic, model: str
) -> None:
    error = await refused(
        ask(
            client,
            "x",
            max_tokens=5000,
            model=model,
            thinking={"type": "enabled", "budget_tokens": 2000},
        )
    )
    assert error.api_message == (
        '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" '
        'and "output_config.effort" to control thinking behavior.'
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("model", ALWAYS_THINKING)
async def test_always_thinking_models_refuse_disabled(
    client: anthropic.AsyncAnthropic, model: str
) -> None:
    error = await refused(ask(client, "x", model=model, thinking={"type": "disabled"}))
    assert error.api_message == (
        '"thinking.type.disabled" is not supported for this model. Use "thinking.type.adaptive" '
        'and "output_config.effort" to control thinking behavior.'
    )


@pytest.mark.asyncio
async def test_thinking_settings_still_accepted(client: anthropic.AsyncAnthropic) -> None:
    manual = await ask(
        client, "x", max_tokens=3000, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    assert manual.content[0].type == "thinking"  # Sonnet 4.6: deprecated, still accepted
    off = await ask(client, "x", model="claude-haiku-5-5", thinking={"type": "disabled"})
    assert [b.type for b in off.content] == ["text"]


@pytest.mark.asyncio
async def test_effort_levels_follow_the_model(client: anthropic.AsyncAnthropic) -> None:
    for model in ("claude-opus-5-5", "claude-opus-4-7"):
        fine = await ask(
            client, "x", max_tokens=1000, model=model, output_config={"effort": "xhigh"}
        )
        assert fine.stop_reason == "end_turn"
    no_xhigh = await refused(ask(client, "x", output_config={"effort": "xhigh"}))
    assert "xhigh" in no_xhigh.api_message and no_xhigh.api_message.startswith(
        "output_config.effort"
    )
    none = await refused(ask(client, "x", model=HAIKU, output_config={"effort": "low"}))
    assert none.api_message.startswith("output_config.effort")
    bogus = await refused(ask(client, "x", model=OPUS_55, output_config={"effort": "extreme"}))
    assert bogus.api_message.startswith("output_config.effort: Input should be")


@pytest.mark.asyncio
async def test_unknown_model_ids_are_404(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient
) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        await ask(client, "x", model="claude-sonnet-9-9")
    assert caught.value.status_code == 404 and caught.value.type == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        await client.models.retrieve("claude-3-opus-20240229")


@pytest.mark.asyncio
async def test_models_api_lists_the_table_with_limits_paginated(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient
) -> None:
    table = list(lineup.models().values())
    every = [m async for m in client.models.list(limit=3)]  # the SDK follows the pages
    assert [m.id for m in every] == [m.id for m in table]
    raw = (await http.get("/v1/models?limit=3", headers=HEADERS)).json()
    assert raw["has_more"] is True and len(raw["data"]) == 3
    assert raw["first_id"] == table[0].id and raw["last_id"] == table[2].id
    row = raw["data"][0]
    assert row["max_input_tokens"] == table[0].max_input_tokens
    assert row["max_tokens"] == table[0].max_tokens and row["type"] == "model"
    tail = (await http.get(f"/v1/models?after_id={table[-3].id}", headers=HEADERS)).json()
    assert [m["id"] for m in tail["data"]] == [m.id for m in table[-2:]]
    assert tail["has_more"] is False
    back = (await http.get(f"/v1/models?before_id={table[3].id}&limit=2", headers=HEADERS)).json()
    assert [m["id"] for m in back["data"]] == [table[1].id, table[2].id] and back["has_more"]
    one = await client.models.retrieve(OPUS_55)
    assert one.display_name == "Claude Opus 5.5"
    assert one.max_input_tokens == 1_000_000 and one.max_tokens == 128_000


# --- thinking blocks ------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("model", ALWAYS_THINKING)
async def test_always_thinking_models_start_with_an_omitted_thinking_block(
    client: anthropic.AsyncAnthropic, http: httpx2.AsyncClient, model: str
) -> None:
    reply = await ask(client, "[[offline words=5]]", model=model)
    thinking, text = reply.content
    assert thinking.type == "thinking" and thinking.thinking == "" and thinking.signature
    assert text.text == "".join(filler_chunks(5))
    assert reply.usage.output_tokens > 5  # thinking tokens bill as output, shown or not
    # Streamed: no thinking_delta, one signature_delta.
    raw = await http.post(
        "/v1/messages",
        headers=HEADERS,
        json=body("[[offline words=2]]", model=model, max_tokens=100, stream=True),
    )
    deltas = [d["delta"]["type"] for e, d in parse_sse(raw.text) if e == "content_block_delta"]
    assert "thinking_delta" not in deltas and deltas.count("signature_delta") == 1


@pytest.mark.asyncio
async def test_summarized_thinking_streams_its_text(client: anthropic.AsyncAnthropic) -> None:
    seen: list[str] = []
    async with client.messages.stream(
        model=OPUS_55,
        max_tokens=200,
        messages=user("[[offline words=3]] hello"),
        thinking={"type": "adaptive", "display": "summarized"},
    ) as stream:
        async for event in stream:
            if event.type == "thinking":
                seen.append(event.thinking)
        final = await stream.get_final_message()
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.thinking and "".join(seen) == thinking.thinking
    assert thinking.signature
    # Sonnet 4.6 thinks only when asked; its thinking is summarized by default.
    plain = await ask(client, "x")
    assert [b.type for b in plain.content] == ["text"]
    asked = await ask(client, "x", max_tokens=300, thinking={"type": "adaptive"})
    assert asked.content[0].type == "thinking" and asked.content[0].thinking


@pytest.mark.asyncio
async def test_thinking_words_sets_the_length_of_the_thinking(
    client: anthropic.AsyncAnthropic,
) -> None:
    seen: list[str] = []
    async with client.messages.stream(
        model=OPUS_55,
        max_tokens=200,
        messages=user("[[offline words=3 thinking_words=30]] hello"),
        thinking={"type": "adaptive", "display": "summarized"},
    ) as stream:
        async for event in stream:
            if event.type == "thinking":
                seen.append(event.thinking)
        final = await stream.get_final_message()
    assert seen == filler_chunks(30)
    assert final.content[0].thinking == "".join(filler_chunks(30))
    assert final.usage.output_tokens == 30 + 3
    # Omitted, the same thinking still bills as output; without thinking the key changes nothing.
    omitted = await ask(client, "[[offline words=3 thinking_words=30]]", model=OPUS_55)
    assert omitted.content[0].thinking == "" and omitted.usage.output_tokens == 33
    plain = await ask(client, "[[offline words=3 thinking_words=30]]")
    assert [b.type for b in plain.content] == ["text"] and plain.usage.output_tokens == 3


async def three_round_loop(
    client: anthropic.AsyncAnthropic, model: str = OPUS_55
) -> tuple[list[dict[str, Any]], list[Message]]:
    """A three-round tool loop sent back exactly as returned; the messages and responses."""
    messages = user("[[offline call=calculator rounds=3]] calculate 2 + 3")
    replies = []
    for _ in range(4):
        reply = await ask(client, messages=messages, tools=[CALCULATOR], model=model)
        replies.append(reply)
        if reply.stop_reason != "tool_use":
            break
        messages = [*messages, as_param(reply), results_for(reply)]
    return messages, replies


@pytest.mark.asyncio
async def test_a_three_round_tool_loop_with_thinking_sent_back_completes(
    client: anthropic.AsyncAnthropic,
) -> None:
    messages, replies = await three_round_loop(client)
    assert [r.stop_reason for r in replies] == ["tool_use"] * 3 + ["end_turn"]
    assert all(r.content[0].type == "thinking" for r in replies)


def _assistant_indexes(messages: list[dict[str, Any]]) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"]


BOUND = (
    "Invalid `signature` in `thinking` block. The block is bound to a different conversation. "
    'Remove the block, or set `thinking.block_binding.prefix_mismatch_behavior` to "drop_block".'
)


@pytest.mark.asyncio
async def test_a_dropped_edited_or_moved_thinking_block_is_refused(
    client: anthropic.AsyncAnthropic,
) -> None:
    messages, _ = await three_round_loop(client)
    loop = messages  # up to the last tool results; the final answer is not sent back
    first, second, third = _assistant_indexes(loop)

    async def send(changed: list[dict[str, Any]]) -> anthropic.BadRequestError:
        return await refused(ask(client, messages=changed, tools=[CALCULATOR], model=OPUS_55))

    # Dropped from an earlier round: the later blocks no longer follow the prefix they did.
    dropped = copy.deepcopy(loop)
    del dropped[first]["content"][0]
    error = await send(dropped)
    assert error.api_message == f"messages.{second}.content.0: {BOUND}"
    # Dropped from the last round: the final assistant message must start with thinking.
    dropped_last = copy.deepcopy(loop)
    del dropped_last[third]["content"][0]
    error = await send(dropped_last)
    assert error.api_message.startswith(
        f"messages.{third}.content.0.type: Expected thinking or redacted_thinking, but found text."
    )
    # Edited.
    edited = copy.deepcopy(loop)
    edited[second]["content"][0]["thinking"] = "something else"
    error = await send(edited)
    assert (
        error.api_message
        == f"messages.{second}.content.0: Invalid `signature` in `thinking` block."
    )
    # Moved: two rounds' blocks swapped.
    moved = copy.deepcopy(loop)
    a, b = moved[first]["content"][0], moved[second]["content"][0]
    moved[first]["content"][0], moved[second]["content"][0] = b, a
    error = await send(moved)
    assert error.api_message == f"messages.{first}.content.0: {BOUND}"
    # Something before the blocks changed (the system prompt).
    error = await refused(
        ask(client, messages=loop, tools=[CALCULATOR], model=OPUS_55, system="Be brief.")
    )
    assert error.api_message == f"messages.{first}.content.0: {BOUND}"
    # Unchanged, it goes through.
    done = await ask(client, messages=loop, tools=[CALCULATOR], model=OPUS_55)
    assert done.stop_reason == "end_turn"


@pytest.mark.asyncio
async def test_blocks_another_model_cannot_read_are_dropped_without_an_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    loop, _ = await three_round_loop(client)
    # Fable 5.2 reads Opus 5.5's blocks: they are checked, and they pass.
    fable = await ask(client, messages=loop, tools=[CALCULATOR], model="claude-fable-5-2")
    assert fable.stop_reason == "end_turn"
    # Sonnet 5.5 cannot read them: dropped, no error — even edited ones are never used.
    sonnet = await ask(client, messages=loop, tools=[CALCULATOR], model="claude-sonnet-5-5")
    assert sonnet.stop_reason == "end_turn"


@pytest.mark.asyncio
async def test_the_next_turn_after_a_thinking_reply_succeeds(
    client: anthropic.AsyncAnthropic,
) -> None:
    first = await ask(client, "[[offline words=4]] one", model=OPUS_55)
    follow = [*user("[[offline words=4]] one"), as_param(first), *user("[[offline words=3]] two")]
    second = await ask(client, messages=follow, model=OPUS_55)
    assert second.stop_reason == "end_turn" and second.content[0].type == "thinking"
    # Earlier turns' thinking may also be left out: no block then needs checking.
    stripped = copy.deepcopy(follow)
    stripped[1]["content"] = [b for b in stripped[1]["content"] if b["type"] != "thinking"]
    assert (await ask(client, messages=stripped, model=OPUS_55)).stop_reason == "end_turn"


@pytest.mark.asyncio
async def test_redacted_thinking_round_trips(client: anthropic.AsyncAnthropic) -> None:
    question = user("[[offline call=calculator redact]] calculate 1 + 1")
    reply = await ask_stream(client, messages=question, tools=[CALCULATOR], model=OPUS_55)
    redacted = reply.content[0]
    assert redacted.type == "redacted_thinking" and redacted.data
    follow = [*question, as_param(reply), results_for(reply)]
    done = await ask(client, messages=follow, tools=[CALCULATOR], model=OPUS_55)
    assert done.stop_reason == "end_turn"
    tampered = copy.deepcopy(follow)
    tampered[1]["content"][0]["data"] = tampered[1]["content"][0]["data"][:-4] + "AAA="
    error = await refused(ask(client, messages=tampered, tools=[CALCULATOR], model=OPUS_55))
    assert "Invalid `signature`" in error.api_message


@pytest.mark.asyncio
async def test_older_models_check_the_current_tool_loop_only(
    client: anthropic.AsyncAnthropic,
) -> None:
    adaptive = {"type": "adaptive"}
    question = user("[[offline call=calculator]] calculate 1 + 1")
    reply = await ask(
        client, messages=question, tools=[CALCULATOR], thinking=adaptive, max_tokens=1000
    )
    assert reply.content[0].type == "thinking" and reply.content[0].thinking  # summarized
    follow = [*question, as_param(reply), results_for(reply)]
    without = copy.deepcopy(follow)
    del without[1]["content"][0]
    error = await refused(
        ask(client, messages=without, tools=[CALCULATOR], thinking=adaptive, max_tokens=1000)
    )
    assert "Expected thinking or redacted_thinking, but found text" in error.api_message
    answer = await ask(
        client, messages=follow, tools=[CALCULATOR], thinking=adaptive, max_tokens=1000
    )
    # A later turn on Sonnet 4.6: earlier thinking is not checked, even with a changed system.
    later = [*follow, as_param(answer), *user("thanks")]
    assert (
        await ask(client, messages=later, system="new", max_tokens=1000)
    ).stop_reason == "end_turn"
