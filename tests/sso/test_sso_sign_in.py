"""Signing in with the provider: users matched by (issuer, sub), created and updated from the
claims, usernames made unique, and the groups claim synced (docs/admin.md, Single sign-on)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from chat.models import Identity, SsoGroupMembership
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

User = get_user_model()


def groups_of(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def test_first_sign_in_creates_the_user_from_the_claims(browser, sso):
    response = browser.sign_in("sub-alice")
    assert response.status_code == 302 and response["Location"] == "/"
    user = browser.user()
    assert user.is_authenticated
    assert (user.username, user.email, user.first_name, user.last_name) == (
        "alice",
        "alice@example.test",
        "Alice",
        "Liddell",
    )
    assert not user.has_usable_password()
    identity = Identity.objects.get(user=user)
    assert (identity.issuer, identity.subject) == (sso.issuer, "sub-alice")
    assert groups_of(user) == {"researchers", "staff-chat"}
    assert browser.app.get("/").status_code == 200


def test_a_second_sign_in_finds_the_same_user(browser):
    browser.sign_in("sub-alice")
    first = browser.user()
    browser.app.post("/logout/")
    browser.sign_in("sub-alice")
    assert browser.user().pk == first.pk
    assert User.objects.count() == 1 and Identity.objects.count() == 1


def test_users_are_matched_by_sub_never_by_email(browser):
    """A password account with the provider's email is not taken over: SSO makes its own."""
    local = make_user("alice-local", email="alice@example.test")
    browser.sign_in("sub-alice")
    user = browser.user()
    assert user.pk != local.pk
    assert user.email == local.email == "alice@example.test"
    assert not Identity.objects.filter(user=local).exists()


def test_a_taken_username_is_made_unique(browser):
    bob = make_user("bob")
    browser.sign_in("sub-bob")
    user = browser.user()
    assert user.pk != bob.pk
    assert user.username == "bob-2"


def test_a_changed_email_and_username_update_the_user_not_a_new_one(browser, sso):
    browser.sign_in("sub-bob")
    bob = browser.user()
    browser.app.post("/logout/")
    sso.set_account("sub-bob", email="robert@example.test", preferred_username="robert")
    try:
        browser.sign_in("sub-bob")
        user = browser.user()
        assert user.pk == bob.pk
        assert (user.username, user.email) == ("robert", "robert@example.test")
        assert User.objects.count() == 1
    finally:
        sso.set_account("sub-bob", email="bob@example.test", preferred_username="bob")


def test_the_username_claim_is_configurable(browser, settings):
    settings.OIDC_USERNAME_CLAIM = "email"
    browser.sign_in("sub-carol")
    assert browser.user().username == "carol@example.test"


def test_groups_follow_the_claim_and_hand_made_memberships_stay(browser, sso):
    sso.set_account("sub-carol", groups=["editors", "readers"])
    try:
        browser.sign_in("sub-carol")
        carol = browser.user()
        assert groups_of(carol) == {"editors", "readers"}
        # An admin adds carol to two groups by hand: one the claim never names, one it will.
        carol.groups.add(
            Group.objects.create(name="by-hand"), Group.objects.create(name="auditors")
        )
        browser.app.post("/logout/")

        sso.set_account("sub-carol", groups=["readers", "auditors"])
        browser.sign_in("sub-carol")
        assert groups_of(carol) == {"readers", "auditors", "by-hand"}
        browser.app.post("/logout/")

        sso.set_account("sub-carol", groups=[])
        browser.sign_in("sub-carol")
        # SSO's own memberships are gone; the two an admin made stay, though the claim named one.
        assert groups_of(carol) == {"by-hand", "auditors"}
        assert not SsoGroupMembership.objects.filter(user=carol).exists()
        assert Group.objects.filter(name="editors").exists()  # groups are never deleted
    finally:
        sso.set_account("sub-carol", groups=[])


def test_the_groups_claim_is_configurable(browser, sso, settings):
    settings.OIDC_GROUPS_CLAIM = "roles"
    sso.set_account("sub-carol", roles=["from-roles"], groups=["from-groups"])
    try:
        browser.sign_in("sub-carol")
        assert groups_of(browser.user()) == {"from-roles"}
    finally:
        sso.set_account("sub-carol", groups=[], roles=[])


@pytest.mark.django_db(transaction=True)
def test_two_first_sign_ins_at_once_make_one_user(sso):
    """The second first sign-in waits on the first's insert, fails on the unique (issuer, sub),
    and is tried again: both get the same user, and nobody gets an error."""
    import threading

    from django.db import connection, connections, transaction

    from chat.accounts import identities

    claims = {"sub": "sub-race", "preferred_username": "racer", "groups": ["researchers"]}
    first_done, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        try:
            with transaction.atomic():  # holds its new rows uncommitted until released
                results["first"] = identities.sign_in(issuer=sso.issuer, claims=claims).pk
                first_done.set()
                assert release.wait(30)
        finally:
            connections.close_all()

    def second() -> None:
        try:
            results["second"] = identities.sign_in(issuer=sso.issuer, claims=claims).pk
        except Exception as exc:  # noqa: BLE001 - the test reports it
            results["second"] = exc
        finally:
            connections.close_all()

    a = threading.Thread(target=first)
    a.start()
    assert first_done.wait(30)
    b = threading.Thread(target=second)
    b.start()
    # Wait until the second sign-in is blocked on the first's uncommitted rows.
    with connection.cursor() as cursor:
        for _ in range(3000):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                break
            threading.Event().wait(0.01)
        else:
            pytest.fail("the second sign-in never waited on the first")
    release.set()
    a.join(30)
    b.join(30)
    assert results["second"] == results["first"], results
    assert User.objects.filter(username__startswith="racer").count() == 1
    assert Identity.objects.filter(subject="sub-race").count() == 1
