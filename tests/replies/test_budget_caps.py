"""A cap is a cap: a conversation and a user driven to their budgets through the socket.

Each call reserves its input (the last call's real input and output plus an estimate of what came
since) and max_tokens before it runs, priced at the dearest an input token may cost. So the
ledger may pass a cap only by what one call's estimate missed. Every reply below writes until
max_tokens: the worst case for a reservation. The figures are printed (pytest -s).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db.models import F, Sum

from chat.claude import catalogue, context
from chat.conversations import lifecycle
from chat.models import ApiCall, BudgetReservation, UserBudget
from chat.replies import titles
from tests.conftest import open_socket, send_and_wait

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]

MAX_OUTPUT = 600
# Each turn asks for more words than max_tokens allows: every reply is cut at max_tokens.
TURN = "Tell me more about the harbour of Lyon, in detail. " * 12 + "[[offline words=900]]"
TURN_ESTIMATE = context.estimate_tokens([{"type": "text", "text": TURN}])
MAX_TURNS = 40
TOKEN_CAP = 30_000


@pytest.fixture(autouse=True)
def _short_replies(settings):
    settings.CLAUDE_MAX_OUTPUT_TOKENS = MAX_OUTPUT
    settings.RATE_SENDS_PER_MINUTE = 1000


PROMPT = F("input_tokens") + F("cache_write_5m_tokens") + F("cache_write_1h_tokens")
PROMPT = PROMPT + F("cache_read_tokens")


@sync_to_async
def ledger_tokens(**filters) -> int:
    total = ApiCall.objects.filter(**filters).aggregate(t=Sum(PROMPT + F("output_tokens")))["t"]
    return total or 0


@sync_to_async
def ledger_cost(**filters) -> Decimal:
    return ApiCall.objects.filter(**filters).aggregate(cost=Sum("cost"))["cost"] or Decimal(0)


@sync_to_async
def input_misses(**filters) -> list[int]:
    """Per reply after the first of its conversation: its real input less what was reserved
    for it (the previous call's real input and output plus the new turn's estimate)."""
    calls = list(
        ApiCall.objects.filter(purpose="reply", **filters)
        .annotate(prompt=PROMPT)
        .order_by("conversation_id", "id")
    )
    return [
        now.prompt - (before.prompt + before.output_tokens + TURN_ESTIMATE)
        for before, now in zip(calls, calls[1:], strict=False)
        if before.conversation_id == now.conversation_id
    ]


async def turns_until_refused(user, conversation) -> tuple[int, dict]:
    """Send TURN until a send is refused: the replies that ran and the refusal."""
    async with open_socket(conversation.pk, user) as ws:
        for done in range(MAX_TURNS):
            frames = await send_and_wait(ws, TURN, timeout=20)
            if frames[-1]["type"] == "error":
                return done, frames[-1]
            assert frames[-1]["stop_reason"] == "max_tokens"
    raise AssertionError(f"{MAX_TURNS} turns never reached the cap")


async def test_a_conversation_cap_is_passed_by_no_more_than_one_call_s_estimate_error(
    alice, titled_conversation
):
    titled_conversation.token_budget = TOKEN_CAP
    await sync_to_async(titled_conversation.save)()
    replies, refusal = await turns_until_refused(alice, titled_conversation)
    assert replies >= 3 and refusal["code"] == "budget_exceeded"
    spent = await ledger_tokens(conversation=titled_conversation)
    misses = await input_misses(conversation=titled_conversation)
    overshoot = spent - TOKEN_CAP
    print(f"\nconversation cap {TOKEN_CAP:,} tokens: {replies} replies, ledger {spent:,} "
          f"({overshoot:+,}); input misses per call {misses}")  # fmt: skip
    assert overshoot <= max(0, *misses)
    # Refused because the next reply could not fit: what was left was less than its need.
    [last] = await sync_to_async(
        lambda: list(ApiCall.objects.annotate(prompt=PROMPT).order_by("-id")[:1])
    )()
    assert TOKEN_CAP - spent < last.prompt + last.output_tokens + 2 * TURN_ESTIMATE + MAX_OUTPUT
    assert await sync_to_async(BudgetReservation.objects.count)() == 0


async def test_a_daily_money_cap_is_passed_by_no_more_than_one_call_s_estimate_error(
    alice, settings
):
    cap = Decimal("0.10")
    await sync_to_async(UserBudget.objects.create)(user=alice, daily_cost=cap)
    replies = 0
    for _ in range(6):  # new conversations: each first reply is followed by a title call
        conversation = await sync_to_async(lifecycle.conversation_create)(owner=alice)
        ran, refusal = await turns_until_refused(alice, conversation)
        await titles.wait_for_background()
        replies += ran
        if ran == 0:
            break
    assert ran == 0 and refusal["code"] == "budget_exceeded"
    spent = await ledger_cost(user=alice)
    misses = await input_misses(user=alice)
    # A missed input token costs at most the dearest input price of the reply's model.
    prices = catalogue.get_model(settings.CLAUDE_DEFAULT_MODEL).prices()
    dearest = max(Decimal(prices["input"]), Decimal(prices["cache_write_5m"])) / catalogue.MTOK
    overshoot = spent - cap
    named = await sync_to_async(ApiCall.objects.filter(user=alice, purpose="title").count)()
    print(f"\ndaily cap ${cap}: {replies} replies, {named} titles, ledger ${spent:.6f} "
          f"({overshoot:+.6f}); input misses per call {misses}")  # fmt: skip
    assert named >= 2  # side calls were made, and counted
    assert overshoot <= max(0, *misses) * dearest
    # The refusal came with less left than the next reply could cost.
    assert cap - spent < Decimal("0.02")
    assert await sync_to_async(BudgetReservation.objects.count)() == 0
