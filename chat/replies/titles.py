"""Side calls made with the fast model: conversation titles and history summaries.

Titles are made in the background after the first exchange and never hold up a reply.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from django.conf import settings

from chat.claude import catalogue, client, errors, records, request_body
from chat.models import ApiCall, Conversation, Message
from chat.text import storable

log = logging.getLogger(__name__)

TITLE_MAX_CHARS = 80
TITLE_SOURCE_CHARS = 2000
SUMMARY_MAX_TOKENS = 1024

_background: set[asyncio.Task] = set()


def clean_title(raw: str) -> str:
    """The first line, without Markdown marks or quotes, cut at a word near 80 characters;
    storable (the model may write a NUL or a lone surrogate: chat/text.py)."""
    line = next((ln for ln in storable(raw).strip().splitlines() if ln.strip()), "")
    line = re.sub(r"[#*_`>\[\]]", "", line).strip().strip("\"'“”").strip()
    line = re.sub(r"^title:\s*", "", line, flags=re.IGNORECASE)
    if len(line) > TITLE_MAX_CHARS:
        line = line[:TITLE_MAX_CHARS].rsplit(" ", 1)[0] + "…"
    return line


def start(plan, *, layer, group: str) -> None:
    """Make a title in the background; the reply is already done."""
    task = asyncio.get_running_loop().create_task(_make_title(plan, layer, group))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def wait_for_background() -> None:
    """Wait for the titles and summaries still being made in this process (at shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


@database_sync_to_async
def _first_exchange(conversation_id: int) -> str:
    rows = Message.objects.filter(conversation_id=conversation_id).order_by("id")[:2]
    return "\n\n".join(f"{m.role.title()}: {m.text[:TITLE_SOURCE_CHARS]}" for m in rows)


@database_sync_to_async
def _save_title(conversation_id: int, title: str) -> bool:
    return bool(Conversation.objects.filter(pk=conversation_id, title="").update(title=title))


def side_call_thinking() -> dict:
    """Titles and summaries want their few tokens for the answer: thinking off where allowed."""
    info = catalogue.find_model(settings.CLAUDE_FAST_MODEL)
    return request_body.no_thinking_params(support=info.thinking if info else "none")


async def _make_title(plan, layer, group: str) -> None:
    from chat.ledger import budgets

    record = records.CallRecord(model=settings.CLAUDE_FAST_MODEL, purpose=ApiCall.Purpose.TITLE)
    try:
        exchange = await _first_exchange(plan.conversation_id)
        raw = await client.complete(
            model=settings.CLAUDE_FAST_MODEL,
            system="You name conversations. Answer with a title of at most six words, nothing "
            "else.",
            messages=[{"role": "user", "content": f"Name this conversation:\n\n{exchange}"}],
            max_tokens=30,
            record=record,
            user_id=plan.user_id,
            thinking=side_call_thinking(),
        )
        title = clean_title(raw)
        if title and await _save_title(plan.conversation_id, title):
            await layer.group_send(
                group,
                {
                    "type": "chat.frame",
                    "frame": {
                        "type": "title",
                        "conversation_id": plan.conversation_id,
                        "title": title,
                    },
                },
            )
    except errors.ClaudeError as exc:
        log.info("no title for conversation %s: %s", plan.conversation_id, exc.code)
    finally:
        await database_sync_to_async(budgets.settle)(
            reservation_id=None,
            record=record,
            user_id=plan.user_id,
            conversation_id=plan.conversation_id,
            message_id=None,
        )


async def summarize(plan, *, on_record: Callable[[records.CallRecord], Awaitable[None]]) -> str:
    """A summary of the turns to fold (and of the earlier summary). Raises ClaudeError."""
    parts = []
    if plan.summary:
        parts.append(f"Earlier summary:\n{plan.summary}")
    for turn in plan.fold:
        # A server-side compaction's summary (from a model that has it) stands for what
        # came before it.
        for block in turn.content:
            if block.get("type") == "compaction" and block.get("content"):
                parts.append("Earlier summary:\n" + block["content"])
        text = Message(content=turn.content).text
        if text:
            parts.append(f"{turn.role.title()}: {text}")
    record = records.CallRecord(model=settings.CLAUDE_FAST_MODEL, purpose=ApiCall.Purpose.SUMMARY)
    try:
        return await client.complete(
            model=settings.CLAUDE_FAST_MODEL,
            system="You summarise conversations so they can be continued: keep facts, "
            "decisions, names, numbers and open questions; be concise.",
            messages=[
                {
                    "role": "user",
                    "content": "Summarise this conversation so far:\n\n" + "\n\n".join(parts),
                }
            ],
            max_tokens=SUMMARY_MAX_TOKENS,
            record=record,
            thinking=side_call_thinking(),
            user_id=plan.user_id,
        )
    finally:
        await on_record(record)
