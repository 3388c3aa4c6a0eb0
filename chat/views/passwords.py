"""Accounts: changing a password, and what the login page says to a locked-out client.

Resetting a password by mail is Django's own views, with the app's templates (claudeweb/urls.py).
Login throttling is django-axes (claudeweb/settings.py, docs/deploy.md); it calls the two
functions at the end of this module.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse_lazy

from chat.accounts import sessions
from chat.views.accounts import sso_context


def with_password_login(view: Callable) -> Callable:
    """The password pages exist only while passwords log in (PASSWORD_LOGIN): with single
    sign-on alone they answer 404, so no password can be set or reset behind the provider."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not settings.PASSWORD_LOGIN:
            raise Http404("password login is off")
        return view(request, *args, **kwargs)

    return wrapped


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's, styled as the app; every other session of the user ends (and its sockets)."""

    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("chat:settings")

    def form_valid(self, form):
        # Saving the password ends all the user's sessions (chat/accounts/signals.py); Django
        # then gives this one a new key, which is recorded so it can be ended in turn.
        response = super().form_valid(form)
        sessions.record_login(user=form.user, session_key=self.request.session.session_key)
        flash.success(self.request, "Password changed. You were signed out everywhere else.")
        return response


def client_address(request: HttpRequest) -> str | None:
    """The address failures are counted against: REMOTE_ADDR, which Daphne sets from the
    proxy's X-Forwarded-For under --proxy-headers (docs/deploy.md), never a header read here."""
    return request.META.get("REMOTE_ADDR")


def locked_out(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """The login page again, saying why no password is checked now (HTTP 429)."""
    if credentials is None and isinstance(original_response, dict):
        # axes' async middleware (the path under Daphne) passes the credentials second.
        credentials = original_response
    minutes = settings.LOGIN_COOLOFF_MINUTES
    if minutes:
        wait = f"Try again in {minutes} minute{'s' if minutes != 1 else ''}"
    else:
        wait = "Ask an admin to unlock it"
    message = (
        f"Too many failed logins: logging in is blocked for now. {wait}, or reset your password."
    )
    form = AuthenticationForm(request, initial={"username": (credentials or {}).get("username")})
    context = {
        "form": form,
        "locked_out": message,
        "next": request.POST.get("next", ""),
        **sso_context(),
    }
    return render(request, "registration/login.html", context, status=429)
