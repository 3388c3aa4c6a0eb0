"""Starting a reply from the socket's commands: check the user's policy (chat/policies.py),
save the turn, plan its request and reserve its budget, all in one transaction, so a refusal at
any step leaves nothing behind.

Sync functions (the consumer wraps them with database_sync_to_async). Each raises a
UserFacingError subclass, or Http404 for a conversation that is not the user's (any more).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chat import limits, policies
from chat.claude import catalogue, context
from chat.conversations import access, lifecycle, tree, turns
from chat.ledger import budgets
from chat.models import ApiCall, Attachment, Conversation, Message
from chat.replies import checkpoints, planning
from chat.uploads import attachments, blocks


def send(
    *,
    user,
    conversation_id: int,
    text: str,
    client_id: uuid.UUID,
    model: str | None,
    attachment_ids: list,
    effort: str | None,
    web_search: bool | None = None,
) -> tuple[turns.TurnStart, planning.TurnPlan | None]:
    """A new message and its reply. A client_id seen before (a resend) starts nothing."""
    with transaction.atomic():
        conversation = access.get_conversation_for_update(user, conversation_id)
        existing = turns.find_duplicate(conversation=conversation, client_id=client_id)
        if existing is not None:  # a resend: ack it again, start nothing
            return turns.TurnStart(existing, None, duplicate=True), None
        limits.check_reply_start(user_id=user.pk, sending=True)
        policy = policies.policy_for(user)
        if model:
            info = catalogue.find_model(model)
            policy.check_model(model, info.label if info else "")
        replaced = (
            ""
            if model
            else lifecycle.replace_retired_model(conversation=conversation, policy=policy)
        )
        if effort is not None:  # the policy must allow it, the model this message goes to take it
            policy.check_effort(effort)
            lifecycle.check_effort(
                model=catalogue.get_model(model or conversation.model), effort=effort
            )
        searching = lifecycle.turn_web_search(
            conversation=conversation, requested=web_search, policy=policy
        )
        files = attachments.verified_for_send(
            owner=user,
            ids=attachment_ids,
            kinds=(Attachment.Kind.IMAGE, Attachment.Kind.DOCUMENT),
            policy=policy,
        )
        started = turns.turn_start(
            conversation=conversation,
            text=text,
            client_id=client_id,
            model=model,
            attachment_blocks=[blocks.message_attachment_ref(a) for a in files],
            known_new=True,
        )
        if started.duplicate:
            return started, None
        attachments.attach_to_message(attachments=files, message=started.user_message)
        plan = planning.plan_turn(
            conversation_id=conversation_id,
            reply_message_id=started.assistant_message.pk,
            conversation=conversation,
            reply=started.assistant_message,
            effort=lifecycle.turn_effort(
                conversation=conversation, requested=effort, policy=policy
            ),
            web_search=searching,
        )
        return started, _reserved(plan, replaced=replaced, user_id=user.pk, policy=policy)


def branch(
    kind: str,
    *,
    user,
    conversation_id: int,
    message_id: int = 0,
    text: str = "",
    client_id: uuid.UUID | None = None,
) -> tuple[dict, planning.TurnPlan | None]:
    """Regenerate, retry, edit or switch: the new active branch from the changed point (a
    `history` frame for every tab) and the plan of the reply to run, if any."""
    with transaction.atomic():
        conversation = access.get_conversation_for_update(user, conversation_id)
        reply = None
        replaced = ""
        policy = policies.UNRESTRICTED
        if kind != "switch":
            limits.check_reply_start(user_id=user.pk, sending=kind == "edit")
            policy = policies.policy_for(user)
            replaced = lifecycle.replace_retired_model(conversation=conversation, policy=policy)
        if kind == "regenerate":
            reply = turns.regenerate_start(conversation=conversation)
            changed_parent = reply.parent_id
        elif kind == "retry":
            reply = turns.retry_start(conversation=conversation, message_id=message_id)
            changed_parent = reply.parent_id
        elif kind == "edit":
            started = turns.edit_start(
                conversation=conversation, message_id=message_id, text=text, client_id=client_id
            )
            reply = started.assistant_message
            changed_parent = started.user_message.parent_id
        else:
            target = turns.switch_version(conversation=conversation, message_id=message_id)
            changed_parent = target.parent_id
        frame = _history_frame(conversation, changed_parent)
        if reply is None:
            return frame, None
        plan = planning.plan_turn(
            conversation_id=conversation_id,
            reply_message_id=reply.pk,
            effort=lifecycle.turn_effort(conversation=conversation, policy=policy),
            web_search=lifecycle.turn_web_search(conversation=conversation, policy=policy),
        )
        return frame, _reserved(plan, replaced=replaced, user_id=user.pk, policy=policy)


def _history_frame(conversation: Conversation, changed_parent: int | None) -> dict:
    conversation.refresh_from_db(fields=["leaf"])
    path = tree.active_path(conversation)
    ids = [m.pk for m in path.messages]
    start = ids.index(changed_parent) + 1 if changed_parent in ids else 0
    return {
        "type": "history",
        "from_parent_id": changed_parent,
        "messages": [tree.message_to_dict(m, path.versions[m.pk]) for m in path.messages[start:]],
    }


def continuation(*, user, conversation_id: int) -> planning.TurnPlan:
    """Reopen the last reply, cut short, to go on writing it."""
    with transaction.atomic():
        conversation = access.get_conversation_for_update(user, conversation_id)
        limits.check_reply_start(user_id=user.pk, sending=False)
        policy = policies.policy_for(user)
        replaced = lifecycle.replace_retired_model(conversation=conversation, policy=policy)
        reply = turns.continue_start(conversation=conversation)
        plan = planning.plan_turn(
            conversation_id=conversation_id,
            reply_message_id=reply.pk,
            purpose=ApiCall.Purpose.CONTINUATION,
            effort=lifecycle.turn_effort(conversation=conversation, policy=policy),
            web_search=lifecycle.turn_web_search(conversation=conversation, policy=policy),
        )
        return _reserved(plan, replaced=replaced, user_id=user.pk, policy=policy)


def _reserved(
    plan: planning.TurnPlan, *, replaced: str, user_id: int, policy: policies.Policy
) -> planning.TurnPlan:
    """The plan with the retired model it replaced, if any, and its budget reservation."""
    fit_limit = int(catalogue.get_model(plan.model).context_window * context.FOLD_THRESHOLD)
    need = budgets.estimate(
        model=plan.model,
        input_tokens=min(plan.estimate, fit_limit),
        max_tokens=plan.max_tokens,
        max_uses=plan.web_search_max_uses,
    )
    plan.replaced_model = replaced
    plan.reservation_id = budgets.reserve(
        user_id=user_id, conversation_id=plan.conversation_id, need=need, policy=policy
    )
    return plan


def owns_conversation(*, user, conversation_id: int) -> bool:
    return Conversation.objects.filter(
        pk=conversation_id, owner=user, deleted_at__isnull=True
    ).exists()


def reply_state(*, conversation_id: int) -> tuple[Message, bool] | None:
    """The newest reply of the conversation and whether it finished moments ago (replies a
    stopped process left streaming are marked interrupted first)."""
    checkpoints.reap_stale_replies(
        stale_seconds=settings.STREAM_STALE_S, conversation_id=conversation_id
    )
    message = (
        Message.objects.filter(conversation_id=conversation_id, role=Message.Role.ASSISTANT)
        .order_by("-id")
        .first()
    )
    if message is None:
        return None
    recent = message.updated_at >= timezone.now() - timedelta(seconds=settings.STREAM_REPLAY_KEEP_S)
    return message, recent
