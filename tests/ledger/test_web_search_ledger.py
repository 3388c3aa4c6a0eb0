"""Web searches in the ledger: read from the API's usage, recorded and priced per 1,000 on top
of the tokens, reserved for by budgets (max_uses) and settled at the count the API reports."""

from __future__ import annotations

from decimal import Decimal

import pytest
from anthropic.types import Message as ApiMessage
from anthropic.types import RawMessageDeltaEvent, RawMessageStartEvent

from chat.claude import catalogue
from chat.claude.records import CallRecord, Usage
from chat.claude.responses import RoundEvents, usage_from
from chat.ledger import budgets, entries
from chat.models import ApiCall, BudgetReservation, Conversation, UserBudget

SONNET = "claude-sonnet-5-5"  # $2 input, $2.50 5-minute write, $0.20 read, $10 output per MTok
HAIKU = "claude-haiku-4-5"  # $1 input, $5 output per MTok
SEARCHES = {"web_search_requests": 0, "web_fetch_requests": 0}


def api_usage(**fields) -> dict:
    return {"input_tokens": 0, "output_tokens": 0, **fields}


def message_start(**usage) -> RawMessageStartEvent:
    return RawMessageStartEvent.model_validate(
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": SONNET,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": api_usage(**usage),
            },
        }
    )


def message_delta(**usage) -> RawMessageDeltaEvent:
    return RawMessageDeltaEvent.model_validate(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": usage,
        }
    )


def searched(n: int) -> dict:
    return {**SEARCHES, "web_search_requests": n}


# --- reading the API's usage ---------------------------------------------------------------


async def test_a_streamed_call_takes_its_searches_from_the_final_message_delta():
    record = CallRecord(model=SONNET)
    events = RoundEvents(record, on_block=None, on_start=None, on_thinking=None)
    await events.apply(message_start(input_tokens=900, server_tool_use=searched(0)))
    assert record.usage.web_search_requests == 0
    await events.apply(message_delta(output_tokens=40, server_tool_use=searched(1)))
    await events.apply(message_delta(output_tokens=250, server_tool_use=searched(3)))
    assert record.usage.web_search_requests == 3
    assert (record.usage.input_tokens, record.usage.output_tokens) == (900, 250)


async def test_a_message_delta_without_server_tool_use_keeps_the_count_so_far():
    record = CallRecord(model=SONNET)
    events = RoundEvents(record, on_block=None, on_start=None, on_thinking=None)
    await events.apply(message_start(input_tokens=900, server_tool_use=searched(2)))
    await events.apply(message_delta(output_tokens=250))
    assert record.usage.web_search_requests == 2


def test_a_whole_response_gives_its_searches_too():
    message = ApiMessage.model_validate(
        {
            "id": "msg_02",
            "type": "message",
            "role": "assistant",
            "model": SONNET,
            "content": [],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": api_usage(input_tokens=10, output_tokens=5, server_tool_use=searched(4)),
        }
    )
    into = Usage()
    usage_from(message.usage, into)
    assert into.web_search_requests == 4


def test_searches_do_not_enter_the_done_frames_usage():
    usage = Usage(input_tokens=1, output_tokens=2, web_search_requests=3)
    assert "web_search_requests" not in usage.as_api()
    assert set(usage.as_api()) == {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }


# --- recording and pricing -----------------------------------------------------------------


def turn() -> list[CallRecord]:
    """A reply that searched twice, its continuation, and the conversation's title call."""
    reply = CallRecord(model=SONNET, purpose=ApiCall.Purpose.REPLY)
    reply.usage = Usage(
        input_tokens=1200, cache_write_5m_tokens=3000, output_tokens=400, web_search_requests=2
    )
    more = CallRecord(model=SONNET, purpose=ApiCall.Purpose.CONTINUATION, round=1)
    more.usage = Usage(input_tokens=50, cache_read_tokens=4200, output_tokens=300)
    title = CallRecord(model=HAIKU, purpose=ApiCall.Purpose.TITLE)
    title.usage = Usage(input_tokens=100, output_tokens=10)
    return [reply, more, title]


# By hand, with the catalogue's prices:
# reply:        1,200 × $2 + 3,000 × $2.50 + 400 × $10 = 13,900 per MTok → $0.0139
#               2 searches × $10 / 1,000                                   → $0.02
# continuation: 50 × $2 + 4,200 × $0.20 + 300 × $10 = 3,940 per MTok      → $0.00394
# title:        100 × $1 + 10 × $5 = 150 per MTok                          → $0.00015
# turn:         0.0339 + 0.00394 + 0.00015                                → $0.03799
TURN_COST = Decimal("0.03799")


@pytest.mark.django_db
def test_a_turn_with_two_searches_costs_its_tokens_plus_two_hundredths_of_a_dollar(
    alice, titled_conversation
):
    assert entries.cost_of_calls(turn()) == TURN_COST
    result = entries.record_calls(
        calls=turn(), user_id=alice.pk, conversation_id=titled_conversation.pk, message_id=None
    )
    assert result.cost == TURN_COST and result.usage.web_search_requests == 2
    rows = list(ApiCall.objects.filter(conversation=titled_conversation).order_by("id"))
    assert [r.web_search_requests for r in rows] == [2, 0, 0]
    assert [r.cost for r in rows] == [Decimal("0.0339"), Decimal("0.00394"), Decimal("0.00015")]
    assert Conversation.objects.get(pk=titled_conversation.pk).cost == TURN_COST


