"""The one module that talks to Claude (through the anthropic SDK).

Callers see our own types only: `stream_round` yields text and fills a `CallRecord`; every failure
is raised as `ClaudeError` with a user-facing message and a retryable flag. The same code reaches
Claude or the offline model; only ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY differ.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anthropic
import httpx2
from django.conf import settings
from django.utils.crypto import salted_hmac

from chat.claude.errors import to_claude_error
from chat.claude.records import CallRecord
from chat.claude.responses import RoundEvents, compaction_usage, usage_from
from chat.telemetry import metrics

# One client per event loop: building one costs ~18 ms, and a client is bound to its loop.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anthropic.AsyncAnthropic] = (
    weakref.WeakKeyDictionary()
)


def get_client() -> anthropic.AsyncAnthropic:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = anthropic.AsyncAnthropic(
            api_key=settings.ANTHROPIC_API_KEY or None,
            base_url=settings.ANTHROPIC_BASE_URL or None,
            max_retries=settings.CLAUDE_MAX_RETRIES,
            timeout=httpx2.Timeout(
                settings.CLAUDE_READ_TIMEOUT_S, connect=settings.CLAUDE_CONNECT_TIMEOUT_S
            ),
        )
        _clients[loop] = client
    return client


def user_metadata_id(user_id: int) -> str:
    """The opaque id sent as `metadata.user_id`: an HMAC of the user's primary key.

    Anthropic asks for a stable per-user id to trace abuse, and for nothing that identifies
    the person. An HMAC keyed from SECRET_KEY (salted for this use) is stable across processes
    and restarts, needs no stored column, and cannot be turned back into the key, let alone a
    username or an email, without the secret. Rotating SECRET_KEY gives every user a new id.
    """
    return salted_hmac(
        "claudeweb.claude.metadata.user_id", str(user_id), algorithm="sha256"
    ).hexdigest()[:32]


def _metadata(user_id: int | None) -> dict:
    return {"metadata": {"user_id": user_metadata_id(user_id)}} if user_id is not None else {}


def reset_clients() -> None:
    """Forget cached clients (settings changed, e.g. in tests)."""
    _clients.clear()


def _request_options(
    *, tools: list[dict] | None, thinking: dict | None, compaction: dict | None, **extra: object
) -> tuple[object, dict]:
    """The messages API to call and the optional request fields: tools, thinking and
    compaction (which needs the SDK's beta messages API) where given."""
    messages_api = get_client().messages
    if tools:
        extra["tools"] = tools
    if thinking:
        extra.update(thinking)
    if compaction:
        extra.update(compaction)
        messages_api = get_client().beta.messages
    return messages_api, extra


def system_blocks(text: str) -> list[dict]:
    """The system prompt as one cached text block: identical bytes on every turn."""
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


async def stream_round(
    *,
    model: str,
    system: list[dict],
    messages: list[dict],
    max_tokens: int,
    record: CallRecord,
    tools: list[dict] | None = None,
    tool_choice: dict | None = None,
    thinking: dict | None = None,
    on_block: Callable[[dict], None] | None = None,
    on_start: Callable[[CallRecord], Awaitable[None]] | None = None,
    user_id: int | None = None,
    on_thinking: Callable[[str], None] | None = None,
    compaction: dict | None = None,
) -> AsyncIterator[str]:
    """Stream one request; yield its text deltas (text blocks only).

    Fills `record` as events arrive: request id, usage, stop_reason, timings, and the complete
    content blocks in order (text, tool_use with parsed input, thinking with its signature,
    redacted_thinking as sent) in `record.content`. `thinking` holds the request fields that
    ask for thinking (`thinking`, `output_config`; see request_body.thinking_params). `on_thinking`
    is called with each piece of thinking text as it streams; `on_block` with each block as it
    completes; `user_id` (our user's pk) goes out as the opaque `metadata.user_id`
    (user_metadata_id); `on_start` is awaited once, after message_start
    (the API has then reported the input usage), before any text. `compaction` holds the
    beta and `context_management` fields that ask for server-side compaction
    (request_body.compaction_params); the request then goes through the SDK's beta messages API,
    and a compaction block streams like any other block (its summary in one
    compaction_delta). Raises ClaudeError on any
    upstream failure; `record` then holds what the API had reported. Cancelling the consumer of
    this generator closes the upstream connection.
    """
    messages_api, extra = _request_options(
        tools=tools, thinking=thinking, compaction=compaction, **_metadata(user_id)
    )
    if tool_choice:
        extra["tool_choice"] = tool_choice
    stream = await _open_stream(
        messages_api,
        record,
        model=model,
        system=system,
        messages=messages,
        max_tokens=max_tokens,
        **extra,
    )
    record.request_id = stream.response.headers.get("request-id", "")
    events = RoundEvents(record, on_block=on_block, on_start=on_start, on_thinking=on_thinking)
    try:
        async with stream:
            async for event in stream:
                text = await events.apply(event)
                if text:
                    yield text
    except Exception as exc:
        error = to_claude_error(exc, model=model)
        if error is None:
            raise
        _failed(record, error.code)
        raise error from exc
    finally:
        record.finished = time.monotonic()
        if record.ttft_ms is not None:
            metrics.TIME_TO_FIRST_TOKEN.labels(model=model).observe(record.ttft_ms / 1000)


def _failed(record: CallRecord, code: str) -> None:
    record.error_code = code
    metrics.UPSTREAM_ERRORS.labels(code=code).inc()


async def _open_stream(messages_api: object, record: CallRecord, **request: object) -> object:
    """Send the request; a failure before the first event is raised as ClaudeError, with the
    request id the API gave it in `record`."""
    try:
        return await messages_api.create(stream=True, **request)
    except Exception as exc:
        record.finished = time.monotonic()
        error = to_claude_error(exc, model=str(request.get("model", "")))
        if error is None:
            raise
        _failed(record, error.code)
        record.request_id = error.request_id
        raise error from exc


async def complete(
    *,
    model: str,
    system: str,
    messages: list[dict],
    max_tokens: int,
    record: CallRecord,
    user_id: int | None = None,
    thinking: dict | None = None,
) -> str:
    """One non-streamed request (titles, summaries); returns its text. Raises ClaudeError.

    `user_id` (our user's pk) goes out as the opaque `metadata.user_id`, as in stream_round;
    `thinking` holds the request's thinking fields (request_body.no_thinking_params), if any.
    """
    client = get_client()
    try:
        message = await client.messages.create(
            model=model,
            system=system,
            messages=messages,
            max_tokens=max_tokens,
            **_metadata(user_id),
            **(thinking or {}),
        )
    except Exception as exc:
        error = to_claude_error(exc, model=model)
        if error is None:
            raise
        _failed(record, error.code)
        record.request_id = error.request_id
        raise error from exc
    finally:
        record.finished = time.monotonic()
    record.request_id = getattr(message, "_request_id", None) or ""
    record.message_id = message.id
    record.stop_reason = message.stop_reason or ""
    usage_from(message.usage, record.usage)
    record.compaction = compaction_usage(message.usage)
    record.content = [b.model_dump(mode="json", exclude_none=True) for b in message.content]
    return "".join(b.text for b in message.content if b.type == "text")


async def count_tokens(
    *,
    model: str,
    system: list[dict],
    messages: list[dict],
    tools: list[dict] | None = None,
    thinking: dict | None = None,
    compaction: dict | None = None,
) -> int:
    """The input tokens of a request as it would be sent (`POST /v1/messages/count_tokens`).

    The endpoint is free but rate limited: callers ask only near the context limit, never on
    every turn. It is not a billed call, so it makes no ledger row. `thinking` and
    `compaction` are the request's own fields (a history holding compaction blocks needs the
    beta to be read). Raises ClaudeError.
    """
    messages_api, extra = _request_options(tools=tools, thinking=thinking, compaction=compaction)
    try:
        counted = await messages_api.count_tokens(
            model=model, system=system, messages=messages, **extra
        )
    except Exception as exc:
        error = to_claude_error(exc, model=model)
        if error is None:
            raise
        raise error from exc
    return counted.input_tokens


@dataclass(frozen=True)
class ServedModel:
    """One entry of `GET /v1/models`: the limits the API reports (None when it gives none)."""

    id: str
    display_name: str
    max_input_tokens: int | None
    max_tokens: int | None


async def list_models() -> list[ServedModel]:
    """Every model the API serves to this key, all pages. Raises ClaudeError."""
    client = get_client()
    served = []
    try:
        async for model in client.models.list(limit=100):
            served.append(
                ServedModel(
                    id=model.id,
                    display_name=model.display_name,
                    max_input_tokens=getattr(model, "max_input_tokens", None),
                    max_tokens=getattr(model, "max_tokens", None),
                )
            )
    except Exception as exc:
        error = to_claude_error(exc)
        if error is None:
            raise
        raise error from exc
    return served
