"""A reply's requests, planned: pinned system prompt, fitted history, tools, thinking, limits."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from django.conf import settings

from chat.claude import catalogue, client, context, request_body
from chat.conversations.preferences import current_system_prompt
from chat.errors import UserFacingError
from chat.ledger.entries import last_measured
from chat.models import ApiCall, Conversation, Message, UserSettings
from chat.text import storable

log = logging.getLogger(__name__)

# Room for the request's other fields (model, max_tokens, thinking, metadata…) in its size.
REQUEST_OTHER_FIELDS_BYTES = 4096


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
    web_search_max_uses: int = 0  # the searches the request allows (0: no web search tool)


def _resolve_attachment(block: dict) -> dict | None:
    """A stored image or document reference as the API block (a fresh URL, base64, or a
    document's text), None if it is gone."""
    from chat.models import Attachment
    from chat.uploads import blocks, errors

    kind = Attachment.Kind.DOCUMENT if block.get("type") == "document" else Attachment.Kind.IMAGE
    attachment = Attachment.objects.filter(
        pk=block.get("attachment_id"), state=Attachment.State.VERIFIED, kind=kind
    ).first()
    if attachment is None:
        return None
    try:
        return blocks.attachment_block(attachment)
    except errors.AttachmentError:
        log.warning("%s %s could not be read for a request", kind, attachment.pk)
        return None


def _check_pages(turns: list[context.StoredTurn], info: catalogue.ModelInfo) -> None:
    """Refuse a request whose PDFs have more pages together than the model takes in one
    request (the API counts every document of the request, earlier turns' too)."""
    from chat.uploads import documents

    limit = documents.page_limit(context_window=info.context_window)
    pages = sum(
        block.get("page_count") or 0
        for turn in turns
        for block in turn.content
        if block.get("type") == "document" and isinstance(block.get("page_count"), int)
    )
    if pages > limit:
        raise TooManyPages(
            f"The PDFs of this conversation have {pages:,} pages together; {info.label} reads "
            f"at most {limit:,} pages in one request. Start a new conversation for more PDFs."
        )


def plan_turn(
    *,
    conversation_id: int,
    reply_message_id: int,
    purpose: str = ApiCall.Purpose.REPLY,
    conversation: Conversation | None = None,
    reply: Message | None = None,
    effort: str | None = None,
    counted: int | None = None,
    web_search: bool = False,
) -> TurnPlan:
    """Build the request for a reply: pinned system prompt, fitted history, tools, limits.

    `effort` asks for adaptive thinking at that effort where the model supports it (see
    request_body.thinking_params); None asks for nothing. A Continue sends the cut reply back as a
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
    if conversation is None:
        conversation = Conversation.objects.select_related("system_prompt").get(pk=conversation_id)
    if reply is None:
        reply = Message.objects.get(pk=reply_message_id)
    info = catalogue.get_model(conversation.model)
    continuation = purpose == ApiCall.Purpose.CONTINUATION
    max_tokens = _max_tokens(info, continuation=continuation)
    prompt = conversation.system_prompt or current_system_prompt()
    ids, summary, turns = _branch_turns(conversation, reply, info)
    known = None
    if counted is None:
        known = _known_size(conversation_id, ids, turns, reply, continuation=continuation)
    searches = settings.CLAUDE_WEB_SEARCH_MAX_USES if web_search else 0
    offered = _offered_tools(web_search=bool(searches))
    fitted = context.fit(
        turns=turns,
        summary=summary,
        # Before any call is measured, the request's fixed part: the system prompt and the
        # tools' definitions (they count as input too).
        system_tokens=len(prompt.text) // 4 + 1 + context.estimate_tokens(offered),
        window=info.context_window,
        max_tokens=max_tokens,
        resolve_attachment=_resolve_attachment,
        known=known,
        counted=counted,
    )
    if not fitted.fold and not fitted.messages:
        raise ContextTooLong
    _check_pages(turns[len(fitted.fold) :], info)
    system = client.system_blocks(prompt.text)
    _check_request_bytes(fitted.messages, system=system, tools=offered)
    base_blocks = [*reply.content, request_body.continuation_block()] if continuation else []
    replies_before = sum(1 for t in turns if t.role == "assistant")
    return TurnPlan(
        conversation_id=conversation_id,
        message_id=reply.pk,
        user_id=conversation.owner_id,
        model=conversation.model,
        system=system,
        history=fitted.messages,
        max_tokens=max_tokens,
        estimate=fitted.estimate,
        tools=offered,
        time_zone=_time_zone(conversation.owner_id),
        purpose=purpose,
        base_blocks=base_blocks,
        thinking=request_body.thinking_params(support=info.thinking, effort=effort),
        compaction=request_body.compaction_params(
            supported=info.compaction, trigger_tokens=settings.CLAUDE_COMPACTION_TRIGGER_TOKENS
        ),
        seq_base=reply.stream_seq if continuation else 0,
        fold=fitted.fold,
        summary=summary,
        make_title=not conversation.title and replies_before == 0 and not continuation,
        near_limit=fitted.near,
        whole_history=fitted.whole,
        web_search_max_uses=searches,
    )


def _branch_turns(
    conversation: Conversation, reply: Message, info: catalogue.ModelInfo
) -> tuple[list[int], str, list[context.StoredTurn]]:
    """The ids and turns of the reply's branch up to it, after the conversation's summary if
    it covers this branch (and the summary then, else ""). For a model without compaction, a
    compaction block saved earlier stands in as the summary."""
    from chat.conversations.tree import messages_in_order, path_to, tree

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
    return ids, summary, turns


def _known_size(
    conversation_id: int,
    ids: list[int],
    turns: list[context.StoredTurn],
    reply: Message,
    *,
    continuation: bool,
) -> int | None:
    """The request's size from the branch's last call's real figures plus an estimate of what
    came since; None when no call of the branch is known."""
    own = [context.StoredTurn(id=reply.pk, role=reply.role, content=reply.content)]
    measured = last_measured(conversation_id=conversation_id, message_ids=[*ids, reply.pk])
    # A Continue's request also holds the reply so far, then the request to go on.
    known = context.known_total(
        context.since_compaction(turns + (own if continuation else [])), measured
    )
    if known is not None and continuation:
        known += context.estimate_tokens([request_body.continuation_block()])
    return known


def _max_tokens(info: catalogue.ModelInfo, *, continuation: bool) -> int:
    if continuation:  # a Continue may write more than the first try
        return min(settings.CLAUDE_MAX_OUTPUT_TOKENS * 2, info.max_output)
    return catalogue.max_tokens_for(info)


def _offered_tools(*, web_search: bool) -> list[dict]:
    """The app's tools, and Anthropic's web search server tool when the reply may search."""
    from chat.replies import tools

    return tools.REGISTRY.definitions() + ([_web_search_tool()] if web_search else [])


def _web_search_tool() -> dict:
    return request_body.web_search_tool(
        version=settings.CLAUDE_WEB_SEARCH_TOOL,
        max_uses=settings.CLAUDE_WEB_SEARCH_MAX_USES,
        allowed=settings.CLAUDE_WEB_SEARCH_ALLOWED_DOMAINS,
        blocked=settings.CLAUDE_WEB_SEARCH_BLOCKED_DOMAINS,
    )


def _time_zone(user_id: int) -> str:
    zone = UserSettings.objects.filter(user_id=user_id).values_list("time_zone", flat=True).first()
    return zone or "UTC"


class ContextTooLong(UserFacingError):
    """Even the newest message alone does not fit the model's context window."""

    code = "context_too_long"
    message = "This message is too long for the model's context window. Shorten it."


def _check_request_bytes(messages: list[dict], *, system: list[dict], tools: list[dict]) -> None:
    """Refuse a request larger than the API takes (CLAUDE_REQUEST_MAX_BYTES): base64 PDFs and
    images grow by a third, and every turn's files go with every request."""
    body = {"messages": messages, "system": system, "tools": tools}
    size = len(json.dumps(body, separators=(",", ":")))  # ASCII: characters are bytes
    limit = settings.CLAUDE_REQUEST_MAX_BYTES - REQUEST_OTHER_FIELDS_BYTES
    if size > limit:
        raise RequestTooLarge(
            f"The files of this conversation make a request of {size / 1e6:.1f} MB; one request "
            f"to the API may carry at most {limit / 1e6:.1f} MB. Start a new conversation for "
            "more files."
        )


class RequestTooLarge(UserFacingError):
    """The request's files pass the API's request size."""

    code = "attachment_invalid"


class TooManyPages(UserFacingError):
    """The request's PDFs pass the model's page limit."""

    code = "attachment_invalid"


def store_summary(*, conversation_id: int, summary: str, upto_id: int) -> None:
    """Save the model's summary of the older turns (made storable: it is model output)."""
    Conversation.objects.filter(pk=conversation_id).update(
        summary=storable(summary), summary_upto_id=upto_id
    )
