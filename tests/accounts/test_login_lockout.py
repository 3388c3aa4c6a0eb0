"""Login throttling (django-axes, claudeweb/settings.py; docs/deploy.md "Login throttling").

Defaults: the LOGIN_FAILURE_LIMIT-th (5th) failed login locks its username whatever the address,
and its address whatever the usernames, for LOGIN_COOLOFF_MINUTES (15); a success before the
limit clears the failures counted against its username and its address. A locked login (the one
that reached the limit, and every one after it, right password or not) answers 429 with the login
page and a message, the same for a username that exists and one that does not.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.test import Client
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db

LIMIT = 5
LOCKED_MESSAGE = b"Too many failed logins"


def log_in(username: str, password: str, address: str):
    return Client().post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def succeeded(response) -> bool:
    return response.status_code == 302 and response["Location"] == reverse("chat:index")


def locked(response) -> bool:
    return response.status_code == 429 and LOCKED_MESSAGE in response.content


def test_a_wrong_password_is_an_ordinary_failure_before_the_limit(alice):
    response = log_in("alice", "wrong", "192.0.2.1")
    assert response.status_code == 200 and LOCKED_MESSAGE not in response.content
    assert b"Please enter a correct username and password" in response.content


def test_a_username_is_locked_across_addresses(alice, bob):
    for n in range(LIMIT - 1):
        assert not locked(log_in("alice", "wrong", f"192.0.2.{n + 1}"))
    assert locked(log_in("alice", "wrong", f"192.0.2.{LIMIT}"))
    response = log_in("alice", "alice-password-123", "198.51.100.99")
    assert locked(response)
    assert "_auth_user_id" not in response.wsgi_request.session
    # Other users, from any of those addresses, are not affected (each address failed once).
    assert succeeded(log_in("bob", "bob-password-123", "192.0.2.1"))


def test_an_address_is_locked_across_usernames(alice, bob):
    for name in ["bob", "carol", "dave", "erin"]:
        assert not locked(log_in(name, "wrong", "203.0.113.9"))
    assert locked(log_in("frank", "wrong", "203.0.113.9"))
    assert locked(log_in("alice", "alice-password-123", "203.0.113.9"))
    assert succeeded(log_in("alice", "alice-password-123", "203.0.113.10"))


def test_the_lockout_page_is_the_login_page_with_a_message(alice):
    for _ in range(LIMIT):
        log_in("alice", "wrong", "192.0.2.1")
    response = log_in("alice", "wrong", "192.0.2.1")
    assert locked(response)
    page = response.content.decode()
    assert 'data-testid="login-locked"' in page and "Try again in 15 minutes" in page
    assert 'name="username"' in page and 'value="alice"' in page


def test_an_unknown_username_is_locked_the_same_way(alice):
    """No user enumeration: the answers for a real and a made-up username are alike."""
    answers = {}
    for name, address in [("alice", "192.0.2.1"), ("nobody", "192.0.2.2")]:
        for _ in range(LIMIT):
            log_in(name, "wrong", address)
        response = log_in(name, "wrong", address)
        page = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", response.content)
        answers[name] = (response.status_code, page.replace(name.encode(), b"NAME"))
    assert answers["alice"] == answers["nobody"]


def test_a_success_before_the_limit_clears_the_failures(alice):
    for _ in range(LIMIT - 1):
        log_in("alice", "wrong", "192.0.2.1")
    assert succeeded(log_in("alice", "alice-password-123", "192.0.2.1"))
    for _ in range(LIMIT - 1):
        assert not locked(log_in("alice", "wrong", "192.0.2.1"))
    assert succeeded(log_in("alice", "alice-password-123", "192.0.2.1"))


def test_the_lock_lifts_after_the_cool_off(alice):
    for _ in range(LIMIT):
        log_in("alice", "wrong", "192.0.2.1")
    assert locked(log_in("alice", "alice-password-123", "192.0.2.1"))
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        assert succeeded(log_in("alice", "alice-password-123", "192.0.2.1"))


def test_an_admin_unlocks_by_deleting_the_attempts(alice, superuser):
    for _ in range(LIMIT):
        log_in("alice", "wrong", "192.0.2.1")
    assert locked(log_in("alice", "alice-password-123", "192.0.2.2"))
    admin = Client()
    admin.force_login(superuser)
    changelist = reverse("admin:axes_accessattempt_changelist")
    assert b"alice" in admin.get(changelist).content
    attempts = list(AccessAttempt.objects.filter(username="alice").values_list("pk", flat=True))
    response = admin.post(
        changelist,
        {"action": "delete_selected", "_selected_action": attempts, "post": "yes"},
    )
    assert response.status_code == 302
    assert succeeded(log_in("alice", "alice-password-123", "192.0.2.2"))


def test_the_admin_login_is_throttled_too(superuser):
    for _ in range(LIMIT):
        Client().post(
            reverse("admin:login"),
            {"username": "root", "password": "wrong"},
            REMOTE_ADDR="192.0.2.1",
        )
    response = Client().post(
        reverse("admin:login"),
        {"username": "root", "password": "root-password-123"},
        REMOTE_ADDR="192.0.2.50",
    )
    assert locked(response)


def test_the_limits_come_from_the_settings(alice, settings):
    settings.AXES_FAILURE_LIMIT = 2
    assert not locked(log_in("alice", "wrong", "192.0.2.1"))
    assert locked(log_in("alice", "wrong", "192.0.2.1"))
    assert locked(log_in("alice", "alice-password-123", "192.0.2.1"))


def test_bad_login_settings_are_reported(settings):
    from chat.checks import check_login_settings

    assert check_login_settings() == []
    settings.LOGIN_FAILURE_LIMIT = 0
    settings.LOGIN_LOCKOUT_BY = ["username", ["ip_address", "email"]]
    assert {error.id for error in check_login_settings()} == {"claudeweb.E040", "claudeweb.E042"}
