"""Saving a streaming reply: its checkpoints about once a second, its final blocks, and the
replies a stopped process left streaming."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta
from typing import NamedTuple, Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from chat.models import Conversation, Message
from chat.text import storable, storable_json

log = logging.getLogger(__name__)


class Checkpoint(NamedTuple):
    """The partial turn of a streaming reply, as saved about once a second (its heartbeat too)."""

    message_id: int
    content: list[dict]
    seq: int


def checkpoint_many(items: list[Checkpoint]) -> int:
    """Save the partial turns of several streaming replies in one UPDATE. A reply no longer
    streaming (finished meanwhile) is left as it is. How many rows were written.

    Plain SQL (UPDATE … FROM a VALUES list) rather than `bulk_update`: this runs every second
    for all streaming replies of a process, and the ORM's CASE WHEN per row and field cost about
    20 times the CPU (17 against 0.9 ms for 50 replies, PostgreSQL). The partial text is model
    output: made storable (chat/text.py), as turn_finish will save it.
    """
    if not items:
        return 0
    table = connection.ops.quote_name(Message._meta.db_table)
    postgres = connection.vendor == "postgresql"
    row = "(%s, %s::jsonb, %s)" if postgres else "(%s, %s, %s)"
    params: list = [connection.ops.adapt_datetimefield_value(timezone.now())]
    for item in items:
        params += [item.message_id, json.dumps(storable_json(item.content)), item.seq]
    params.append(Message.Status.STREAMING.value)
    # PostgreSQL names the VALUES columns in the alias; SQLite calls them column1, column2…
    alias = "v(id, content, seq)" if postgres else "v"
    v_id, v_content, v_seq = (
        ("v.id", "v.content", "v.seq") if postgres else ("v.column1", "v.column2", "v.column3")
    )
    # Only quoted identifiers and placeholders are put into the text; values are parameters.
    sql = (
        f"UPDATE {table} SET content = {v_content}, stream_seq = {v_seq}, "  # noqa: S608
        "updated_at = %s "
        f"FROM (VALUES {', '.join([row] * len(items))}) AS {alias} "
        f"WHERE {table}.id = {v_id} AND {table}.status = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def turn_finish(
    *,
    message_id: int,
    conversation_id: int,
    content: list[dict],
    status: str,
    stop_reason: str = "",
    error_code: str = "",
    error_message: str = "",
    output_tokens: int = 0,
    seq: int = 0,
) -> None:
    """Save the reply's final blocks and outcome, in one transaction.

    The blocks and texts are model or upstream output: made storable (chat/text.py), so no
    character of theirs can keep the reply from being saved. Usage is already in the ledger:
    each call settled when it ended (chat/ledger/budgets.py).
    """
    with transaction.atomic():
        Message.objects.filter(pk=message_id).update(
            content=storable_json(content),
            status=status,
            stop_reason=storable(stop_reason),
            error_code=error_code,
            error_message=storable(error_message[:500]),
            token_count=output_tokens or None,
            stream_seq=seq,
            updated_at=timezone.now(),
        )
        Conversation.objects.filter(pk=conversation_id).update(updated_at=timezone.now())


def reap_stale_replies(*, stale_seconds: float, conversation_id: int | None = None) -> int:
    """Mark replies whose process stopped checkpointing as interrupted; their text is kept."""
    cutoff = timezone.now() - timedelta(seconds=stale_seconds)
    rows = Message.objects.filter(status=Message.Status.STREAMING, updated_at__lte=cutoff)
    if conversation_id is not None:
        rows = rows.filter(conversation_id=conversation_id)
    return rows.update(
        status=Message.Status.INTERRUPTED,
        error_code="interrupted",
        error_message="The server stopped while writing this reply; the text so far is kept.",
    )


def active_users(user_ids: set[int]) -> set[int]:
    """Which of these users exist and are active."""
    rows = get_user_model().objects.filter(pk__in=user_ids, is_active=True)
    return set(rows.values_list("pk", flat=True))


class Streaming(Protocol):
    """What the checkpoint loop needs of a reply (chat/replies/runner.py's Reply)."""

    message_id: int
    user_id: int

    def checkpoint(self) -> tuple[list[dict], int]: ...

    def stop(self) -> None: ...

    def checkpoint_due(self, now: float) -> bool: ...

    def checkpointed(self, seq: int, at: float) -> None: ...


class Checkpoints:
    """Saves the partial text of every reply streaming in this process, together: one UPDATE
    about once a second (STREAM_CHECKPOINT_S) for all of them, not one per reply, so a busy
    process does not queue a statement per reply per second on its database thread."""

    def __init__(self) -> None:
        self.replies: dict[int, Streaming] = {}  # the replies streaming in this process, by message
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, reply: Streaming) -> None:
        self.replies[reply.message_id] = reply
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._task = loop.create_task(self._run(), name="checkpoints")

    async def stop(self) -> None:
        """Cancel the checkpoint loop and forget its replies."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.replies.clear()

    def discard(self, reply: Streaming) -> None:
        if self.replies.get(reply.message_id) is reply:
            del self.replies[reply.message_id]

    async def _run(self) -> None:
        while self.replies:
            await asyncio.sleep(settings.STREAM_CHECKPOINT_S)
            await self.save_due()
            await self.stop_replies_of_inactive_users()

    async def stop_replies_of_inactive_users(self) -> int:
        """A user deactivated or deleted while a reply of theirs runs: it stops, as Stop would
        (the text so far kept, the ledger settled), within a tick. One query for every reply of
        the process. How many were stopped."""
        owners = {reply.user_id for reply in self.replies.values()}
        if not owners:
            return 0
        try:
            active = await database_sync_to_async(active_users)(owners)
        except DatabaseError:
            log.warning("active users of %d replies not read", len(owners), exc_info=True)
            return 0
        stopped = [r for r in list(self.replies.values()) if r.user_id not in active]
        for reply in stopped:
            log.info("reply %s stopped: its user is no longer active", reply.message_id)
            reply.stop()
        return len(stopped)

    async def save_due(self) -> int:
        """Checkpoint every reply with new text (or a heartbeat due); how many were saved."""
        now = time.monotonic()
        due = [r for r in list(self.replies.values()) if r.checkpoint_due(now)]
        if not due:
            return 0
        items = [Checkpoint(r.message_id, *r.checkpoint()) for r in due]
        try:
            await database_sync_to_async(checkpoint_many)(items)
        except DatabaseError:
            log.warning("checkpoint of %d replies failed", len(items), exc_info=True)
            return 0
        for reply, item in zip(due, items, strict=True):
            reply.checkpointed(item.seq, now)
        return len(items)


CHECKPOINTS = Checkpoints()
