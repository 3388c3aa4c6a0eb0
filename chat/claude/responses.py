"""What the API sends back, in our records: its usage (with the compaction iterations) and the
content blocks of a streamed response, rebuilt event by event."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from chat.claude.records import CallRecord, Usage


def compaction_usage(usage: object) -> Usage | None:
    """The compaction iterations of a response's usage, summed; None when there were none.

    The API lists each sampling step of a request in `usage.iterations`; a `compaction`
    entry is the summarising step, "not included in the top-level usage fields" (anthropic
    2.17, BetaIterationsUsage), yet billed like any other.
    """
    steps = [i for i in getattr(usage, "iterations", None) or [] if i.type == "compaction"]
    if not steps:
        return None
    total = Usage()
    for step in steps:
        part = Usage()
        usage_from(step, part)
        total.add(part)
    return total


def usage_from(usage: object, into: Usage, *, output_only: bool = False) -> None:
    """Copy the API's usage (cumulative in message_delta) into ours.

    The web searches come in `server_tool_use` (message_start's usage, each message_delta's,
    a whole response's): a count so far, so the latest one reported stands.
    """
    output = getattr(usage, "output_tokens", None)
    if output is not None:
        into.output_tokens = output
    server_tools = getattr(usage, "server_tool_use", None)
    if server_tools is not None:
        into.web_search_requests = getattr(server_tools, "web_search_requests", 0) or 0
    if output_only and getattr(usage, "input_tokens", None) is None:
        return
    input_tokens = getattr(usage, "input_tokens", None)
    if input_tokens is not None:
        into.input_tokens = input_tokens
    cache_read = getattr(usage, "cache_read_input_tokens", None)
    if cache_read is not None:
        into.cache_read_tokens = cache_read
    creation_total = getattr(usage, "cache_creation_input_tokens", None)
    breakdown = getattr(usage, "cache_creation", None)
    if breakdown is not None:
        into.cache_write_5m_tokens = getattr(breakdown, "ephemeral_5m_input_tokens", 0) or 0
        into.cache_write_1h_tokens = getattr(breakdown, "ephemeral_1h_input_tokens", 0) or 0
    elif creation_total is not None:
        into.cache_write_5m_tokens = creation_total
        into.cache_write_1h_tokens = 0


class BlockBuilder:
    """Rebuilds a response's content blocks from raw stream events."""

    def __init__(self, blocks: list[dict]) -> None:
        self.blocks = blocks  # filled in place: callers may hold the list while it grows
        self._json: dict[int, list[str]] = {}

    def start(self, index: int, block: object) -> dict:
        kind = block.type
        if kind == "text":
            built = {"type": "text", "text": ""}
            if getattr(block, "citations", None) is not None:  # a cited passage: its sources
                built["citations"] = []
        elif kind == "tool_use" or kind == "server_tool_use":
            built = {"type": kind, "id": block.id, "name": block.name, "input": {}}
            self._json[index] = []
        elif kind == "thinking":
            built = {"type": "thinking", "thinking": "", "signature": ""}
        else:  # redacted thinking, compaction, server tool results: kept exactly as sent
            built = block.model_dump(mode="json", exclude_none=True)
        while len(self.blocks) <= index:
            self.blocks.append({})
        self.blocks[index] = built
        return built

    def delta(self, index: int, delta: object) -> str | None:
        """Apply a delta; return text to show (text_delta only). Thinking text and signatures
        are collected into their block."""
        block = self.blocks[index]
        kind = delta.type
        if kind == "text_delta":
            block["text"] += delta.text
            return delta.text
        if kind == "input_json_delta":
            self._json[index].append(delta.partial_json)
        elif kind == "thinking_delta":
            block["thinking"] += delta.thinking
        elif kind == "signature_delta":
            block["signature"] = delta.signature
        elif kind == "citations_delta":  # one source of the text block, kept as the API sent it
            block.setdefault("citations", []).append(
                delta.citation.model_dump(mode="json", exclude_unset=True)
            )
        elif kind == "compaction_delta":  # the summary comes whole, in one delta
            block["content"] = delta.content
            if getattr(delta, "encrypted_content", None):
                block["encrypted_content"] = delta.encrypted_content
        return None

    def stop(self, index: int) -> dict:
        block = self.blocks[index]
        if index in self._json:
            raw = "".join(self._json.pop(index))
            try:
                block["input"] = json.loads(raw) if raw else {}
            except ValueError:
                block["input"] = {"_unparsed": raw}
        return block


class RoundEvents:
    """Applies one stream's events to its CallRecord, in order, and calls the callbacks."""

    def __init__(
        self,
        record: CallRecord,
        *,
        on_block: Callable[[dict], None] | None,
        on_start: Callable[[CallRecord], Awaitable[None]] | None,
        on_thinking: Callable[[str], None] | None,
    ) -> None:
        self.record = record
        self.builder = BlockBuilder(record.content)
        self.on_block = on_block
        self.on_start = on_start
        self.on_thinking = on_thinking

    async def apply(self, event: object) -> str | None:
        """Apply one event; return the text to show, if it brought any."""
        kind = event.type
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "content_block_start":
            self.builder.start(event.index, event.content_block)
        elif kind == "content_block_stop":
            self._block_stop(event)
        elif kind == "message_start":
            await self._message_start(event)
        elif kind == "message_delta":
            self._message_delta(event)
        return None

    def _block_delta(self, event: object) -> str | None:
        text = self.builder.delta(event.index, event.delta)
        if event.delta.type == "thinking_delta" and self.on_thinking is not None:
            self.on_thinking(event.delta.thinking)
        if text and self.record.first_token_at is None:
            self.record.first_token_at = time.monotonic()
        return text

    def _block_stop(self, event: object) -> None:
        block = self.builder.stop(event.index)
        if self.on_block is not None:
            self.on_block(block)

    async def _message_start(self, event: object) -> None:
        self.record.message_id = event.message.id
        usage_from(event.message.usage, self.record.usage)
        if self.on_start is not None:
            await self.on_start(self.record)

    def _message_delta(self, event: object) -> None:
        self.record.stop_reason = event.delta.stop_reason or ""
        usage_from(event.usage, self.record.usage, output_only=True)
        self.record.compaction = compaction_usage(event.usage)
