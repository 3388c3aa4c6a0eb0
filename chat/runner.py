"""Runs one reply: streams from Claude, fans deltas out to every tab, checkpoints, finishes.

A reply runs in its own task, registered by conversation, so it outlives the socket that asked
for it. Live frames go to the channel-layer group "conversation.<id>"; `stop` and cross-process
`resume` requests reach the reply through its control group "reply.<id>", so they work from any
tab on any process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError

from chat import claude, services
from chat.models import Message

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


@dataclass
class Reply:
    conversation_id: int
    message_id: int
    user_id: int
    model: str
    system: list[dict]
    messages: list[dict]
    max_tokens: int
    seq: int = 0
    deltas: list[str] = field(default_factory=list)
    final_frame: dict | None = None
    _parts: list[str] = field(default_factory=list)
    _pending: list[str] = field(default_factory=list)
    _calls: list[claude.CallRecord] = field(default_factory=list)
    _stopping: bool = False

    def __post_init__(self) -> None:
        self.layer = get_channel_layer()
        self.group = group_name(self.conversation_id)
        self._has_text = asyncio.Event()
        self._closing = False
        self._stream_task: asyncio.Task | None = None
        self.task: asyncio.Task | None = None

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
    def running(self) -> bool:
        return self.final_frame is None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def replay_frames(self, after_seq: int) -> list[dict]:
        """Every delta with seq > after_seq, in order, then the final frame if finished."""
        frames = [
            {"type": "delta", "message_id": self.message_id, "seq": seq, "text": text}
            for seq, text in enumerate(self.deltas[after_seq:], start=after_seq + 1)
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
        flusher = checkpointer = None
        try:
            await self._broadcast({"type": "start", "message_id": self.message_id})
            flusher = asyncio.create_task(self._flush_loop())
            checkpointer = asyncio.create_task(self._checkpoint_loop())
            self._stream_task = asyncio.create_task(self._stream())
            if self._stopping:  # a stop that came before the stream began
                self._stream_task.cancel()
            await asyncio.wait([self._stream_task])
            self._closing = True
            self._has_text.set()
            await flusher
            checkpointer.cancel()
            await self._finish()
            # Stay answerable for `resume` a little while, then let go.
            await asyncio.sleep(settings.STREAM_REPLAY_KEEP_S)
        finally:
            # Cancelled from outside (shutdown): take the helpers down too. The row stays
            # `streaming` with its last checkpoint, and the reaper marks it interrupted.
            for task in (self._stream_task, flusher, checkpointer, listener):
                if task is not None and not task.done():
                    task.cancel()
            await self.layer.group_discard(control_group, control_channel)
            if _replies.get(self.conversation_id) is self:
                del _replies[self.conversation_id]

    async def _stream(self) -> None:
        record = claude.CallRecord(model=self.model)
        self._calls.append(record)
        async for text in claude.stream_reply(
            model=self.model,
            system=self.system,
            messages=self.messages,
            max_tokens=self.max_tokens,
            record=record,
        ):
            self._parts.append(text)
            self._pending.append(text)
            self._has_text.set()

    async def _finish(self) -> None:
        task = self._stream_task
        assert task is not None
        status, stop_reason, error = Message.Status.DONE, "", None
        if task.cancelled():
            stop_reason = "stopped" if self._stopping else ""
            status = Message.Status.DONE if self._stopping else Message.Status.INTERRUPTED
        elif task.exception() is not None:
            exc = task.exception()
            error = claude.to_claude_error(exc)
            if error is None:
                log.error("reply %s failed", self.message_id, exc_info=exc)
                error = claude.ClaudeError(
                    "internal_error", "Something went wrong on the server.", retryable=True
                )
            status = Message.Status.ERROR
        else:
            stop_reason = self._calls[-1].stop_reason if self._calls else ""
        result = await self._save(status, stop_reason, error)
        if error is not None:
            self.final_frame = {
                "type": "error",
                "code": error.code,
                "message": error.message,
                "retryable": error.retryable,
                "message_id": self.message_id,
            }
        else:
            self.final_frame = {
                "type": "done",
                "message_id": self.message_id,
                "stop_reason": stop_reason,
                "usage": result.usage.as_api() if result else claude.Usage().as_api(),
                "cost": str(result.cost) if result else "0",
            }
        await self._broadcast(self.final_frame)

    async def _save(
        self, status: str, stop_reason: str, error: claude.ClaudeError | None
    ) -> services.TurnResult | None:
        """turn_finish, retried while the database is briefly away; never drops text silently."""
        delay = 0.5
        for attempt in range(1, FINISH_ATTEMPTS + 1):
            try:
                return await database_sync_to_async(services.turn_finish)(
                    message_id=self.message_id,
                    conversation_id=self.conversation_id,
                    user_id=self.user_id,
                    text=self.text,
                    status=status,
                    stop_reason=stop_reason,
                    error_code=error.code if error else "",
                    error_message=error.message if error else "",
                    calls=self._calls,
                )
            except DatabaseError:
                if attempt == FINISH_ATTEMPTS:
                    log.exception(
                        "reply %s could not be saved; its text follows: %r",
                        self.message_id,
                        self.text,
                    )
                    return None
                log.warning(
                    "saving reply %s failed (attempt %d), retrying", self.message_id, attempt
                )
                await asyncio.sleep(delay)
                delay *= 2
        return None

    # --- helpers running beside the stream ----------------------------------------------------

    async def _flush_loop(self) -> None:
        """Coalesce deltas: at most one frame per STREAM_COALESCE_MS."""
        interval = settings.STREAM_COALESCE_MS / 1000
        while True:
            await self._has_text.wait()
            if not self._closing:
                await asyncio.sleep(interval)
            self._has_text.clear()
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                self.seq += 1
                self.deltas.append(text)
                frame = {"type": "delta", "message_id": self.message_id, "seq": self.seq}
                frame["text"] = text
                await self._broadcast(frame)
            if self._closing:
                return

    async def _checkpoint_loop(self) -> None:
        """Save the partial text about once a second (and a heartbeat when nothing changed)."""
        saved_len, saved_at = 0, time.monotonic()
        while True:
            await asyncio.sleep(settings.STREAM_CHECKPOINT_S)
            text = self.text
            now = time.monotonic()
            if len(text) == saved_len and now - saved_at < HEARTBEAT_S:
                continue
            try:
                await database_sync_to_async(services.checkpoint)(
                    message_id=self.message_id, text=text
                )
                saved_len, saved_at = len(text), now
            except DatabaseError:
                log.warning("checkpoint of reply %s failed", self.message_id, exc_info=True)

    async def _listen(self, channel: str) -> None:
        while True:
            event = await self.layer.receive(channel)
            kind = event.get("type")
            if kind == "reply.stop":
                self.stop()
            elif kind == "reply.resume":
                await self.layer.send(
                    event["reply_to"],
                    {
                        "type": "chat.replay",
                        "message_id": self.message_id,
                        "frames": self.replay_frames(int(event.get("after_seq", 0))),
                    },
                )

    async def _broadcast(self, frame: dict) -> None:
        await self.layer.group_send(self.group, {"type": "chat.frame", "frame": frame})
