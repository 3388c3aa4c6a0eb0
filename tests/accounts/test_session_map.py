"""The session-to-user map (chat.models.UserSession): written at login, gone with its session,
and filled for sessions that logged in before it existed (migration 0013)."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from chat.models import UserSession

pytestmark = pytest.mark.django_db


def session_of(user=None, *, expired: bool = False) -> str:
    store = SessionStore()
    if user is not None:
        store["_auth_user_id"] = str(user.pk)
        store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        store["_auth_user_hash"] = user.get_session_auth_hash()
    store["seen"] = True
    store.create()
    if expired:
        Session.objects.filter(session_key=store.session_key).update(
            expire_date=timezone.now() - timedelta(days=1)
        )
    return store.session_key


def test_the_migration_maps_sessions_logged_in_before_it(alice, bob):
    alices, bobs = session_of(alice), session_of(bob)
    session_of()  # anonymous
    session_of(alice, expired=True)
    gone = session_of(bob)
    bob_id = bob.pk
    UserSession.objects.all().delete()
    Session.objects.filter(session_key=gone).update(
        session_data=SessionStore().encode({"_auth_user_id": "999999"})
    )

    import_module("chat.migrations.0013_user_sessions").map_existing_sessions(apps, None)

    assert set(UserSession.objects.values_list("session_id", "user_id")) == {
        (alices, alice.pk),
        (bobs, bob_id),
    }


def test_a_deleted_session_takes_its_map_row_with_it(alice, client):
    client.force_login(alice)
    key = client.cookies["sessionid"].value
    assert UserSession.objects.filter(session_id=key, user=alice).exists()
    Session.objects.filter(session_key=key).delete()  # as clearsessions does
    assert not UserSession.objects.filter(session_id=key).exists()


def test_the_admins_own_password_page_keeps_its_session_mapped(superuser, client):
    other = type(client)()
    other.force_login(superuser)
    client.force_login(superuser)
    response = client.post(
        "/admin/password_change/",
        {
            "old_password": "root-password-123",
            "new_password1": "a-new-long-passphrase",
            "new_password2": "a-new-long-passphrase",
        },
    )
    assert response.status_code == 302
    key = client.cookies["sessionid"].value
    assert UserSession.objects.filter(session_id=key, user=superuser).exists()
    assert not Session.objects.filter(session_key=other.cookies["sessionid"].value).exists()
    assert client.get("/admin/").status_code == 200
