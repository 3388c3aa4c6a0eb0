"""Server-side compaction at a token threshold (beta ``compact-2026-01-12``), as documented.

* A request opts in with ``context_management: {"edits": [{"type": "compact_20260112", ...}]}``
  and the ``anthropic-beta: compact-2026-01-12`` header. The edit takes ``trigger``
  (``{"type": "input_tokens", "value": N}``, N at least 50,000; 150,000 when absent),
  ``pause_after_compaction`` (bool) and ``instructions`` (string or null; not emulated).
  Without the header, or on a model whose row in ``models.json`` says ``compaction: false``,
  it is a 400.
* ``compaction`` blocks in ``messages`` need the header as well. The API drops everything
  before the newest compaction block: input is counted from that block on
  (:func:`effective_messages`), by ``count_tokens`` too.
* When the input (so counted) reaches the trigger and earlier turns precede the current one,
  the reply starts with a ``compaction`` block summarising the conversation up to the user's
  current message (:func:`summary_of`: a deterministic digest, useful for a demo), streamed
  as ``content_block_start`` (``content: null``), one ``compaction_delta`` with the whole
  summary and ``content_block_stop``. The reply then goes on over the compacted context: the
  new block plus the current turn. Its usage: the top-level figures are the reply's own
  ("message" iteration); ``usage.iterations`` lists the compaction iteration first (input:
  the whole request as counted; output: the summary, one token per word) and the message
  iteration second. A compaction iteration is not in the top-level figures. With
  ``pause_after_compaction`` the response is the block alone, ``stop_reason:
  "compaction"``.

The other context-management edits (``clear_tool_uses_20250919``, ``clear_thinking_20251015``)
are accepted and not emulated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import invalid
from .lineup import Model
from .replies import _quote, chunk_text, message_text

BETA = "compact-2026-01-12"
EDIT = "compact_20260112"
OTHER_EDITS = ("clear_tool_uses_20250919", "clear_thinking_20251015")
DEFAULT_TRIGGER = 150_000
MIN_TRIGGER = 50_000
# The summary quotes at most this many earlier messages (the newest ones), a line each.
SUMMARY_LINES = 40


@dataclass(frozen=True)
class Compaction:
    """The request's compact_20260112 edit."""

    trigger: int = DEFAULT_TRIGGER
    pause_after: bool = False
    instructions: str | None = None


def betas(headers: Mapping[str, str]) -> set[str]:
    """The betas named by the ``anthropic-beta`` header (comma-separated)."""
    raw = headers.get("anthropic-beta", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _blocks(message: Any) -> list[Any]:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else []


def _check_blocks_allowed(messages: list[dict[str, Any]], allowed: bool) -> None:
    for i, message in enumerate(messages):
        for j, block in enumerate(_blocks(message)):
            if isinstance(block, dict) and block.get("type") == "compaction" and not allowed:
                raise invalid(
                    f"messages.{i}.content.{j}: compaction blocks require the beta "
                    f'header "anthropic-beta: {BETA}"'
                )


def _edit(edit: Any, path: str, model: Model, beta_on: bool) -> Compaction | None:
    if not isinstance(edit, dict) or edit.get("type") not in (EDIT, *OTHER_EDITS):
        tags = ", ".join(f"'{t}'" for t in (*OTHER_EDITS, EDIT))
        raise invalid(
            f"{path}: Input tag {edit.get('type') if isinstance(edit, dict) else edit!r} found "
            f"using 'type' does not match any of the expected tags: {tags}"
        )
    if edit["type"] != EDIT:
        return None
    if not beta_on:
        raise invalid(f'{path}: {EDIT} requires the beta header "anthropic-beta: {BETA}"')
    if not model.compaction:
        raise invalid(f"{path}.type: {EDIT} is not supported for model {model.id}")
    trigger = edit.get("trigger")
    value = DEFAULT_TRIGGER
    if trigger is not None:
        if not isinstance(trigger, dict) or trigger.get("type") != "input_tokens":
            raise invalid(f"{path}.trigger.type: Input should be 'input_tokens'")
        value = trigger.get("value")
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid(f"{path}.trigger.value: Input should be a valid integer")
        if value < MIN_TRIGGER:
            raise invalid(
                f"{path}.trigger.value: Input should be greater than or equal to {MIN_TRIGGER}"
            )
    pause = edit.get("pause_after_compaction", False)
    if not isinstance(pause, bool):
        raise invalid(f"{path}.pause_after_compaction: Input should be a valid boolean")
    instructions = edit.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid(f"{path}.instructions: Input should be a valid string")
    return Compaction(trigger=value, pause_after=pause, instructions=instructions)


def check(body: dict[str, Any], model: Model, request_betas: set[str]) -> Compaction | None:
    """Validate compaction blocks and ``context_management``; the compaction edit, if any."""
    beta_on = BETA in request_betas
    _check_blocks_allowed(body["messages"], beta_on)
    config = body.get("context_management")
    if config is None:
        return None
    if not isinstance(config, dict):
        raise invalid("context_management: Input should be a valid dictionary")
    edits = config.get("edits", [])
    if not isinstance(edits, list):
        raise invalid("context_management.edits: Input should be a valid list")
    found = None
    for j, edit in enumerate(edits):
        parsed = _edit(edit, f"context_management.edits.{j}", model, beta_on)
        found = parsed or found
    return found


def effective_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages the API reads: from the newest compaction block on (it drops the rest)."""
    for i in range(len(messages) - 1, -1, -1):
        blocks = _blocks(messages[i])
        for j in range(len(blocks) - 1, -1, -1):
            block = blocks[j]
            if isinstance(block, dict) and block.get("type") == "compaction":
                return [{"role": messages[i]["role"], "content": blocks[j:]}, *messages[i + 1 :]]
    return messages


def _earlier_summary(message: dict[str, Any]) -> str:
    for block in _blocks(message):
        if isinstance(block, dict) and block.get("type") == "compaction":
            return str(block.get("content") or "")
    return ""


def summary_of(earlier: list[dict[str, Any]], tokens: int) -> str:
    """A deterministic digest of the messages a compaction drops (up to and including the
    user's current message, which the next request no longer carries before the block): an
    earlier summary's first line, then the opening words of each message (the newest
    SUMMARY_LINES of them)."""
    lines = [
        f"Summary written by the offline model: {len(earlier)} earlier messages "
        f"(about {tokens:,} input tokens) were compacted."
    ]
    previous = _earlier_summary(earlier[0]) if earlier else ""
    if previous:
        lines.append(f"- Earlier summary: {previous.splitlines()[0]}")
    quoted = [m for m in earlier if message_text(m).strip()]
    if len(quoted) > SUMMARY_LINES:
        lines.append(f"- ({len(quoted) - SUMMARY_LINES} older messages not quoted)")
        quoted = quoted[-SUMMARY_LINES:]
    for message in quoted:
        who = "User" if message.get("role") == "user" else "Assistant"
        lines.append(f"- {who}: {_quote(message_text(message), 12)}")
    return "\n".join(lines)


def compacted_messages(
    messages: list[dict[str, Any]], block: dict[str, Any], turn_start: int
) -> list[dict[str, Any]]:
    """The context the reply goes on with: the compaction block, then the current turn."""
    return [{"role": "assistant", "content": [block]}, *messages[turn_start:]]


def summary_tokens(summary: str) -> int:
    """Output tokens of the compaction iteration: one per word, as for every reply."""
    return len(chunk_text(summary))
