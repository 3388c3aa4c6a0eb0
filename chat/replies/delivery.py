"""A reply's frames to every tab of its conversation, and the control requests that reach it.

Deltas are coalesced: the first text goes out at once, then at most one frame per
STREAM_COALESCE_MS; thinking text goes beside them as `thinking` frames (no seq). Every delta
sent is kept, numbered, so a tab that missed some gets them again (`replay`), whatever process
it is connected to: `stop` and cross-process `resume` come through the reply's control group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from django.conf import settings

from chat.conversations import tree
from chat.models import Message
from chat.text import storable

log = logging.getLogger(__name__)


def group_name(conversation_id: int) -> str:
    return f"conversation.{conversation_id}"


def control_group_name(conversation_id: int) -> str:
    return f"reply.{conversation_id}"


class Delivery:
    def __init__(self, layer, *, conversation_id: int, message_id: int, seq_base: int) -> None:
        self.layer = layer
        self.group = group_name(conversation_id)
        self.message_id = message_id
        self.seq_base = self.seq = seq_base
        self.deltas: list[str] = []  # every delta sent, for replay
        self.steps: list[dict] = []  # every tool frame sent (each names its delta), for replay
        # Called with each new seq the moment its delta is numbered, before anything else runs:
        # the reply notes what its text was then, for a checkpoint that agrees with the deltas.
        self.on_numbered: Callable[[int], None] | None = None
        self.final_frame: dict | None = None
        self._pending: list[str] = []
        self._pending_thinking: list[str] = []
        self._has_text = asyncio.Event()
        self._closing = False
        self._side_tasks: set[asyncio.Task] = set()

    # --- text from the stream ----------------------------------------------------------------

    def text(self, text: str) -> None:
        self._pending.append(text)
        self._has_text.set()

    @property
    def text_pending(self) -> bool:
        """Text came that no delta holds yet (it waits to be coalesced)."""
        return bool(self._pending)

    def thinking(self, text: str) -> None:
        """Thinking text goes to tabs beside the reply (never into its deltas, no seq), storable
        as text deltas are: a lone surrogate would also fail the channel layer's encoding."""
        if text:
            self._pending_thinking.append(storable(text))
            self._has_text.set()

    def close(self) -> None:
        """The stream ended: the flush loop sends what is pending and returns."""
        self._closing = True
        self._has_text.set()

    async def flush_loop(self) -> None:
        """Coalesce deltas until close(); all text out at the end."""
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
            await self.broadcast(
                {"type": "thinking", "message_id": self.message_id, "text": thinking}
            )
        delta = self._take_delta()
        if delta is not None:
            await self.broadcast(delta)

    def _take_delta(self) -> dict | None:
        """The pending text as the next delta (numbered and kept for replay), if any."""
        if not self._pending:
            return None
        text = "".join(self._pending)
        self._pending.clear()
        self.seq += 1
        self.deltas.append(text)
        if self.on_numbered is not None:
            self.on_numbered(self.seq)
        return {"type": "delta", "message_id": self.message_id, "seq": self.seq, "text": text}

    # --- frames ------------------------------------------------------------------------------

    async def finish(self, frame: dict) -> None:
        """The reply's final frame (`done` or `error`), kept for replay."""
        self.final_frame = frame
        await self.broadcast(frame)

    def step_soon(self, frame: dict) -> None:
        """A tool step, from inside the token loop: the text before it goes out first (not
        held back by coalescing), and the frame says after which delta it came (`seq`), so
        tabs show it in its place among the text."""
        delta = self._take_delta()
        frame = {**frame, "seq": self.seq}
        self.steps.append(frame)

        async def send() -> None:
            if delta is not None:
                await self.broadcast(delta)
            await self.broadcast(frame)

        task = asyncio.get_running_loop().create_task(send())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def step(self, frame: dict) -> None:
        """A tool step from outside the token loop (a tool's result), after the deltas so far."""
        frame = {**frame, "seq": self.seq}
        self.steps.append(frame)
        await self.broadcast(frame)

    async def broadcast(self, frame: dict) -> None:
        """Send a frame to every tab; a channel-layer failure (Redis away) is logged, not fatal:
        the reply goes on, is saved, and a tab that resumes gets what it missed."""
        try:
            await self.layer.group_send(self.group, {"type": "chat.frame", "frame": frame})
        except Exception:
            log.warning("frame of reply %s not sent", self.message_id, exc_info=True)

    # --- replay and control ------------------------------------------------------------------

    def replay_frames(self, after_seq: int, base_blocks: list[dict]) -> list[dict]:
        """What a socket that applied deltas up to `after_seq` missed, then the final frame.

        Deltas of an earlier run of this message (before a Continue: `base_blocks`) are not
        kept: the saved text up to the base stands in for them."""
        frames: list[dict] = []
        if after_seq < self.seq_base:
            frames.append(
                {
                    "type": "message",
                    "message": {
                        "id": self.message_id,
                        "role": "assistant",
                        "content": tree.page_content(base_blocks),
                        "text": Message(content=base_blocks).text,
                        "status": "streaming",
                        "seq": self.seq_base,
                    },
                }
            )
            after_seq = self.seq_base
        # Tool steps are shown by id (a second frame of a step updates it), so every step from
        # the delta the socket has on is sent again, each after its delta.
        steps = [step for step in self.steps if step["seq"] >= after_seq]
        frames += [step for step in steps if step["seq"] == after_seq]
        for seq, text in enumerate(self.deltas[after_seq - self.seq_base :], start=after_seq + 1):
            frames.append(
                {"type": "delta", "message_id": self.message_id, "seq": seq, "text": text}
            )
            frames += [step for step in steps if step["seq"] == seq]
        if self.final_frame is not None:
            frames.append(self.final_frame)
        return frames

    async def listen(
        self,
        channel: str,
        *,
        on_stop: Callable[[], None],
        replay: Callable[[int], list[dict]],
    ) -> None:
        """Answer the control group: `reply.stop`, and `reply.resume` from another process."""
        while True:
            event = await self.layer.receive(channel)
            kind = event.get("type")
            if kind == "reply.stop":
                on_stop()
            elif kind == "reply.resume" and event.get("message_id") in (None, self.message_id):
                # Only the reply asked for answers: an older one of the conversation, still
                # replayable, must not.
                await self.layer.send(
                    event["reply_to"],
                    {
                        "type": "chat.replay",
                        "message_id": self.message_id,
                        "frames": replay(int(event.get("after_seq", 0))),
                    },
                )
