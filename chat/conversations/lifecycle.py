"""A conversation's own state: creating it, its model and thinking effort, soft delete with undo,
pin and archive. Keyword-only functions, each one transaction; sync (async callers wrap them
with database_sync_to_async)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from chat.claude import catalogue
from chat.conversations.preferences import current_system_prompt, default_model
from chat.errors import UserFacingError
from chat.models import Conversation
from chat.policies import UNRESTRICTED, Forbidden, Policy, policy_for

log = logging.getLogger(__name__)


def conversation_create(
    *,
    owner: AbstractBaseUser,
    model: str | None = None,
    thinking_effort: str = "",
    web_search: bool = False,
) -> Conversation:
    """A new conversation: the owner's default model and own system prompt when they set them,
    and the thinking effort and web search chosen before the first message, as the owner's
    policy allows (chat/policies.py).

    Raises catalogue.UnknownModel, EffortNotTaken (an effort the model does not take),
    WebSearchOff (web search where the server allows none) or Forbidden (what the policy does
    not allow).
    """
    from chat.models import UserSettings

    policy = policy_for(owner)
    prefs = UserSettings.objects.select_related("system_prompt").filter(user=owner).first()
    model_id = model or allowed_default_model(prefs, policy)
    info = catalogue.get_model(model_id)  # raises UnknownModel
    policy.check_model(model_id, info.label)
    if thinking_effort:
        policy.check_effort(thinking_effort)
        check_effort(model=info, effort=thinking_effort)
    if web_search:
        if not settings.CLAUDE_WEB_SEARCH:
            raise WebSearchOff
        policy.check_web_search()
    prompt = (prefs and prefs.system_prompt) or current_system_prompt()
    return Conversation.objects.create(
        owner=owner,
        model=model_id,
        system_prompt=prompt,
        thinking_effort=thinking_effort,
        web_search=web_search,
    )


def allowed_default_model(prefs, policy: Policy) -> str:
    """The model a conversation starts with: the user's default (or the server's) when the
    policy allows it, else the server's default, else the first allowed model of the catalogue.
    Raises Forbidden when the policy allows no model of the catalogue."""
    chosen = default_model(prefs)
    if policy.allows_model(chosen):
        return chosen
    for candidate in (settings.CLAUDE_DEFAULT_MODEL, *(m.id for m in catalogue.all_models())):
        if policy.allows_model(candidate) and catalogue.find_model(candidate) is not None:
            return candidate
    raise Forbidden("No model of this server is allowed for you; ask an admin.")


def replace_retired_model(*, conversation: Conversation, policy: Policy = UNRESTRICTED) -> str:
    """Move a conversation whose model the catalogue no longer lists (a retired id), or whose
    model the owner's policy no longer allows, to the owner's allowed default model
    (allowed_default_model), before its next reply; returns the old id, or "" when the model is
    still listed and allowed. The ledger rows of earlier calls keep the old id.
    """
    from chat.models import UserSettings

    listed = catalogue.find_model(conversation.model) is not None
    if listed and policy.allows_model(conversation.model):
        return ""
    old = conversation.model
    prefs = UserSettings.objects.filter(user_id=conversation.owner_id).first()
    conversation.model = allowed_default_model(prefs, policy)
    conversation.save(update_fields=["model"])
    keep_effort_for_model(conversation)
    log.info(
        "conversation %s: model %s is not in the catalogue; now %s",
        conversation.pk,
        old,
        conversation.model,
    )
    return old


class EffortNotTaken(UserFacingError):
    """An effort level the model does not take (or a model that takes none)."""


def check_effort(*, model: catalogue.ModelInfo, effort: str) -> None:
    """Raises EffortNotTaken, with a message for the user, unless the model takes `effort`."""
    levels = catalogue.efforts_of(model)
    if not levels:
        raise EffortNotTaken(f"{model.label} does not take a thinking effort.")
    if effort not in levels:
        raise EffortNotTaken(
            f"{model.label} takes the thinking efforts {', '.join(levels)}, not {effort}."
        )


def conversation_set_thinking(
    *,
    conversation: Conversation,
    effort: str,
    model: str | None = None,
    policy: Policy = UNRESTRICTED,
) -> Conversation:
    """Save the conversation's thinking effort ("" for none asked). It is checked against the
    owner's policy and `model` — the model the next message goes to, which the page's picker
    may have changed — or the conversation's. Raises Forbidden, EffortNotTaken or
    catalogue.UnknownModel."""
    if effort:
        policy.check_effort(effort)
        check_effort(model=catalogue.get_model(model or conversation.model), effort=effort)
    conversation.thinking_effort = effort
    conversation.save(update_fields=["thinking_effort"])
    return conversation


def keep_effort_for_model(conversation: Conversation) -> None:
    """After a model change: the saved effort becomes the nearest the new model takes."""
    info = catalogue.find_model(conversation.model)
    effort = catalogue.nearest_effort(info, conversation.thinking_effort) if info else ""
    if effort != conversation.thinking_effort:
        conversation.thinking_effort = effort
        conversation.save(update_fields=["thinking_effort"])


def turn_effort(
    *, conversation: Conversation, requested: str | None = None, policy: Policy = UNRESTRICTED
) -> str | None:
    """The effort a reply asks for: the send frame's (already checked), else the
    conversation's setting as the model takes it, lowered to the highest the policy allows
    (a setting saved before the policy changed); None asks for nothing."""
    if requested:
        return requested
    info = catalogue.find_model(conversation.model)
    effort = catalogue.nearest_effort(info, conversation.thinking_effort) if info else ""
    if not effort and info and info.thinking == "always":
        # Asking nothing of a model that always thinks means its default effort: the policy
        # bounds that one too.
        effort = "" if policy.allows_effort(info.default_effort) else info.default_effort
    if effort and not policy.allows_effort(effort):
        allowed = policy.allowed_efforts(catalogue.efforts_of(info))
        effort = allowed[-1] if allowed else ""
    return effort or None


# --- web search ------------------------------------------------------------------------------


class WebSearchOff(UserFacingError):
    code = "forbidden"
    message = "Web search is turned off on this server."


def conversation_set_web_search(
    *, conversation: Conversation, enabled: bool, policy: Policy = UNRESTRICTED
) -> Conversation:
    """The owner's toggle. Turning it on where the server does not allow searches raises
    WebSearchOff; where the owner's policy does not, Forbidden."""
    if enabled and not settings.CLAUDE_WEB_SEARCH:
        raise WebSearchOff
    if enabled:
        policy.check_web_search()
    conversation.web_search = enabled
    conversation.save(update_fields=["web_search"])
    return conversation


