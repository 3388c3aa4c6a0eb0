"""Usage selectors over the ApiCall ledger: limits, usage per period, share of budget used, usage
per reply.

Read by the admin (dashboard, user list), by the budget checks and by the conversation page (the
usage shown beside each reply). Costs are summed as the ledger
recorded them; nothing here prices tokens again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q, Sum
from django.utils import timezone

from chat import policies
from chat.models import ApiCall, GroupPolicy, UserBudget

TOKEN_COLUMNS = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
)
# Shares of a limit at which the admin flags a user.
WARN_PERCENT = 80
OVER_PERCENT = 100


@dataclass(frozen=True)
class Limits:
    """A user's effective limits; None means no limit of that kind."""

    daily_tokens: int | None
    monthly_tokens: int | None
    daily_cost: Decimal | None
    monthly_cost: Decimal | None

    @property
    def unlimited(self) -> bool:
        return (
            self.daily_tokens is None
            and self.monthly_tokens is None
            and self.daily_cost is None
            and self.monthly_cost is None
        )


@dataclass(frozen=True)
class PeriodUsage:
    tokens: int
    cost: Decimal


ZERO = PeriodUsage(tokens=0, cost=Decimal(0))


def _setting_decimal(name: str) -> Decimal:
    raw = getattr(settings, name)
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None


def default_limits() -> Limits:
    """The limits from settings, for users without their own (0 means no limit)."""
    return Limits(
        daily_tokens=int(settings.USER_DAILY_TOKEN_BUDGET) or None,
        monthly_tokens=int(settings.USER_MONTHLY_TOKEN_BUDGET) or None,
        daily_cost=_setting_decimal("USER_DAILY_COST_BUDGET") or None,
        monthly_cost=_setting_decimal("USER_MONTHLY_COST_BUDGET") or None,
    )


def limits_for(
    budget: UserBudget | None, policy: policies.Policy = policies.UNRESTRICTED
) -> Limits:
    """A user's limits. Precedence, field by field: the user's own budget (an override set by
    an admin), then their groups' policies (money only: the most generous group,
    chat/policies.py), then settings. 0 → no limit."""
    defaults = default_limits()

    def pick(own, group, default):
        if own is not None:
            return own or None
        if group is not policies.SERVER_DEFAULT:
            return group
        return default

    return Limits(
        daily_tokens=pick(
            budget and budget.daily_tokens, policies.SERVER_DEFAULT, defaults.daily_tokens
        ),
        monthly_tokens=pick(
            budget and budget.monthly_tokens, policies.SERVER_DEFAULT, defaults.monthly_tokens
        ),
        daily_cost=pick(budget and budget.daily_cost, policy.daily_cost, defaults.daily_cost),
        monthly_cost=pick(
            budget and budget.monthly_cost, policy.monthly_cost, defaults.monthly_cost
        ),
    )


def period_starts(now: datetime | None = None) -> tuple[datetime, datetime]:
    """(start of today, start of this month), aware, in settings.TIME_ZONE."""
    tz = timezone.get_default_timezone()
    today = timezone.localtime(now or timezone.now(), tz).date()
    return (
        datetime.combine(today, time.min, tzinfo=tz),
        datetime.combine(today.replace(day=1), time.min, tzinfo=tz),
    )


def usage_since(user_ids: Iterable[int], since: datetime) -> dict[int, PeriodUsage]:
    """Tokens (input, cache writes, cache reads, output) and cost per user since `since`.

    One aggregate query; users without calls get zero.
    """
    ids = set(user_ids)
    if not ids:
        return {}
    rows = (
        ApiCall.objects.filter(user_id__in=ids, created_at__gte=since)
        .order_by()
        .values("user_id")
        .annotate(
            **{column: Sum(column) for column in TOKEN_COLUMNS},
            spent=Sum("cost"),
        )
    )
    result = dict.fromkeys(ids, ZERO)
    for row in rows:
        result[row["user_id"]] = PeriodUsage(
            tokens=sum(row[column] or 0 for column in TOKEN_COLUMNS),
            cost=row["spent"] or Decimal(0),
        )
    return result


