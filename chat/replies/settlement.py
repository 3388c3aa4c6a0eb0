"""A reply's accounts with the database: each call's budget reservation and ledger row, and the
reply's final save. Both are retried while the database is briefly away: a reply that Claude
has written is not lost to a database restart, and its usage is recorded once.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.db import DatabaseError

from chat.claude import context, errors, records
from chat.ledger import budgets, entries
from chat.models import Conversation, Message
from chat.replies import checkpoints, meters, planning

log = logging.getLogger(__name__)

FINISH_ATTEMPTS = 4


class BudgetStop(Exception):
    """A later round of the reply was refused by the budget."""


class Settlement:
    """Reserve before each call, open its ledger row when the API reports its input, settle
    the row (and release the reservation) when the call ends."""

    def __init__(self, *, user_id: int, conversation_id: int, message_id: int) -> None:
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.message_id = message_id
        self._opening: dict[int, asyncio.Task] = {}  # ledger rows being written, by record

    async def reserve(
        self,
        plan: planning.TurnPlan,
        blocks: list[dict],
        *,
        after: records.CallRecord | None = None,
        added: list[dict] | None = None,
    ) -> int:
        """Hold the next call's budget. Its input: the previous round's real input and output
        (`after`) plus an estimate of the blocks `added` since (tool results), or — before the
        API has reported any — the plan's estimate plus the reply's blocks so far."""
        if after is not None and after.usage.prompt_tokens:
            known = after.usage.prompt_tokens + after.usage.output_tokens
            input_tokens = known + context.estimate_tokens(added or [])
        else:
            input_tokens = plan.estimate + context.estimate_tokens(blocks)
        need = budgets.estimate(
            model=plan.model,
            input_tokens=input_tokens,
            max_tokens=plan.max_tokens,
            max_uses=plan.web_search_max_uses,
        )
        try:
            return await database_sync_to_async(budgets.reserve)(
                user_id=self.user_id, conversation_id=self.conversation_id, need=need
            )
        except budgets.BudgetExceeded as exc:
            raise BudgetStop(exc.message) from None

    async def open_call(self, record: records.CallRecord) -> None:
        """Write the call's ledger row beside the stream: the text is not held up by the
        database; the row's settlement waits for it (`settle`)."""
        task = asyncio.get_running_loop().create_task(self._write_open_call(record))
        self._opening[id(record)] = task

    async def _write_open_call(self, record: records.CallRecord) -> None:
        try:
            record.ledger_id = await database_sync_to_async(entries.open_call)(
                record=record,
                user_id=self.user_id,
                conversation_id=self.conversation_id,
                message_id=self.message_id,
            )
        except DatabaseError:  # settle will insert the row instead
            log.warning("could not open the ledger row of reply %s", self.message_id)

    async def settle(self, reservation: int | None, record: records.CallRecord) -> None:
        """Record the call's usage, retried while the database is briefly away."""
        opening = self._opening.pop(id(record), None)
        if opening is not None:  # complete the row written at message_start, not a second one
            await asyncio.gather(opening, return_exceptions=True)
        delay = 0.5
        for attempt in range(1, FINISH_ATTEMPTS + 1):
            try:
                await database_sync_to_async(budgets.settle)(
                    reservation_id=reservation,
                    record=record,
                    user_id=self.user_id,
                    conversation_id=self.conversation_id,
                    message_id=self.message_id,
                )
                return
            except DatabaseError:
                if attempt == FINISH_ATTEMPTS:
                    log.exception("usage of reply %s not recorded: %s", self.message_id, record)
                    return
                await asyncio.sleep(delay)
                delay *= 2

    async def record_side_call(self, record: records.CallRecord, reservation: int) -> None:
        """A summary made for the reply: its row, in place of its own reservation."""
        await self.settle(reservation, record)


def _finish_and_meters(**finish) -> dict | None:
    """turn_finish, then the composer's meters, in one trip to the database thread."""
    checkpoints.turn_finish(**finish)
    try:
        conversation = Conversation.objects.filter(pk=finish["conversation_id"]).first()
        return meters.conversation_meters(conversation) if conversation else None
    except DatabaseError:
        return None


async def save_reply(
    *,
    message_id: int,
    conversation_id: int,
    content: list[dict],
    status: str,
    stop_reason: str,
    error: errors.ClaudeError | None,
    output_tokens: int,
    seq: int,
) -> tuple[bool, dict | None]:
    """turn_finish, retried while the database is briefly away; never drops text silently
    (it is logged when every attempt failed). Whether it was saved, and the meters read with
    the save."""
    delay = 0.5
    for attempt in range(1, FINISH_ATTEMPTS + 1):
        try:
            saved_meters = await database_sync_to_async(_finish_and_meters)(
                message_id=message_id,
                conversation_id=conversation_id,
                content=content,
                status=status,
                stop_reason=stop_reason,
                error_code=error.code if error else "",
                error_message=error.message if error else "",
                output_tokens=output_tokens,
                seq=seq,
            )
            return True, saved_meters
        except DatabaseError:
            if attempt == FINISH_ATTEMPTS:
                log.exception(
                    "reply %s could not be saved; its text follows: %r",
                    message_id,
                    Message(content=content).text,
                )
                return False, None
            log.warning("saving reply %s failed (attempt %d)", message_id, attempt)
            await asyncio.sleep(delay)
            delay *= 2
    return False, None
