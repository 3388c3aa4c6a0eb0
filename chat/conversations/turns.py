"""Writes to the message tree that start a reply: a new message, an edit, a regenerate, a
Continue, a switch of versions. Each is one transaction; a second reply in the same
conversation is refused by the database (Busy)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from chat.claude import catalogue, context
from chat.conversations.lifecycle import keep_effort_for_model
from chat.errors import UserFacingError
from chat.models import Conversation, Message


class Busy(UserFacingError):
    """A reply is already running in this conversation."""

    code = "busy"
    message = "A reply is already being written in this conversation. Wait or stop it."
    retryable = True


@dataclass
class TurnStart:
    user_message: Message
    assistant_message: Message | None  # None: the client_id was seen before, nothing started
    duplicate: bool = False


def _leaf_id(conversation: Conversation) -> int | None:
    if conversation.leaf_id is not None:
        return conversation.leaf_id
    last = Message.objects.filter(conversation=conversation).order_by("-id").first()
    return last.pk if last else None


def _open_reply(conversation: Conversation, *, parent: Message) -> Message:
    """Create the streaming reply under `parent` and make it the leaf. Raises Busy."""
    try:
        with transaction.atomic():
            reply = Message.objects.create(
                conversation=conversation,
                parent=parent,
                role=Message.Role.ASSISTANT,
                content=[],
                status=Message.Status.STREAMING,
            )
    except IntegrityError:
        raise Busy from None
    conversation.leaf = reply
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=["leaf", "updated_at", "model"])
    return reply


def find_duplicate(*, conversation: Conversation, client_id: uuid.UUID) -> Message | None:
    """The message already sent with this client_id (a resend after a reconnect), if any."""
    return Message.objects.filter(conversation=conversation, client_id=client_id).first()


# turn_start's default: the new message follows the active branch's newest message.
FOLLOW_LEAF = object()


def turn_start(
    *,
    conversation: Conversation,
    text: str,
    client_id: uuid.UUID,
    model: str | None = None,
    attachment_blocks: list[dict] | None = None,
    parent_id: int | None | object = FOLLOW_LEAF,
    known_new: bool = False,
) -> TurnStart:
    """Save the user's message and an empty streaming reply, in one transaction.

    The message follows the active leaf (or `parent_id`, for an edit). A client_id seen before
    returns the saved message with duplicate=True and starts nothing (`known_new`: the caller
    has just looked it up, in this transaction). Raises Busy when a reply
    is already streaming (the unique constraint decides, so two processes cannot both start
    one).
    """
    if not known_new:
        existing = Message.objects.filter(conversation=conversation, client_id=client_id).first()
        if existing is not None:
            return TurnStart(user_message=existing, assistant_message=None, duplicate=True)
    # A reply already streaming: the partial unique constraint refuses the second one, below.
    try:
        with transaction.atomic():
            if model and model != conversation.model:
                catalogue.get_model(model)
                conversation.model = model
                keep_effort_for_model(conversation)
            content = _user_content(text, attachment_blocks or [])
            user_message = Message.objects.create(
                conversation=conversation,
                parent_id=_leaf_id(conversation) if parent_id is FOLLOW_LEAF else parent_id,
                role=Message.Role.USER,
                content=content,
                client_id=client_id,
                token_count=context.estimate_tokens(content),
            )
            assistant_message = _open_reply(conversation, parent=user_message)
    except IntegrityError:
        existing = Message.objects.filter(conversation=conversation, client_id=client_id).first()
        if existing is not None:
            return TurnStart(user_message=existing, assistant_message=None, duplicate=True)
        raise Busy from None
    return TurnStart(user_message=user_message, assistant_message=assistant_message)


def _user_content(text: str, attachment_blocks: list[dict]) -> list[dict]:
    """A user message's blocks: documents first (the docs advise long documents before the
    question), then the text, then images (as they have always been stored)."""
    documents = [b for b in attachment_blocks if b.get("type") == "document"]
    others = [b for b in attachment_blocks if b.get("type") != "document"]
    return [*documents, {"type": "text", "text": text}, *others]


class NotEditable(UserFacingError):
    """A version to edit, regenerate or show that is not there (or not the user's)."""


def regenerate_start(*, conversation: Conversation) -> Message:
    """A new version of the last reply on the active branch; the old one is kept."""
    leaf = Message.objects.filter(pk=_leaf_id(conversation)).first()
    if leaf is None or leaf.role != Message.Role.ASSISTANT:
        raise NotEditable("There is no reply to regenerate.")
    if leaf.status == Message.Status.STREAMING:
        raise Busy
    with transaction.atomic():
        return _open_reply(conversation, parent=leaf.parent)


# A reply that may be tried again in place: it ended with an error, or its process stopped.
RETRYABLE_STATUSES = (Message.Status.ERROR, Message.Status.INTERRUPTED)


def retry_start(*, conversation: Conversation, message_id: int) -> Message:
    """Try a failed reply again in its place: the failed one (the active branch's last message)
    is deleted and a new reply opens under the same user message, so no version of the failure
    is kept. Its API calls stay in the ledger (their `message` becomes empty).

    Raises NotRetryable when `message_id` is not the conversation's last reply or did not fail
    (a forged id, or a stale one: retried or regenerated from another tab), Busy while a reply
    runs.
    """
    failed = Message.objects.filter(conversation=conversation, pk=message_id).first()
    if failed is not None and failed.status == Message.Status.STREAMING:
        raise Busy
    if (
        failed is None
        or failed.pk != _leaf_id(conversation)
        or failed.role != Message.Role.ASSISTANT
        or failed.status not in RETRYABLE_STATUSES
        or failed.children.exists()  # deleting it would take a later branch with it
    ):
        raise NotRetryable
    parent = failed.parent
    with transaction.atomic():
        failed.delete()
        return _open_reply(conversation, parent=parent)


class NotRetryable(UserFacingError):
    message = (
        "Only the last reply, when it failed, can be retried; this one is not (it may have "
        "been retried already). Nothing was started."
    )


def edit_start(
    *, conversation: Conversation, message_id: int, text: str, client_id: uuid.UUID
) -> TurnStart:
    """A new version of a user message on the active branch, and a reply to it.

    The conversation continues from the edited message; the old branch is kept as a version.
    The images and documents of the edited message go with the new version.
    """
    from chat.conversations.tree import active_path

    path = active_path(conversation)
    original = next((m for m in path.messages if m.pk == message_id), None)
    if original is None or original.role != Message.Role.USER:
        raise NotEditable("Only your own messages in this conversation can be edited.")
    files = [b for b in original.content if b.get("type") in ("image", "document")]
    with transaction.atomic():
        return turn_start(
            conversation=conversation,
            text=text,
            client_id=client_id,
            attachment_blocks=files,
            parent_id=original.parent_id,
        )


def switch_version(*, conversation: Conversation, message_id: int) -> Message:
    """Show another version: the active branch becomes the newest one through `message_id`."""
    from chat.conversations.tree import latest_leaf_under

    target = Message.objects.filter(conversation=conversation, pk=message_id).first()
    if target is None:
        raise NotEditable("That version does not exist.")
    if Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING).exists():
        raise Busy
    conversation.leaf_id = latest_leaf_under(conversation, target.pk)
    conversation.save(update_fields=["leaf"])
    return target


def continue_start(*, conversation: Conversation) -> Message:
    """Reopen the last reply, cut short by max_tokens, for a Continue. Raises Busy or
    NothingToContinue."""
    reply = Message.objects.filter(pk=_leaf_id(conversation)).first()
    if reply is None or reply.role != Message.Role.ASSISTANT:
        raise NothingToContinue
    if reply.stop_reason not in ("max_tokens", "pause_turn"):
        if reply is not None and reply.status == Message.Status.STREAMING:
            raise Busy
        raise NothingToContinue
    try:
        with transaction.atomic():
            Message.objects.filter(pk=reply.pk).update(
                status=Message.Status.STREAMING, stop_reason="", updated_at=timezone.now()
            )
    except IntegrityError:
        raise Busy from None
    reply.refresh_from_db()
    return reply


class NothingToContinue(UserFacingError):
    message = "The last reply was not cut short, so there is nothing to continue."
