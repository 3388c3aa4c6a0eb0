"""The chat socket: a dispatcher. It parses a frame, checks who asks, calls one service and
sends frames; the reply itself runs in a runner, apart from the socket.

Frames and error codes are the contract in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import Http404

from chat.accounts import sessions
from chat.conversations import tree
from chat.errors import UserFacingError
from chat.models import Message
from chat.replies import delivery, frames, planning, runner, starting
from chat.replies.socket_loop import DirectDispatchMixin
from chat.replies.tab_feed import TabFeed
from chat.telemetry import context, metrics

log = logging.getLogger(__name__)

# No login, or the session ended (logout, deactivation, password change, expiry).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


class ChatConsumer(DirectDispatchMixin, AsyncWebsocketConsumer):
    # --- socket events ------------------------------------------------------------------------

    async def connect(self) -> None:
        self.conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        # Log lines of this socket, and of the replies it starts, carry the conversation's id.
        context.conversation_id.set(self.conversation_id)
        self.group = delivery.group_name(self.conversation_id)
        self.user = self.scope.get("user")
        # Accept first: a close code only reaches the browser on an open socket.
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        owns = database_sync_to_async(starting.owns_conversation)
        if not await owns(user=self.user, conversation_id=self.conversation_id):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.joined = True
        self.session_key = self.scope["session"].session_key
        self.user_group = sessions.user_group(self.user.pk)
        metrics.SOCKETS_OPEN.inc()
        self.feed = TabFeed(self._send_frame, database_sync_to_async(self._saved_message))
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.channel_layer.group_add(self.group, self.channel_name)
        # Sessions ended between the handshake's login and joining the user's group.
        if not await self._session_is_live():
            await self._end(reason="session_ended")
            return
        # A single sign-on session is good until its ID token expires: the socket closes then
        # too, and the tab's next page load checks with the provider again (prompt=none), which
        # logs out a user disabled there.
        expiry = await database_sync_to_async(sessions.sso_expiry)(self.scope["session"])
        if expiry is not None:
            self.sso_expiry = expiry
            self.expiry_task = asyncio.create_task(self._close_at_sso_expiry(expiry))

    async def disconnect(self, code: int) -> None:
        if getattr(self, "expiry_task", None) is not None:
            self.expiry_task.cancel()
        if getattr(self, "joined", False):
            metrics.SOCKETS_OPEN.dec()
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.channel_layer.group_discard(self.user_group, self.channel_name)
            self.feed.close()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not getattr(self, "joined", False) or getattr(self, "ended", False):
            return
        if not await self._session_is_live():  # expired, deleted, or its user deactivated
            await self._end(reason="session_ended")
            return
        if time.time() >= getattr(self, "sso_expiry", math.inf):
            await self._end(reason="sso_expired")
            return
        try:
            frame = frames.parse(text_data)
            handler = {
                "send": self.cmd_send,
                "stop": self.cmd_stop,
                "resume": self.cmd_resume,
                "continue": self.cmd_continue,
                "regenerate": self.cmd_regenerate,
                "retry": self.cmd_retry,
                "edit": self.cmd_edit,
                "switch": self.cmd_switch,
            }.get(frame.get("type"))
            if handler is None:
                raise frames.InvalidFrame(f"Unknown frame type {str(frame.get('type'))[:40]!r}.")
            await handler(frame)
        except Http404:
            await self._send_frame(frames.error(frames.ConversationGone()))
        except UserFacingError as exc:  # the one place a refusal becomes a frame
            await self._send_frame(frames.error(exc))
        except Exception:
            # A fault of ours must not kill the socket silently: log it, tell the user.
            log.exception("frame failed in conversation %s", self.conversation_id)
            await self._send_frame(frames.error(frames.ServerFault()))

    # --- commands -----------------------------------------------------------------------------

    async def cmd_send(self, frame: dict) -> None:
        send = frames.send(frame)
        started, plan = await database_sync_to_async(starting.send)(
            user=self.user,
            conversation_id=self.conversation_id,
            text=send.text,
            client_id=send.client_id,
            model=send.model,
            attachment_ids=send.attachment_ids,
            effort=frames.effort(frame),
            web_search=frames.web_search(frame),
        )
        ack = {
            "type": "message",
            "client_id": str(send.client_id),
            "message": tree.message_to_dict(started.user_message),
        }
        if plan is None:
            await self._send_frame(ack)  # a repeated client_id: only this socket, nothing new
            return
        await self._broadcast(ack)
        await self._run(plan)

    async def cmd_continue(self, frame: dict) -> None:
        plan = await database_sync_to_async(starting.continuation)(
            user=self.user, conversation_id=self.conversation_id
        )
        await self._run(plan)

    async def cmd_regenerate(self, frame: dict) -> None:
        await self._branch("regenerate")

    async def cmd_retry(self, frame: dict) -> None:
        message_id = frames.message_id(
            frame, refused="retry needs the message_id of the failed reply."
        )
        await self._branch("retry", message_id=message_id)

    async def cmd_edit(self, frame: dict) -> None:
        message_id = frames.message_id(
            frame, refused="edit needs the message_id of one of your messages."
        )
        send = frames.send({"client_id": str(uuid.uuid4()), **frame, "attachments": []})
        await self._branch("edit", message_id=message_id, text=send.text, client_id=send.client_id)

    async def cmd_switch(self, frame: dict) -> None:
        message_id = frames.message_id(frame, refused="switch needs a message_id.")
        await self._branch("switch", message_id=message_id)

    async def cmd_stop(self, frame: dict) -> None:
        reply = runner.local_reply(self.conversation_id)
        if reply is not None:
            reply.stop()
            return
        await self.channel_layer.group_send(
            delivery.control_group_name(self.conversation_id), {"type": "reply.stop"}
        )

    async def cmd_resume(self, frame: dict) -> None:
        after_seq = frames.after_seq(frame)
        reply = runner.local_reply(self.conversation_id)
        if reply is not None:
            await self.feed.replay_local(reply, after_seq)
            return
        state = await database_sync_to_async(starting.reply_state)(
            conversation_id=self.conversation_id
        )
        if state is None:
            return
        message, recent = state
        if message.status == Message.Status.STREAMING or recent:
            # The reply runs (or just ran) in another process: ask it, and hold live frames
            # until its answer so nothing is shown out of order.
            self.feed.hold_for_remote(after_seq, message.pk)
            await self.channel_layer.group_send(
                delivery.control_group_name(self.conversation_id),
                {
                    "type": "reply.resume",
                    "reply_to": self.channel_name,
                    "after_seq": after_seq,
                    "message_id": message.pk,
                },
            )
            return
        await self._send_frame({"type": "message", "message": tree.message_to_dict(message)})

    async def _branch(self, kind: str, **change) -> None:
        branch, plan = await database_sync_to_async(starting.branch)(
            kind, user=self.user, conversation_id=self.conversation_id, **change
        )
        await self._broadcast(branch)
        if plan is not None:
            await self._run(plan)

    async def _run(self, plan: planning.TurnPlan) -> None:
        """Tell every tab that a retired model was replaced (a `notice` frame), then start."""
        if plan.replaced_model:
            await self._broadcast(frames.model_replaced(plan))
        runner.Reply(plan).start()

    # --- channel-layer handlers ---------------------------------------------------------------

    async def chat_frame(self, event: dict) -> None:
        await self.feed.live(event["frame"])

    async def chat_replay(self, event: dict) -> None:
        await self.feed.replay_remote(event["message_id"], event["frames"])

    async def session_end(self, event: dict) -> None:
        if sessions.socket_must_close(event, self.session_key):
            await self._end(reason=event.get("reason", "session_ended"))

    # --- the session --------------------------------------------------------------------------

    async def _session_is_live(self) -> bool:
        return await database_sync_to_async(sessions.session_is_live)(
            session_key=self.session_key, user_id=self.user.pk
        )

    async def _close_at_sso_expiry(self, expiry: float) -> None:
        await asyncio.sleep(max(0.0, expiry - time.time()))
        await self._end(reason="sso_expired")

    async def _end(self, *, reason: str) -> None:
        """Close as "not authenticated": the tab takes the user to the login page."""
        if getattr(self, "ended", False):
            return
        self.ended = True
        log.info("socket of user %s closed: %s", self.user.pk, reason)
        await self.close(code=CLOSE_UNAUTHENTICATED)

    # --- sending ------------------------------------------------------------------------------

    async def _broadcast(self, frame: dict) -> None:
        await self.channel_layer.group_send(self.group, {"type": "chat.frame", "frame": frame})

    async def _send_frame(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame))

    @staticmethod
    def _saved_message(message_id: int) -> Message | None:
        return Message.objects.filter(pk=message_id).first()
