"""The budget left, as the header shows it: money by default, rounded so it never overstates."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

import pytest
from asgiref.sync import sync_to_async

from chat.ledger import headroom
from chat.ledger.headroom import Left, money_pair, token_pair
from chat.models import Conversation, UserBudget
from tests.conftest import run_turn


@pytest.mark.parametrize(
    ("left", "limit", "shown"),
    [
        (50_000, 50_000, ("50k", "50k")),
        (49_950, 50_000, ("49.9k", "50k")),
        (49_999, 50_000, ("49.9k", "50k")),  # never "50k of 50k" once something was spent
        (123_400, 123_456, ("123.4k", "123.45k")),
        (12_345, 50_000, ("12.3k", "50k")),
        (999, 1000, ("999", "1k")),
        (0, 50_000, ("0", "50k")),
        (1_499_999, 1_500_000, ("1.49M", "1.5M")),
    ],
)
def test_tokens_left_are_rounded_down_and_never_shown_as_the_limit(left, limit, shown):
    assert token_pair(left, limit) == shown


@pytest.mark.parametrize(
    ("left", "limit", "shown"),
    [
        ("5", "5", ("$5.00", "$5.00")),
        ("4.37999", "5", ("$4.37", "$5.00")),
        ("4.99999", "5.0000", ("$4.99", "$5.00")),
        ("0.004", "0.005", ("$0.004", "$0.005")),
        ("2.50", "2.5", ("$2.50", "$2.50")),
    ],
)
def test_money_left_is_rounded_down_to_the_cent(left, limit, shown):
    assert money_pair(Decimal(left), Decimal(limit)) == shown


def test_a_budget_reads_as_a_sentence():
    assert Left("day", "usd", Decimal("0.63"), Decimal(5)).text == "$4.37 of $5.00 left today"
    month = Left("month", "tokens", Decimal(10), Decimal(1_000_000))
    assert month.text == "999k of 1M tokens left this month"
    over = Left("conversation", "tokens", Decimal(60_000), Decimal(50_000))
    assert over.text == "0 of 50k tokens left in this conversation" and over.as_meter()["low"]


@pytest.mark.django_db
def test_the_tightest_budget_is_shown(alice, titled_conversation, settings):
    assert headroom.tightest(titled_conversation).scope == "day"  # the $5 default
    settings.USER_DAILY_COST_BUDGET = "0"
    assert headroom.tightest(titled_conversation).scope == "month"
    settings.USER_MONTHLY_COST_BUDGET = "0"
    assert headroom.tightest(titled_conversation) is None
    titled_conversation.token_budget = 20_000
    titled_conversation.input_tokens = 5_000
    left = headroom.tightest(titled_conversation)
    assert (left.scope, left.unit, left.text) == (
        "conversation",
        "tokens",
        "15k of 20k tokens left in this conversation",
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_done_tells_the_money_left_today_after_a_reply(alice, titled_conversation):
    frames = await run_turn(alice, titled_conversation, "[[offline words=8]]", timeout=20)
    budget = frames[-1]["meters"]["budget"]
    cost = Decimal(frames[-1]["cost"])
    assert cost > 0
    left = (Decimal(5) - cost).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    assert budget["text"] == f"${left} of $5.00 left today" and left < Decimal(5)
    assert (budget["scope"], budget["unit"], budget["low"]) == ("day", "usd", False)
    assert Decimal(budget["used"]) == cost and Decimal(budget["limit"]) == 5
    assert frames[-1]["meters"]["budget_limit"] == 0  # no conversation cap by default


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_the_page_shows_no_limit_when_none_applies(client, alice, settings):
    settings.USER_DAILY_COST_BUDGET = settings.USER_MONTHLY_COST_BUDGET = "0"
    await sync_to_async(UserBudget.objects.create)(user=alice)
    conversation = await sync_to_async(Conversation.objects.create)(
        owner=alice, model="claude-sonnet-4-6"
    )
    await sync_to_async(client.force_login)(alice)
    response = await sync_to_async(client.get)(f"/c/{conversation.pk}/")
    assert response.status_code == 200
    assert '"budget": null' in response.content.decode()
