"""What goes into a request: stored messages in the API's shape, and the fields that ask for
thinking and for server-side compaction.

Stored assistant messages hold a whole turn — thinking, text, tool_use and tool_result blocks in
order — and are split here into the alternating assistant / user messages the API expects. A
Continue leaves a `continuation` block in the reply (the short user turn that asked the model to
go on), which becomes that user message again. Thinking blocks go back only within the reply
being written (its tool rounds, unmodified and in order); those of earlier turns are left out,
which the API allows, so no block is ever sent after a history that changed (a summary, dropped
images, another model, another tool list) and refused for it. Fitting the history to the
window is chat.claude.context's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # chat.claude.context builds on this module
    from chat.claude.context import StoredTurn


SUMMARY_PREFIX = "Summary of the earlier part of this conversation:\n"
THINKING_TYPES = ("thinking", "redacted_thinking")
CONTINUATION = "continuation"
# The user turn a Continue adds after the cut reply: every model accepts it (a prefill is refused
# on Claude 4.6 and later), and the model goes on from where its reply stopped.
CONTINUE_PROMPT = (
    "Continue exactly where your last message stopped, without repeating anything and without "
    "any introduction."
)
ADAPTIVE_SUPPORT = ("manual-and-adaptive", "adaptive", "always")
# Thinking can be turned off ({"type": "disabled"}) on these; always-thinking models refuse it.
CAN_DISABLE = ("manual", "manual-and-adaptive", "adaptive")
COMPACTION_BETA = "compact-2026-01-12"
COMPACTION_EDIT = "compact_20260112"

# A stored image or document reference to its API block; None when it is gone.
AttachmentResolver = Callable[[dict], dict | None]


def compaction_params(*, supported: bool, trigger_tokens: int) -> dict:
    """The request fields that ask for server-side compaction at a token threshold: the beta
    and the `compact_20260112` edit. Nothing for a model without it."""
    if not supported:
        return {}
    edit = {
        "type": COMPACTION_EDIT,
        "trigger": {"type": "input_tokens", "value": trigger_tokens},
    }
    return {"betas": [COMPACTION_BETA], "context_management": {"edits": [edit]}}


def thinking_params(*, support: str, effort: str | None) -> dict:
    """The request fields that ask for thinking: the one place they are built.

    `support` is the model's thinking support (none, manual, manual-and-adaptive, adaptive,
    always); `effort` is what the user asked for, or None. No effort means thinking off where the
    model allows it (`{"type": "disabled"}`: Haiku 5.5 would otherwise think unasked), and
    nothing asked of a model that always thinks (it refuses `disabled` and thinks at its default
    effort). Never manual budgets, which Claude 4.7 and later refuse.
    """
    if effort is None:
        return no_thinking_params(support=support)
    if support not in ADAPTIVE_SUPPORT:
        return {}
    return {
        "thinking": {"type": "adaptive", "display": "summarized"},
        "output_config": {"effort": effort},
    }


def no_thinking_params(*, support: str) -> dict:
    """Thinking off where the model allows it (replies with thinking off; titles and summaries,
    whose few tokens go to the answer); nothing for models that always think (they refuse
    `disabled`) or cannot think."""
    if support in CAN_DISABLE:
        return {"thinking": {"type": "disabled"}}
    return {}


def continuation_block() -> dict:
    return {"type": CONTINUATION, "text": CONTINUE_PROMPT}


def split_turn(role: str, content: list[dict]) -> list[dict]:
    """A stored message as API messages: an assistant turn splits around its tool results and
    the requests to continue it. An assistant part left empty is left out (a reply cut while
    thinking, its thinking not sent back)."""
    if role == "user":
        return [{"role": "user", "content": list(content)}]
    messages: list[dict] = []
    for block in content:
        kind = block.get("type")
        want = "user" if kind in ("tool_result", CONTINUATION) else "assistant"
        if kind == CONTINUATION:
            block = {"type": "text", "text": block["text"]}
        if not messages or messages[-1]["role"] != want:
            messages.append({"role": want, "content": []})
        messages[-1]["content"].append(block)
    return messages


def without_thinking(content: list[dict]) -> list[dict]:
    return [b for b in content if b.get("type") not in THINKING_TYPES]


def reply_messages(blocks: list[dict]) -> list[dict]:
    """The reply being written as API messages: its thinking blocks go back unmodified and in
    order, except those before its last Continue (they belong to an answer the API has seen
    end, like an earlier turn's)."""
    marks = [i for i, b in enumerate(blocks) if b.get("type") == CONTINUATION]
    if marks:
        blocks = without_thinking(blocks[: marks[-1]]) + blocks[marks[-1] :]
    return split_turn("assistant", blocks)


def round_messages(history: list[dict], blocks: list[dict]) -> list[dict]:
    """The messages of a reply's next request: the history up to the user's turn, then the
    reply as it stands (its tool rounds with their thinking, a Continue's cut text and request
    to go on), the cache breakpoint marked, a final assistant turn without trailing white
    space."""
    turn = reply_messages(blocks) if blocks else []
    return strip_trailing_whitespace(mark_cache_breakpoint(join(history, turn)))


def join(messages: list[dict], more: list[dict]) -> list[dict]:
    """`messages` followed by `more`, adjacent messages of one role merged (the API wants
    them alternating)."""
    joined = [dict(m) for m in messages]
    for message in more:
        if joined and joined[-1]["role"] == message["role"]:
            joined[-1] = {**joined[-1], "content": [*joined[-1]["content"], *message["content"]]}
        else:
            joined.append(message)
    return joined


def _drop_empty_text(content: list[dict]) -> list[dict]:
    return [b for b in content if not (b.get("type") == "text" and not b.get("text"))]


def answer_dangling_tool_uses(content: list[dict]) -> list[dict]:
    """A turn that ended between a tool_use and its result gets error results, so the history
    stays valid (the API refuses a tool_use without a tool_result after it)."""
    answered = {b.get("tool_use_id") for b in content if b.get("type") == "tool_result"}
    missing = [
        b["id"] for b in content if b.get("type") == "tool_use" and b.get("id") not in answered
    ]
    if not missing:
        return content
    return content + [
        {
            "type": "tool_result",
            "tool_use_id": tool_id,
            "content": "Not run: the reply ended first.",
            "is_error": True,
        }
        for tool_id in missing
    ]


def to_api_messages(
    turns: Iterable[StoredTurn],
    resolve_attachment: AttachmentResolver,
    *,
    keep_images_from: int = 0,
) -> list[dict]:
    """Saved turns as alternating API messages.

    Image references of turns before `keep_images_from` (a message id) are dropped; the rest,
    and every document reference (documents are never dropped: later replies cite them by their
    index in the request), go through `resolve_attachment`. Thinking blocks of these (earlier)
    turns are left out. A reply that failed before any text is left out, and adjacent messages
    of one role are merged, so a failure never breaks the alternation.
    """
    merged: list[dict] = []
    for turn in turns:
        content = []
        for block in without_thinking(_drop_empty_text(turn.content)):
            kind = block.get("type")
            if kind == "image" or (kind == "document" and "attachment_id" in block):
                if kind == "image" and turn.id < keep_images_from:
                    continue
                resolved = resolve_attachment(block)
                if resolved is None:
                    continue
                block = resolved
            content.append(block)
        if turn.role == "assistant":
            content = answer_dangling_tool_uses(content)
        if not content:
            continue
        for message in split_turn(turn.role, content):
            if merged and merged[-1]["role"] == message["role"]:
                merged[-1]["content"].extend(message["content"])
            else:
                merged.append(message)
    return merged


def with_summary(summary: str, messages: list[dict]) -> list[dict]:
    """Put the summary in front of the first (user) message."""
    if not summary:
        return messages
    block = {"type": "text", "text": SUMMARY_PREFIX + summary}
    if messages and messages[0]["role"] == "user":
        first = {"role": "user", "content": [block, *messages[0]["content"]]}
        return [first, *messages[1:]]
    return [{"role": "user", "content": [block]}, *messages]


def mark_cache_breakpoint(messages: list[dict]) -> list[dict]:
    """A cache breakpoint on the last block before the newest user turn (the stable prefix), and
    one on the request's last document, so that a long PDF is read once and then cached across
    turns, from the turn it is attached in.

    With the one on the system prompt that makes at most three of the API's four. Marked
    blocks are copies: stored content never carries cache_control.
    """
    marks = []
    if len(messages) >= 2:
        marks.append((len(messages) - 2, len(messages[-2]["content"]) - 1))
    documents = [
        (i, j)
        for i, message in enumerate(messages)
        for j, block in enumerate(message["content"])
        if block.get("type") == "document"
    ]
    if documents and documents[-1] not in marks:
        marks.append(documents[-1])
    if not marks:
        return messages
    messages = [dict(m) for m in messages]
    for i, j in marks:
        content = list(messages[i]["content"])
        content[j] = {**content[j], "cache_control": {"type": "ephemeral"}}
        messages[i]["content"] = content
    return messages


def strip_trailing_whitespace(messages: list[dict]) -> list[dict]:
    """A final assistant message (a prefill) may not end with white space."""
    if not messages or messages[-1]["role"] != "assistant":
        return messages
    last = dict(messages[-1])
    content = [dict(b) for b in last["content"]]
    while content and content[-1].get("type") == "text" and not content[-1]["text"].strip():
        content.pop()
    if content and content[-1].get("type") == "text":
        content[-1]["text"] = content[-1]["text"].rstrip()
    last["content"] = content
    return [*messages[:-1], last]


WEB_SEARCH_TOOLS = ("web_search_20250305", "web_search_20260209", "web_search_20260318")


def web_search_tool(*, version: str, max_uses: int, allowed: list[str], blocked: list[str]) -> dict:
    """Anthropic's web search server tool: the API runs the searches and returns their results
    and cited text in the reply (server_tool_use, web_search_tool_result blocks)."""
    tool = {"type": version, "name": "web_search", "max_uses": max_uses}
    if allowed:
        tool["allowed_domains"] = list(allowed)
    if blocked:
        tool["blocked_domains"] = list(blocked)
    return tool
