"""The chat socket: a dispatcher. It checks, saves the turn, and hands the reply to a runner.

Frames and error codes are the contract in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http import Http404
from django.utils import timezone

from chat import catalogue, claude, runner, selectors, services
from chat.models import Conversation, Message

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
REMOTE_RESUME_TIMEOUT_S = 3.0


class ClientError(Exception):
    """Becomes an `error` frame; the socket stays open."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


def _invalid(message: str) -> ClientError:
    return ClientError("invalid_frame", message)


class ChatConsumer(AsyncWebsocketConsumer):
    # --- socket events ------------------------------------------------------------------------

    async def connect(self) -> None:
        self.conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        self.group = runner.group_name(self.conversation_id)
        self.user = self.scope.get("user")
        # Accept first: a close code only reaches the browser on an open socket.
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await self._owns_conversation():
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.joined = True
        self.sent_seq: dict[int, int] = {}
        self.resuming = False
        self.buffered: list[dict] = []
        self.resume_after = 0
        self.resume_timer: asyncio.Task | None = None
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "joined", False):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        timer = getattr(self, "resume_timer", None)
        if timer is not None:
            timer.cancel()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not getattr(self, "joined", False):
            return
        try:
            frame = self._parse(text_data)
            handler = {
                "send": self.cmd_send,
                "stop": self.cmd_stop,
                "resume": self.cmd_resume,
            }.get(frame.get("type"))
            if handler is None:
                raise _invalid(f"Unknown frame type {str(frame.get('type'))[:40]!r}.")
            await handler(frame)
        except ClientError as exc:
            await self._send_error(exc.code, exc.message, retryable=exc.retryable)

    @staticmethod
    def _parse(text_data: str | None) -> dict:
        if text_data is None:
            raise _invalid("Frames must be JSON text.")
        try:
            frame = json.loads(text_data)
        except ValueError:
            raise _invalid("Frames must be JSON text.") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise _invalid('A frame is a JSON object with a "type".')
        return frame

    # --- commands -----------------------------------------------------------------------------

    async def cmd_send(self, frame: dict) -> None:
        client_id, text, model = self._validate_send(frame)
        try:
            started = await self._turn_start(text=text, client_id=client_id, model=model)
        except Http404:
            raise ClientError("not_found", "This conversation no longer exists.") from None
        except services.Busy:
            raise ClientError(
                "busy",
                "A reply is already being written in this conversation. Wait or stop it.",
                retryable=True,
            ) from None
        ack = {
            "type": "message",
            "client_id": str(client_id),
            "message": selectors.message_to_dict(started.user_message),
        }
        if started.duplicate:
            await self._send_frame(ack)  # only to this socket: nothing new happened
            return
        await self.channel_layer.group_send(self.group, {"type": "chat.frame", "frame": ack})
        reply = runner.Reply(
            conversation_id=self.conversation_id,
            message_id=started.assistant_message.pk,
            user_id=self.user.pk,
            model=started.model,
            system=claude.system_blocks(started.system_text),
            messages=started.history,
            max_tokens=started.max_tokens,
        )
        reply.start()

    def _validate_send(self, frame: dict) -> tuple[uuid.UUID, str, str | None]:
        raw_id = frame.get("client_id")
        if not isinstance(raw_id, str):
            raise _invalid("send needs a client_id (a UUID string).")
        try:
            client_id = uuid.UUID(raw_id)
        except ValueError:
            raise _invalid("client_id must be a UUID.") from None
        text = frame.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _invalid("send needs some text.")
        if len(text) > settings.MESSAGE_MAX_CHARS:
            raise _invalid(
                f"The message is too long: {len(text):,} characters, "
                f"the limit is {settings.MESSAGE_MAX_CHARS:,}."
            )
        attachments = frame.get("attachments", [])
        if not isinstance(attachments, list):
            raise _invalid("attachments must be a list of ids.")
        if attachments:
            raise ClientError("attachment_invalid", "Those attachments cannot be found.")
        model = frame.get("model")
        if model is not None:
            if not isinstance(model, str):
                raise _invalid("model must be a string.")
            try:
                catalogue.get_model(model)
            except catalogue.UnknownModel:
                raise _invalid(f"Unknown model {model[:60]!r}.") from None
        return client_id, text, model

    async def cmd_stop(self, frame: dict) -> None:
        reply = runner.local_reply(self.conversation_id)
        if reply is not None:
            reply.stop()
            return
        await self.channel_layer.group_send(
            runner.control_group_name(self.conversation_id), {"type": "reply.stop"}
        )

    async def cmd_resume(self, frame: dict) -> None:
        after_seq = frame.get("after_seq", 0)
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise _invalid("after_seq must be a whole number ≥ 0.")
        reply = runner.local_reply(self.conversation_id)
        if reply is not None:
            # Same process: read the reply's buffer with no await in between, so live frames
            # that follow are exactly the ones after it.
            self.sent_seq[reply.message_id] = after_seq
            for replayed in reply.replay_frames(after_seq):
                await self._forward(replayed)
            return
        state = await self._reply_state()
        if state is None:
            return
        message, recent = state
        if message.status == Message.Status.STREAMING or recent:
            # The reply runs (or just ran) in another process: ask it, and hold live frames
            # until its answer so nothing is shown out of order.
            self.resuming, self.resume_after, self.buffered = True, after_seq, []
            await self.channel_layer.group_send(
                runner.control_group_name(self.conversation_id),
                {"type": "reply.resume", "reply_to": self.channel_name, "after_seq": after_seq},
            )
            self.resume_timer = asyncio.create_task(self._resume_fallback(message.pk))
            return
        await self._send_frame({"type": "message", "message": selectors.message_to_dict(message)})

    async def _resume_fallback(self, message_id: int) -> None:
        """Nobody answered the resume: send the saved message instead."""
        await asyncio.sleep(REMOTE_RESUME_TIMEOUT_S)
        if not self.resuming:
            return
        message = await self._get_message(message_id)
        if message is not None:
            await self._send_frame(
                {"type": "message", "message": selectors.message_to_dict(message)}
            )
        await self._end_resume()

    # --- channel-layer handlers ---------------------------------------------------------------

    async def chat_frame(self, event: dict) -> None:
        if self.resuming:
            self.buffered.append(event["frame"])
            return
        await self._forward(event["frame"])

    async def chat_replay(self, event: dict) -> None:
        if not self.resuming:
            return
        if self.resume_timer is not None:
            self.resume_timer.cancel()
        self.sent_seq[event["message_id"]] = self.resume_after
        for frame in event["frames"]:
            await self._forward(frame)
        await self._end_resume()

    async def _end_resume(self) -> None:
        self.resuming = False
        buffered, self.buffered = self.buffered, []
        for frame in buffered:
            await self._forward(frame)

    # --- sending ------------------------------------------------------------------------------

    async def _forward(self, frame: dict) -> None:
        """Send a frame, dropping a delta this socket has already sent (live and replayed)."""
        if frame.get("type") == "delta":
            message_id = frame["message_id"]
            if frame["seq"] <= self.sent_seq.get(message_id, 0):
                return
            self.sent_seq[message_id] = frame["seq"]
        await self._send_frame(frame)

    async def _send_frame(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame))

    async def _send_error(self, code: str, message: str, *, retryable: bool = False) -> None:
        await self._send_frame(
            {
                "type": "error",
                "code": code,
                "message": message,
                "retryable": retryable,
                "message_id": None,
            }
        )

    # --- database -----------------------------------------------------------------------------

    @database_sync_to_async
    def _owns_conversation(self) -> bool:
        return Conversation.objects.filter(pk=self.conversation_id, owner=self.user).exists()

    @database_sync_to_async
    def _turn_start(self, *, text: str, client_id: uuid.UUID, model: str | None) -> TurnPlan:
        conversation = selectors.get_conversation_for_update(self.user, self.conversation_id)
        started = services.turn_start(
            conversation=conversation, text=text, client_id=client_id, model=model
        )
        plan = TurnPlan(started)
        if not started.duplicate:
            info = catalogue.get_model(conversation.model)
            plan.model = conversation.model
            plan.max_tokens = min(settings.CLAUDE_MAX_TOKENS, info.max_output)
            plan.system_text = (
                conversation.system_prompt.text
                if conversation.system_prompt
                else services.current_system_prompt().text
            )
            plan.history = services.request_messages(
                conversation_id=self.conversation_id,
                before_message_id=started.assistant_message.pk,
            )
        return plan

    @database_sync_to_async
    def _reply_state(self) -> tuple[Message, bool] | None:
        """The newest reply of the conversation and whether it finished moments ago."""
        services.reap_stale_replies(
            stale_seconds=settings.STREAM_STALE_S, conversation_id=self.conversation_id
        )
        message = (
            Message.objects.filter(
                conversation_id=self.conversation_id, role=Message.Role.ASSISTANT
            )
            .order_by("-id")
            .first()
        )
        if message is None:
            return None
        recent = message.updated_at >= timezone.now() - timedelta(
            seconds=settings.STREAM_REPLAY_KEEP_S
        )
        return message, recent

    @database_sync_to_async
    def _get_message(self, message_id: int) -> Message | None:
        return Message.objects.filter(pk=message_id).first()


class TurnPlan:
    """What turn_start saved plus what the runner needs to make the request."""

    def __init__(self, started: services.TurnStart) -> None:
        self.user_message = started.user_message
        self.assistant_message = started.assistant_message
        self.duplicate = started.duplicate
        self.model = ""
        self.max_tokens = 0
        self.system_text = ""
        self.history: list[dict] = []
