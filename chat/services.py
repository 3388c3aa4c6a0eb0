"""Writes that touch several rows: keyword-only functions, each one transaction.

Sync functions; async callers wrap them with database_sync_to_async.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from chat import catalogue, claude, context
from chat.claude import CallRecord, Usage
from chat.models import ApiCall, Conversation, Message, SystemPrompt
from chat.text import storable, storable_json

log = logging.getLogger(__name__)


class Busy(Exception):
    """A reply is already running in this conversation."""


@dataclass
class TurnStart:
    user_message: Message
    assistant_message: Message | None  # None: the client_id was seen before, nothing started
    duplicate: bool = False


def current_system_prompt(*, name: str = "default") -> SystemPrompt:
    """The newest version of a prompt; a changed setting text makes a new version.

    Conversations pin the version they started with, so their prefix stays byte-identical.
    """
    text = settings.CLAUDE_SYSTEM_PROMPT
    latest = SystemPrompt.objects.filter(name=name).order_by("-version").first()
    if latest is not None and latest.text == text:
        return latest
    with transaction.atomic():
        version = (latest.version if latest else 0) + 1
        try:
            with transaction.atomic():
                return SystemPrompt.objects.create(name=name, version=version, text=text)
        except IntegrityError:  # another process made it first
            return SystemPrompt.objects.get(name=name, version=version)


def default_model(prefs) -> str:
    """The user's own default model while the catalogue lists it, else CLAUDE_DEFAULT_MODEL."""
    chosen = prefs.default_model if prefs is not None else ""
    if chosen and catalogue.find_model(chosen) is not None:
        return chosen
    return settings.CLAUDE_DEFAULT_MODEL


def conversation_create(*, owner: AbstractBaseUser, model: str | None = None) -> Conversation:
    """A new conversation: the owner's default model and own system prompt when they set them."""
    from chat.models import UserSettings

    prefs = UserSettings.objects.select_related("system_prompt").filter(user=owner).first()
    model_id = model or default_model(prefs)
    catalogue.get_model(model_id)  # raises UnknownModel
    prompt = (prefs and prefs.system_prompt) or current_system_prompt()
    return Conversation.objects.create(owner=owner, model=model_id, system_prompt=prompt)


def replace_retired_model(*, conversation: Conversation) -> str:
    """Move a conversation whose model the catalogue no longer lists (a retired id) to its
    owner's default model, before its next reply; returns the old id, or "" when the model is
    still listed. The ledger rows of earlier calls keep the old id.
    """
    from chat.models import UserSettings

    if catalogue.find_model(conversation.model) is not None:
        return ""
    old = conversation.model
    prefs = UserSettings.objects.filter(user_id=conversation.owner_id).first()
    conversation.model = default_model(prefs)
    conversation.save(update_fields=["model"])
    _keep_effort_for_model(conversation)
    log.info(
        "conversation %s: model %s is not in the catalogue; now %s",
        conversation.pk,
        old,
        conversation.model,
    )
    return old


# --- thinking --------------------------------------------------------------------------------


class EffortNotTaken(Exception):
    """An effort level the model does not take (or a model that takes none)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    *, conversation: Conversation, effort: str, model: str | None = None
) -> Conversation:
    """Save the conversation's thinking effort ("" for none asked). It is checked against
    `model` — the model the next message goes to, which the page's picker may have changed —
    or the conversation's. Raises EffortNotTaken or catalogue.UnknownModel."""
    if effort:
        check_effort(model=catalogue.get_model(model or conversation.model), effort=effort)
    conversation.thinking_effort = effort
    conversation.save(update_fields=["thinking_effort"])
    return conversation


def _keep_effort_for_model(conversation: Conversation) -> None:
    """After a model change: the saved effort becomes the nearest the new model takes."""
    info = catalogue.find_model(conversation.model)
    effort = catalogue.nearest_effort(info, conversation.thinking_effort) if info else ""
    if effort != conversation.thinking_effort:
        conversation.thinking_effort = effort
        conversation.save(update_fields=["thinking_effort"])