def turn_web_search(
    *, conversation: Conversation, requested: bool | None = None, policy: Policy = UNRESTRICTED
) -> bool:
    """Whether a reply may search the web: the send frame's choice, else the conversation's
    toggle, only where the server and the owner's policy allow searches. A send that asks for
    it where the server does not raises WebSearchOff, where the policy does not Forbidden; a
    toggle left on from before is ignored."""
    if requested is None:
        return conversation.web_search and policy.allows_web_search
    if requested and not settings.CLAUDE_WEB_SEARCH:
        raise WebSearchOff
    if requested:
        policy.check_web_search()
    return requested


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation and its messages; its ledger rows stay (conversation set null)."""
    conversation.delete()


# A deleted conversation can be restored this long; after it, the next purge removes it.
UNDO_DELETE_SECONDS = 10


PURGE_AFTER_SECONDS = 60


def conversation_trash(*, conversation: Conversation) -> None:
    """Soft-delete: hidden and unreachable at once, restorable for UNDO_DELETE_SECONDS.

    Also purges conversations deleted long enough ago, so soft-deleted rows do not pile up.
    """
    conversation.deleted_at = timezone.now()
    conversation.save(update_fields=["deleted_at"])
    purge_deleted_conversations()


def conversation_restore(*, conversation: Conversation) -> bool:
    """Undo a delete; False when the undo window has passed (the conversation stays deleted)."""
    if conversation.deleted_at is None:
        return True
    if timezone.now() - conversation.deleted_at > timedelta(seconds=UNDO_DELETE_SECONDS):
        return False
    conversation.deleted_at = None
    conversation.save(update_fields=["deleted_at"])
    return True


def purge_deleted_conversations(*, older_than_seconds: float = PURGE_AFTER_SECONDS) -> int:
    """Delete for good conversations soft-deleted more than `older_than_seconds` ago."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    count, _ = Conversation.objects.filter(deleted_at__lt=cutoff).delete()
    return count


def conversation_set_flags(
    *, conversation: Conversation, pinned: bool | None = None, archived: bool | None = None
) -> Conversation:
    """Pin / unpin, archive / unarchive. Archiving unpins (archived ones are listed apart)."""
    fields = []
    if archived is not None:
        conversation.archived = archived
        fields.append("archived")
        if archived:
            conversation.pinned = False
            fields.append("pinned")
    if pinned is not None and not conversation.archived:
        conversation.pinned = pinned
        fields.append("pinned")
    if fields:
        conversation.save(update_fields=sorted(set(fields)))
    return conversation
