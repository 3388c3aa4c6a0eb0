"""The offline Claude's web search server tool, exercised through the real anthropic SDK (and raw
SSE where the wire shape matters), as Claude's web search tool and server tools pages describe it.

No Django and no database: ``pytest tests/offline_claude/test_web_search.py -p no:django``.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any
from urllib.parse import urlsplit

import anthropic
import httpx2
import pytest
from anthropic.types import Message

MODEL = "claude-sonnet-4-6"  # no prefill: only a pause_turn continuation may end with assistant
HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
SEARCH = {"type": "web_search_20250305", "name": "web_search"}
RESERVED = ("example.org", "example.com", "example.net")


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def ask(
    client: anthropic.AsyncAnthropic,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    stream: bool = False,
    **kw: Any,
) -> Message:
    kw = {"model": MODEL, "max_tokens": 400, "messages": messages, "tools": tools or [SEARCH], **kw}
    if not stream:
        return await client.messages.create(**kw)
    async with client.messages.stream(**kw) as events:
        return await events.get_final_message()


async def refused(call: Any) -> str:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await call
    assert caught.value.status_code == 400 and caught.value.type == "invalid_request_error"
    return str(caught.value.api_message)


def as_param(message: Message) -> dict[str, Any]:
    """``message`` as the assistant turn of the next request, unchanged."""
    return {
        "role": "assistant",
        "content": [b.model_dump(exclude_none=True) for b in message.content],
    }


def kinds(message: Message) -> list[str]:
    return [b.type for b in message.content]


def results_of(message: Message) -> list[Any]:
    return [b.content for b in message.content if b.type == "web_search_tool_result"]


def without_ids(message: Message) -> list[dict[str, Any]]:
    """The content with the random ``srvtoolu_`` ids replaced by their position."""
    dumped = json.dumps([b.model_dump() for b in message.content])
    for n, block in enumerate(b for b in message.content if b.type == "server_tool_use"):
        dumped = dumped.replace(block.id, f"call-{n}")
    return json.loads(dumped)


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


@pytest.mark.asyncio
async def test_a_search_reply_holds_calls_results_and_cited_text_alike_streamed_or_not(
    client: anthropic.AsyncAnthropic,
) -> None:
    messages = user("[[offline search=2]] What happened to the offline models this week?")
    whole = await ask(client, messages)
    streamed = await ask(client, messages, stream=True)
    assert without_ids(streamed) == without_ids(whole)
    assert whole.stop_reason == "end_turn"
    assert kinds(whole)[:5] == [
        "text",
        "server_tool_use",
        "web_search_tool_result",
        "server_tool_use",
        "web_search_tool_result",
    ]
    calls = [b for b in whole.content if b.type == "server_tool_use"]
    answers = [b for b in whole.content if b.type == "web_search_tool_result"]
    for call, answer in zip(calls, answers, strict=True):
        assert call.id.startswith("srvtoolu_") and call.name == "web_search"
        assert isinstance(call.input["query"], str) and call.input["query"]
        assert answer.tool_use_id == call.id
        assert answer.content, "a successful search returns results"
        for result in answer.content:
            assert result.type == "web_search_result"
            assert host_of(result.url).endswith(RESERVED) and result.title and result.page_age
            base64.b64decode(result.encrypted_content, validate=True)  # opaque, base64
    cited = [b for b in whole.content if b.type == "text" and b.citations]
    assert len(cited) == 2
    for block, answer in zip(cited, answers, strict=True):
        (citation,) = block.citations
        assert citation.type == "web_search_result_location"
        assert (citation.url, citation.title) == (answer.content[0].url, answer.content[0].title)
        assert citation.encrypted_index and 0 < len(citation.cited_text) <= 150
        assert block.text.startswith(citation.cited_text)
    usage = whole.usage.server_tool_use
    assert usage is not None and usage.web_search_requests == 2
    assert streamed.usage.server_tool_use.web_search_requests == 2


@pytest.mark.asyncio
async def test_the_stream_carries_the_query_as_json_deltas_and_the_result_whole(
    http: httpx2.AsyncClient,
) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 400,
        "stream": True,
        "tools": [SEARCH],
        "messages": user("[[offline search=1]] offline news"),
    }
    response = await http.post("/v1/messages", json=body, headers=HEADERS)
    assert response.status_code == 200
    events = [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    starts = {e["index"]: e["content_block"] for e in events if e["type"] == "content_block_start"}
    deltas: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        if event["type"] == "content_block_delta":
            deltas.setdefault(event["index"], []).append(event["delta"])
    call_index = next(i for i, b in starts.items() if b["type"] == "server_tool_use")
    assert starts[call_index]["input"] == {} and starts[call_index]["name"] == "web_search"
    assert {d["type"] for d in deltas[call_index]} == {"input_json_delta"}
    query = json.loads("".join(d["partial_json"] for d in deltas[call_index]))
    assert query == {"query": "offline news"}
    result_index = call_index + 1
    assert starts[result_index]["type"] == "web_search_tool_result"
    assert starts[result_index]["tool_use_id"] == starts[call_index]["id"]
    assert len(starts[result_index]["content"]) == 3 and result_index not in deltas
    cited = next(i for i, ds in deltas.items() if ds[0]["type"] == "citations_delta")
    assert deltas[cited][0]["citation"]["type"] == "web_search_result_location"
    final = next(e for e in events if e["type"] == "message_delta")
    assert final["usage"]["server_tool_use"]["web_search_requests"] == 1


@pytest.mark.asyncio
async def test_a_question_about_something_current_searches_once_when_the_tool_is_offered(
    client: anthropic.AsyncAnthropic,
) -> None:
    question = user("What is the latest news about tide tables?")
    searched = await ask(client, question)
    assert kinds(searched).count("server_tool_use") == 1
    assert searched.usage.server_tool_use.web_search_requests == 1
    forbidden = await ask(client, question, tool_choice={"type": "none"})
    assert "server_tool_use" not in kinds(forbidden)
    assert forbidden.usage.server_tool_use.web_search_requests == 0
    calculator = {
        "name": "calculator",
        "description": "Evaluate arithmetic.",
        "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}},
    }
    without_search = await ask(client, question, tools=[calculator])
    assert "server_tool_use" not in kinds(without_search)
    assert without_search.usage.server_tool_use is None
    stable = await ask(client, user("Write me a haiku about rivers."))
    assert "server_tool_use" not in kinds(stable)


@pytest.mark.asyncio
async def test_searches_past_max_uses_get_the_max_uses_exceeded_error_and_are_not_billed(
    client: anthropic.AsyncAnthropic,
) -> None:
    reply = await ask(
        client, user("[[offline search=3]] offline tides"), tools=[{**SEARCH, "max_uses": 1}]
    )
    first, second, third = results_of(reply)
    assert first and first[0].type == "web_search_result"
    for error in (second, third):
        assert error.type == "web_search_tool_result_error"
        assert error.error_code == "max_uses_exceeded"
    assert reply.stop_reason == "end_turn"
    assert reply.usage.server_tool_use.web_search_requests == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("code", ["too_many_requests", "unavailable"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_failed_search_is_an_error_in_its_result_block_not_an_http_error(
    client: anthropic.AsyncAnthropic, code: str, stream: bool
) -> None:
    reply = await ask(client, user(f"[[offline search=1 search_error={code}]] news"), stream=stream)
    (error,) = results_of(reply)
    assert error.type == "web_search_tool_result_error" and error.error_code == code
    assert reply.stop_reason == "end_turn"
    assert not any(b.type == "text" and b.citations for b in reply.content)
    assert reply.usage.server_tool_use.web_search_requests == 0


@pytest.mark.asyncio
async def test_results_come_only_from_allowed_domains_and_never_from_blocked_ones(
    client: anthropic.AsyncAnthropic,
) -> None:
    allowed = {**SEARCH, "allowed_domains": ["example.com/blog", "docs.example.net"]}
    reply = await ask(client, user("[[offline search=2]] offline tides"), tools=[allowed])
    urls = [r.url for results in results_of(reply) for r in results]
    assert urls
    for url in urls:
        parts = urlsplit(url)
        on_blog = parts.hostname == "example.com" and parts.path.startswith("/blog/")
        assert on_blog or parts.hostname == "docs.example.net", url
    blocked = {**SEARCH, "blocked_domains": ["example.org"]}
    reply = await ask(client, user("[[offline search=2]] offline tides"), tools=[blocked])
    hosts = {host_of(r.url) for results in results_of(reply) for r in results}
    assert hosts and not any(h == "example.org" or h.endswith(".example.org") for h in hosts)


@pytest.mark.asyncio
async def test_blocking_every_domain_returns_an_empty_result_list_not_an_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    tool = {**SEARCH, "blocked_domains": ["example.org", "example.com", "example.net"]}
    reply = await ask(client, user("[[offline search=1]] offline tides"), tools=[tool])
    assert results_of(reply) == [[]]
    assert reply.usage.server_tool_use.web_search_requests == 1  # a search ran, and is billed


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "tool",
    [
        SEARCH,
        {"type": "web_search_20260209", "name": "web_search", "allowed_callers": ["direct"]},
        {"type": "web_search_20260318", "name": "web_search", "response_inclusion": "excluded"},
        {
            **SEARCH,
            "max_uses": 5,
            "user_location": {"type": "approximate", "city": "Lyon", "country": "FR"},
        },
    ],
)
async def test_the_documented_tool_versions_and_options_are_accepted(
    client: anthropic.AsyncAnthropic, tool: dict[str, Any]
) -> None:
    reply = await ask(client, user("[[offline search=1]] offline tides"), tools=[tool])
    assert reply.usage.server_tool_use.web_search_requests == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("tool", "fragment"),
    [
        ({"type": "web_search_20991231", "name": "web_search"}, "does not match any"),
        ({**SEARCH, "name": "search"}, "name: Input should be 'web_search'"),
        ({**SEARCH, "max_uses": 0}, "max_uses: Input should be greater than 0"),
        (
            {**SEARCH, "allowed_domains": ["example.com"], "blocked_domains": ["example.org"]},
            "Cannot specify both allowed_domains and blocked_domains",
        ),
        ({**SEARCH, "allowed_domains": ["https://example.com"]}, "Invalid domain"),
        ({**SEARCH, "blocked_domains": ["*.example.com"]}, "Invalid domain"),
        ({**SEARCH, "user_location": {"type": "approximate"}}, "at least one of"),
        ({**SEARCH, "user_location": {"type": "approximate", "country": "France"}}, "country"),
        ({**SEARCH, "response_inclusion": "full"}, "Extra inputs are not permitted"),
    ],
)
async def test_a_tool_definition_the_api_refuses_is_a_400(
    client: anthropic.AsyncAnthropic, tool: dict[str, Any], fragment: str
) -> None:
    message = await refused(ask(client, user("hello"), tools=[tool]))
    assert message.startswith("tools.0") and fragment in message


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_a_turn_paused_after_its_searches_is_sent_back_unchanged_and_finished(
    client: anthropic.AsyncAnthropic, stream: bool
) -> None:
    question = user("[[offline search=2 search_pause]] offline tides this week")
    paused = await ask(client, question, stream=stream)
    assert paused.stop_reason == "pause_turn"
    assert kinds(paused)[-1] == "web_search_tool_result"
    assert paused.usage.server_tool_use.web_search_requests == 2
    # The documented continuation: the paused assistant turn as it is, last, on a model
    # that refuses any other prefill.
    rest = await ask(client, [*question, as_param(paused)], stream=not stream)
    assert rest.stop_reason == "end_turn"
    assert set(kinds(rest)) == {"text"}
    cited = [b.citations[0] for b in rest.content if b.citations]
    first_results = [r[0] for r in results_of(paused)]
    assert [(c.url, c.title) for c in cited] == [(r.url, r.title) for r in first_results]
    assert rest.usage.server_tool_use.web_search_requests == 0  # nothing searched again
    # And the finished turn goes back in the history of the next one.
    later = await ask(
        client, [*question, as_param(paused), as_param(rest), *user("Thanks, and a poem?")]
    )
    assert later.stop_reason == "end_turn"


@pytest.mark.asyncio
async def test_a_turn_paused_in_a_search_runs_that_search_when_sent_back(
    client: anthropic.AsyncAnthropic,
) -> None:
    question = user("[[offline words=30 pause_after=5]] tides")
    paused = await ask(client, question)
    assert paused.stop_reason == "pause_turn" and kinds(paused)[-1] == "server_tool_use"
    rest = await ask(client, [*question, as_param(paused)])
    result = rest.content[0]
    assert result.type == "web_search_tool_result" and result.tool_use_id == paused.content[-1].id
    assert result.content and rest.usage.server_tool_use.web_search_requests == 1


@pytest.mark.asyncio
async def test_modified_or_missing_encrypted_content_is_refused(
    client: anthropic.AsyncAnthropic,
) -> None:
    question = user("[[offline search=1]] offline tides")
    reply = as_param(await ask(client, question))
    result_at = next(
        j for j, b in enumerate(reply["content"]) if b["type"] == "web_search_tool_result"
    )
    follow_up = user("and then?")
    assert (await ask(client, [*question, reply, *follow_up])).stop_reason == "end_turn"
    for change in ("modified", "missing"):
        changed = copy.deepcopy(reply)
        item = changed["content"][result_at]["content"][0]
        if change == "missing":
            del item["encrypted_content"]
        else:
            item["title"] += " (edited)"
        message = await refused(ask(client, [*question, changed, *follow_up]))
        assert message.startswith(f"messages.1.content.{result_at}.content.0.encrypted_content")


@pytest.mark.asyncio
async def test_a_search_call_left_without_its_result_before_a_new_user_turn_is_refused(
    client: anthropic.AsyncAnthropic,
) -> None:
    question = user("[[offline words=30 pause_after=5]] tides")
    paused = await ask(client, question)
    message = await refused(ask(client, [*question, as_param(paused), *user("go on")]))
    call_id = paused.content[-1].id
    assert message == (
        f"messages.1: `web_search` tool use with id `{call_id}` was found without a "
        "corresponding `web_search_tool_result` block"
    )