def usage_today_and_month(
    user_ids: set[int] | None, now: datetime | None = None
) -> dict[int, tuple[PeriodUsage, PeriodUsage]]:
    """(today, this month) per user in one scan of the month; None: every user with calls."""
    day_start, month_start = period_starts(now)
    calls = ApiCall.objects.filter(created_at__gte=month_start, user_id__isnull=False)
    if user_ids is not None:
        calls = calls.filter(user_id__in=user_ids)
    today = Q(created_at__gte=day_start)
    rows = (
        calls.order_by()
        .values("user_id")
        .annotate(
            **{f"month_{column}": Sum(column) for column in TOKEN_COLUMNS},
            **{f"day_{column}": Sum(column, filter=today) for column in TOKEN_COLUMNS},
            month_cost=Sum("cost"),
            day_cost=Sum("cost", filter=today),
        )
    )
    result = {}
    for row in rows:
        periods = tuple(
            PeriodUsage(
                tokens=sum(row[f"{period}_{column}"] or 0 for column in TOKEN_COLUMNS),
                cost=row[f"{period}_cost"] or Decimal(0),
            )
            for period in ("day", "month")
        )
        result[row["user_id"]] = periods
    return result


def percent_used(limits: Limits, today: PeriodUsage, month: PeriodUsage) -> int:
    """The largest share of a limit used, in whole percent (floored); 0 without limits."""
    shares = [0]
    for used, limit in (
        (today.tokens, limits.daily_tokens),
        (month.tokens, limits.monthly_tokens),
        (today.cost, limits.daily_cost),
        (month.cost, limits.monthly_cost),
    ):
        if limit:
            shares.append(int(used * 100 // limit))
    return max(shares)


def _ids(users_or_ids) -> set[int]:
    return {item if isinstance(item, int) else item.pk for item in users_or_ids}


def budget_percent(users_or_ids, now: datetime | None = None) -> dict[int, int]:
    """Per user: the largest share used of their four limits, in %; 0 when they have none.

    Three queries whatever the number of users: their budgets, their groups' policies, then
    their usage.
    """
    ids = _ids(users_or_ids)
    if not ids:
        return {}
    budgets = {b.user_id: b for b in UserBudget.objects.filter(user_id__in=ids)}
    group_policies = policies.policies_for(ids)
    limits = {user_id: limits_for(budgets.get(user_id), group_policies[user_id]) for user_id in ids}
    limited = {user_id for user_id, lim in limits.items() if not lim.unlimited}
    usage = usage_today_and_month(limited, now) if limited else {}
    return {
        user_id: percent_used(limits[user_id], *usage.get(user_id, (ZERO, ZERO))) for user_id in ids
    }


def users_near_limit(
    threshold: int = WARN_PERCENT, now: datetime | None = None
) -> list[tuple[int, int]]:
    """(user id, percent) of users at or above `threshold` % of a limit, highest first.

    Three queries: budgets, then the month's usage of the users that have limits (all users with
    calls this month when settings set a default limit), then their groups' policies.
    """
    defaults = default_limits()
    budgets = {
        b.user_id: b
        for b in UserBudget.objects.filter(
            Q(daily_tokens__isnull=False)
            | Q(monthly_tokens__isnull=False)
            | Q(daily_cost__isnull=False)
            | Q(monthly_cost__isnull=False)
        )
    }
    if defaults.unlimited:
        # Only users with their own limits, or in a group with a money budget, can be near one.
        candidates = set(budgets) | set(
            GroupPolicy.objects.filter(Q(daily_cost__isnull=False) | Q(monthly_cost__isnull=False))
            .values_list("group__user__id", flat=True)
            .exclude(group__user__id=None)
        )
        if not candidates:
            return []
        usage = usage_today_and_month(candidates, now)
    else:
        usage = usage_today_and_month(None, now)
    group_policies = policies.policies_for(usage)
    flagged = []
    for user_id, (today, month) in usage.items():
        percent = percent_used(
            limits_for(budgets.get(user_id), group_policies[user_id]), today, month
        )
        if percent >= threshold:
            flagged.append((user_id, percent))
    flagged.sort(key=lambda item: (-item[1], item[0]))
    return flagged
