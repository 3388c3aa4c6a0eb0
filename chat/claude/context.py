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

How big a history is: the last call's real input and output (as the API reported them) plus
an estimate (4 characters a token) of only what came after it; everything estimated when no
call of the branch is known. Near the limit the caller asks `count_tokens` for the exact
figure (`Fit.near`). Models with server-side compaction (`compaction_params`) get the
`compact_20260112` edit: the API summarises the conversation in a `compaction` block at the
start of a reply, which is saved with the reply and sent back as it came; the API then reads
the conversation from that block on, and so do the estimates here (`since_compaction`). A
model without it reads such a block as a summary in front of the turns after it
(`without_compaction`).
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
# Thinking can be turned off ({"type": "disabled"}) on these; always-thinking models refuse it.
CAN_DISABLE = ("manual", "manual-and-adaptive", "adaptive")
# Within this share of the fold limit the estimate is checked with count_tokens. The estimate
# is the last call's real input plus 4 characters a token for what came since, so it can be
# off only by the new part's error; more than 15 % of the limit arriving in one turn (over
# 100,000 tokens on a 1M window) is rare, and count_tokens is rate limited: it is asked only
# where a wrong estimate could fold (or fail to fold) wrongly, never on a short chat.
COUNT_NEAR_SHARE = 0.15
COMPACTION_BETA = "compact-2026-01-12"
COMPACTION_EDIT = "compact_20260112"
COMPACTION = "compaction"

ImageResolver = Callable[[dict], dict | None]


def estimate_block_tokens(block: dict) -> int:
    """A cheap, deterministic estimate: ~4 characters a token; images width × height / 750."""
    kind = block.get("type")
    if kind == "text":
        return len(block.get("text", "")) // 4 + 1
    if kind == "image":
        width, height = block.get("width"), block.get("height")
        return (width * height + 749) // 750 if width and height else IMAGE_TOKENS_DEFAULT
    if kind == COMPACTION:
        return len(block.get("content") or "") // 4 + 1
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


@dataclass(frozen=True)
class Measured:
    """The API's own figures for the last call of a branch: its whole input (uncached, cache
    writes and reads), its output, and the message it was made for."""

    input_tokens: int
    output_tokens: int
    message_id: int


def known_total(turns: list[StoredTurn], measured: Measured | None) -> int | None:
    """A request's input from the last call's real figures: that call's input and output, plus
    estimates of the turns after its message. None when `turns` do not hold that message (no
    call on this branch yet, or its turn lies before a summary or a compaction)."""
    if measured is None:
        return None
    ids = [t.id for t in turns]
    if measured.message_id not in ids:
        return None
    after = turns[ids.index(measured.message_id) + 1 :]
    return measured.input_tokens + measured.output_tokens + sum(t.tokens for t in after)


def _newest_compaction(turns: list[StoredTurn]) -> tuple[int, int] | None:
    """(turn index, block index) of the newest compaction block, if any."""
    for i in range(len(turns) - 1, -1, -1):
        for j in range(len(turns[i].content) - 1, -1, -1):
            if turns[i].content[j].get("type") == COMPACTION:
                return i, j
    return None


def since_compaction(turns: list[StoredTurn]) -> list[StoredTurn]:
    """What the API reads of `turns`: from the newest compaction block on (it drops what came
    before). The turn holding the block keeps its id, its content cut at the block."""
    found = _newest_compaction(turns)
    if found is None:
        return turns
    i, j = found
    first = turns[i]
    cut = StoredTurn(id=first.id, role=first.role, content=first.content[j:])
    return [cut, *turns[i + 1 :]]


def without_compaction(turns: list[StoredTurn]) -> tuple[str, list[StoredTurn]]:
    """For a model without server-side compaction: the newest compaction block's summary and
    the turns after it (the block's own turn from the block on, the block left out); ("",
    turns) when there is none. The caller sends the summary as a summary of its own."""
    found = _newest_compaction(turns)
    if found is None:
        return "", turns
    i, j = found
    first = turns[i]
    summary = first.content[j].get("content") or ""
    rest = [b for b in first.content[j + 1 :] if b.get("type") != COMPACTION]
    kept = [StoredTurn(id=first.id, role=first.role, content=rest)] if rest else []
    return summary, kept + [
        StoredTurn(
            id=t.id,
            role=t.role,
            content=[b for b in t.content if b.get("type") != COMPACTION],
            token_count=t.token_count,
        )
        for t in turns[i + 1 :]
    ]


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
    near: bool = False  # close enough to the limit that the caller should count exactly
    whole: list[dict] = field(default_factory=list)  # when near: the request, nothing dropped


def fold_limit(*, window: int, max_tokens: int) -> int:
    """The most input a request may carry before older turns are folded."""
    return min(int(window * FOLD_THRESHOLD), window - max_tokens)


def fit(
    *,
    turns: list[StoredTurn],
    summary: str,
    system_tokens: int,
    window: int,
    max_tokens: int,
    resolve_image: ImageResolver,
    known: int | None = None,
    counted: int | None = None,
) -> Fit:
    """Fit `turns` (oldest first, already after any earlier summary) into the window.

    The request's size is `counted` (count_tokens' exact figure) when given, else `known`
    (known_total: the last call's real figures plus estimates of what came since), else
    estimated whole. Returns the request messages, or the turns to fold into the summary when
    dropping old images is not enough; the caller summarises them and calls again. `near`
    says the size was not counted and lies within COUNT_NEAR_SHARE of the limit (or beyond).
    """
    limit = fold_limit(window=window, max_tokens=max_tokens)
    summary_tokens = len(summary) // 4 + 1 if summary else 0
    base = system_tokens + summary_tokens
    read = since_compaction(turns)  # what the API reads of them
    total = counted if counted is not None else known
    if total is None:
        total = base + sum(t.tokens for t in read)
    near = counted is None and total >= limit * (1 - COUNT_NEAR_SHARE)
    if total <= limit:
        messages = with_summary(summary, to_api_messages(turns, resolve_image))
        return Fit(messages, total, near=near, whole=messages if near else [])
    whole = with_summary(summary, to_api_messages(turns, resolve_image)) if near else []
    # 1. Drop images of older turns.
    user_ids = [t.id for t in turns if t.role == "user"]
    keep_from = user_ids[-KEEP_IMAGES_TURNS] if len(user_ids) >= KEEP_IMAGES_TURNS else 0
    dropped = sum(
        estimate_tokens([b for b in t.content if b.get("type") == "image"])
        for t in read
        if t.id < keep_from
    )
    if total - dropped <= limit:
        messages = to_api_messages(turns, resolve_image, keep_images_from=keep_from)
        return Fit(
            with_summary(summary, messages),
            total - dropped,
            images_dropped=True,
            near=near,
            whole=whole,
        )
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
    return Fit([], base + used, fold=fold, near=near, whole=whole)
