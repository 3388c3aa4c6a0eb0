"""The offline Claude ASGI application (standard library, Pillow and pypdf; no framework).

Routes:

* ``POST /v1/messages`` (JSON or ``stream: true`` SSE) and
  ``POST /v1/messages/count_tokens``; require a non-empty ``x-api-key`` (or
  ``authorization: Bearer ...``) and an ``anthropic-version`` header (any value); both read
  a conversation from its newest ``compaction`` block on, and a request with the
  ``compact_20260112`` edit may start its reply with one (``compaction.py``)
* ``GET /v1/models`` (paginated) and ``GET /v1/models/{id}``: the served models
* ``GET /_offline/health``, ``GET /_offline/stats``, ``GET /_offline/requests``
  (last 200 ``/v1/`` requests,
  oldest first, without ``x-api-key`` / ``authorization``), ``DELETE
  /_offline/requests`` (also resets the prompt cache and ``fail_times`` counters)

Every response carries a ``request-id`` header. A client disconnect cancels the
request's work immediately (nothing keeps running or sleeping for a gone client).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from . import compaction, documents, lineup, thinking, web_search
from .directives import Directives, parse_text
from .errors import (
    DEFAULT_MESSAGES,
    STATUS_FOR_ERROR_TYPE,
    ApiError,
    DropConnection,
    error_payload,
    error_type_for_status,
    invalid,
    new_id,
)
from .events import encode_json, message_json, sse, stream_events
from .replies import Conversation, ReplyPlan, analyse_turn, message_text, plan_reply
from .tokens import CacheUsage, PromptCache, count_tokens, request_segments
from .validation import validate_messages_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_RECORDS = 200
_HIDDEN_HEADERS = frozenset({"x-api-key", "authorization"})
_NO_FAILURE = {"status": None, "error_after": None, "drop_after": None, "stall_after": None}


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class Request:
    """An HTTP request with its body fully read."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_body: bytes
    request_id: str

    def json(self) -> Any:
        """The body parsed as JSON (400 ``invalid_request_error`` if it is not JSON)."""
        if not self.raw_body:
            return None
        try:
            return json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid(f"There was an error parsing the body of your request: {exc}") from None


