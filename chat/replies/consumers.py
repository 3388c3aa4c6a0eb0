"""The chat socket: a dispatcher. It checks, saves the turn, and hands the reply to a runner.

Frames and error codes are the contract in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from chat import limits
from chat.claude import catalogue, context
from chat.conversations import access, lifecycle, tree, turns
from chat.ledger import budgets
from chat.models import ApiCall, Conversation, Message
from chat.replies import checkpoints, planning, runner
from chat.text import has_unstorable

log = logging.getLogger(__name__)

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


# Frames of one reply (with its message_id) that a tab must get whole and in order.
REPLY_FRAMES = ("delta", "tool", "done", "error")


def _invalid(message: str) -> ClientError:
    return ClientError("invalid_frame", message)


@contextmanager
def _client_errors() -> Iterator[None]:
    """Turn refusals of the services into ClientErrors (their transaction rolls back)."""
    try:
        yield
    except Http404:
        raise ClientError("not_found", "This conversation no longer exists.") from None
    except turns.Busy:
        raise ClientError(
            "busy",
            "A reply is already being written in this conversation. Wait or stop it.",
            retryable=True,
        ) from None
    except limits.RateLimited as exc:
        raise ClientError("rate_limited", exc.message, retryable=True) from None
    except turns.NotEditable as exc:
        raise _invalid(exc.message) from None
    except lifecycle.EffortNotTaken as exc:
        raise _invalid(exc.message) from None
    except turns.NothingToContinue:
        raise _invalid(
            "The last reply was not cut short, so there is nothing to continue."
        ) from None
    except budgets.BudgetExceeded as exc:
        raise ClientError("budget_exceeded", exc.message) from None
    except planning.ContextTooLong:
        raise ClientError(
            "context_too_long",
            "This message is too long for the model's context window. Shorten it.",
        ) from None
    except Exception as exc:
        from chat.uploads.errors import (
            AttachmentError,  # only sends with images import S3 code
        )

        if isinstance(exc, AttachmentError):
            raise ClientError(exc.code, exc.message) from None
        raise


class ChatConsumer(AsyncWebsocketConsumer):
    # --- the consumer's loop ------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        """Channels' loop, cheaper per frame, which matters for a streaming reply's deltas.

        Channels' own loop (`await_many_dispatch`) makes a new task and an `asyncio.wait` for
        every message, and its `dispatch` hops to the database thread before every handler to
        close stale connections. Here one long-lived reader per source (the socket, the channel
        layer) hands each message to its handler under a lock: handlers still run one at a time,
        each source's messages in order, and a source is read again only once its message is
        handled. Every database call of this consumer goes through `database_sync_to_async`,
        which closes stale connections itself.
        """
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        self.base_send = send
        turn = asyncio.Lock()

        async def read(source) -> None:
            while True:
                message = await source()
                async with turn:
                    await self.dispatch(message)

        readers = [
            asyncio.create_task(read(receive)),
            asyncio.create_task(read(self.channel_receive)),
        ]
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            for reader in done:
                reader.result()  # a reader ends only by raising: StopConsumer or a fault
        except StopConsumer:
            pass
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def dispatch(self, message: dict) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

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
        self.sent_seq: dict[int, int] = {}  # per reply: the last delta sent to this tab
        self.ended: set[int] = set()  # replies whose final frame this tab got
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
                "continue": self.cmd_continue,
                "regenerate": self.cmd_regenerate,
                "edit": self.cmd_edit,
                "switch": self.cmd_switch,
            }.get(frame.get("type"))
            if handler is None:
                raise _invalid(f"Unknown frame type {str(frame.get('type'))[:40]!r}.")
            await handler(frame)
        except ClientError as exc:
            await self._send_error(exc.code, exc.message, retryable=exc.retryable)
        except Exception:
            # A fault of ours must not kill the socket silently: log it, tell the user.
            log.exception("frame failed in conversation %s", self.conversation_id)
            await self._send_error(
                "internal_error", "Something went wrong on the server; try again.", retryable=True
            )

    @staticmethod
    def _parse(text_data: str | None) -> dict:
        if text_data is None:
            raise _invalid("Frames must be JSON text.")
        if len(text_data) > settings.MESSAGE_MAX_CHARS * 6 + 10_000:  # \uXXXX escapes included
            raise _invalid("The frame is too large.")
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):
            raise _invalid("Frames must be JSON text (not nested that deep).") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise _invalid('A frame is a JSON object with a "type".')
        return frame

    # --- commands -----------------------------------------------------------------------------

    async def cmd_send(self, frame: dict) -> None:
        client_id, text, model, attachment_ids = self._validate_send(frame)
        effort = self._validate_effort(frame)
        started, plan = await self._start_turn(
            text=text,
            client_id=client_id,
            model=model,
            attachment_ids=attachment_ids,
            effort=effort,
        )
        ack = {
            "type": "message",
            "client_id": str(client_id),
            "message": tree.message_to_dict(started.user_message),
        }
        if plan is None:
            await self._send_frame(ack)  # a repeated client_id: only this socket, nothing new
            return
        await self.channel_layer.group_send(self.group, {"type": "chat.frame", "frame": ack})
        await self._notify_model_replaced(plan)
        runner.Reply(plan).start()

    async def cmd_continue(self, frame: dict) -> None:
        plan = await self._continue_turn()
        await self._notify_model_replaced(plan)
        runner.Reply(plan).start()

    async def cmd_regenerate(self, frame: dict) -> None:
        branch, plan = await self._branch_turn("regenerate")
        await self._broadcast(branch)
        await self._notify_model_replaced(plan)
        runner.Reply(plan).start()

    async def cmd_edit(self, frame: dict) -> None:
        message_id = frame.get("message_id")
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise _invalid("edit needs the message_id of one of your messages.")
        client_id, text, _, _ = self._validate_send(
            {"client_id": str(uuid.uuid4()), **frame, "attachments": []}
        )
        branch, plan = await self._branch_turn(
            "edit", message_id=message_id, text=text, client_id=client_id
        )
        await self._broadcast(branch)
        if plan is not None:
            await self._notify_model_replaced(plan)
            runner.Reply(plan).start()

    async def cmd_switch(self, frame: dict) -> None:
        message_id = frame.get("message_id")
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise _invalid("switch needs a message_id.")
        branch, _ = await self._branch_turn("switch", message_id=message_id)
        await self._broadcast(branch)

    async def _broadcast(self, frame: dict) -> None:
        await self.channel_layer.group_send(self.group, {"type": "chat.frame", "frame": frame})

    async def _notify_model_replaced(self, plan: planning.TurnPlan) -> None:
        """Tell every tab that a retired model was replaced (a `notice` frame), before the reply."""
        if not plan.replaced_model:
            return
        label = catalogue.get_model(plan.model).label
        await self._broadcast(
            {
                "type": "notice",
                "code": "model_replaced",
                "message": f"{plan.replaced_model} is no longer available; this conversation "
                f"now uses {label}.",
                "model": plan.model,
                "previous_model": plan.replaced_model,
            }
        )

    def _validate_send(self, frame: dict) -> tuple[uuid.UUID, str, str | None, list]:
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
        if has_unstorable(text):  # typed text is refused, never changed (chat/text.py)
            raise _invalid(
                "The text holds characters that cannot be stored (NUL or a lone surrogate)."
            )
        if len(text) > settings.MESSAGE_MAX_CHARS:
            raise _invalid(
                f"The message is too long: {len(text):,} characters, "
                f"the limit is {settings.MESSAGE_MAX_CHARS:,}."
            )
        attachments = frame.get("attachments", [])
        if not isinstance(attachments, list):
            raise _invalid("attachments must be a list of ids.")
        model = frame.get("model")
        if model is not None:
            if not isinstance(model, str):
                raise _invalid("model must be a string.")
            try:
                catalogue.get_model(model)
            except catalogue.UnknownModel:
                raise _invalid(f"Unknown model {model[:60]!r}.") from None
        return client_id, text, model, attachments

    @staticmethod
    def _validate_effort(frame: dict) -> str | None:
        """The send's `effort`, if any: one of the API's levels (whether the model takes it is
        checked with the conversation, in _start_turn)."""
        effort = frame.get("effort")
        if effort is None:
            return None
        if not isinstance(effort, str) or effort not in catalogue.EFFORT_LEVELS:
            raise _invalid(f"effort must be one of {', '.join(catalogue.EFFORT_LEVELS)}.")
        return effort

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
            self.ended.discard(reply.message_id)  # asked for again: the end comes again too
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
                {
                    "type": "reply.resume",
                    "reply_to": self.channel_name,
                    "after_seq": after_seq,
                    "message_id": message.pk,
                },
            )
            self.resume_timer = asyncio.create_task(self._resume_fallback(message.pk))
            return
        await self._send_frame({"type": "message", "message": tree.message_to_dict(message)})

    async def _resume_fallback(self, message_id: int) -> None:
        """Nobody answered the resume: send the saved message instead."""
        await asyncio.sleep(REMOTE_RESUME_TIMEOUT_S)
        if not self.resuming:
            return
        message = await self._get_message(message_id)
        if message is not None:
            # Live deltas after its checkpoint (if it is still running somewhere) may follow.
            self.sent_seq.setdefault(message_id, message.stream_seq)
            await self._send_frame({"type": "message", "message": tree.message_to_dict(message)})
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
        self.ended.discard(event["message_id"])
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
        """Send a frame to this tab, keeping each reply's frames whole and in order.

        - A reply that was already running when this socket joined (it got no `start` of it)
          reaches the tab only through `resume` (which a client sends as soon as it is open):
          its live deltas, tool steps and final frame are dropped until then, so the tab never
          sees a later delta, or the end, before the earlier deltas.
        - A delta already sent (live and replayed) is dropped; so is a second final frame.
        """
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
        return Conversation.objects.filter(
            pk=self.conversation_id, owner=self.user, deleted_at__isnull=True
        ).exists()

    @database_sync_to_async
    def _start_turn(
        self,
        *,
        text: str,
        client_id: uuid.UUID,
        model: str | None,
        attachment_ids: list,
        effort: str | None,
    ) -> tuple[turns.TurnStart, planning.TurnPlan | None]:
        """Save the turn, plan its request and reserve its budget — all or nothing."""
        with _client_errors(), transaction.atomic():
            conversation = access.get_conversation_for_update(self.user, self.conversation_id)
            existing = turns.find_duplicate(conversation=conversation, client_id=client_id)
            if existing is not None:  # a resend: ack it again, start nothing
                return turns.TurnStart(existing, None, duplicate=True), None
            limits.check_reply_start(user_id=self.user.pk, sending=True)
            replaced = "" if model else lifecycle.replace_retired_model(conversation=conversation)
            if effort is not None:  # the model this message goes to must take it
                lifecycle.check_effort(
                    model=catalogue.get_model(model or conversation.model), effort=effort
                )
            images, image_blocks = [], []
            if attachment_ids:
                from chat.uploads import attachments, blocks

                images = attachments.verified_for_send(owner=self.user, ids=attachment_ids)
                image_blocks = [blocks.message_image_ref(a) for a in images]
            started = turns.turn_start(
                conversation=conversation,
                text=text,
                client_id=client_id,
                model=model,
                image_blocks=image_blocks,
                known_new=True,
            )
            if started.duplicate:
                return started, None
            for image in images:
                image.message = started.user_message
                image.save(update_fields=["message"])
            plan = planning.plan_turn(
                conversation_id=self.conversation_id,
                reply_message_id=started.assistant_message.pk,
                conversation=conversation,
                reply=started.assistant_message,
                effort=lifecycle.turn_effort(conversation=conversation, requested=effort),
            )
            plan.replaced_model = replaced
            plan.reservation_id = self._reserve(plan)
            return started, plan

    @database_sync_to_async
    def _branch_turn(
        self, kind: str, *, message_id: int = 0, text: str = "", client_id: uuid.UUID | None = None
    ) -> tuple[dict, planning.TurnPlan | None]:
        """Regenerate, edit or switch: the new active branch from the changed point (a
        `history` frame for every tab) and the plan of the reply to run, if any."""
        with _client_errors(), transaction.atomic():
            conversation = access.get_conversation_for_update(self.user, self.conversation_id)
            reply = None
            replaced = ""
            if kind != "switch":
                limits.check_reply_start(user_id=self.user.pk, sending=kind == "edit")
                replaced = lifecycle.replace_retired_model(conversation=conversation)
            if kind == "regenerate":
                reply = turns.regenerate_start(conversation=conversation)
                changed_parent = reply.parent_id
            elif kind == "edit":
                started = turns.edit_start(
                    conversation=conversation,
                    message_id=message_id,
                    text=text,
                    client_id=client_id,
                )
                reply = started.assistant_message
                changed_parent = started.user_message.parent_id
            else:
                target = turns.switch_version(conversation=conversation, message_id=message_id)
                changed_parent = target.parent_id
            conversation.refresh_from_db(fields=["leaf"])
            path = tree.active_path(conversation)
            ids = [m.pk for m in path.messages]
            start = ids.index(changed_parent) + 1 if changed_parent in ids else 0
            frame = {
                "type": "history",
                "from_parent_id": changed_parent,
                "messages": [
                    tree.message_to_dict(m, path.versions[m.pk]) for m in path.messages[start:]
                ],
            }
            plan = None
            if reply is not None:
                plan = planning.plan_turn(
                    conversation_id=self.conversation_id,
                    reply_message_id=reply.pk,
                    effort=lifecycle.turn_effort(conversation=conversation),
                )
                plan.replaced_model = replaced
                plan.reservation_id = self._reserve(plan)
            return frame, plan

    @database_sync_to_async
    def _continue_turn(self) -> planning.TurnPlan:
        with _client_errors(), transaction.atomic():
            conversation = access.get_conversation_for_update(self.user, self.conversation_id)
            limits.check_reply_start(user_id=self.user.pk, sending=False)
            replaced = lifecycle.replace_retired_model(conversation=conversation)
            reply = turns.continue_start(conversation=conversation)
            plan = planning.plan_turn(
                conversation_id=self.conversation_id,
                reply_message_id=reply.pk,
                purpose=ApiCall.Purpose.CONTINUATION,
                effort=lifecycle.turn_effort(conversation=conversation),
            )
            plan.replaced_model = replaced
            plan.reservation_id = self._reserve(plan)
            return plan

    def _reserve(self, plan: planning.TurnPlan) -> int:
        fit_limit = int(catalogue.get_model(plan.model).context_window * context.FOLD_THRESHOLD)
        need = budgets.estimate(
            model=plan.model,
            input_tokens=min(plan.estimate, fit_limit),
            max_tokens=plan.max_tokens,
        )
        return budgets.reserve(
            user_id=self.user.pk, conversation_id=self.conversation_id, need=need
        )

    @database_sync_to_async
    def _reply_state(self) -> tuple[Message, bool] | None:
        """The newest reply of the conversation and whether it finished moments ago."""
        checkpoints.reap_stale_replies(
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
