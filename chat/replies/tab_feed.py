"""What one tab is sent of its conversation's replies: each reply's frames whole and in order,
across reconnects and resumes (docs/protocol.md, "Resuming").

- A reply that was already running when the socket joined (it got no `start` of it) reaches the
  tab only through `resume` (which a client sends as soon as it is open): its live deltas, tool
  steps and final frame are dropped until then, so the tab never sees a later delta, or the end,
  before the earlier deltas.
- A delta already sent (live and replayed) is dropped; so is a second final frame.
- While another process is asked to replay a reply, live frames are held back until its answer
  (or until the saved message is sent instead, after REMOTE_RESUME_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from chat.conversations import tree
from chat.models import Message

REMOTE_RESUME_TIMEOUT_S = 3.0

# Frames of one reply (with its message_id) that a tab must get whole and in order.
REPLY_FRAMES = ("delta", "tool", "done", "error")


class TabFeed:
    def __init__(
        self,
        send: Callable[[dict], Awaitable[None]],
        load: Callable[[int], Awaitable[Message | None]],
    ) -> None:
        self._send = send
        self._load = load  # reads a saved message, for the fallback of a remote resume
        self.sent_seq: dict[int, int] = {}  # per reply: the last delta sent to this tab
        self.ended: set[int] = set()  # replies whose final frame this tab got
        self.resuming = False
        self.buffered: list[dict] = []
        self.resume_after = 0
        self.resume_timer: asyncio.Task | None = None

    async def live(self, frame: dict) -> None:
        """A frame the conversation's group broadcast."""
        if self.resuming:
            self.buffered.append(frame)
            return
        await self.forward(frame)

    async def replay_local(self, reply, after_seq: int) -> None:
        """Resume a reply of this process: its buffer, read with no await in between, so the
        live frames that follow are exactly the ones after it."""
        self.sent_seq[reply.message_id] = after_seq
        self.ended.discard(reply.message_id)  # asked for again: the end comes again too
        for replayed in reply.replay_frames(after_seq):
            await self.forward(replayed)

    def hold_for_remote(self, after_seq: int, message_id: int) -> None:
        """Another process is asked to replay: hold live frames until it answers."""
        self.resuming, self.resume_after, self.buffered = True, after_seq, []
        self.resume_timer = asyncio.create_task(self._resume_fallback(message_id))

    async def replay_remote(self, message_id: int, frames: list[dict]) -> None:
        if not self.resuming:
            return
        if self.resume_timer is not None:
            self.resume_timer.cancel()
        self.sent_seq[message_id] = self.resume_after
        self.ended.discard(message_id)
        for frame in frames:
            await self.forward(frame)
        await self._end_resume()

    async def _resume_fallback(self, message_id: int) -> None:
        """Nobody answered the resume: send the saved message instead."""
        await asyncio.sleep(REMOTE_RESUME_TIMEOUT_S)
        if not self.resuming:
            return
        message = await self._load(message_id)
        if message is not None:
            # Live deltas after its checkpoint (if it is still running somewhere) may follow.
            self.sent_seq.setdefault(message_id, message.stream_seq)
            await self._send({"type": "message", "message": tree.message_to_dict(message)})
        await self._end_resume()

    async def _end_resume(self) -> None:
        self.resuming = False
        buffered, self.buffered = self.buffered, []
        for frame in buffered:
            await self.forward(frame)

    async def forward(self, frame: dict) -> None:
        """Send a frame to this tab unless it would break a reply's order (see above)."""
        kind = frame.get("type")
        message_id = frame.get("message_id")
        if kind == "start":
            self.sent_seq.setdefault(message_id, 0)
            self.ended.discard(message_id)  # a Continue: the same message streams again
        elif kind in REPLY_FRAMES and message_id is not None:
            if message_id not in self.sent_seq:
                return
            if kind == "delta":
                if frame["seq"] <= self.sent_seq[message_id]:
                    return
                self.sent_seq[message_id] = frame["seq"]
            elif kind in ("done", "error"):
                if message_id in self.ended:
                    return
                self.ended.add(message_id)
        await self._send(frame)

    def close(self) -> None:
        if self.resume_timer is not None:
            self.resume_timer.cancel()
