"""What is left of the budgets that bind a conversation, as the header shows it.

Of the conversation's token cap (if an admin set one) and its owner's daily and monthly limits
(money by default), the one with the smallest share left is shown: "$4.37 of $5.00 left today".
What is left is rounded down, and never shown equal to the limit once anything was spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from chat import policies
from chat.ledger import budgets, usage
from chat.models import Conversation, UserBudget

SCOPE_WORDS = {"conversation": "in this conversation", "day": "today", "month": "this month"}
LOW_SHARE = Decimal("0.1")
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Left:
    """One budget: its scope (conversation, day, month), unit (usd, tokens), use and limit."""

    scope: str
    unit: str
    used: Decimal
    limit: Decimal

    @property
    def left(self) -> Decimal:
        return max(Decimal(0), self.limit - self.used)

    @property
    def share_left(self) -> Decimal:
        return self.left / self.limit

    @property
    def text(self) -> str:
        left, limit = (
            money_pair(self.left, self.limit)
            if self.unit == "usd"
            else token_pair(int(self.left), int(self.limit))
        )
        unit = "" if self.unit == "usd" else " tokens"
        return f"{left} of {limit}{unit} left {SCOPE_WORDS[self.scope]}"

    def as_meter(self) -> dict:
        """The `budget` meter of the protocol (docs/protocol.md)."""

        def number(value: Decimal) -> str | int:
            return str(value) if self.unit == "usd" else int(value)

        return {
            "scope": self.scope,
            "unit": self.unit,
            "used": number(self.used),
            "limit": number(self.limit),
            "left": number(self.left),
            "text": self.text,
            "low": self.share_left < LOW_SHARE,
        }


def _floor(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)


def money_pair(left: Decimal, limit: Decimal) -> tuple[str, str]:
    """("$4.37", "$5.00"): cents, what is left rounded down; more places when cents alone
    would show a budget something was spent of as untouched."""
    places = max(2, -limit.normalize().as_tuple().exponent)
    shown_limit = _floor(limit, places)
    shown_left = _floor(left, places)
    while left < limit and shown_left >= shown_limit and places < 8:
        places += 1
        shown_limit, shown_left = _floor(limit, places), _floor(left, places)
    return f"${shown_left}", f"${shown_limit}"


def _short(n: int, digits: int) -> str:
    """n in k or M with `digits` significant digits at least, rounded down: 49,950 → 49.9k."""
    for suffix, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            value = Decimal(n) / size
            whole = len(str(int(value)))
            shown = _floor(value, max(0, digits - whole))
            return f"{shown.normalize():f}{suffix}"
    return f"{n:,}"


def token_pair(left: int, limit: int) -> tuple[str, str]:
    """("49.9k", "50k"): three significant digits, what is left rounded down; more digits when
    that would show a budget something was spent of as untouched."""
    digits = 3
    while left < limit and _short(left, digits) == _short(limit, digits) and digits < 9:
        digits += 1
    return _short(left, digits), _short(limit, digits)


def _user_budgets(user_id: int, policy: policies.Policy | None = None) -> list[Left]:
    if policy is None:
        policy = policies.policy_for_user_id(user_id)
    limits = usage.limits_for(UserBudget.objects.filter(user_id=user_id).first(), policy)
    if limits.unlimited:
        return []
    # Today and this month in one scan of the month's calls.
    today, month = usage.usage_today_and_month({user_id}).get(user_id, (usage.ZERO, usage.ZERO))
    found = []
    for scope, used, cost_limit, token_limit in (
        ("day", today, limits.daily_cost, limits.daily_tokens),
        ("month", month, limits.monthly_cost, limits.monthly_tokens),
    ):
        if cost_limit is not None:
            found.append(Left(scope, "usd", used.cost, Decimal(cost_limit)))
        if token_limit is not None:
            found.append(Left(scope, "tokens", Decimal(used.tokens), Decimal(token_limit)))
    return found


def tightest(conversation: Conversation, policy: policies.Policy | None = None) -> Left | None:
    """The budget with the smallest share left (the first of equals: the conversation's cap,
    then the day's, then the month's); None when no budget applies. `policy`: the owner's
    effective policy when the caller has read it already (else it is read here)."""
    found = []
    cap = budgets.conversation_limit(conversation)
    if cap:
        spent = budgets.conversation_spent(conversation)
        found.append(Left("conversation", "tokens", Decimal(spent), Decimal(cap)))
    found += _user_budgets(conversation.owner_id, policy)
    return min(found, key=lambda b: b.share_left, default=None)
