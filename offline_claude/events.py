"""Wire shapes of Messages API responses: the non-streamed Message and the SSE events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .replies import ReplyPlan
from .tokens import CacheUsage


def encode_json(data: Any, **options: Any) -> bytes:
    """JSON as UTF-8, non-ASCII text unescaped as the real API sends it, but a lone surrogate
    (which UTF-8 cannot carry) as its ``\\uXXXX`` escape: surrogates only occur inside JSON
    strings, where Python's backslashreplace writes exactly that escape."""
    return json.dumps(data, ensure_ascii=False, **options).encode("utf-8", "backslashreplace")


def sse(event: str, data: dict[str, Any]) -> bytes:
    """Encode one server-sent event the way the real API does (``event:`` + ``data:`` lines)."""
    payload = encode_json(data, separators=(",", ":"))
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


def _stop_details(stop_reason: str) -> dict[str, Any] | None:
    if stop_reason == "refusal":
        return {"type": "refusal", "category": None, "explanation": None}
    return None


def message_json(
    plan: ReplyPlan, *, message_id: str, model: str, usage: CacheUsage
) -> dict[str, Any]:
    """The complete Message object returned by a non-streamed ``POST /v1/messages``."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block.final() for block in plan.blocks],
        "stop_reason": plan.stop_reason,
        "stop_sequence": plan.stop_sequence,
        "stop_details": _stop_details(plan.stop_reason),
        "usage": usage.as_usage(plan.output_tokens),
    }


@dataclass(frozen=True)
class StreamEvent:
    """One SSE event; ``is_delta`` marks content deltas (the unit of pacing and failures)."""

    name: str
    data: dict[str, Any]
    is_delta: bool = False

    def encode(self) -> bytes:
        """The event's bytes on the wire."""
        return sse(self.name, self.data)


def stream_events(
    plan: ReplyPlan, *, message_id: str, model: str, usage: CacheUsage
) -> Iterator[StreamEvent]:
    """The real event sequence for ``plan``.

    ``message_start`` (usage with ``output_tokens: 1``, no ``iterations``), then per block
    ``content_block_start`` / ``content_block_delta``... / ``content_block_stop`` (a
    ``ping`` follows the first block start; a cited text block starts with its
    ``citations_delta`` events, one citation each; thinking blocks end with a
    ``signature_delta``; a compaction block streams its summary in one ``compaction_delta``),
    then ``message_delta`` (stop reason and cumulative usage including the input and cache
    figures, and ``iterations`` when compaction was asked for) and ``message_stop``.
    """
    yield StreamEvent(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                # The per-iteration figures come with the final usage (message_delta).
                "usage": {k: v for k, v in usage.as_usage(1).items() if k != "iterations"},
            },
        },
    )
    for index, block in enumerate(plan.blocks):
        yield StreamEvent(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block.start()},
        )
        if index == 0:
            yield StreamEvent("ping", {"type": "ping"})
        for citation in block.citations or ():  # a cited block names its sources first
            yield StreamEvent(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "citations_delta", "citation": citation},
                },
            )
        for chunk in block.streamed_chunks:
            yield StreamEvent(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": block.delta(chunk)},
                is_delta=True,
            )
        if block.type == "thinking":
            yield StreamEvent(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": block.signature},
                },
            )
        yield StreamEvent("content_block_stop", {"type": "content_block_stop", "index": index})
    yield StreamEvent(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": plan.stop_reason,
                "stop_sequence": plan.stop_sequence,
                "stop_details": _stop_details(plan.stop_reason),
            },
            "usage": usage.as_delta_usage(plan.output_tokens),
        },
    )
    yield StreamEvent("message_stop", {"type": "message_stop"})
