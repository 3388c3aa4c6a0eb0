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

from chat.claude import client, errors, records, request_body
from chat.conversations import tree
from chat.ledger import budgets, entries
from chat.models import TEXT_BLOCK_SEPARATOR, ApiCall, Message
from chat.replies import planning, titles, tools
from chat.replies.checkpoints import CHECKPOINTS
from chat.replies.delivery import Delivery, control_group_name
from chat.replies.settlement import BudgetStop, Settlement, save_reply
from chat.telemetry import metrics
from chat.text import storable, storable_json

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0

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


@dataclass
class Reply:
    """One reply: the round loop here; frames to tabs and replay in `delivery`, the ledger and
    the final save in `settlement`."""

    plan: planning.TurnPlan
    registry: tools.Registry = field(default_factory=lambda: tools.REGISTRY)

    def __post_init__(self) -> None:
        plan = self.plan
        self.conversation_id = plan.conversation_id
        self.message_id = plan.message_id
        self.delivery = Delivery(
            get_channel_layer(),
            conversation_id=plan.conversation_id,
            message_id=plan.message_id,
            seq_base=plan.seq_base,
        )
        self.settlement = Settlement(
            user_id=plan.user_id, conversation_id=plan.conversation_id, message_id=plan.message_id
        )
        # Blocks of the turn: those saved before (a continuation) plus each finished round's.
        self.blocks: list[dict] = [dict(b) for b in plan.base_blocks]
        self._round_blocks: list[dict] = []  # the round streaming now (filled live)
        # A Continue's first text joins the cut text directly (no separator), as saved.
        self._glue = bool(plan.base_blocks)
        self._calls: list[records.CallRecord] = []
        self._server_uses: dict[str, dict] = {}  # web searches asked for, by id
        self._stopping = False
        self._stream_task: asyncio.Task | None = None
        self.task: asyncio.Task | None = None
        self._saved_seq, self._saved_at = self.seq, time.monotonic()  # the last checkpoint
        # The turn as it stood when its last delta was numbered: text still waiting to be
        # coalesced into the next delta is left out, so a tab that loads a checkpoint and
        # resumes after its seq gets that text once, from the delta (docs/protocol.md).
        self._numbered = (self.content(), self.seq)
        self.delivery.on_numbered = self._note_numbered

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

    @property
    def seq(self) -> int:
        return self.delivery.seq

    @property
    def user_id(self) -> int:
        return self.plan.user_id

    @property
    def final_frame(self) -> dict | None:
        return self.delivery.final_frame

    def content(self) -> list[dict]:
        """The turn's blocks as they stand, the streaming round included."""
        return [dict(b) for b in self.blocks] + [dict(b) for b in self._round_blocks if b]

    @property
    def text(self) -> str:
        return Message(content=self.content()).text

    def checkpoint(self) -> tuple[list[dict], int]:
        """What a checkpoint saves: the turn's blocks and the seq of the last delta they hold
        (the turn as it stands when no text waits for its delta, tool steps included)."""
        if not self.delivery.text_pending:
            return self.content(), self.seq
        return self._numbered

    def _note_numbered(self, seq: int) -> None:
        self._numbered = (self.content(), seq)

    def replay_frames(self, after_seq: int) -> list[dict]:
        """What a socket that applied deltas up to `after_seq` missed, then the final frame."""
        return self.delivery.replay_frames(after_seq, self.plan.base_blocks)

    def checkpoint_due(self, now: float) -> bool:
        """Text came since the last checkpoint, or a heartbeat is due."""
        return self.seq != self._saved_seq or now - self._saved_at >= HEARTBEAT_S

    def checkpointed(self, seq: int, at: float) -> None:
        self._saved_seq, self._saved_at = seq, at

    # --- the run ------------------------------------------------------------------------------

    async def _run(self) -> None:
        layer = self.delivery.layer
        control_channel = await layer.new_channel()
        control_group = control_group_name(self.conversation_id)
        await layer.group_add(control_group, control_channel)
        listener = asyncio.create_task(
            self.delivery.listen(control_channel, on_stop=self.stop, replay=self.replay_frames)
        )
        flusher = None
        metrics.REPLIES_IN_FLIGHT.inc()
        in_flight = True  # until the final frame is out (then it only stays replayable)
        try:
            start = {"type": "start", "message_id": self.message_id, "model": self.plan.model}
            if self.plan.base_blocks:
                start["continuation"] = True
            await self.delivery.broadcast(start)
            flusher = asyncio.create_task(self.delivery.flush_loop())
            CHECKPOINTS.add(self)
            self._stream_task = asyncio.create_task(self._rounds())
            if self._stopping:  # a stop that came before the stream began
                self._stream_task.cancel()
            await asyncio.wait([self._stream_task])
            self.delivery.close()
            await asyncio.wait([flusher])
            CHECKPOINTS.discard(self)
            await self._finish()
            metrics.REPLIES_IN_FLIGHT.dec()
            in_flight = False
            if self.plan.make_title and self.final_frame.get("type") == "done":
                titles.start(self.plan, layer=layer, group=self.delivery.group)
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
            if in_flight:
                metrics.REPLIES_IN_FLIGHT.dec()
            CHECKPOINTS.discard(self)
            for task in (self._stream_task, flusher, listener):
                if task is not None and not task.done():
                    task.cancel()
            await layer.group_discard(control_group, control_channel)
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
        last: records.CallRecord | None = None
        added: list[dict] = []  # blocks the next request adds to the last one's (tool results)
        for index in range(limit + 3):
            if reservation is None:
                reservation = await self.settlement.reserve(
                    plan, self.blocks, after=last, added=added
                )
            record = records.CallRecord(model=plan.model, purpose=purpose, round=index)
            self._calls.append(record)
            messages = request_body.round_messages(plan.history, self.blocks)
            try:
                await self._stream_round(plan, messages, record, tool_choice)
            finally:
                await self.settlement.settle(reservation, record)
                reservation = None
            self._end_round()
            last, added = record, []
            if record.stop_reason == "pause_turn":
                purpose = ApiCall.Purpose.CONTINUATION
                continue
            if record.stop_reason != "tool_use" or tool_choice is not None:
                return
            uses = [b for b in record.content if b.get("type") == "tool_use"]
            if tool_rounds >= limit:
                # The limit: answer what is pending, then one last call without tools.
                added = [self._limit_result(use) for use in uses]
                tool_choice = {"type": "none"}
            else:
                added = await self._run_tools(uses)
                tool_rounds += 1
            self.blocks += added
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
            on_start=self.settlement.open_call,
            user_id=plan.user_id,
            on_thinking=self.delivery.thinking,
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
            self.delivery.text(text)
            metrics.DELTAS_RELAYED.inc()

    def blocks_text_before(self, record) -> bool:
        """Whether visible text precedes the block now streaming (it then needs a separator)."""
        earlier = self.blocks + [b for b in record.content[:-1] if b]
        return any(b.get("type") == "text" and b.get("text") for b in earlier)

    def _end_round(self) -> None:
        self.blocks = self.content()
        self._round_blocks = []

    def _on_block(self, block: dict) -> None:
        kind = block.get("type")
        if kind == "server_tool_use":  # a search Anthropic runs: shown like the app's tools
            self._server_uses[block.get("id", "")] = block
        if kind in ("tool_use", "server_tool_use"):
            self.delivery.step_soon(self._tool_frame(block, None))
        elif kind == "web_search_tool_result":
            use = self._server_uses.get(block.get("tool_use_id", ""))
            use = use or {"id": block.get("tool_use_id", ""), "name": "web_search"}
            self.delivery.step_soon(self._tool_frame(use, search_outcome(block)))

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
            await self.delivery.step(self._tool_frame(use, result))
            results.append(result.block(use["id"]))
        return results

    def _limit_result(self, use: dict) -> dict:
        limit = settings.CLAUDE_MAX_TOOL_ITERATIONS
        return tools.ToolResult(
            f"Not run: the limit of {limit} tool rounds per reply is reached. "
            "Answer with what you have.",
            is_error=True,
        ).block(use["id"])

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
        # So do its tools: web search was decided when the reply started.
        new_plan.tools, new_plan.web_search_max_uses = plan.tools, plan.web_search_max_uses
        return new_plan

    async def _fold_history(self, plan: planning.TurnPlan) -> planning.TurnPlan:
        """Summarise the turns that no longer fit, store the summary, and plan again."""
        try:
            summary = await titles.summarize(plan, on_record=self.settlement.record_side_call)
        except budgets.BudgetExceeded as exc:
            raise BudgetStop(exc.message) from None
        await database_sync_to_async(planning.store_summary)(
            conversation_id=self.conversation_id, summary=summary, upto_id=plan.fold[-1].id
        )
        return await self._replan(plan)

    def _outcome(self) -> tuple[str, str, errors.ClaudeError | None]:
        """How the round loop ended: the reply's status, stop reason and error, if any."""
        task = self._stream_task
        assert task is not None
        if task.cancelled():
            if self._stopping:
                return Message.Status.DONE, "stopped", None
            return Message.Status.INTERRUPTED, "", None
        exc = task.exception()
        if isinstance(exc, BudgetStop):
            error = errors.ClaudeError("budget_exceeded", str(exc), retryable=False)
            return Message.Status.ERROR, "", error
        if exc is not None:
            error = errors.to_claude_error(exc, model=self.plan.model)
            if error is None:
                log.error("reply %s failed", self.message_id, exc_info=exc)
                error = errors.ClaudeError(
                    "internal_error", "Something went wrong on the server.", retryable=True
                )
            return Message.Status.ERROR, "", error
        return Message.Status.DONE, self._calls[-1].stop_reason if self._calls else "", None

    async def _finish(self) -> None:
        """Save the reply, then send every tab its final frame (`done` or `error`)."""
        status, stop_reason, error = self._outcome()
        self._end_round()
        content = request_body.answer_dangling_tool_uses(self.blocks)
        saved, meters = await save_reply(
            message_id=self.message_id,
            conversation_id=self.conversation_id,
            content=content,
            status=status,
            stop_reason=stop_reason,
            error=error,
            output_tokens=sum(c.usage.output_tokens for c in self._calls),
            seq=self.seq,
        )
        if not saved:
            error = errors.ClaudeError(
                "internal_error",
                "The reply could not be saved (the database is unavailable); its text is kept "
                "in the server log. Try again shortly.",
                retryable=True,
            )
        if error is not None:
            await self.delivery.finish(
                {
                    "type": "error",
                    "code": error.code,
                    "message": storable(error.message),
                    "retryable": error.retryable,
                    "message_id": self.message_id,
                }
            )
            return
        usage = records.Usage()
        for call in self._calls:
            usage.add(call.usage)
        await self.delivery.finish(
            {
                "type": "done",
                "message_id": self.message_id,
                "stop_reason": stop_reason,
                "usage": usage.as_api(),
                "cost": str(entries.cost_of_calls(self._calls)),
                "meters": meters,
                # The saved blocks as pages see them: citations and web sources arrive whole.
                "content": storable_json(tree.page_content(content)),
            }
        )


def search_outcome(block: dict) -> tools.ToolResult:
    """A web_search_tool_result as a tool step shows it: the pages found (title and URL; never
    their encrypted content), or the search's error code."""
    content = block.get("content")
    if isinstance(content, dict):  # web_search_tool_result_error
        return tools.ToolResult(f"Search failed: {content.get('error_code', 'unavailable')}", True)
    pages = [item for item in content or [] if isinstance(item, dict)]
    lines = [
        f"{page.get('title') or page.get('url', '')} — {page.get('url', '')}" for page in pages
    ]
    return tools.ToolResult("\n".join(lines) or "No pages found.", False)
