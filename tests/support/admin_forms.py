"""The admin's user change form as a browser posts it: the user's fields, and the budget
inline's management form (the single sign-on inline shows only for users with an identity)."""

from __future__ import annotations


def user_change_form(user, *, is_active: bool = True, **budget) -> dict:
    """`budget`: the budget inline's fields (daily_tokens="5000", monthly_cost="12.50", …);
    none leaves it empty."""
    data = {
        "username": user.username,
        "date_joined_0": "2025-01-01",
        "date_joined_1": "00:00:00",
        "budget-TOTAL_FORMS": "1",
        "budget-INITIAL_FORMS": "0",
        "budget-MIN_NUM_FORMS": "0",
        "budget-MAX_NUM_FORMS": "1",
        "budget-0-id": "",
        "budget-0-user": user.pk,
        **{f"budget-0-{name}": value for name, value in budget.items()},
    }
    if is_active:
        data["is_active"] = "on"
    return data