def turn_effort(*, conversation: Conversation, requested: str | None = None) -> str | None:
    """The effort a reply asks for: the send frame's (already checked), else the
    conversation's setting as the model takes it; None asks for nothing."""
    if requested:
        return requested
    info = catalogue.find_model(conversation.model)
    return (catalogue.nearest_effort(info, conversation.thinking_effort) if info else "") or None


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation and its messages; its ledger rows stay (conversation set null)."""
    conversation.delete()


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
    image_blocks: list[dict] | None = None,
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
                _keep_effort_for_model(conversation)
            content = [{"type": "text", "text": text}, *(image_blocks or [])]
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


class NotEditable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def regenerate_start(*, conversation: Conversation) -> Message:
    """A new version of the last reply on the active branch; the old one is kept."""
    leaf = Message.objects.filter(pk=_leaf_id(conversation)).first()
    if leaf is None or leaf.role != Message.Role.ASSISTANT:
        raise NotEditable("There is no reply to regenerate.")
    if leaf.status == Message.Status.STREAMING:
        raise Busy
    with transaction.atomic():
        return _open_reply(conversation, parent=leaf.parent)


def edit_start(
    *, conversation: Conversation, message_id: int, text: str, client_id: uuid.UUID
) -> TurnStart:
    """A new version of a user message on the active branch, and a reply to it.

    The conversation continues from the edited message; the old branch is kept as a version.
    The images of the edited message go with the new version.
    """
    from chat.selectors import active_path

    path = active_path(conversation)
    original = next((m for m in path.messages if m.pk == message_id), None)
    if original is None or original.role != Message.Role.USER:
        raise NotEditable("Only your own messages in this conversation can be edited.")
    images = [b for b in original.content if b.get("type") == "image"]
    with transaction.atomic():
        return turn_start(
            conversation=conversation,
            text=text,
            client_id=client_id,
            image_blocks=images,
            parent_id=original.parent_id,
        )


def switch_version(*, conversation: Conversation, message_id: int) -> Message:
    """Show another version: the active branch becomes the newest one through `message_id`."""
    from chat.selectors import latest_leaf_under

    target = Message.objects.filter(conversation=conversation, pk=message_id).first()
    if target is None:
        raise NotEditable("That version does not exist.")
    if Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING).exists():
        raise Busy
    conversation.leaf_id = latest_leaf_under(conversation, target.pk)
    conversation.save(update_fields=["leaf"])
    return target


@dataclass
class TurnPlan:
    """Everything the runner needs to make a reply's requests."""

    conversation_id: int
    message_id: int
    user_id: int
    model: str
    system: list[dict]
    history: list[dict]  # API messages up to the user's turn (not the reply itself)
    max_tokens: int
    estimate: int  # input tokens of the request, estimated
    tools: list[dict]
    time_zone: str = "UTC"
    purpose: str = ApiCall.Purpose.REPLY
    base_blocks: list[dict] = field(default_factory=list)  # a continuation's saved blocks
    thinking: dict = field(default_factory=dict)  # request fields asking for thinking, if any
    seq_base: int = 0
    fold: list[context.StoredTurn] = field(default_factory=list)  # to summarise first
    summary: str = ""
    make_title: bool = False
    reservation_id: int | None = None
    replaced_model: str = ""  # the retired id this reply's conversation moved away from
    compaction: dict = field(default_factory=dict)  # request fields asking for compaction
    near_limit: bool = False  # the estimate is close to the limit: count it exactly first
    whole_history: list[dict] = field(default_factory=list)  # near_limit: nothing dropped


def _resolve_image(block: dict) -> dict | None:
    """A stored image reference as the API block (fresh URL or base64), None if it is gone."""
    from chat import attachments
    from chat.models import Attachment

    attachment = Attachment.objects.filter(
        pk=block.get("attachment_id"), state=Attachment.State.VERIFIED
    ).first()
    if attachment is None:
        return None
    try:
        return attachments.image_block(attachment)
    except attachments.AttachmentError:
        log.warning("image %s could not be read for a request", attachment.pk)
        return None


REPLY_PURPOSES = (
    ApiCall.Purpose.REPLY,
    ApiCall.Purpose.TOOL_ROUND,
    ApiCall.Purpose.CONTINUATION,
)


