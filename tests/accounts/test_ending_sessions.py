"""Ending sessions at once (chat/accounts/sessions.py, docs/protocol.md "Connecting").

Deactivation ends every session of the user, a logout its own, a password change every other;
each ended session's open sockets close with 4401 within a second. A socket also checks its
session at every frame: expired or deleted, or its user inactive, and it closes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.urls import reverse
from django.utils import timezone

from chat.accounts import sessions
from chat.models import Message, UserSession
from tests.accounts.conftest import (
    CLOSE_UNAUTHENTICATED,
    CLOSE_WITHIN_S,
    browser,
    close_code,
    session_key,
    still_serves,
)
from tests.conftest import recv_until, send_frame
from tests.support.admin_forms import user_change_form

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("finish_replies")]


async def exists(queryset) -> bool:
    return await sync_to_async(queryset.exists)()


async def test_a_login_is_mapped_to_its_user_and_a_logout_removes_it(alice):
    tab = await browser(alice)
    key = session_key(tab)
    assert await exists(UserSession.objects.filter(session_id=key, user=alice))
    await sync_to_async(tab.post)(reverse("logout"))
    assert not await exists(Session.objects.filter(session_key=key))
    assert not await exists(UserSession.objects.filter(session_id=key))


async def test_deactivating_a_user_in_the_admin_closes_their_sockets_at_once(
    alice, bob, superuser, conversation, sockets
):
    laptop, phone = await browser(alice), await browser(alice)
    keys = [session_key(laptop), session_key(phone)]
    on_laptop = [await sockets(laptop, conversation.pk), await sockets(laptop, conversation.pk)]
    on_phone = await sockets(phone, conversation.pk)
    bobs_conversation = await sync_to_async(_conversation_of)(bob)
    bobs = await sockets(await browser(bob), bobs_conversation.pk)
    admin = await browser(superuser)

    url = reverse("admin:auth_user_change", args=[alice.pk])
    response = await sync_to_async(admin.post)(url, user_change_form(alice, is_active=False))
    assert response.status_code == 302

    for socket in [*on_laptop, on_phone]:
        assert await close_code(socket) == CLOSE_UNAUTHENTICATED
    assert not await exists(Session.objects.filter(session_key__in=keys))
    assert (await sync_to_async(laptop.get)("/")).status_code == 302
    assert await still_serves(bobs)


async def test_logging_out_closes_the_sockets_of_that_session_only(alice, conversation, sockets):
    tab, other_browser = await browser(alice), await browser(alice)
    mine = [await sockets(tab, conversation.pk), await sockets(tab, conversation.pk)]
    theirs = await sockets(other_browser, conversation.pk)

    response = await sync_to_async(tab.post)(reverse("logout"))
    assert response.status_code == 302

    for socket in mine:
        assert await close_code(socket) == CLOSE_UNAUTHENTICATED
    assert await still_serves(theirs)
    assert (await sync_to_async(other_browser.get)("/")).status_code == 200


async def test_changing_the_password_ends_every_other_session(alice, conversation, sockets):
    here, elsewhere = await browser(alice), await browser(alice)
    other_key = session_key(elsewhere)
    on_elsewhere = await sockets(elsewhere, conversation.pk)

    response = await sync_to_async(here.post)(
        reverse("password_change"),
        {
            "old_password": "alice-password-123",
            "new_password1": "a-new-long-passphrase",
            "new_password2": "a-new-long-passphrase",
        },
    )
    assert response.status_code == 302 and response["Location"] == reverse("chat:settings")

    assert await close_code(on_elsewhere) == CLOSE_UNAUTHENTICATED
    assert not await exists(Session.objects.filter(session_key=other_key))
    assert (await sync_to_async(elsewhere.get)("/")).status_code == 302
    # This browser stays logged in, under a new session key that is mapped to alice in turn.
    assert (await sync_to_async(here.get)("/")).status_code == 200
    assert await exists(UserSession.objects.filter(session_id=session_key(here), user=alice))
    assert session_key(here) != other_key


async def test_a_socket_whose_session_expired_closes_at_its_next_frame(
    alice, conversation, sockets
):
    tab = await browser(alice)
    socket = await sockets(tab, conversation.pk)
    assert await still_serves(socket)
    await sync_to_async(Session.objects.filter(session_key=session_key(tab)).update)(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    await socket.send_json_to({"type": "stop"})
    assert await close_code(socket) == CLOSE_UNAUTHENTICATED


async def test_a_socket_whose_session_was_deleted_closes_at_its_next_frame(
    alice, conversation, sockets
):
    """`manage.py clearsessions`, or a session deleted by hand: no message, the frame tells."""
    tab = await browser(alice)
    socket = await sockets(tab, conversation.pk)
    await sync_to_async(Session.objects.filter(session_key=session_key(tab)).delete)()
    await socket.send_json_to({"type": "stop"})
    assert await close_code(socket) == CLOSE_UNAUTHENTICATED


async def test_a_user_deactivated_without_signals_is_closed_at_the_next_frame(
    alice, conversation, sockets
):
    """A bulk update sends no signal: the socket's check at each frame still refuses it."""
    tab = await browser(alice)
    socket = await sockets(tab, conversation.pk)
    await sync_to_async(type(alice).objects.filter(pk=alice.pk).update)(is_active=False)
    await socket.send_json_to({"type": "resume", "after_seq": 0})
    assert await close_code(socket) == CLOSE_UNAUTHENTICATED


