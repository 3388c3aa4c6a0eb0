"""Budgets: reserve before a call, settle after, refuse before any API call, alert admins."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core import mail

from chat.claude.records import CallRecord, Usage
from chat.conversations import lifecycle
from chat.ledger import budgets
from chat.models import ApiCall, BudgetReservation, Message, UserBudget
from tests.conftest import open_socket, recv_until, send_frame

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]


@sync_to_async
def counts(conversation) -> tuple[int, int, int]:
    return (
        Message.objects.filter(conversation=conversation).count(),
        ApiCall.objects.filter(conversation=conversation).count(),
        BudgetReservation.objects.count(),
    )


async def test_over_the_conversation_budget_the_send_is_refused_before_any_call(
    alice, titled_conversation, offline_requests
):
    titled_conversation.token_budget = 1000  # less than max_tokens alone
    await sync_to_async(titled_conversation.save)()
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("hello [[offline words=3]]"))
        error = (await recv_until(ws, "error"))[-1]
    assert error["code"] == "budget_exceeded" and error["retryable"] is False
    assert "1,000-token budget" in error["message"]
    assert offline_requests.all() == []
    assert await counts(titled_conversation) == (0, 0, 0)  # nothing stored half-done


async def test_over_a_daily_user_budget_the_send_is_refused(
    alice, titled_conversation, offline_requests
):
    await sync_to_async(UserBudget.objects.create)(user=alice, daily_tokens=2000)
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("hello"))
        error = (await recv_until(ws, "error"))[-1]
    assert error["code"] == "budget_exceeded" and "daily budget of 2,000 tokens" in error["message"]
    assert offline_requests.all() == []


async def test_a_money_budget_counts_the_ledger(
    alice, titled_conversation, offline_requests, settings
):
    settings.USER_MONTHLY_COST_BUDGET = "0.05"
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to(
            send_frame("[[offline words=3]]")
        )  # reserves ≈ 16,000 × $10/MTok = $0.16 > $0.05
        error = (await recv_until(ws, "error"))[-1]
    assert error["code"] == "budget_exceeded" and "$0.05" in error["message"]


async def test_the_reservation_is_settled_after_a_reply(alice, titled_conversation):
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=5]]"))
        done = (await recv_until(ws, "done"))[-1]
    assert await counts(titled_conversation) == (2, 1, 0)
    call = await sync_to_async(ApiCall.objects.get)(message_id=done["message_id"])
    assert call.output_tokens == 5


async def test_the_reservation_is_released_after_an_upstream_error(alice, titled_conversation):
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline status=500]]"))
        error = (await recv_until(ws, "error"))[-1]
    assert error["code"] == "upstream_error"
    assert await counts(titled_conversation) == (2, 1, 0)


async def test_concurrent_sends_by_one_user_do_not_overspend(alice, settings):
    # Each reply reserves its input plus max_tokens (4096): the budget holds one, not two.
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 4096
    await sync_to_async(UserBudget.objects.create)(user=alice, daily_tokens=6000)
    first, second = [
        await sync_to_async(lifecycle.conversation_create)(owner=alice) for _ in range(2)
    ]
    async with open_socket(first.pk, alice) as a, open_socket(second.pk, alice) as b:
        await asyncio.gather(
            a.send_json_to(send_frame("[[offline words=50 pace_ms=5]]")),
            b.send_json_to(send_frame("[[offline words=50 pace_ms=5]]")),
        )
        outcomes = await asyncio.gather(
            recv_until(a, "done", "error"), recv_until(b, "done", "error")
        )
    ends = sorted(frames[-1]["type"] for frames in outcomes)
    assert ends == ["done", "error"]
    refused = next(frames[-1] for frames in outcomes if frames[-1]["type"] == "error")
    assert refused["code"] == "budget_exceeded"
    assert await sync_to_async(ApiCall.objects.filter(user=alice, purpose="reply").count)() == 1


def record(tokens: int) -> CallRecord:
    return CallRecord(model="claude-haiku-4-5", usage=Usage(input_tokens=tokens))


def test_admins_are_alerted_once_at_80_and_at_100_percent(
    alice, titled_conversation, settings, caplog
):
    settings.ADMINS = [("", "ops@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    UserBudget.objects.create(user=alice, daily_tokens=10_000)
    settle = dict(
        reservation_id=None,
        user_id=alice.pk,
        conversation_id=titled_conversation.pk,
        message_id=None,
    )
    budgets.settle(record=record(7_000), **settle)
    assert mail.outbox == []
    budgets.settle(record=record(1_500), **settle)  # 85 %
    budgets.settle(record=record(100), **settle)  # still 86 %: no second alert
    assert [m.subject for m in mail.outbox] == ["[Django] alice has used 85% of a budget"]
    budgets.settle(record=record(2_000), **settle)  # 106 %
    assert len(mail.outbox) == 2 and "106%" in mail.outbox[1].subject
    assert "budget_alert user=alice level=100" in caplog.text
    assert UserBudget.objects.get(user=alice).alerted_level == 100


def test_stale_reservations_of_a_dead_process_no_longer_count(alice, titled_conversation):
    held = BudgetReservation.objects.create(
        user=alice, conversation=titled_conversation, tokens=40_000
    )
    BudgetReservation.objects.filter(pk=held.pk).update(
        created_at=held.created_at - budgets.RESERVATION_TTL * 2
    )
    need = budgets.Estimate(tokens=20_000, cost=Decimal(0))
    assert budgets.reserve(user_id=alice.pk, conversation_id=titled_conversation.pk, need=need)
