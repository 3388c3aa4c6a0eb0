"""Signing in and out: the password form (unless PASSWORD_LOGIN is off) and single sign-on
(OpenID Connect, while OIDC_ISSUER is set) through mozilla-django-oidc's views."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib import auth
from django.contrib import messages as flash
from django.contrib.auth import views as auth_views
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.views.decorators.http import require_POST
from mozilla_django_oidc import views as oidc_views

from chat.accounts import discovery
from chat.accounts.backend import EXPIRY_KEY, ID_TOKEN_KEY

log = logging.getLogger(__name__)

SSO_FAILED = "Single sign-on did not complete. Try again, or ask an administrator."


def sso_context() -> dict:
    return {
        "sso_enabled": discovery.sso_enabled(),
        "sso_provider_name": settings.OIDC_PROVIDER_NAME,
        "password_login": settings.PASSWORD_LOGIN,
    }


class LoginView(auth_views.LoginView):
    """Django's login view; with PASSWORD_LOGIN off the form is not shown and a POST is refused."""

    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        if not settings.PASSWORD_LOGIN:
            return password_login_refused(request)
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), **sso_context()}


def password_login_refused(request: HttpRequest) -> HttpResponse:
    return render(request, "registration/password_login_off.html", sso_context(), status=403)


class SsoStartView(oidc_views.OIDCAuthenticationRequestView):
    """Sends the browser to the provider (authorization-code flow with PKCE and a nonce)."""

    get_settings = staticmethod(discovery.setting)

    def __init__(self, *args, **kwargs) -> None:
        super(oidc_views.OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)

    def get(self, request):
        if not discovery.sso_enabled():
            raise Http404("single sign-on is off")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = discovery.provider().authorization_endpoint
        except discovery.SsoUnavailable as exc:
            log.error("single sign-on: %s", exc)
            return sso_unavailable(request)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


class SsoCallbackView(oidc_views.OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back: the code is exchanged for tokens and the user
    signed in (chat.accounts.backend). Any failure ends on the login page with a message; an
    error answer to a silent re-check (prompt=none) logs the user out there."""

    get_settings = staticmethod(discovery.setting)

    def get(self, request):
        if not discovery.sso_enabled():
            raise Http404("single sign-on is off")
        try:
            return super().get(request)
        except (discovery.SsoUnavailable, requests.RequestException) as exc:
            log.error("single sign-on callback: %s", exc)
            return self.login_failure()

    def login_failure(self):
        error = self.request.GET.get("error")
        if error:
            log.info("single sign-on answered %s", error[:100])
        flash.error(self.request, SSO_FAILED)
        return HttpResponseRedirect(resolve_url(settings.LOGIN_URL))

    def login_success(self):
        # auth.login() may flush the session (another user was signed in): keep the ID token
        # and its expiry that the backend stored.
        kept = {key: self.request.session.get(key) for key in (ID_TOKEN_KEY, EXPIRY_KEY)}
        user = getattr(self.request, "user", None)
        if not user or not user.is_authenticated or user != self.user:
            auth.login(self.request, self.user, backend="chat.accounts.backend.SsoBackend")
        self.request.session.update(kept)
        return HttpResponseRedirect(self.success_url)


def sso_unavailable(request: HttpRequest) -> HttpResponse:
    return render(request, "registration/sso_unavailable.html", sso_context(), status=503)


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    """Ends the local session; a single sign-on session then goes through the provider's
    logout (end_session_endpoint) when it offers one, and comes back to the login page."""
    id_token = request.session.get(ID_TOKEN_KEY)
    # user_logged_out is sent here: whatever else a logout must end hooks that signal.
    auth.logout(request)
    back = request.build_absolute_uri(resolve_url(settings.LOGOUT_REDIRECT_URL))
    if not (discovery.sso_enabled() and id_token):
        return HttpResponseRedirect(resolve_url(settings.LOGOUT_REDIRECT_URL))
    try:
        end_session = discovery.provider().end_session_endpoint
    except discovery.SsoUnavailable as exc:
        log.error("single sign-on logout: %s", exc)
        end_session = ""
    if not end_session:
        return HttpResponseRedirect(resolve_url(settings.LOGOUT_REDIRECT_URL))
    query = urlencode(
        {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": back,
            "client_id": settings.OIDC_RP_CLIENT_ID,
        }
    )
    return HttpResponseRedirect(f"{end_session}?{query}")
