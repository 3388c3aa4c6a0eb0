"""The ledger: one ApiCall row per upstream request, priced from the catalogue when recorded:
its tokens per million and its web searches per 1,000."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import F

from chat.claude import catalogue, context
from chat.claude.records import CallRecord, Usage
from chat.models import ApiCall, Conversation
from chat.telemetry import metrics
from chat.text import storable

log = logging.getLogger(__name__)


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


# What record_calls fills in on a row open_call wrote.
COMPLETED_FIELDS = (
    "request_id",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "web_search_requests",
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
    # The prompt chooses a prompt-size tier (Haiku 5.5 above 100K tokens); searches are
    # priced per 1,000 whatever the tier.
    prices = info.prices(total_input=usage.prompt_tokens)
    cost = catalogue.cost_of(
        prices,
        input_tokens=usage.input_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        output_tokens=usage.output_tokens,
        web_search_requests=usage.web_search_requests,
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
    """Every token and web search the call is billed for: its top-level usage and its
    compaction's (whose iteration reports no searches)."""
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
        web_search_requests=usage.web_search_requests,
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
        _log_call(row, user_id=user_id, conversation_id=conversation_id)
    # Counted once the rows are committed: a settlement retried after a failed transaction
    # must not count its call twice.
    transaction.on_commit(lambda: count_in_metrics(rows))
    if conversation_id is not None:
        _add_to_conversation(conversation_id, calls=calls, total=total, total_cost=total_cost)
    return TurnResult(usage=total, cost=total_cost)


# Each kind of token the metrics count, with the ledger fields it adds up, and each field's
# key in a price snapshot.
METRIC_KINDS = {
    "input": ("input_tokens",),
    "output": ("output_tokens",),
    "cache_read": ("cache_read_tokens",),
    "cache_write": ("cache_write_5m_tokens", "cache_write_1h_tokens"),
}
PRICE_KEYS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_tokens": "cache_read",
    "cache_write_5m_tokens": "cache_write_5m",
    "cache_write_1h_tokens": "cache_write_1h",
}


def count_in_metrics(rows: list[ApiCall]) -> None:
    """Add recorded rows to the ledger's counters: tokens and dollars by model and kind, each
    part at the prices of its snapshot (a compaction iteration at its own), web searches as
    kind `web_search`. Adds up to the rows' `cost`."""
    for row in rows:
        snapshot = row.prices or {}
        part = snapshot.get("compaction") or {}
        own = {field: getattr(row, field) - int(part.get(field, 0)) for field in PRICE_KEYS}
        _count(row.model, snapshot, own)
        if part:
            _count(row.model, part["prices"], {field: int(part[field]) for field in PRICE_KEYS})
        if row.web_search_requests and snapshot:
            dollars = row.web_search_requests * Decimal(snapshot["web_search_per_1k"])
            metrics.LEDGER_COST.labels(model=row.model, kind="web_search").inc(
                float(dollars / catalogue.SEARCHES_PER_PRICE)
            )


def _count(model: str, prices: dict, tokens: dict[str, int]) -> None:
    for kind, fields in METRIC_KINDS.items():
        count = sum(tokens[field] for field in fields)
        if not count:
            continue
        metrics.LEDGER_TOKENS.labels(model=model, kind=kind).inc(count)
        if prices:  # a model missing from the catalogue is recorded at no price
            dollars = sum(tokens[field] * Decimal(prices[PRICE_KEYS[field]]) for field in fields)
            metrics.LEDGER_COST.labels(model=model, kind=kind).inc(float(dollars / catalogue.MTOK))


def _log_call(row: ApiCall, *, user_id: int, conversation_id: int | None) -> None:
    """The structured log line of one recorded call."""
    log.info(
        "api_call model=%s purpose=%s round=%d input=%d cache_write=%d cache_read=%d "
        "output=%d web_searches=%d stop_reason=%s ttft_ms=%s duration_ms=%d request_id=%s "
        "error=%s cost=%s user=%s conversation=%s",
        row.model,
        row.purpose,
        row.round,
        row.input_tokens,
        row.cache_write_5m_tokens + row.cache_write_1h_tokens,
        row.cache_read_tokens,
        row.output_tokens,
        row.web_search_requests,
        row.stop_reason or "-",
        row.ttft_ms,
        row.duration_ms,
        row.request_id or "-",
        row.error_code or "-",
        row.cost,
        user_id,
        conversation_id,
    )


def _add_to_conversation(
    conversation_id: int, *, calls: list[CallRecord], total: Usage, total_cost: Decimal
) -> None:
    """Adds the calls' tokens and cost (web searches included) to the conversation's running
    totals (one UPDATE), and records the context the latest reply used."""
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


def cost_of_calls(calls: list[CallRecord]) -> Decimal:
    """The calls' cost as recorded in the ledger (prices in force when each was recorded):
    tokens and web searches."""
    return sum((_priced(call)[1] for call in calls), Decimal(0))
