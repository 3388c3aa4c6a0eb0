"""The offline Claude server, exercised through the real anthropic SDK and raw HTTP.

No Django and no database: the server runs as a subprocess on a free loopback port.
Run alone with ``pytest tests/test_offline_claude.py -p no:django``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx2
import pytest
import pytest_asyncio
from anthropic.types import Message
from PIL import Image

from offline_claude.directives import parse_text
from offline_claude.replies import analyse_turn, chunk_text, filler_chunks

MODEL = "claude-sonnet-4-6"
HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
EPHEMERAL = {"type": "ephemeral"}


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """``python -m offline_claude --port 0`` as a subprocess; yields its base URL."""
    env = dict(os.environ, OFFLINE_CLAUDE_CACHE_MIN_TOKENS="50", OFFLINE_CLAUDE_PACE_MS="1")
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "offline_claude", "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=15)
        try:
            assert lines and lines[0].startswith("offline-claude listening on http://127.0.0.1:")
            yield lines[0].split()[-1]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        stderr.seek(0)
        logged = stderr.read()
    # Deliberate drops are not logged; any traceback is a server bug.
    assert "Traceback" not in logged, logged


@pytest_asyncio.fixture
async def client(server_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=server_url, api_key="test", max_retries=0) as sdk:
        yield sdk


@pytest_asyncio.fixture
async def http(server_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=server_url, timeout=10) as raw:
        yield raw


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
    return await client.messages.create(model=MODEL, max_tokens=max_tokens, **kw)


async def ask_stream(
    client: anthropic.AsyncAnthropic,
    content: Any = None,
    max_tokens: int = 100,
    sink: list[str] | None = None,
    **kw: Any,
) -> Message:
    """Streamed request via ``messages.stream``; text deltas are appended to ``sink``."""
    kw.setdefault("messages", user(content))
    async with client.messages.stream(model=MODEL, max_tokens=max_tokens, **kw) as stream:
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
    """The app's error mapping (chat.claude) gives `code`, retryable, for what the SDK raised."""
    from chat.claude import to_claude_error

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
    """Continue a prefilled final assistant message."""
    send = ask_stream if stream else ask
    return await send(client, messages=[*messages, {"role": "assistant", "content": prefill}], **kw)


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
    assert paused.stop_reason == "pause_turn" and paused.usage.output_tokens == 7
    partial = paused.content[0].text
    assert partial == "".join(filler_chunks(30)[:7])
    prefill = partial.rstrip()
    rest = await continue_(client, user(prompt), prefill, stream=not stream)
    assert rest.stop_reason == "end_turn"  # a continuation never pauses again
    continuation = rest.content[0].text
    assert continuation.startswith(" ") and prefill + continuation == full
    assert rest.usage.output_tokens == 30 - 7
    # The prefill counts as input.
    assert rest.usage.input_tokens == math.ceil(len(prompt) / 4) + math.ceil(len(prefill) / 4)


@pytest.mark.asyncio
async def test_pause_after_in_a_tool_round(client: anthropic.AsyncAnthropic) -> None:
    messages = user("[[offline call=calculator pause_after=3]] calculate 1 + 2")
    paused = await ask_stream(client, messages=messages, tools=[CALCULATOR])
    assert paused.stop_reason == "pause_turn" and [b.type for b in paused.content] == ["text"]
    rest = await continue_(
        client, messages, paused.content[0].text.rstrip(), stream=False, tools=[CALCULATOR]
    )
    assert rest.stop_reason == "tool_use"
    assert (
        paused.content[0].text.rstrip() + rest.content[0].text
        == "I'll use the `calculator` tool for that."
    )
    assert rest.content[1].input == {"expression": "1 + 2"}


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
            reply = await ask(client, prompt, max_tokens=15)
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
    refused = await ask_stream(client, prompt, max_tokens=8)
    assert refused.stop_reason == "refusal" and refused.usage.output_tokens == 8
    prefill = refused.content[0].text.rstrip()
    rest = await continue_(client, user(prompt), prefill, stream=False)
    assert rest.stop_reason == "end_turn" and rest.stop_details is None
    assert prefill + rest.content[0].text == "".join(filler_chunks(20))
    # stop=max_tokens: the continuation of the complete text ends normally, adding nothing.
    cut = await ask(client, "[[offline words=6 stop=max_tokens]]")
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
