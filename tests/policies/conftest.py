"""Group policies for the tests: a group with a policy, its members."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from chat.models import GroupPolicy


def group_policy(name: str, *members, **fields) -> GroupPolicy:
    """A group called `name` with these members and a policy of these fields."""
    group = Group.objects.create(name=name)
    group.user_set.add(*members)
    return GroupPolicy.objects.create(group=group, **fields)


@pytest.fixture
def make_policy(db):
    return group_policy
