"""Runs one reply: streams from Claude, fans deltas out to every tab, checkpoints, finishes.

A reply runs in its own task, registered by conversation, so it outlives the socket that asked
for it. Live frames go to the channel-layer group "conversation.<id>"; `stop` and cross-process
`resume` requests reach the reply through its control group "reply.<id>", so they work from any
tab on any process.

A reply may take several API calls (rounds): tool use (every tool_use block of a response is
run and answered), `pause_turn` (the turn is sent back to continue), and a final call without
tools when the tool-round limit is reached. A Continue reopens a reply cut by max_tokens: the cut
reply goes back as a complete assistant turn plus a short user turn asking to go on, and the
new text joins the old without a seam. Thinking text streams to tabs as `thinking` frames;
thinking blocks stay in the saved reply, signatures included, in order. Each call reserves
budget before it and settles to one ledger row after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError

from chat.claude import client, context, errors, records, request_body
from chat.conversations import selectors
from chat.ledger import budgets, entries
from chat.models import TEXT_BLOCK_SEPARATOR, ApiCall, Message
from chat.replies import checkpoints, meters, planning, titles, tools
from chat.text import storable, storable_json

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
FINISH_ATTEMPTS = 4


def group_name(conversation_id: int) -> str:
    return f"conversation.{conversation_id}"


def control_group_name(conversation_id: int) -> str:
    return f"reply.{conversation_id}"


# Replies running (or finished within STREAM_REPLAY_KEEP_S) in this process, by conversation id.
_replies: dict[int, Reply] = {}


def local_reply(conversation_id: int) -> Reply | None:
    return _replies.get(conversation_id)


async def stop_local_replies() -> None:
    """Stop every reply of this process and wait for it to end, its checkpoints too (at
    shutdown: the text so far is saved as each reply ends)."""
    for reply in list(_replies.values()):
        reply.stop()
        if reply.task is not None:
            reply.task.cancel()
            await asyncio.gather(reply.task, return_exceptions=True)
    _replies.clear()
    await CHECKPOINTS.stop()


class Checkpoints:
    """Saves the partial text of every reply streaming in this process, together: one UPDATE
    about once a second (STREAM_CHECKPOINT_S) for all of them, not one per reply, so a busy
    process does not queue a statement per reply per second on its database thread."""

    def __init__(self) -> None:
        self.replies: dict[int, Reply] = {}
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, reply: Reply) -> None:
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

    def discard(self, reply: Reply) -> None:
        if self.replies.get(reply.message_id) is reply:
            del self.replies[reply.message_id]

    async def _run(self) -> None:
        while self.replies:
            await asyncio.sleep(settings.STREAM_CHECKPOINT_S)
            await self.save_due()

    async def save_due(self) -> int:
        """Checkpoint every reply with new text (or a heartbeat due); how many were saved."""
        now = time.monotonic()
        due = [r for r in list(self.replies.values()) if r.checkpoint_due(now)]
        if not due:
            return 0
        items = [checkpoints.Checkpoint(r.message_id, r.content(), r.seq) for r in due]
        try:
            await database_sync_to_async(checkpoints.checkpoint_many)(items)
        except DatabaseError:
            log.warning("checkpoint of %d replies failed", len(items), exc_info=True)
            return 0
        for reply, item in zip(due, items, strict=True):
            reply.checkpointed(item.seq, now)
        return len(items)


CHECKPOINTS = Checkpoints()


class BudgetStop(Exception):
    """A later round of the reply was refused by the budget."""


@dataclass
class Reply:
    plan: planning.TurnPlan
    registry: tools.Registry = field(default_factory=lambda: tools.REGISTRY)
    seq: int = 0
    deltas: list[str] = field(default_factory=list)
    final_frame: dict | None = None

    def __post_init__(self) -> None:
        plan = self.plan
        self.conversation_id = plan.conversation_id
        self.message_id = plan.message_id
        self.seq_base = self.seq = plan.seq_base
        self.layer = get_channel_layer()
        self.group = group_name(self.conversation_id)
        # Blocks of the turn: those saved before (a continuation) plus each finished round's.
        self.blocks: list[dict] = [dict(b) for b in plan.base_blocks]
        self._round_blocks: list[dict] = []  # the round streaming now (filled live)
        # A Continue's first text joins the cut text directly (no separator), as saved.
        self._glue = bool(plan.base_blocks)
        self._calls: list[records.CallRecord] = []
        self._pending: list[str] = []
        self._pending_thinking: list[str] = []
        self._has_text = asyncio.Event()
        self._closing = False
        self._stopping = False
        self._stream_task: asyncio.Task | None = None
        self.task: asyncio.Task | None = None
        self._side_tasks: set[asyncio.Task] = set()
        self._opening: dict[int, asyncio.Task] = {}  # ledger rows being written, by record
        self._saved_meters: dict | None = None
        self._saved_seq, self._saved_at = self.seq, time.monotonic()  # the last checkpoint

    # --- public -------------------------------------------------------------------------------

    def start(self) -> asyncio.Task:
        _replies[self.conversation_id] = self
        self.task = asyncio.create_task(self._run(), name=f"reply-{self.message_id}")
        return self.task

    def stop(self) -> None:
        """Cancel the upstream request; the text so far is kept and the reply ends `stopped`."""
        if self.final_frame is not None:
            return
        self._stopping = True
        if self._stream_task is not None:
            self._stream_task.cancel()

    def content(self) -> list[dict]:
        """The turn's blocks as they stand, the streaming round included."""
        return [dict(b) for b in self.blocks] + [dict(b) for b in self._round_blocks if b]

    @property
    def text(self) -> str:
        return Message(content=self.content()).text

    def replay_frames(self, after_seq: int) -> list[dict]:
        """What a socket that applied deltas up to `after_seq` missed, then the final frame."""
        frames: list[dict] = []
        if after_seq < self.seq_base:
            # Deltas of an earlier run of this message (before a Continue) are not kept: the
            # saved text up to the base stands in for them.
            frames.append(
                {
                    "type": "message",
                    "message": {
                        "id": self.message_id,
                        "role": "assistant",
                        "content": selectors.page_content(self.plan.base_blocks),
                        "text": Message(content=self.plan.base_blocks).text,
                        "status": "streaming",
                        "seq": self.seq_base,
                    },
                }
            )
            after_seq = self.seq_base
        frames += [
            {"type": "delta", "message_id": self.message_id, "seq": seq, "text": text}
            for seq, text in enumerate(
                self.deltas[after_seq - self.seq_base :], start=after_seq + 1
            )
        ]
        if self.final_frame is not None:
            frames.append(self.final_frame)
        return frames

    # --- the run ------------------------------------------------------------------------------

    async def _run(self) -> None:
        control_channel = await self.layer.new_channel()
        control_group = control_group_name(self.conversation_id)
        await self.layer.group_add(control_group, control_channel)
        listener = asyncio.create_task(self._listen(control_channel))
        flusher = None
        try:
            start = {"type": "start", "message_id": self.message_id, "model": self.plan.model}
            if self.plan.base_blocks:
                start["continuation"] = True
            await self._broadcast(start)
            flusher = asyncio.create_task(self._flush_loop())
            CHECKPOINTS.add(self)
            self._stream_task = asyncio.create_task(self._rounds())
            if self._stopping:  # a stop that came before the stream began
                self._stream_task.cancel()
            await asyncio.wait([self._stream_task])
            self._closing = True
            self._has_text.set()
            await asyncio.wait([flusher])
            CHECKPOINTS.discard(self)
            await self._finish()
            if self.plan.make_title and self.final_frame.get("type") == "done":
                titles.start(self.plan, layer=self.layer, group=self.group)
            # While it stays replayable the reply needs its text, not the request: let the
            # history go (in a long conversation it is the bulk of the memory a reply holds).
            self.plan = dataclasses.replace(
                self.plan, system=[], history=[], tools=[], fold=[], whole_history=[]
            )
            self._calls.clear()
            # Stay answerable for `resume` a little while, then let go.
            await asyncio.sleep(settings.STREAM_REPLAY_KEEP_S)
        finally:
            # Cancelled from outside (shutdown): take the helpers down too. The row stays
            # `streaming` with its last checkpoint, and the reaper marks it interrupted.
            CHECKPOINTS.discard(self)
            for task in (self._stream_task, flusher, listener):
                if task is not None and not task.done():
                    task.cancel()
            await self.layer.group_discard(control_group, control_channel)
            if _replies.get(self.conversation_id) is self:
                del _replies[self.conversation_id]

    async def _rounds(self) -> None:
        """Call the API until the turn ends: tool rounds and pause_turn continue it."""
        plan = self.plan
        if plan.near_limit:
            plan = await self._measure(plan)
        if plan.fold:
            plan = await self._fold_history(plan)
        tool_rounds = 0
        limit = settings.CLAUDE_MAX_TOOL_ITERATIONS
        tool_choice = None
        reservation = plan.reservation_id
        purpose = plan.purpose
        for index in range(limit + 3):
            if reservation is None:
                reservation = await self._reserve(plan, index)
            record = records.CallRecord(model=plan.model, purpose=purpose, round=index)
            self._calls.append(record)
            messages = request_body.round_messages(plan.history, self.blocks)
            try:
                await self._stream_round(plan, messages, record, tool_choice)
            finally:
                await self._settle(reservation, record)
                reservation = None
            self._end_round()
            if record.stop_reason == "pause_turn":
                purpose = ApiCall.Purpose.CONTINUATION
                continue
            if record.stop_reason != "tool_use" or tool_choice is not None:
                return
            uses = [b for b in record.content if b.get("type") == "tool_use"]
            if tool_rounds >= limit:
                # The limit: answer what is pending, then one last call without tools.
                self.blocks += [self._limit_result(use) for use in uses]
                tool_choice = {"type": "none"}
            else:
                self.blocks += await self._run_tools(uses)
                tool_rounds += 1
            purpose = ApiCall.Purpose.TOOL_ROUND

    async def _stream_round(
        self, plan: planning.TurnPlan, messages: list[dict], record, tool_choice
    ) -> None:
        self._round_blocks = record.content
        first_text = True
        async for text in client.stream_round(
            model=plan.model,
            system=plan.system,
            messages=messages,
            max_tokens=plan.max_tokens,
            record=record,
            tools=plan.tools,
            tool_choice=tool_choice,
            thinking=plan.thinking,
            on_block=self._on_block,
            on_start=self._open_call,
            user_id=plan.user_id,
            on_thinking=self._on_thinking,
            compaction=plan.compaction,
        ):
            # Tabs show the deltas until the end (`done` does not resend the text), so they carry
            # the text as it will be saved: storable, character by character (chat/text.py).
            # A lone surrogate would also fail the channel layer's msgpack encoding.
            text = storable(text)
            if first_text:
                first_text = False
                if not self._glue and self.blocks_text_before(record):
                    text = TEXT_BLOCK_SEPARATOR + text
                self._glue = False
            self._pending.append(text)
            self._has_text.set()

    def blocks_text_before(self, record) -> bool:
        """Whether visible text precedes the block now streaming (it then needs a separator)."""
        earlier = self.blocks + [b for b in record.content[:-1] if b]
        return any(b.get("type") == "text" and b.get("text") for b in earlier)

    def _end_round(self) -> None:
        self.blocks = self.content()
        self._round_blocks = []

    def _on_thinking(self, text: str) -> None:
        """Thinking text goes to tabs beside the reply (never into its deltas, no seq), storable
        as text deltas are: a lone surrogate would also fail the channel layer's encoding."""
        if text:
            self._pending_thinking.append(storable(text))
            self._has_text.set()

    def _on_block(self, block: dict) -> None:
        if block.get("type") == "tool_use":
            self._broadcast_soon(self._tool_frame(block, None))

    def _tool_frame(self, use: dict, result: tools.ToolResult | None) -> dict:
        """The tool call as tabs show it: storable, as the saved blocks will be."""
        return storable_json(
            {
                "type": "tool",
                "message_id": self.message_id,
                "id": use["id"],
                "name": use["name"],
                "input": use.get("input", {}),
                "result": result.content if result else None,
                "is_error": result.is_error if result else False,
            }
        )

    async def _run_tools(self, uses: list[dict]) -> list[dict]:
        """Run every tool_use of a response (in order) and bind each result to its id."""
        results = []
        ctx = tools.ToolContext(
            user_id=self.plan.user_id,
            conversation_id=self.conversation_id,
            time_zone=self.plan.time_zone,
        )
        for use in uses:
            result = await database_sync_to_async(self.registry.run)(
                use["name"], use.get("input", {}), ctx
            )
            await self._broadcast(self._tool_frame(use, result))
            results.append(result.block(use["id"]))
        return results

    def _limit_result(self, use: dict) -> dict:
        limit = settings.CLAUDE_MAX_TOOL_ITERATIONS
        return tools.ToolResult(
            f"Not run: the limit of {limit} tool rounds per reply is reached. "
            "Answer with what you have.",
            is_error=True,
        ).block(use["id"])

    async def _reserve(self, plan: planning.TurnPlan, index: int) -> int:
        need = budgets.estimate(
            model=plan.model,
            input_tokens=plan.estimate + context.estimate_tokens(self.blocks),
            max_tokens=plan.max_tokens,
        )
        try:
            return await database_sync_to_async(budgets.reserve)(
                user_id=plan.user_id, conversation_id=self.conversation_id, need=need
            )
        except budgets.BudgetExceeded as exc:
            raise BudgetStop(exc.message) from None

    async def _open_call(self, record: records.CallRecord) -> None:
        """Write the call's ledger row beside the stream: the text is not held up by the
        database; the row's settlement waits for it (`_settle`)."""
        task = asyncio.get_running_loop().create_task(self._write_open_call(record))
        self._opening[id(record)] = task

    async def _write_open_call(self, record: records.CallRecord) -> None:
        try:
            record.ledger_id = await database_sync_to_async(entries.open_call)(
                record=record,
                user_id=self.plan.user_id,
                conversation_id=self.conversation_id,
                message_id=self.message_id,
            )
        except DatabaseError:  # settle will insert the row instead
            log.warning("could not open the ledger row of reply %s", self.message_id)

    async def _settle(self, reservation: int | None, record: records.CallRecord) -> None:
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
                    user_id=self.plan.user_id,
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

    async def _measure(self, plan: planning.TurnPlan) -> planning.TurnPlan:
        """Near the limit, the estimate decides whether to fold: check it once with
        count_tokens (free, rate limited, never billed: no ledger row) and plan again on the
        exact figure. A failed count leaves the estimate's plan."""
        turn = request_body.reply_messages(self.blocks) if self.blocks else []
        try:
            counted = await client.count_tokens(
                model=plan.model,
                system=plan.system,
                messages=request_body.strip_trailing_whitespace(
                    request_body.join(plan.whole_history, turn)
                ),
                tools=plan.tools,
                thinking=plan.thinking,
                compaction=plan.compaction,
            )
        except errors.ClaudeError as exc:
            log.info("count_tokens for reply %s failed: %s", self.message_id, exc.code)
            return plan
        return await self._replan(plan, counted=counted)

    async def _replan(self, plan: planning.TurnPlan, **options) -> planning.TurnPlan:
        new_plan = await database_sync_to_async(planning.plan_turn)(
            conversation_id=self.conversation_id,
            reply_message_id=self.message_id,
            purpose=plan.purpose,
            **options,
        )
        new_plan.reservation_id = plan.reservation_id
        new_plan.thinking = plan.thinking  # the effort asked for this reply still holds
        return new_plan

    async def _fold_history(self, plan: planning.TurnPlan) -> planning.TurnPlan:
        """Summarise the turns that no longer fit, store the summary, and plan again."""
        summary = await titles.summarize(plan, on_record=self._record_side_call)
        await database_sync_to_async(planning.store_summary)(
            conversation_id=self.conversation_id, summary=summary, upto_id=plan.fold[-1].id
        )
        return await self._replan(plan)

    async def _record_side_call(self, record: records.CallRecord) -> None:
        await self._settle(None, record)

    async def _finish(self) -> None:
        task = self._stream_task
        assert task is not None
        status, stop_reason, error = Message.Status.DONE, "", None
        if task.cancelled():
            stop_reason = "stopped" if self._stopping else ""
            status = Message.Status.DONE if self._stopping else Message.Status.INTERRUPTED
        elif isinstance(task.exception(), BudgetStop):
            error = errors.ClaudeError("budget_exceeded", str(task.exception()), retryable=False)
            status = Message.Status.ERROR
        elif task.exception() is not None:
            exc = task.exception()
            error = errors.to_claude_error(exc)
            if error is None:
                log.error("reply %s failed", self.message_id, exc_info=exc)
                error = errors.ClaudeError(
                    "internal_error", "Something went wrong on the server.", retryable=True
                )
            status = Message.Status.ERROR
        else:
            stop_reason = self._calls[-1].stop_reason if self._calls else ""
        self._end_round()
        content = request_body.answer_dangling_tool_uses(self.blocks)
        if not await self._save(content, status, stop_reason, error):
            error = errors.ClaudeError(
                "internal_error",
                "The reply could not be saved (the database is unavailable); its text is kept "
                "in the server log. Try again shortly.",
                retryable=True,
            )
        usage = records.Usage()
        for call in self._calls:
            usage.add(call.usage)
        cost = entries.cost_of_calls(self._calls)
        meters = self._saved_meters  # read with the save
        if error is not None:
            self.final_frame = {
                "type": "error",
                "code": error.code,
                "message": storable(error.message),
                "retryable": error.retryable,
                "message_id": self.message_id,
            }
        else:
            self.final_frame = {
                "type": "done",
                "message_id": self.message_id,
                "stop_reason": stop_reason,
                "usage": usage.as_api(),
                "cost": str(cost),
                "meters": meters,
            }
        await self._broadcast(self.final_frame)

    def _meters(self) -> dict | None:
        from chat.models import Conversation

        conversation = Conversation.objects.filter(pk=self.conversation_id).first()
        return meters.conversation_meters(conversation) if conversation else None

    def _finish_and_meters(self, **finish) -> None:
        """turn_finish, then the composer's meters, in one trip to the database thread."""
        checkpoints.turn_finish(**finish)
        try:
            self._saved_meters = self._meters()
        except DatabaseError:
            self._saved_meters = None

    async def _save(
        self, content: list[dict], status: str, stop_reason: str, error: errors.ClaudeError | None
    ) -> bool:
        """turn_finish, retried while the database is briefly away; never drops text silently
        (it is logged when every attempt failed). Whether it was saved."""
        delay = 0.5
        for attempt in range(1, FINISH_ATTEMPTS + 1):
            try:
                await database_sync_to_async(self._finish_and_meters)(
                    message_id=self.message_id,
                    conversation_id=self.conversation_id,
                    content=content,
                    status=status,
                    stop_reason=stop_reason,
                    error_code=error.code if error else "",
                    error_message=error.message if error else "",
                    output_tokens=sum(c.usage.output_tokens for c in self._calls),
                    seq=self.seq,
                )
                return True
            except DatabaseError:
                if attempt == FINISH_ATTEMPTS:
                    log.exception(
                        "reply %s could not be saved; its text follows: %r",
                        self.message_id,
                        Message(content=content).text,
                    )
                    return False
                log.warning("saving reply %s failed (attempt %d)", self.message_id, attempt)
                await asyncio.sleep(delay)
                delay *= 2
        return False

    # --- helpers running beside the stream ----------------------------------------------------

    async def _flush_loop(self) -> None:
        """Coalesce deltas: the first text goes out at once, then at most one frame per
        STREAM_COALESCE_MS; all text out at the end."""
        interval = settings.STREAM_COALESCE_MS / 1000
        while True:
            await self._has_text.wait()
            # The reply's first text goes out at once; thinking alone waits to be coalesced.
            if not self._closing and (self.seq > self.seq_base or not self._pending):
                await asyncio.sleep(interval)
            self._has_text.clear()
            await self._flush()
            if self._closing:
                # Text may have come while the last frame was being sent: send it too, so the
                # final frame never overtakes a delta.
                while self._pending or self._pending_thinking:
                    await self._flush()
                return

    async def _flush(self) -> None:
        if self._pending_thinking:
            thinking = "".join(self._pending_thinking)
            self._pending_thinking.clear()
            await self._broadcast(
                {"type": "thinking", "message_id": self.message_id, "text": thinking}
            )
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self.seq += 1
        self.deltas.append(text)
        await self._broadcast(
            {"type": "delta", "message_id": self.message_id, "seq": self.seq, "text": text}
        )

    def checkpoint_due(self, now: float) -> bool:
        """Text came since the last checkpoint, or a heartbeat is due."""
        return self.seq != self._saved_seq or now - self._saved_at >= HEARTBEAT_S

    def checkpointed(self, seq: int, at: float) -> None:
        self._saved_seq, self._saved_at = seq, at

    async def _listen(self, channel: str) -> None:
        while True:
            event = await self.layer.receive(channel)
            kind = event.get("type")
            if kind == "reply.stop":
                self.stop()
            elif kind == "reply.resume" and event.get("message_id") in (None, self.message_id):
                # Only the reply asked for answers: an older one of the conversation, still
                # replayable, must not.
                await self.layer.send(
                    event["reply_to"],
                    {
                        "type": "chat.replay",
                        "message_id": self.message_id,
                        "frames": self.replay_frames(int(event.get("after_seq", 0))),
                    },
                )

    def _broadcast_soon(self, frame: dict) -> None:
        """Send a frame from inside the token loop without waiting for it."""
        task = asyncio.get_running_loop().create_task(self._broadcast(frame))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _broadcast(self, frame: dict) -> None:
        """Send a frame to every tab; a channel-layer failure (Redis away) is logged, not fatal:
        the reply goes on, is saved, and a tab that resumes gets what it missed."""
        try:
            await self.layer.group_send(self.group, {"type": "chat.frame", "frame": frame})
        except Exception:
            log.warning("frame of reply %s not sent", self.message_id, exc_info=True)