class Responder:
    """Wraps ASGI ``send``; every response gets the ``request-id`` header."""

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self.request_id = request_id
        self.started = False

    async def start(
        self, status: int, content_type: str, extra: list[tuple[str, str]] | None = None
    ) -> None:
        """Send the status line and headers."""
        headers = [("content-type", content_type), ("request-id", self.request_id), *(extra or [])]
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )

    async def body(self, data: bytes, *, more: bool = False) -> None:
        """Send a piece of the body; ``more=False`` completes the response."""
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, payload: Any, extra: list[tuple[str, str]] | None = None
    ) -> None:
        """Send a complete JSON response."""
        data = encode_json(payload)
        await self.start(
            status, "application/json", [("content-length", str(len(data))), *(extra or [])]
        )
        await self.body(data)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def run_until_disconnect(receive: Receive, work: Awaitable[None]) -> None:
    """Run ``work`` but cancel it as soon as the client disconnects.

    The request body must already be consumed. Exceptions of ``work`` propagate.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if not task.cancelled():
        task.result()


class OfflineClaude:
    """ASGI app emulating the Anthropic Messages API (see module and package docs).

    ``pace_ms`` defaults to ``$OFFLINE_CLAUDE_PACE_MS`` (20) and ``cache_min_tokens``
    to ``$OFFLINE_CLAUDE_CACHE_MIN_TOKENS`` (1024), read when the app is created.
    State (records, cache, counters) lives in the instance and in memory only.
    """

    def __init__(
        self, *, pace_ms: float | None = None, cache_min_tokens: int | None = None
    ) -> None:
        self.pace_ms = _env_float("OFFLINE_CLAUDE_PACE_MS", 20.0) if pace_ms is None else pace_ms
        min_tokens = (
            _env_float("OFFLINE_CLAUDE_CACHE_MIN_TOKENS", 1024)
            if cache_min_tokens is None
            else cache_min_tokens
        )
        self.cache = PromptCache(min_tokens=int(min_tokens))
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_RECORDS)
        self.fail_counts: dict[str, int] = {}
        self.active_requests = 0

    def reset(self) -> None:
        """Clear request records, prompt cache and ``fail_times`` counters."""
        self.records.clear()
        self.cache.clear()
        self.fail_counts.clear()

    def stats(self) -> dict[str, int]:
        """Counters for leak checks.

        ``active_requests`` counts in-flight HTTP requests, including the asking one.
        """
        return {
            "active_requests": self.active_requests,
            "cache_entries": len(self.cache),
            "records": len(self.records),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.active_requests += 1
        try:
            await self._handle(scope, receive, send)
        finally:
            self.active_requests -= 1

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        respond = Responder(send, new_id("req_"))
        try:
            request = await self._read(scope, receive, respond.request_id)
            if request is None:  # the client left before sending its whole body
                return
            await run_until_disconnect(receive, self._route(request, respond))
        except ApiError as err:
            if respond.started:
                raise
            await respond.json(err.status, err.body(respond.request_id), err.headers)
        except DropConnection:
            raise
        except Exception:
            if respond.started:
                raise
            error = ApiError(
                500, "Internal server error (offline Claude bug)", error_type="api_error"
            )
            await respond.json(500, error.body(respond.request_id))
            raise

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read(self, scope: Scope, receive: Receive, request_id: str) -> Request | None:
        """Read the whole request; ``None`` if the client disconnected first (413 past 32 MB)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(
                    413, DEFAULT_MESSAGES["request_too_large"], error_type="request_too_large"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        return Request(
            method=scope["method"].upper(),
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            raw_body=b"".join(chunks),
            request_id=request_id,
        )

    def _record(self, request: Request) -> None:
        try:
            body: Any = json.loads(request.raw_body) if request.raw_body else None
        except (ValueError, UnicodeDecodeError):
            body = request.raw_body.decode("utf-8", "replace")
        self.records.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": {k: v for k, v in request.headers.items() if k not in _HIDDEN_HEADERS},
                "body": body,
                "time": time.time(),
                "request_id": request.request_id,
            }
        )

    async def _route(self, request: Request, respond: Responder) -> None:
        path, method = request.path.rstrip("/") or "/", request.method
        if path == "/_offline/health" and method == "GET":
            await respond.json(200, {"ok": True})
            return
        if path == "/_offline/stats" and method == "GET":
            await respond.json(200, self.stats())
            return
        if path == "/_offline/requests":
            if method == "GET":
                await respond.json(200, list(self.records))
                return
            if method == "DELETE":
                self.reset()
                await respond.json(200, {"ok": True})
                return
        if path.startswith("/v1/"):
            self._record(request)
            self._check_headers(request)
            if path == "/v1/messages" and method == "POST":
                await self._messages(request, respond)
                return
            if path == "/v1/messages/count_tokens" and method == "POST":
                body = validate_messages_body(request.json(), count_only=True)
                model = lineup.get(body["model"])
                compaction.check(body, model, compaction.betas(request.headers))
                await documents.load(body, model)
                counted = {**body, "messages": compaction.effective_messages(body["messages"])}
                await respond.json(200, {"input_tokens": count_tokens(request_segments(counted))})
                return
            if path == "/v1/models" and method == "GET":
                await respond.json(200, lineup.page(_query(request.query)))
                return
            if path.startswith("/v1/models/") and method == "GET":
                await respond.json(200, lineup.get(path.removeprefix("/v1/models/")).info())
                return
        raise ApiError(404, f"Not found: {method} {request.path}", error_type="not_found_error")

    @staticmethod
    def _check_headers(request: Request) -> None:
        api_key = request.headers.get("x-api-key", "").strip()
        bearer = request.headers.get("authorization", "").removeprefix("Bearer").strip()
        if not api_key and not bearer:
            raise ApiError(401, "x-api-key header is required", error_type="authentication_error")
        if not request.headers.get("anthropic-version", "").strip():
            raise invalid("anthropic-version: header is required")

    def _active_failures(self, directives: Directives) -> Directives:
        """Apply ``fail_times``: past the first K requests with this directive, fail no more."""
        if directives.fail_times is None or directives.raw is None or not directives.has_failure:
            return directives
        seen = self.fail_counts.get(directives.raw, 0)
        self.fail_counts[directives.raw] = seen + 1
        if seen < directives.fail_times:
            return directives
        return dataclasses.replace(directives, **_NO_FAILURE)  # type: ignore[arg-type]

    async def _messages(self, request: Request, respond: Responder) -> None:
        body = validate_messages_body(request.json())
        model = lineup.get(body["model"])
        compact = compaction.check(body, model, compaction.betas(request.headers))
        thinking.check_returned_blocks(body, model)
        library = await documents.load(body, model)
        turn = analyse_turn(body["messages"])
        parsed = parse_text(message_text(body["messages"][turn.anchor]))
        directives = self._active_failures(parsed.directives)
        if directives.first_ms:
            await asyncio.sleep(directives.first_ms / 1000)
        if directives.status is not None:
            raise _status_error(directives)
        # The API reads the conversation from its newest compaction block on.
        read = {**body, "messages": compaction.effective_messages(body["messages"])}
        segments = request_segments(read)
        summary, kept = self._compaction(read, segments, compact)
        plan = plan_reply(
            Conversation(
                body,
                segments,
                parsed.visible,
                parsed.reply_text,
                turn,
                thinking=thinking.is_on(body, model),
                thinking_shown=thinking.display(body, model) == "summarized",
                documents=library,
            ),
            directives,
            compaction=summary,
            pause_after_compaction=compact is not None and compact.pause_after,
        )
        usage = self._usage(read, segments, compact, summary, kept, plan)
        if web_search.offered(body) is not None:
            usage = dataclasses.replace(usage, web_search_requests=web_search.requests_made(plan))
        message_id = new_id("msg_")
        if body.get("stream"):
            await self._stream(respond, plan, usage, message_id, body["model"], directives)
        else:
            await self._respond_whole(respond, plan, usage, message_id, body["model"], directives)

    @staticmethod
    def _compaction(
        read: dict[str, Any], segments: list, compact: compaction.Compaction | None
    ) -> tuple[str | None, int]:
        """(summary, index of the first message kept) when this request compacts, else
        (None, 0): the input reached the trigger and turns precede the current one."""
        if compact is None:
            return None, 0
        tokens = count_tokens(segments)
        start = analyse_turn(read["messages"]).anchor
        if tokens < compact.trigger or start == 0:
            return None, 0
        return compaction.summary_of(read["messages"][: start + 1], tokens), start

    def _usage(
        self,
        read: dict[str, Any],
        segments: list,
        compact: compaction.Compaction | None,
        summary: str | None,
        kept: int,
        plan: ReplyPlan,
    ) -> CacheUsage:
        """The request's usage; with compaction asked for, its ``iterations`` too: the
        compaction iteration reads the whole request, the reply the compacted context."""
        if compact is None:
            return self.cache.apply(segments)
        iterations = []
        if summary is not None:
            whole = self.cache.apply(segments)
            iterations.append(whole.iteration("compaction", compaction.summary_tokens(summary)))
            block = {"type": "compaction", "content": summary}
            messages = compaction.compacted_messages(read["messages"], block, kept)
            segments = request_segments({**read, "messages": messages})
        usage = self.cache.apply(segments)
        iterations.append(usage.iteration("message", plan.output_tokens))
        return dataclasses.replace(usage, iterations=tuple(iterations))

    async def _stream(
        self,
        respond: Responder,
        plan: ReplyPlan,
        usage: CacheUsage,
        message_id: str,
        model: str,
        directives: Directives,
    ) -> None:
        pace = (self.pace_ms if directives.pace_ms is None else directives.pace_ms) / 1000
        await respond.start(
            200, "text/event-stream; charset=utf-8", [("cache-control", "no-cache")]
        )
        deltas = 0
        stalled = False
        for event in stream_events(plan, message_id=message_id, model=model, usage=usage):
            if event.is_delta or event.name == "message_delta":
                if directives.error_after is not None and deltas >= directives.error_after:
                    error_type = directives.error_type or "overloaded_error"
                    message = directives.message or DEFAULT_MESSAGES.get(error_type, "Overloaded")
                    await respond.body(
                        sse("error", error_payload(error_type, message, directives.error_code))
                    )
                    return
                if directives.drop_after is not None and deltas >= directives.drop_after:
                    raise DropConnection
                if (
                    directives.stall_after is not None
                    and deltas >= directives.stall_after
                    and not stalled
                ):
                    stalled = True
                    await asyncio.sleep(directives.stall_s)
            if event.is_delta:
                await asyncio.sleep(pace)
                deltas += 1
            await respond.body(event.encode(), more=True)
        await respond.body(b"")

    async def _respond_whole(
        self,
        respond: Responder,
        plan: ReplyPlan,
        usage: CacheUsage,
        message_id: str,
        model: str,
        directives: Directives,
    ) -> None:
        if directives.stall_after is not None:
            await asyncio.sleep(directives.stall_s)
        if directives.error_after is not None:
            error_type = directives.error_type or "overloaded_error"
            status = STATUS_FOR_ERROR_TYPE.get(error_type, 500)
            message = directives.message or DEFAULT_MESSAGES.get(error_type, "Overloaded")
            raise ApiError(status, message, error_type=error_type, error_code=directives.error_code)
        data = encode_json(message_json(plan, message_id=message_id, model=model, usage=usage))
        if directives.drop_after is not None:
            await respond.start(200, "application/json", [("content-length", str(len(data)))])
            await respond.body(data[: len(data) // 2], more=True)
            raise DropConnection
        await respond.start(200, "application/json", [("content-length", str(len(data)))])
        await respond.body(data)


def _query(raw: str) -> dict[str, str]:
    """Query parameters (the last value of each)."""
    return dict(urllib.parse.parse_qsl(raw))


def _status_error(directives: Directives) -> ApiError:
    """The HTTP error requested by ``status=`` (429 gets ``retry-after: 1`` unless given)."""
    status = int(directives.status or 500)
    error_type = directives.error_type or error_type_for_status(status)
    headers: list[tuple[str, str]] = []
    if directives.retry_after is not None:
        headers.append(("retry-after", directives.retry_after))
    elif status == 429:
        headers.append(("retry-after", "1"))
    message = directives.message or DEFAULT_MESSAGES.get(error_type, "Error")
    return ApiError(
        status, message, error_type=error_type, error_code=directives.error_code, headers=headers
    )


def create_app() -> OfflineClaude:
    """A fresh app instance configured from the environment."""
    return OfflineClaude()


app = create_app()
