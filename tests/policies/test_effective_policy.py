"""A user's effective policy: the most generous of their groups' policies, the server's defaults
for a user in no group with one, and for money budgets the precedence user override > groups >
server default."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import policies
from chat.ledger import usage
from chat.models import UserBudget
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def test_a_user_in_no_group_with_a_policy_gets_the_server_defaults(alice, settings):
    settings.CLAUDE_WEB_SEARCH = True
    Group.objects.create(name="no policy").user_set.add(alice)
    policy = policies.policy_for(alice)
    assert policy == policies.UNRESTRICTED
    assert policy.allows_model("claude-opus-5-5") and policy.allows_effort("max")
    assert policy.allows_web_search and policy.documents
    assert policy.files_per_message() == settings.IMAGE_MAX_PER_MESSAGE
    assert policy.file_bytes(settings.DOCUMENT_MAX_BYTES) == settings.DOCUMENT_MAX_BYTES
    assert usage.limits_for(None, policy) == usage.default_limits()


def test_one_group_restricts_its_members_and_no_one_else(alice, bob, make_policy):
    make_policy(
        "interns",
        alice,
        allowed_models=["claude-haiku-5-5"],
        max_effort="low",
        web_search=False,
        documents=False,
        max_files_per_message=2,
        max_file_bytes=1000,
    )
    policy = policies.policy_for(alice)
    assert policy.models == frozenset({"claude-haiku-5-5"})
    assert not policy.allows_model("claude-opus-5-5")
    assert policy.allowed_efforts(("low", "medium", "high")) == ["low"]
    assert not policy.web_search and not policy.documents
    assert policy.files_per_message() == 2
    assert policy.file_bytes(5000) == 1000 and policy.file_bytes(500) == 500
    assert policies.policy_for(bob) == policies.UNRESTRICTED


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # models: the union; an empty list allows every model
        ({"allowed_models": ["a"]}, {"allowed_models": ["b"]}, {"models": frozenset("ab")}),
        ({"allowed_models": ["a"]}, {"allowed_models": []}, {"models": None}),
        # effort: the highest; blank is any
        ({"max_effort": "low"}, {"max_effort": "xhigh"}, {"max_effort": "xhigh"}),
        ({"max_effort": "low"}, {"max_effort": ""}, {"max_effort": None}),
        # switches: allowed if any group allows
        ({"web_search": False}, {"web_search": True}, {"web_search": True}),
        ({"web_search": False}, {"web_search": False}, {"web_search": False}),
        ({"documents": False}, {"documents": True}, {"documents": True}),
        # limits: the largest; blank is the server's
        ({"max_files_per_message": 2}, {"max_files_per_message": 5}, {"max_files_per_message": 5}),
        ({"max_file_bytes": 10}, {"max_file_bytes": None}, {"max_file_bytes": None}),
        # money: the largest; blank competes as the server default ($5 a day), 0 is no limit
        ({"daily_cost": Decimal(20)}, {"daily_cost": Decimal(1)}, {"daily_cost": Decimal(20)}),
        ({"daily_cost": Decimal(1)}, {"daily_cost": None}, {"daily_cost": Decimal(5)}),
        ({"daily_cost": Decimal(9)}, {"daily_cost": None}, {"daily_cost": Decimal(9)}),
        ({"daily_cost": Decimal(9)}, {"daily_cost": Decimal(0)}, {"daily_cost": None}),
        ({"daily_cost": None}, {"daily_cost": None}, {"daily_cost": policies.SERVER_DEFAULT}),
    ],
)
def test_a_user_in_several_groups_gets_the_most_generous_of_each(
    alice, make_policy, settings, first, second, expected
):
    settings.USER_DAILY_COST_BUDGET = "5"
    make_policy("one", alice, **first)
    make_policy("two", alice, **second)
    policy = policies.policy_for(alice)
    for field, value in expected.items():
        assert getattr(policy, field) == value, field


def test_superusers_are_not_exempt(make_policy):
    root = make_user("root", is_staff=True, is_superuser=True)
    make_policy("admins", root, web_search=False)
    assert not policies.policy_for(root).web_search


def test_many_users_policies_are_read_in_one_query(alice, bob, make_policy):
    make_policy("one", alice, bob, max_effort="low")
    make_policy("two", alice, max_effort="high")
    charlie = make_user("charlie")
    with CaptureQueriesContext(connection) as queries:
        found = policies.policies_for([alice.pk, bob.pk, charlie.pk])
    assert len(queries) == 1
    assert (found[alice.pk].max_effort, found[bob.pk].max_effort) == ("high", "low")
    assert found[charlie.pk] == policies.UNRESTRICTED
    with CaptureQueriesContext(connection) as queries:
        policies.policy_for(alice)
    assert len(queries) == 1


# --- money budgets: user override > groups > server default -------------------------------------


@pytest.mark.parametrize(
    ("own", "group", "expected"),
    [
        (None, None, Decimal(5)),  # nothing set: the server default
        (None, Decimal(12), Decimal(12)),  # the group's beats the server's
        (None, Decimal(0), None),  # a group without limit
        (Decimal(2), Decimal(12), Decimal(2)),  # the user's own beats the group's
        (Decimal(0), Decimal(12), None),  # the user's own "no limit" too
        (Decimal(30), None, Decimal(30)),
    ],
)
def test_money_budget_precedence(alice, make_policy, settings, own, group, expected):
    settings.USER_DAILY_COST_BUDGET = "5"
    settings.USER_MONTHLY_COST_BUDGET = "50"
    make_policy("team", alice, daily_cost=group)
    budget = UserBudget.objects.create(user=alice, daily_cost=own)
    limits = usage.limits_for(budget, policies.policy_for(alice))
    assert limits.daily_cost == expected
    assert limits.monthly_cost == Decimal(50)  # no one set it: the server default


def test_budget_percent_counts_a_group_budget(alice, bob, make_policy, settings):
    """The admin's "budget used" reads the same limits as the check before a reply."""
    from chat.models import ApiCall

    settings.USER_DAILY_COST_BUDGET = "0"
    settings.USER_MONTHLY_COST_BUDGET = "0"
    make_policy("team", alice, daily_cost=Decimal(2))
    ApiCall.objects.create(user=alice, model="claude-sonnet-4-6", cost=Decimal(1))
    ApiCall.objects.create(user=bob, model="claude-sonnet-4-6", cost=Decimal(1))
    assert usage.budget_percent([alice, bob]) == {alice.pk: 50, bob.pk: 0}
    assert usage.users_near_limit(threshold=50) == [(alice.pk, 50)]
