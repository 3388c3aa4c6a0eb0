"""Ending a user's sessions, and the sockets that ride on them, at once.

`end_user_sessions(user, *, reason, keep_session_key=None)` is the one way to sign a user out
everywhere: it deletes the user's sessions (all of them, or all but the one to keep) and tells
every open chat socket of the user to close. Deactivation, a password change or reset, and the
deletion of a user call it (chat/accounts/signals.py); any other sign-in method's logout (an
identity provider's back-channel logout) calls it too. `end_session` ends the sockets of one
session, for a logout whose session Django itself deletes.

Finding a user's sessions: the database session backend keeps the user inside the signed session
data, so a lookup by user would decode every row. `UserSession` maps each session key to its user:
written at login (`record_login`, on `user_logged_in`), deleted with its session (a cascade).
A session made without a login (written by hand) is not in the map; it still cannot be used
once its user is inactive or its password changed: Django checks both on every request, and a
socket checks its session at every frame (`session_is_live`).

Sockets: every chat socket joins its user's group, `user.<id>` (`user_group`). Ending sessions
sends that group one `session.end` message once the transaction commits; a socket closes (code
4401, docs/protocol.md) when the message names its session or names none, unless it names its
session as the one kept. Session keys are bearer credentials: the channel layer carries only
their digests.

Synchronous functions: async code calls them through `database_sync_to_async`.
"""

from __future__ import annotations

import hashlib
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models import Exists
from django.utils import timezone

from chat.models import UserSession

log = logging.getLogger(__name__)

SESSION_END = "session.end"


def user_group(user_id: int) -> str:
    """The channel-layer group every chat socket of the user joins."""
    return f"user.{user_id}"


def session_digest(session_key: str | None) -> str | None:
    if not session_key:
        return None
    return hashlib.sha256(session_key.encode()).hexdigest()


def record_login(*, user, session_key: str) -> None:
    """Remember that `session_key` is a session of `user` (its session row must exist)."""
    UserSession.objects.update_or_create(session_id=session_key, defaults={"user_id": user.pk})


def session_is_live(*, session_key: str | None, user_id: int) -> bool:
    """One query: the session exists and has not expired, and its user exists and is active."""
    if not session_key:
        return False
    live = Session.objects.filter(session_key=session_key, expire_date__gt=timezone.now())
    users = get_user_model().objects.filter(pk=user_id, is_active=True)
    return users.filter(Exists(live)).exists()


# Where mozilla-django-oidc keeps when a single sign-on session must be checked with the
# provider again (a time.time() value; chat/accounts/middleware.py re-checks on page loads).
SSO_EXPIRY_KEY = "oidc_id_token_expiration"


def sso_expiry(session) -> float | None:
    """When a single sign-on session's ID token expires (seconds since the epoch); None for a
    password session. Reads the session store: call it from sync code."""
    value = session.get(SSO_EXPIRY_KEY)
    return float(value) if isinstance(value, int | float) else None


def end_user_sessions(user, *, reason: str, keep_session_key: str | None = None) -> int:
    """End every session of `user` but `keep_session_key`, and close their sockets.

    Deletes the sessions the map knows (in the caller's transaction, if any) and, once that
    commits, sends `session.end` to the user's sockets: each closes within moments (a channel
    layer message), whatever process holds it. `reason` is a short word for the logs
    ("deactivated", "password_changed", "sso_logout", …). Returns how many sessions were deleted.
    A channel layer that cannot be reached is logged, not raised: the sessions are gone, and each
    socket then closes at its next frame.
    """
    with transaction.atomic():
        keys = list(
            UserSession.objects.filter(user_id=user.pk)
            .exclude(session_id=keep_session_key or "")
            .values_list("session_id", flat=True)
        )
        Session.objects.filter(session_key__in=keys).delete()  # their map rows go with them
    message = {
        "type": SESSION_END,
        "reason": reason,
        "only": None,
        "keep": session_digest(keep_session_key),
    }
    transaction.on_commit(lambda: _tell_sockets(user.pk, message), robust=True)
    log.info("ended %d sessions of user %s (%s)", len(keys), user.pk, reason)
    return len(keys)


def end_session(*, user_id: int, session_key: str, reason: str) -> None:
    """Close the sockets of one session (a logout; Django deletes the session itself)."""
    message = {
        "type": SESSION_END,
        "reason": reason,
        "only": session_digest(session_key),
        "keep": None,
    }
    transaction.on_commit(lambda: _tell_sockets(user_id, message), robust=True)


def socket_must_close(message: dict, session_key: str | None) -> bool:
    """Whether a socket of `session_key` closes on this `session.end` message."""
    mine = session_digest(session_key)
    if message.get("only") not in (None, mine):
        return False
    return message.get("keep") is None or message["keep"] != mine


def _tell_sockets(user_id: int, message: dict) -> None:
    async_to_sync(get_channel_layer().group_send)(user_group(user_id), message)
