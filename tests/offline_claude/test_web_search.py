"""The offline Claude's web search server tool, exercised through the real anthropic SDK (and raw
SSE where the wire shape matters), as Claude's web search tool and server tools pages describe it.

No Django and no database: ``pytest tests/offline_claude/test_web_search.py -p no:django``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import anthropic
import httpx2
import pytest
import pytest_asyncio
from anthropic.types import Message

from tests.support.servers import offline_claude

MODEL = "claude-sonnet-4-6"  # no prefill: only a pause_turn continuation may end with assistant
HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
SEARCH = {"type": "web_search_20250305", "name": "web_search"}
RESERVED = ("example.org", "example.com", "example.net")


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with tempfile.TemporaryFile(mode="w+") as stderr:
        with offline_claude(stderr=stderr) as url:
            yield url
        stderr.seek(0)
        logged = stderr.read()
    assert "Traceback" not in logged, logged


@pytest_asyncio.fixture
async def client(server_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=server_url, api_key="test", max_retries=0) as sdk:
        yield sdk


@pytest_asyncio.fixture
async def http(server_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=server_url, timeout=10) as raw:
        yield raw


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
    reply = await ask(client, user("hello"), tools=[tool])
    assert reply.stop_reason == "end_turn"


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
