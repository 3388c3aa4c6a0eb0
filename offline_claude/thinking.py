"""Thinking blocks: whether a request thinks, how blocks are signed, what comes back checked.

A block's ``signature`` (a ``redacted_thinking`` block's ``data``) names the model that wrote
it and carries two HMACs under a per-process secret: one over the block's kind and text (any
edit breaks it) and one that also covers a hash of the request prefix the block was written
after (top-level ``system``, ``tools``, every earlier message and the earlier blocks of its
own message; ``cache_control`` marks excluded). What a returned block must satisfy follows
the API's documentation:

* When thinking is on and the request answers tool results, the assistant message before
  them must start with a ``thinking`` or ``redacted_thinking`` block (after the
  ``compaction`` block a compacting response starts with).
* A block whose text (or signature) was edited is refused.
* On models with preserved thinking, a block the model cannot read (another model wrote it)
  is dropped without an error, and a block whose prefix differs from the one it was written
  after — something before it changed, or a thinking block before it was dropped or moved —
  is refused with the documented "bound to a different conversation" error.
* On other models only the current turn's blocks are checked (earlier turns' thinking is
  ignored by those models).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from .errors import invalid
from .lineup import Model

_SECRET = secrets.token_bytes(32)
_MAC_BYTES = 16
THINKING_KINDS = ("thinking", "redacted_thinking")

BOUND_ELSEWHERE = (
    "{path}: Invalid `signature` in `thinking` block. The block is bound to a different "
    "conversation. Remove the block, or set `thinking.block_binding.prefix_mismatch_behavior` "
    'to "drop_block".'
)
EDITED = "{path}: Invalid `signature` in `thinking` block."
MUST_START = (
    "{path}.type: Expected thinking or redacted_thinking, but found {found}. When thinking is "
    "enabled, a final assistant message must start with a thinking block (preceeding the "
    "lastmost set of tool_use and tool_result blocks). We recommend you include thinking "
    "blocks from previous turns. To avoid this requirement, disable thinking. Please consult "
    "our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


def is_on(body: dict[str, Any], model: Model) -> bool:
    """Whether this request thinks: asked for, or the model's default when ``thinking`` is unset."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        return model.thinks_by_default
    return thinking.get("type") in ("enabled", "adaptive", "between_tools")


def display(body: dict[str, Any], model: Model) -> str:
    """``summarized`` (the text is returned) or ``omitted`` (empty text, signature only)."""
    thinking = body.get("thinking")
    chosen = thinking.get("display") if isinstance(thinking, dict) else None
    return chosen or model.display_default


def _normal_content(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [_without_cache_control(b) for b in content or []]


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def prefix_hash(body: dict[str, Any], index: int, before: list[Any]) -> str:
    """The hash of what precedes a block at ``messages[index]``, after the blocks ``before``."""
    system = body.get("system")
    prefix = {
        "system": _normal_content(system) if system else [],
        "tools": _without_cache_control(body.get("tools") or []),
        "messages": [
            {"role": m["role"], "content": _normal_content(m["content"])}
            for m in body["messages"][:index]
        ],
        "open": _normal_content(before),
    }
    canonical = json.dumps(prefix, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _mac(*parts: str) -> bytes:
    return hmac.new(_SECRET, "\0".join(parts).encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def sign(kind: str, model: str, text: str, prefix: str) -> str:
    """A block's signature: the producing model, a content MAC and a content+prefix MAC."""
    raw = model.encode() + b"|" + _mac(kind, model, text) + _mac(kind, model, text, prefix)
    return base64.b64encode(raw).decode()


def _read(token: Any) -> tuple[str, bytes, bytes] | None:
    if not isinstance(token, str):
        return None
    try:
        raw = base64.b64decode(token.encode(), validate=True)
    except ValueError:
        return None
    model, sep, macs = raw.partition(b"|")
    if not sep or len(macs) != 2 * _MAC_BYTES:
        return None
    return model.decode("utf-8", "replace"), macs[:_MAC_BYTES], macs[_MAC_BYTES:]


def _block_parts(block: dict[str, Any]) -> tuple[str, Any]:
    """(text covered by the MACs, the token) of a thinking or redacted_thinking block."""
    if block["type"] == "thinking":
        return block.get("thinking") or "", block.get("signature")
    return "", block.get("data")


def _current_turn_start(messages: list[dict[str, Any]]) -> int:
    """Index after the last user message that is not only tool results."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str) or any(
            isinstance(b, dict) and b.get("type") != "tool_result" for b in content
        ):
            return index + 1
    return 0


def check_returned_blocks(body: dict[str, Any], model: Model) -> None:
    """Refuse a request whose returned thinking blocks the API would refuse (see module doc)."""
    messages = body["messages"]
    last = messages[-1]
    if (
        is_on(body, model)
        and last["role"] == "user"
        and isinstance(last["content"], list)
        and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"])
        and len(messages) >= 2
    ):
        previous = messages[-2]["content"]
        blocks = previous if isinstance(previous, list) else []
        # A compaction block the API put first is the summary of what came before: the turn
        # proper starts after it.
        index = next((k for k, b in enumerate(blocks) if b.get("type") != "compaction"), None)
        first = blocks[index] if index is not None else {"type": "text"}
        if first.get("type") not in THINKING_KINDS:
            path = f"messages.{len(messages) - 2}.content.{index or 0}"
            raise invalid(MUST_START.format(path=path, found=first.get("type")))
    start = 0 if model.preserved_thinking else _current_turn_start(messages)
    for i in range(start, len(messages)):
        message = messages[i]
        if message["role"] != "assistant" or isinstance(message["content"], str):
            continue
        for j, block in enumerate(message["content"]):
            if block.get("type") not in THINKING_KINDS:
                continue
            path = f"messages.{i}.content.{j}"
            text, token = _block_parts(block)
            parsed = _read(token)
            if parsed is None:
                raise invalid(EDITED.format(path=path))
            producer, content_mac, prefix_mac = parsed
            if not hmac.compare_digest(content_mac, _mac(block["type"], producer, text)):
                raise invalid(EDITED.format(path=path))
            if not model.preserved_thinking or not model.reads(producer):
                continue  # unreadable blocks are dropped from the request, without an error
            expected = _mac(
                block["type"], producer, text, prefix_hash(body, i, message["content"][:j])
            )
            if not hmac.compare_digest(prefix_mac, expected):
                raise invalid(BOUND_ELSEWHERE.format(path=path))