async def test_end_user_sessions_can_keep_one_session(alice, conversation, sockets):
    """The function another sign-in method calls: all sessions but one end, with their sockets."""
    kept, ended = await browser(alice), await browser(alice)
    on_kept = await sockets(kept, conversation.pk)
    on_ended = await sockets(ended, conversation.pk)

    count = await sync_to_async(sessions.end_user_sessions)(
        alice, reason="sso_logout", keep_session_key=session_key(kept)
    )

    assert count == 1
    assert await close_code(on_ended) == CLOSE_UNAUTHENTICATED
    assert await still_serves(on_kept)
    assert await exists(Session.objects.filter(session_key=session_key(kept)))
    assert not await exists(Session.objects.filter(session_key=session_key(ended)))


async def test_deleting_a_user_closes_their_sockets(alice, superuser, conversation, sockets):
    tab = await browser(alice)
    socket = await sockets(tab, conversation.pk)
    await sync_to_async(alice.delete)()
    assert await close_code(socket) == CLOSE_UNAUTHENTICATED


def _conversation_of(user):
    from chat.conversations import lifecycle

    return lifecycle.conversation_create(owner=user)


def set_sso_expiry(client, seconds_from_now: float) -> None:
    """What the single sign-on callback stores: when the ID token is to be checked again."""
    store = SessionStore(session_key=session_key(client))
    store[sessions.SSO_EXPIRY_KEY] = time.time() + seconds_from_now
    store.save()


async def test_a_single_sign_on_socket_closes_when_its_id_token_expires(
    alice, conversation, sockets
):
    """With no frame sent: the socket closes by itself at the token's expiry, so the tab goes
    through a page load, which checks with the provider again."""
    tab = await browser(alice)
    await sync_to_async(set_sso_expiry)(tab, 1.0)
    socket = await sockets(tab, conversation.pk)
    assert await still_serves(socket)
    assert await close_code(socket, timeout=1.0 + CLOSE_WITHIN_S) == CLOSE_UNAUTHENTICATED


async def test_a_single_sign_on_socket_stays_open_before_its_id_token_expires(
    alice, conversation, sockets
):
    tab = await browser(alice)
    await sync_to_async(set_sso_expiry)(tab, 3600)
    socket = await sockets(tab, conversation.pk)
    assert await socket.receive_nothing(timeout=1.5)
    assert await still_serves(socket)


async def test_a_deactivated_users_running_reply_stops_as_stop_would(
    alice, conversation, sockets, settings
):
    """Deactivation closes the sockets at once; a reply of the user's already running stops at
    the next checkpoint tick, its text so far kept, instead of running (and costing) to its end."""
    settings.STREAM_CHECKPOINT_S = 0.2
    tab = await browser(alice)
    socket = await sockets(tab, conversation.pk)
    await socket.send_json_to(send_frame("[[offline words=400 pace_ms=20]]"))  # about 8 s
    message_id = (await recv_until(socket, "delta"))[-1]["message_id"]
    alice.is_active = False
    await sync_to_async(alice.save)()
    output = await socket.receive_output(timeout=CLOSE_WITHIN_S)
    while output["type"] == "websocket.send":  # deltas already on their way
        output = await socket.receive_output(timeout=CLOSE_WITHIN_S)
    assert (output["type"], output["code"]) == ("websocket.close", CLOSE_UNAUTHENTICATED)
    for _ in range(300):  # the reply's end, waited for (bounded), not slept through
        reply = await Message.objects.aget(pk=message_id)
        if reply.status != Message.Status.STREAMING:
            break
        await asyncio.sleep(0.01)
    assert (reply.status, reply.stop_reason) == (Message.Status.DONE, "stopped")
    assert 0 < len(reply.text.split()) < 400