def reply_usage(call: ApiCall) -> tuple[int, int]:
    """(whole input, output) of the reply's own sampling in a ledger row: the row's figures
    less a compaction iteration's (kept in its price snapshot), i.e. the API's top-level
    usage, whose input is the context the reply read."""
    part = (call.prices or {}).get("compaction") or {}
    prompt = (
        call.input_tokens
        + call.cache_write_5m_tokens
        + call.cache_write_1h_tokens
        + call.cache_read_tokens
    )
    for key in COMPACTION_PROMPT_KEYS:
        prompt -= int(part.get(key, 0))
    return prompt, call.output_tokens - int(part.get("output_tokens", 0))


def last_measured(*, conversation_id: int, message_ids: list[int]) -> context.Measured | None:
    """The API's figures for the newest call made for one of `message_ids` (a branch): a
    reply, tool round or continuation that ended without error, after the conversation's
    latest summary (an older call's input held turns since folded away)."""
    calls = ApiCall.objects.filter(
        conversation_id=conversation_id,
        purpose__in=REPLY_PURPOSES,
        error_code="",
        message_id__in=message_ids,
    )
    folded = (
        ApiCall.objects.filter(conversation_id=conversation_id, purpose=ApiCall.Purpose.SUMMARY)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    if folded is not None:
        calls = calls.filter(id__gt=folded)
    call = calls.order_by("-id").first()
    if call is None:
        return None
    prompt, output = reply_usage(call)
    return context.Measured(input_tokens=prompt, output_tokens=output, message_id=call.message_id)


def plan_turn(
    *,
    conversation_id: int,
    reply_message_id: int,
    purpose: str = ApiCall.Purpose.REPLY,
    conversation: Conversation | None = None,
    reply: Message | None = None,
    effort: str | None = None,
    counted: int | None = None,
) -> TurnPlan:
    """Build the request for a reply: pinned system prompt, fitted history, tools, limits.

    `effort` asks for adaptive thinking at that effort where the model supports it (see
    context.thinking_params); None asks for nothing. A Continue sends the cut reply back as a
    complete assistant turn followed by a short user turn asking to go on (a `continuation`
    block, saved in the reply so later requests repeat it exactly).

    The request's size is the branch's last call's real figures plus an estimate of what came
    since (last_measured), or `counted`, the exact figure count_tokens gave for it.
    `near_limit` tells the runner to ask count_tokens first (`whole_history` is then the
    request with nothing dropped).
    Models with server-side compaction get the `compact_20260112` edit (its trigger is
    CLAUDE_COMPACTION_TRIGGER_TOKENS); for the others a compaction block saved earlier (from
    another model) is sent as a summary.

    A caller that has just read the conversation (with its system prompt) and created the reply,
    in the same transaction, passes them and saves two reads.
    """
    from chat import tools
    from chat.models import UserSettings

    if conversation is None:
        conversation = Conversation.objects.select_related("system_prompt").get(pk=conversation_id)
    if reply is None:
        reply = Message.objects.get(pk=reply_message_id)
    info = catalogue.get_model(conversation.model)
    max_tokens = catalogue.max_tokens_for(info)
    continuation = purpose == ApiCall.Purpose.CONTINUATION
    if continuation:  # a Continue may write more than the first try
        max_tokens = min(settings.CLAUDE_MAX_OUTPUT_TOKENS * 2, info.max_output)
    prompt = conversation.system_prompt or current_system_prompt()
    from chat.selectors import messages_in_order, path_to, tree

    nodes = tree(conversation)
    ids = path_to(nodes, reply.pk).ids[:-1]  # up to the reply
    summary = conversation.summary
    if conversation.summary_upto_id in ids:  # a summary of this branch's older turns
        ids = ids[ids.index(conversation.summary_upto_id) + 1 :]  # only the rest is read
    else:
        summary = ""
    path = messages_in_order(conversation, ids, nodes)
    turns = [
        context.StoredTurn(id=m.pk, role=m.role, content=m.content, token_count=m.token_count)
        for m in path
    ]
    if not info.compaction:
        compacted, turns = context.without_compaction(turns)
        summary = compacted or summary
    known = None
    if counted is None:
        own = [context.StoredTurn(id=reply.pk, role=reply.role, content=reply.content)]
        measured = last_measured(conversation_id=conversation_id, message_ids=[*ids, reply.pk])
        # A Continue's request also holds the reply so far, then the request to go on.
        known = context.known_total(
            context.since_compaction(turns + (own if continuation else [])), measured
        )
        if known is not None and continuation:
            known += context.estimate_tokens([context.continuation_block()])
    fitted = context.fit(
        turns=turns,
        summary=summary,
        system_tokens=len(prompt.text) // 4 + 1,
        window=info.context_window,
        max_tokens=max_tokens,
        resolve_image=_resolve_image,
        known=known,
        counted=counted,
    )
    if not fitted.fold and not fitted.messages:
        raise ContextTooLong
    zone = (
        UserSettings.objects.filter(user_id=conversation.owner_id)
        .values_list("time_zone", flat=True)
        .first()
    )
    base_blocks = [*reply.content, context.continuation_block()] if continuation else []
    replies_before = sum(1 for t in turns if t.role == "assistant")
    return TurnPlan(
        conversation_id=conversation_id,
        message_id=reply.pk,
        user_id=conversation.owner_id,
        model=conversation.model,
        system=claude.system_blocks(prompt.text),
        history=fitted.messages,
        max_tokens=max_tokens,
        estimate=fitted.estimate,
        tools=tools.REGISTRY.definitions(),
        time_zone=zone or "UTC",
        purpose=purpose,
        base_blocks=base_blocks,
        thinking=context.thinking_params(support=info.thinking, effort=effort),
        seq_base=reply.stream_seq if continuation else 0,
        fold=fitted.fold,
        summary=summary,
        make_title=not conversation.title and replies_before == 0 and not continuation,
        compaction=context.compaction_params(
            supported=info.compaction,
            trigger_tokens=settings.CLAUDE_COMPACTION_TRIGGER_TOKENS,
        ),
        near_limit=fitted.near,
        whole_history=fitted.whole,
    )


class ContextTooLong(Exception):
    """Even the newest message alone does not fit the model's context window."""


def store_summary(*, conversation_id: int, summary: str, upto_id: int) -> None:
    """Save the model's summary of the older turns (made storable: it is model output)."""
    Conversation.objects.filter(pk=conversation_id).update(
        summary=storable(summary), summary_upto_id=upto_id
    )


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


class NothingToContinue(Exception):
    pass


class Checkpoint(NamedTuple):
    """The partial turn of a streaming reply, as saved about once a second (its heartbeat too)."""

    message_id: int
    content: list[dict]
    seq: int


def checkpoint_many(items: list[Checkpoint]) -> int:
    """Save the partial turns of several streaming replies in one UPDATE. A reply no longer
    streaming (finished meanwhile) is left as it is. How many rows were written.

    Plain SQL (UPDATE … FROM a VALUES list) rather than `bulk_update`: this runs every second
    for all streaming replies of a process, and the ORM's CASE WHEN per row and field cost about
    20 times the CPU (17 against 0.9 ms for 50 replies, PostgreSQL). The partial text is model
    output: made storable (chat/text.py), as turn_finish will save it.
    """
    if not items:
        return 0
    table = connection.ops.quote_name(Message._meta.db_table)
    postgres = connection.vendor == "postgresql"
    row = "(%s, %s::jsonb, %s)" if postgres else "(%s, %s, %s)"
    params: list = [connection.ops.adapt_datetimefield_value(timezone.now())]
    for item in items:
        params += [item.message_id, json.dumps(storable_json(item.content)), item.seq]
    params.append(Message.Status.STREAMING.value)
    # PostgreSQL names the VALUES columns in the alias; SQLite calls them column1, column2…
    alias = "v(id, content, seq)" if postgres else "v"
    v_id, v_content, v_seq = (
        ("v.id", "v.content", "v.seq") if postgres else ("v.column1", "v.column2", "v.column3")
    )
    # Only quoted identifiers and placeholders are put into the text; values are parameters.
    sql = (
        f"UPDATE {table} SET content = {v_content}, stream_seq = {v_seq}, "  # noqa: S608
        "updated_at = %s "
        f"FROM (VALUES {', '.join([row] * len(items))}) AS {alias} "
        f"WHERE {table}.id = {v_id} AND {table}.status = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


# What record_calls fills in on a row open_call wrote.
COMPLETED_FIELDS = (
    "request_id",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "stop_reason",
    "ttft_ms",
    "duration_ms",
    "prices",
    "cost",
    "error_code",
)


# The token figures of a compaction iteration kept in a ledger row's price snapshot.
COMPACTION_PROMPT_KEYS = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
)


def _cost_at_tier(info: catalogue.ModelInfo, usage: Usage) -> tuple[dict, Decimal]:
    # The prompt chooses a prompt-size tier (Haiku 5.5 above 100K tokens).
    prices = info.prices(total_input=usage.prompt_tokens)
    cost = catalogue.cost_of(
        prices,
        input_tokens=usage.input_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        output_tokens=usage.output_tokens,
    )
    return prices, cost


def _priced(call: CallRecord) -> tuple[dict, Decimal]:
    """The price snapshot in force now for the call's model, and the call's cost at it.

    A call with server-side compaction is billed for its compaction iteration too, which the
    API keeps out of its top-level usage. Each iteration is a sampling of its own prompt, so
    each is priced at the tier its own prompt falls in; the snapshot then holds, under
    `compaction`, that iteration's tokens and prices, and the cost is the sum.
    """
    info = catalogue.find_model(call.model)
    if info is None:
        return {}, Decimal(0)
    prices, cost = _cost_at_tier(info, call.usage)
    if call.compaction is not None:
        part = call.compaction
        part_prices, part_cost = _cost_at_tier(info, part)
        prices = {
            **prices,
            "compaction": {
                "input_tokens": part.input_tokens,
                "cache_write_5m_tokens": part.cache_write_5m_tokens,
                "cache_write_1h_tokens": part.cache_write_1h_tokens,
                "cache_read_tokens": part.cache_read_tokens,
                "output_tokens": part.output_tokens,
                "prices": part_prices,
                "cost": str(part_cost),
            },
        }
        cost += part_cost
    return prices, cost


def billed_usage(call: CallRecord) -> Usage:
    """Every token the call is billed for: its top-level usage and its compaction's."""
    total = Usage()
    total.add(call.usage)
    if call.compaction is not None:
        total.add(call.compaction)
    return total


def _ledger_row(
    call: CallRecord, *, user_id: int, conversation_id: int | None, message_id: int | None
) -> ApiCall:
    prices, cost = _priced(call)
    usage = billed_usage(call)
    return ApiCall(
        user_id=user_id,
        conversation_id=conversation_id,
        message_id=message_id,
        purpose=call.purpose,
        model=call.model,
        request_id=storable(call.request_id),
        round=call.round,
        input_tokens=usage.input_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        output_tokens=usage.output_tokens,
        stop_reason=storable(call.stop_reason),
        ttft_ms=call.ttft_ms,
        duration_ms=call.duration_ms,
        prices=prices,
        cost=cost,
        error_code=call.error_code,
    )


def open_call(
    *, record: CallRecord, user_id: int, conversation_id: int | None, message_id: int | None
) -> int:
    """Write a call's ledger row as soon as the API reports its input (message_start).

    Its error_code says `interrupted` until record_calls completes it, so a process killed
    mid-reply still leaves the usage the API had reported. Returns the row's id.
    """
    row = _ledger_row(
        record, user_id=user_id, conversation_id=conversation_id, message_id=message_id
    )
    row.error_code = "interrupted"
    row.save()
    return row.pk


@dataclass
class TurnResult:
    usage: Usage
    cost: Decimal


def record_calls(
    *,
    calls: list[CallRecord],
    user_id: int,
    conversation_id: int | None,
    message_id: int | None,
) -> TurnResult:
    """One ApiCall row per upstream request, priced from the catalogue now; totals returned.

    Also one structured log line per call.
    """
    total = Usage()
    rows = []
    for call in calls:
        row = _ledger_row(
            call, user_id=user_id, conversation_id=conversation_id, message_id=message_id
        )
        if call.ledger_id:  # written when the call began: complete it
            row.pk = call.ledger_id
            ApiCall.objects.filter(pk=row.pk).update(
                **{name: getattr(row, name) for name in COMPLETED_FIELDS}
            )
        rows.append(row)
        total.add(billed_usage(call))
    ApiCall.objects.bulk_create([row for row in rows if row.pk is None])
    total_cost = sum((row.cost for row in rows), Decimal(0))
    for row in rows:
        log.info(
            "api_call model=%s purpose=%s round=%d input=%d cache_write=%d cache_read=%d "
            "output=%d stop_reason=%s ttft_ms=%s duration_ms=%d request_id=%s error=%s "
            "cost=%s user=%s conversation=%s",
            row.model,
            row.purpose,
            row.round,
            row.input_tokens,
            row.cache_write_5m_tokens + row.cache_write_1h_tokens,
            row.cache_read_tokens,
            row.output_tokens,
            row.stop_reason or "-",
            row.ttft_ms,
            row.duration_ms,
            row.request_id or "-",
            row.error_code or "-",
            row.cost,
            user_id,
            conversation_id,
        )
    if conversation_id is not None:
        replies = [
            c for c in calls if c.purpose not in (ApiCall.Purpose.TITLE, ApiCall.Purpose.SUMMARY)
        ]
        totals = {
            "input_tokens": F("input_tokens") + total.input_tokens,
            "output_tokens": F("output_tokens") + total.output_tokens,
            "cache_creation_tokens": F("cache_creation_tokens") + total.cache_creation_tokens,
            "cache_read_tokens": F("cache_read_tokens") + total.cache_read_tokens,
            "cost": F("cost") + total_cost,
        }
        if replies and not replies[-1].error_code:
            # The context the latest reply read (its top-level usage: after any compaction)
            # and what it wrote.
            last = replies[-1].usage
            totals["context_tokens"] = last.prompt_tokens + last.output_tokens
        Conversation.objects.filter(pk=conversation_id).update(**totals)
    return TurnResult(usage=total, cost=total_cost)


def cost_of_calls(calls: list[CallRecord]) -> Decimal:
    """The calls' cost as recorded in the ledger (prices in force when each was recorded)."""
    return sum((_priced(call)[1] for call in calls), Decimal(0))


def turn_finish(
    *,
    message_id: int,
    conversation_id: int,
    content: list[dict],
    status: str,
    stop_reason: str = "",
    error_code: str = "",
    error_message: str = "",
    output_tokens: int = 0,
    seq: int = 0,
) -> None:
    """Save the reply's final blocks and outcome, in one transaction.

    The blocks and texts are model or upstream output: made storable (chat/text.py), so no
    character of theirs can keep the reply from being saved. Usage is already in the ledger:
    each call settled when it ended (chat/budgets.py).
    """
    with transaction.atomic():
        Message.objects.filter(pk=message_id).update(
            content=storable_json(content),
            status=status,
            stop_reason=storable(stop_reason),
            error_code=error_code,
            error_message=storable(error_message[:500]),
            token_count=output_tokens or None,
            stream_seq=seq,
            updated_at=timezone.now(),
        )
        Conversation.objects.filter(pk=conversation_id).update(updated_at=timezone.now())


def reap_stale_replies(*, stale_seconds: float, conversation_id: int | None = None) -> int:
    """Mark replies whose process stopped checkpointing as interrupted; their text is kept."""
    cutoff = timezone.now() - timedelta(seconds=stale_seconds)
    rows = Message.objects.filter(status=Message.Status.STREAMING, updated_at__lte=cutoff)
    if conversation_id is not None:
        rows = rows.filter(conversation_id=conversation_id)
    return rows.update(
        status=Message.Status.INTERRUPTED,
        error_code="interrupted",
        error_message="The server stopped while writing this reply; the text so far is kept.",
    )


def context_in_use(conversation: Conversation) -> int:
    """The context the conversation fills, as its gauge shows it: on the active branch, the
    last call's real input and output plus an estimate of only the messages after it (what
    plan_turn counts too); the conversation's stored figure when no call of the branch is
    known."""
    from chat.selectors import path_to, tree

    ids = path_to(tree(conversation), conversation.leaf_id).ids
    measured = last_measured(conversation_id=conversation.pk, message_ids=ids) if ids else None
    if measured is None:
        return conversation.context_tokens
    after = ids[ids.index(measured.message_id) + 1 :]
    rows = Message.objects.filter(pk__in=after).values_list("pk", "role", "content", "token_count")
    return context.known_total(
        [
            context.StoredTurn(id=measured.message_id, role="assistant", content=[]),
            *(context.StoredTurn(*row) for row in rows),
        ],
        measured,
    )


def conversation_meters(conversation: Conversation) -> dict:
    """What the composer shows: the context window in use and the token budget left."""
    # A retired id: the window of the model its next message will run on.
    info = catalogue.find_model(conversation.model) or catalogue.get_model(
        settings.CLAUDE_DEFAULT_MODEL
    )
    spent = (
        conversation.input_tokens
        + conversation.output_tokens
        + conversation.cache_creation_tokens
        + conversation.cache_read_tokens
    )
    cached = conversation.cache_read_tokens
    prompt = conversation.input_tokens + conversation.cache_creation_tokens + cached
    return {
        "context_tokens": context_in_use(conversation),
        "context_window": info.context_window,
        "budget_used": spent,
        "budget_limit": conversation.token_budget or settings.CONVERSATION_TOKEN_BUDGET,
        "cache_hit_ratio": round(cached / prompt, 3) if prompt else None,
        "cost": str(conversation.cost),
    }


# --- the conversation list: soft delete with undo, pin, archive ------------------------------

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


# --- user settings -----------------------------------------------------------------------------


def user_prompt_name(user: AbstractBaseUser) -> str:
    return f"user:{user.pk}"


def settings_save(
    *,
    user: AbstractBaseUser,
    default_model: str,
    system_prompt: str,
    time_zone: str,
    theme: str,
):
    """Save a user's preferences. A changed system prompt becomes a new version of the user's
    prompt (`user:<id>`); an empty one goes back to the site's prompt. Callers validate."""
    from chat.models import UserSettings

    with transaction.atomic():
        prefs, _ = UserSettings.objects.select_for_update().get_or_create(user=user)
        text = system_prompt.strip()
        if not text:
            prefs.system_prompt = None
        elif prefs.system_prompt is None or prefs.system_prompt.text != text:
            name = user_prompt_name(user)
            latest = SystemPrompt.objects.filter(name=name).order_by("-version").first()
            prefs.system_prompt = SystemPrompt.objects.create(
                name=name, version=(latest.version if latest else 0) + 1, text=text
            )
        prefs.default_model = default_model
        prefs.time_zone = time_zone
        prefs.theme = theme
        prefs.save()
    return prefs


# --- import of a conversation exported as Messages API JSON -----------------------------------


def conversation_import(
    *, owner: AbstractBaseUser, model: str, system: str, messages: list[dict], title: str = ""
) -> Conversation:
    """A new conversation from validated API-shaped messages (chat/export.py validates them).

    A user message holding only tool results belongs to the assistant turn around it, as the
    app stores a whole turn in one message. Parents are chained and the leaf is set. Every text
    is made storable (chat/text.py): an export may hold model output with NUL or a lone
    surrogate, and the conversation is imported with U+FFFD in their place.
    """
    system, title = storable(system), storable(title)
    stored: list[tuple[str, list[dict]]] = []
    for message in messages:
        blocks = storable_json(message["content"])
        results_only = all(b.get("type") == "tool_result" for b in blocks)
        continues_turn = message["role"] == "assistant" or results_only
        if continues_turn and stored and stored[-1][0] == "assistant":
            stored[-1][1].extend(blocks)
        else:
            stored.append((message["role"], list(blocks)))
    with transaction.atomic():
        prompt = None
        if system:
            name = f"import:{owner.pk}"
            prompt = SystemPrompt.objects.filter(name=name, text=system).first()
            if prompt is None:
                latest = SystemPrompt.objects.filter(name=name).order_by("-version").first()
                prompt = SystemPrompt.objects.create(
                    name=name, version=(latest.version if latest else 0) + 1, text=system
                )
        conversation = conversation_create(owner=owner, model=model)
        if prompt is not None:
            conversation.system_prompt = prompt
        conversation.title = title
        parent = None
        for role, blocks in stored:
            parent = Message.objects.create(
                conversation=conversation,
                parent=parent,
                role=role,
                content=blocks,
                token_count=context.estimate_tokens(blocks),
            )
        conversation.leaf = parent
        conversation.save(update_fields=["system_prompt", "title", "leaf"])
    return conversation
