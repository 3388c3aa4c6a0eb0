"""What goes into a request: stored messages in the API's shape, fitted to the context window.

Stored assistant messages hold a whole turn — thinking, text, tool_use and tool_result blocks in
order — and are split here into the alternating assistant / user messages the API expects. A
Continue leaves a `continuation` block in the reply (the short user turn that asked the model to
go on), which becomes that user message again. Thinking blocks go back only within the reply
being written (its tool rounds, unmodified and in order); those of earlier turns are left out,
which the API allows, so no block is ever sent after a history that changed (a summary, dropped
images, another model, another tool list) and refused for it. When the
history passes FOLD_THRESHOLD of the window, images in older turns are dropped first; if that is
not enough, older turns are folded into a summary (made by the fast model, stored on the
conversation) and the summary plus recent turns are sent.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

FOLD_THRESHOLD = 0.75
# After folding, recent turns take at most this share of the window.
RECENT_SHARE = 0.40
KEEP_IMAGES_TURNS = 2
IMAGE_TOKENS_DEFAULT = 1600
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

ImageResolver = Callable[[dict], dict | None]


def estimate_block_tokens(block: dict) -> int:
    """A cheap, deterministic estimate: ~4 characters a token; images width × height / 750."""
    kind = block.get("type")
    if kind == "text":
        return len(block.get("text", "")) // 4 + 1
    if kind == "image":
        width, height = block.get("width"), block.get("height")
        return (width * height + 749) // 750 if width and height else IMAGE_TOKENS_DEFAULT
    return len(json.dumps(block, separators=(",", ":"))) // 4 + 1


def estimate_tokens(content: Iterable[dict]) -> int:
    return sum(estimate_block_tokens(block) for block in content)


@dataclass
class StoredTurn:
    """A saved message as the request builder needs it."""

    id: int
    role: str
    content: list[dict]
    token_count: int | None = None

    @property
    def tokens(self) -> int:
        return self.token_count or estimate_tokens(self.content)


def thinking_params(*, support: str, effort: str | None) -> dict:
    """The request fields that ask for thinking: the one place they are built.

    `support` is the model's thinking support (none, manual, manual-and-adaptive, adaptive,
    always); `effort` is what the user asked for, or None. Nothing is asked without an effort:
    a model then does what it does by default (always-thinking models think). Never
    `{"type": "disabled"}`, which always-thinking models refuse; never manual budgets, which
    Claude 4.7 and later refuse.
    """
    if effort is None or support not in ADAPTIVE_SUPPORT:
        return {}
    return {
        "thinking": {"type": "adaptive", "display": "summarized"},
        "output_config": {"effort": effort},
    }


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
    turns: Iterable[StoredTurn], resolve_image: ImageResolver, *, keep_images_from: int = 0
) -> list[dict]:
    """Saved turns as alternating API messages.

    Image references of turns before `keep_images_from` (a message id) are dropped; the rest
    go through `resolve_image`. Thinking blocks of these (earlier) turns are left out. A reply
    that failed before any text is left out, and adjacent messages of one role are merged, so a
    failure never breaks the alternation.
    """
    merged: list[dict] = []
    for turn in turns:
        content = []
        for block in without_thinking(_drop_empty_text(turn.content)):
            if block.get("type") == "image":
                if turn.id < keep_images_from:
                    continue
                resolved = resolve_image(block)
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
    """A cache breakpoint on the last block before the newest user turn (the stable prefix).

    With the one on the system prompt that makes two of the API's four. The marked block is a
    copy: stored content never carries cache_control.
    """
    if len(messages) < 2:
        return messages
    messages = [dict(m) for m in messages]
    target = messages[-2]
    content = [copy.copy(b) for b in target["content"]]
    content[-1]["cache_control"] = {"type": "ephemeral"}
    target["content"] = content
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


@dataclass
class Fit:
    """The outcome of fitting a history to the window."""

    messages: list[dict]
    estimate: int
    fold: list[StoredTurn] = field(default_factory=list)  # turns to summarise first
    images_dropped: bool = False


def fit(
    *,
    turns: list[StoredTurn],
    summary: str,
    system_tokens: int,
    window: int,
    max_tokens: int,
    resolve_image: ImageResolver,
) -> Fit:
    """Fit `turns` (oldest first, already after any earlier summary) into the window.

    Returns the request messages, or the turns to fold into the summary when dropping old images
    is not enough; the caller summarises them and calls again.
    """
    limit = min(int(window * FOLD_THRESHOLD), window - max_tokens)
    summary_tokens = len(summary) // 4 + 1 if summary else 0
    base = system_tokens + summary_tokens
    total = base + sum(t.tokens for t in turns)
    if total <= limit:
        return Fit(with_summary(summary, to_api_messages(turns, resolve_image)), total)
    # 1. Drop images of older turns.
    user_ids = [t.id for t in turns if t.role == "user"]
    keep_from = user_ids[-KEEP_IMAGES_TURNS] if len(user_ids) >= KEEP_IMAGES_TURNS else 0
    lighter = sum(
        t.tokens
        if t.id >= keep_from
        else estimate_tokens([b for b in t.content if b.get("type") != "image"])
        for t in turns
    )
    if base + lighter <= limit:
        messages = to_api_messages(turns, resolve_image, keep_images_from=keep_from)
        return Fit(with_summary(summary, messages), base + lighter, images_dropped=True)
    # 2. Fold the oldest turns: keep recent turns, starting at a user message, within the share.
    budget = int(window * RECENT_SHARE)
    kept: list[StoredTurn] = []
    used = 0
    for turn in reversed(turns):
        if used + turn.tokens > budget and kept and kept[-1].role == "user":
            break
        kept.append(turn)
        used += turn.tokens
    kept.reverse()
    while len(kept) > 1 and kept[0].role != "user":
        kept.pop(0)
    fold = turns[: len(turns) - len(kept)]
    return Fit([], base + used, fold=fold)
