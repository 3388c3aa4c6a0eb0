"""How big a request's history is, and fitting it to the context window.

When the history passes FOLD_THRESHOLD of the window, images in older turns are dropped first; if
that is not enough, older turns are folded into a summary (made by the fast model, stored on the
conversation) and the summary plus recent turns are sent. The messages themselves are built by
chat.claude.request_body.

How big a history is: the last call's real input and output (as the API reported them) plus
an estimate (4 characters a token) of only what came after it; everything estimated when no
call of the branch is known. Near the limit the caller asks `count_tokens` for the exact
figure (`Fit.near`). Models with server-side compaction (`request_body.compaction_params`) get
the `compact_20260112` edit: the API summarises the conversation in a `compaction` block at the
start of a reply, which is saved with the reply and sent back as it came; the API then reads
the conversation from that block on, and so do the estimates here (`since_compaction`). A
model without it reads such a block as a summary in front of the turns after it
(`without_compaction`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from chat.claude.request_body import AttachmentResolver, to_api_messages, with_summary
from chat.models import PDF_PAGE_TOKENS

FOLD_THRESHOLD = 0.75
# After folding, recent turns take at most this share of the window.
RECENT_SHARE = 0.40
KEEP_IMAGES_TURNS = 2
IMAGE_TOKENS_DEFAULT = 1600
DOCUMENT_TOKENS_DEFAULT = 10 * PDF_PAGE_TOKENS  # a reference saved without its estimate
# Within this share of the fold limit the estimate is checked with count_tokens. The estimate
# is the last call's real input plus 4 characters a token for what came since, so it can be
# off only by the new part's error; more than 15 % of the limit arriving in one turn (over
# 100,000 tokens on a 1M window) is rare, and count_tokens is rate limited: it is asked only
# where a wrong estimate could fold (or fail to fold) wrongly, never on a short chat.
COUNT_NEAR_SHARE = 0.15
COMPACTION = "compaction"


def estimate_block_tokens(block: dict) -> int:
    """A cheap, deterministic estimate: ~4 characters a token; images width × height / 750;
    stored documents their upload's estimate (Attachment.token_estimate)."""
    kind = block.get("type")
    if kind == "text":
        return len(block.get("text", "")) // 4 + 1
    if kind == "image":
        width, height = block.get("width"), block.get("height")
        return (width * height + 749) // 750 if width and height else IMAGE_TOKENS_DEFAULT
    if kind == COMPACTION:
        return len(block.get("content") or "") // 4 + 1
    if kind == "document" and "attachment_id" in block:  # a stored reference (chat.uploads)
        estimate = block.get("token_estimate")
        if isinstance(estimate, int):
            return estimate
        pages = block.get("page_count")
        return pages * PDF_PAGE_TOKENS if isinstance(pages, int) else DOCUMENT_TOKENS_DEFAULT
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
    resolve_attachment: AttachmentResolver,
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
        messages = with_summary(summary, to_api_messages(turns, resolve_attachment))
        return Fit(messages, total, near=near, whole=messages if near else [])
    whole = with_summary(summary, to_api_messages(turns, resolve_attachment)) if near else []
    # 1. Drop images of older turns.
    user_ids = [t.id for t in turns if t.role == "user"]
    keep_from = user_ids[-KEEP_IMAGES_TURNS] if len(user_ids) >= KEEP_IMAGES_TURNS else 0
    dropped = sum(
        estimate_tokens([b for b in t.content if b.get("type") == "image"])
        for t in read
        if t.id < keep_from
    )
    if total - dropped <= limit:
        messages = to_api_messages(turns, resolve_attachment, keep_images_from=keep_from)
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