@pytest.mark.django_db
def test_the_price_snapshot_holds_the_search_price_so_the_cost_can_be_recomputed(alice):
    call = turn()[0]
    entries.record_calls(calls=[call], user_id=alice.pk, conversation_id=None, message_id=None)
    row = ApiCall.objects.latest("id")
    assert row.prices["web_search_per_1k"] == "10.00"
    recomputed = catalogue.cost_of(
        row.prices,
        input_tokens=row.input_tokens,
        cache_write_5m_tokens=row.cache_write_5m_tokens,
        cache_write_1h_tokens=row.cache_write_1h_tokens,
        cache_read_tokens=row.cache_read_tokens,
        output_tokens=row.output_tokens,
        web_search_requests=row.web_search_requests,
    )
    assert recomputed == row.cost == Decimal("0.0339")


@pytest.mark.django_db
def test_a_call_opened_at_message_start_is_completed_with_its_searches(alice, titled_conversation):
    call = CallRecord(model=SONNET)
    call.usage = Usage(input_tokens=1200, web_search_requests=0)
    call.ledger_id = entries.open_call(
        record=call, user_id=alice.pk, conversation_id=titled_conversation.pk, message_id=None
    )
    call.usage = Usage(input_tokens=1200, output_tokens=400, web_search_requests=2)
    entries.record_calls(
        calls=[call], user_id=alice.pk, conversation_id=titled_conversation.pk, message_id=None
    )
    row = ApiCall.objects.get(pk=call.ledger_id)
    # 1,200 × $2 + 400 × $10 = 6,400 per MTok, and two searches at $0.01.
    assert (row.web_search_requests, row.cost) == (2, Decimal("0.0264"))
    assert ApiCall.objects.count() == 1


@pytest.mark.django_db
def test_a_compaction_iteration_adds_no_searches(alice):
    call = CallRecord(model=SONNET)
    call.usage = Usage(input_tokens=1000, output_tokens=100, web_search_requests=1)
    call.compaction = Usage(input_tokens=5000, output_tokens=500)
    assert entries.billed_usage(call).web_search_requests == 1


# --- budgets -------------------------------------------------------------------------------


def test_a_reservation_for_max_uses_covers_that_many_searches_on_top_of_the_tokens():
    plain = budgets.estimate(model=SONNET, input_tokens=10_000, max_tokens=4_000)
    # Input at the cache-write price, the dearer: 10,000 × $2.50 + 4,000 × $10 = 65,000 per MTok.
    assert plain == budgets.Estimate(tokens=14_000, cost=Decimal("0.065"))
    searching = budgets.estimate(model=SONNET, input_tokens=10_000, max_tokens=4_000, max_uses=5)
    assert searching == budgets.Estimate(tokens=14_000, cost=Decimal("0.115"))


def test_a_negative_max_uses_is_refused():
    with pytest.raises(ValueError):
        budgets.estimate(model=SONNET, input_tokens=1, max_tokens=1, max_uses=-1)


# A refusal rolls back the caller's transaction (reserve takes no savepoint): a real one here.
@pytest.mark.django_db(transaction=True)
def test_the_searches_reserved_for_can_pass_a_money_budget_the_tokens_alone_do_not(
    alice, titled_conversation
):
    UserBudget.objects.create(user=alice, daily_cost=Decimal("0.10"))
    where = {"user_id": alice.pk, "conversation_id": titled_conversation.pk}
    tokens_only = budgets.estimate(model=SONNET, input_tokens=10_000, max_tokens=4_000)
    held = budgets.reserve(**where, need=tokens_only)
    budgets.release(held)
    with_searches = budgets.estimate(
        model=SONNET, input_tokens=10_000, max_tokens=4_000, max_uses=5
    )
    with pytest.raises(budgets.BudgetExceeded, match=r"\$0\.10"):
        budgets.reserve(**where, need=with_searches)
    assert BudgetReservation.objects.count() == 0


@pytest.mark.django_db
def test_settling_records_the_searches_the_api_reported_not_max_uses(alice, titled_conversation):
    need = budgets.estimate(model=SONNET, input_tokens=1200, max_tokens=4_000, max_uses=5)
    held = budgets.reserve(user_id=alice.pk, conversation_id=titled_conversation.pk, need=need)
    call = CallRecord(model=SONNET)
    call.usage = Usage(input_tokens=1200, output_tokens=400, web_search_requests=2)
    result = budgets.settle(
        reservation_id=held,
        record=call,
        user_id=alice.pk,
        conversation_id=titled_conversation.pk,
        message_id=None,
    )
    assert BudgetReservation.objects.count() == 0
    row = ApiCall.objects.get()
    assert row.web_search_requests == 2 and row.cost == result.cost == Decimal("0.0264")
    assert need.cost == Decimal("0.093")  # 1,200 × $2.50 + 4,000 × $10 per MTok, 5 × $0.01
    assert Conversation.objects.get(pk=titled_conversation.pk).cost == Decimal("0.0264")
