"""Group policies in the admin: set on the group's page (Authentication › Groups), within the
server's own limits, and summed up in the group list."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group

from chat.models import GroupPolicy

pytestmark = pytest.mark.django_db

PREFIX = "chat_policy"


def group_form(name: str, **policy) -> dict:
    """The group page's POST: the group, and its one policy inline."""
    data = {
        "name": name,
        f"{PREFIX}-TOTAL_FORMS": "1",
        f"{PREFIX}-INITIAL_FORMS": "0",
        f"{PREFIX}-MIN_NUM_FORMS": "0",
        f"{PREFIX}-MAX_NUM_FORMS": "1",
    }
    for field, value in policy.items():
        if isinstance(value, list):
            data[f"{PREFIX}-0-{field}"] = value
        elif value is True:
            data[f"{PREFIX}-0-{field}"] = "on"
        elif value is not False:
            data[f"{PREFIX}-0-{field}"] = str(value)
    return data


def test_the_group_pages_render_with_the_policy(client, superuser):
    client.force_login(superuser)
    page = client.get("/admin/auth/group/add/").content.decode()
    assert "Policy (members get the most generous of their groups&#x27; policies" in page
    assert 'value="claude-haiku-4-5"' in page and "Highest thinking effort" in page


def test_a_policy_is_saved_with_its_group(client, superuser):
    client.force_login(superuser)
    response = client.post(
        "/admin/auth/group/add/",
        group_form(
            "interns",
            allowed_models=["claude-haiku-4-5", "claude-sonnet-4-6"],
            max_effort="medium",
            web_search=False,
            documents=True,
            max_files_per_message=3,
            max_file_bytes=1_000_000,
            daily_cost="2.50",
            monthly_cost="",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    policy = GroupPolicy.objects.get(group__name="interns")
    assert policy.allowed_models == ["claude-haiku-4-5", "claude-sonnet-4-6"]
    assert (policy.max_effort, policy.web_search, policy.documents) == ("medium", False, True)
    assert (policy.max_files_per_message, policy.max_file_bytes) == (3, 1_000_000)
    assert (policy.daily_cost, policy.monthly_cost) == (Decimal("2.50"), None)
    listing = client.get("/admin/auth/group/").content.decode()
    assert "claude-haiku-4-5, claude-sonnet-4-6; effort ≤ medium; no web search" in listing
    change = client.get(f"/admin/auth/group/{policy.group_id}/change/").content.decode()
    assert re.search(r'value="claude-haiku-4-5"[^>]*checked', change)
    assert not re.search(r'value="claude-opus-5"[^>]*checked', change)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_files_per_message", 11, "server&#x27;s limit, 10 files"),
        ("max_file_bytes", 10**12, "server&#x27;s largest limit"),
        ("daily_cost", "-1", "greater than or equal to 0"),
        ("allowed_models", ["claude-not-a-model"], "not one of the available choices"),
    ],
)
def test_a_policy_beyond_the_servers_limits_is_refused(client, superuser, field, value, words):
    client.force_login(superuser)
    response = client.post(
        "/admin/auth/group/add/", group_form("interns", web_search=True, **{field: value})
    )
    assert response.status_code == 200 and words in response.content.decode()
    assert not Group.objects.filter(name="interns").exists()


def test_staff_without_permission_cannot_reach_group_policies(client, staff):
    client.force_login(staff)
    assert client.get("/admin/auth/group/add/").status_code == 403
