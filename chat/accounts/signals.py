"""When sessions end: the signals that call chat/accounts/sessions.py.

Connected in `ChatConfig.ready`. They see every path that changes a user, not only this app's
pages: the admin's user form and its password form, the password change and reset pages,
`manage.py changepassword`, the shell. A bulk `QuerySet.update(is_active=False)` sends no
signal; its users' sockets close at their next frame (`session_is_live`), and Django refuses
their sessions on the next request.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db.models.signals import post_save, pre_delete, pre_save
from django.dispatch import receiver

from chat.accounts import sessions

WATCHED_FIELDS = {"password", "is_active"}


@receiver(user_logged_in, dispatch_uid="chat.accounts.record_login")
def record_login(sender, request, user, **kwargs) -> None:
    session = getattr(request, "session", None)
    if session is not None and session.session_key:
        sessions.record_login(user=user, session_key=session.session_key)


@receiver(user_logged_out, dispatch_uid="chat.accounts.end_on_logout")
def end_on_logout(sender, request, user, **kwargs) -> None:
    # Django deletes the session right after this signal (session.flush()).
    session = getattr(request, "session", None)
    if user is not None and session is not None and session.session_key:
        sessions.end_session(user_id=user.pk, session_key=session.session_key, reason="logout")


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="chat.accounts.before_save")
def remember_account_state(sender, instance, update_fields=None, **kwargs) -> None:
    """Read the stored password and active flag before a save that may change them."""
    if instance.pk is None or (update_fields is not None and not WATCHED_FIELDS & update_fields):
        return  # a new user, or e.g. `last_login` alone (every login saves it)
    instance._account_before = (
        sender.objects.filter(pk=instance.pk).values_list("password", "is_active").first()
    )


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="chat.accounts.after_save")
def end_sessions_when_access_changes(sender, instance, created, **kwargs) -> None:
    before = instance.__dict__.pop("_account_before", None)
    if created or before is None:
        return
    password_before, active_before = before
    if active_before and not instance.is_active:
        sessions.end_user_sessions(instance, reason="deactivated")
    elif instance.password != password_before:
        # The password change page keeps its own session: Django gives it a new key after this
        # save (update_session_auth_hash), and the page records that key.
        sessions.end_user_sessions(instance, reason="password_changed")


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="chat.accounts.on_delete")
def end_sessions_of_deleted_user(sender, instance, **kwargs) -> None:
    sessions.end_user_sessions(instance, reason="deleted")
