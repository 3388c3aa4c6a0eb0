"""Token and money budgets: reserve before a call, settle from the API's usage after it.

A reservation holds the estimated input plus max_tokens (and their price, with the web searches
the call may run) while a call is in flight, so concurrent sends by one user cannot together
overspend: reserving locks the user's budget row, counts what is spent and held, and refuses what
would pass a limit — before any API call is made. Settling replaces the hold with the ledger row
in one transaction; a failed call releases it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.mail import mail_admins
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from chat import policies
from chat.claude import catalogue
from chat.claude.records import CallRecord
from chat.errors import UserFacingError
from chat.ledger import entries, usage
from chat.models import BudgetReservation, Conversation, UserBudget

log = logging.getLogger(__name__)

# A hold older than this belongs to a process that died mid-call; it no longer counts.
RESERVATION_TTL = timedelta(minutes=30)
ALERT_LEVELS = (100, 80)


class BudgetExceeded(UserFacingError):
    code = "budget_exceeded"


@dataclass(frozen=True)
class Estimate:
    tokens: int
    cost: Decimal


def estimate(*, model: str, input_tokens: int, max_tokens: int, max_uses: int = 0) -> Estimate:
    """The most a call may use: its input plus max_tokens, and `max_uses` web searches (the web
    search tool's max_uses; 0 when the call offers none).

    Priced as the ledger prices the call (catalogue.cost_of), in the prompt-size tier the
    input falls in, every input token at the dearer of the uncached and the cache-write price:
    the request marks its prefix for the 5-minute cache, so any input token is read from the
    cache (cheaper), written to it (dearer), or neither — never more than that. Searches are
    not tokens: they add to the cost only. Settling records the searches the API reports,
    which max_uses bounds.
    """
    if max_uses < 0:
        raise ValueError(f"max_uses must not be negative, not {max_uses}")
    prices = catalogue.get_model(model).prices(total_input=input_tokens)
    dearest_input = max(Decimal(prices["input"]), Decimal(prices["cache_write_5m"]))
    cost = catalogue.cost_of(
        {**prices, "input": str(dearest_input)},
        input_tokens=input_tokens,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
        cache_read_tokens=0,
        output_tokens=max_tokens,
        web_search_requests=max_uses,
    )
    return Estimate(tokens=input_tokens + max_tokens, cost=cost)


def conversation_limit(conversation: Conversation) -> int:
    """The conversation's token cap: its own, else the setting's; 0 means none."""
    return conversation.token_budget or settings.CONVERSATION_TOKEN_BUDGET


def conversation_spent(conversation: Conversation) -> int:
    """Every token of the conversation's calls: input, cache writes and reads, output."""
    return (
        conversation.input_tokens
        + conversation.output_tokens
        + conversation.cache_creation_tokens
        + conversation.cache_read_tokens
    )


def _held(**filters) -> tuple[int, Decimal]:
    live = BudgetReservation.objects.filter(
        created_at__gte=timezone.now() - RESERVATION_TTL, **filters
    )
    sums = live.aggregate(tokens=Sum("tokens"), cost=Sum("cost"))
    return sums["tokens"] or 0, sums["cost"] or Decimal(0)


def _fmt_tokens(n: int) -> str:
    return f"{n:,}"


def reserve(
    *, user_id: int, conversation_id: int, need: Estimate, policy: policies.Policy | None = None
) -> int:
    """Hold `need` against the conversation's and the user's budgets (their own, else their
    groups' policy — `policy`, read when not given — else settings); the reservation's id.

    Raises BudgetExceeded (with a message for the user) when a limit would be passed.
    """
    if policy is None:
        policy = policies.policy_for_user_id(user_id)
    # No savepoint: when the caller's transaction holds the turn, a refusal rolls all of it
    # back anyway (a refused send stores nothing).
    with transaction.atomic(savepoint=False):
        budget = UserBudget.objects.select_for_update().filter(user_id=user_id).first()
        if budget is None:
            UserBudget.objects.get_or_create(user_id=user_id)
            budget = UserBudget.objects.select_for_update().get(user_id=user_id)
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        _check_conversation_limit(conversation, need)
        _check_user_limits(budget, need, policy)
        return BudgetReservation.objects.create(
            user_id=user_id, conversation_id=conversation_id, tokens=need.tokens, cost=need.cost
        ).pk


def _check_conversation_limit(conversation: Conversation, need: Estimate) -> None:
    limit = conversation_limit(conversation)
    if not limit:
        return
    spent = conversation_spent(conversation)
    held_tokens, _ = _held(conversation_id=conversation.pk)
    if spent + held_tokens + need.tokens > limit:
        raise BudgetExceeded(
            f"This conversation has used {_fmt_tokens(spent)} of its "
            f"{_fmt_tokens(limit)}-token budget; the next reply may need up to "
            f"{_fmt_tokens(need.tokens)}. Start a new conversation to go on."
        )


def _check_user_limits(budget: UserBudget, need: Estimate, policy: policies.Policy) -> None:
    limits = usage.limits_for(budget, policy)
    if not any(
        (limits.daily_tokens, limits.monthly_tokens, limits.daily_cost, limits.monthly_cost)
    ):
        return
    day_start, month_start = usage.period_starts()
    held_tokens, held_cost = _held(user_id=budget.user_id)
    for label, since, token_limit, cost_limit in (
        ("daily", day_start, limits.daily_tokens, limits.daily_cost),
        ("monthly", month_start, limits.monthly_tokens, limits.monthly_cost),
    ):
        if token_limit is None and cost_limit is None:
            continue
        used = usage.usage_since([budget.user_id], since)[budget.user_id]
        if token_limit is not None and used.tokens + held_tokens + need.tokens > token_limit:
            raise BudgetExceeded(
                f"Your {label} budget of {_fmt_tokens(token_limit)} tokens is used up "
                f"({_fmt_tokens(used.tokens)} used, {_fmt_tokens(held_tokens)} in replies "
                f"running). Ask an admin to raise it, or wait for the next period."
            )
        if cost_limit is not None and used.cost + held_cost + need.cost > cost_limit:
            raise BudgetExceeded(
                f"Your {label} budget of ${cost_limit:.2f} is used up (${used.cost:.2f} used, "
                f"${held_cost:.2f} in replies running); the next reply may cost up to "
                f"${need.cost:.2f}. Ask an admin to raise it, or wait for the next period."
            )


def release(reservation_id: int | None) -> None:
    if reservation_id is not None:
        BudgetReservation.objects.filter(pk=reservation_id).delete()


def settle(
    *,
    reservation_id: int | None,
    record: CallRecord,
    user_id: int,
    conversation_id: int | None,
    message_id: int | None,
) -> entries.TurnResult:
    """Replace the hold with the call's ledger row (the API's own usage, with the searches it
    ran, not the max_uses reserved), atomically."""
    with transaction.atomic():
        release(reservation_id)
        result = entries.record_calls(
            calls=[record],
            user_id=user_id,
            conversation_id=conversation_id,
            message_id=message_id,
        )
    check_alerts(user_id=user_id)
    return result


def check_alerts(*, user_id: int) -> int:
    """Tell admins once per day and level when a user reaches 80 % or 100 % of a budget."""
    percent = usage.budget_percent([user_id]).get(user_id, 0)
    level = next((lvl for lvl in ALERT_LEVELS if percent >= lvl), 0)
    if not level:
        return percent
    period = timezone.localdate().isoformat()
    with transaction.atomic():
        budget, _ = UserBudget.objects.select_for_update().get_or_create(user_id=user_id)
        if budget.alerted_period == period and budget.alerted_level >= level:
            return percent
        budget.alerted_level, budget.alerted_period = level, period
        budget.save(update_fields=["alerted_level", "alerted_period"])
    name = budget.user.get_username()
    log.warning("budget_alert user=%s level=%d percent=%d", name, level, percent)
    if settings.ADMINS:
        mail_admins(
            f"{name} has used {percent}% of a budget",
            f"User {name} has reached {level}% of a token or money budget ({percent}% used).",
            fail_silently=True,
        )
    return percent
