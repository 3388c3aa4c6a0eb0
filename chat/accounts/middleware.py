"""Re-checks a single sign-on session with the provider once its ID token has expired.

mozilla-django-oidc's SessionRefresh: on the first page load after the ID token's `exp`, the
browser is sent to the provider with prompt=none. A user still signed in there comes straight
back (groups synced again); one disabled or signed out there comes back with an error, and the
callback logs them out. Only page loads are re-checked: a script's fetch cannot follow the
provider's redirects, and the next page load does the check. Password sessions are never
re-checked, and nothing happens while SSO is off.
"""

from __future__ import annotations

import logging

from django.urls import reverse
from django.utils.functional import cached_property
from mozilla_django_oidc.middleware import SessionRefresh

from chat.accounts import discovery

log = logging.getLogger(__name__)


class SsoSessionRefresh(SessionRefresh):
    get_settings = staticmethod(discovery.setting)

    def __init__(self, get_response) -> None:
        # The parent reads the authorization endpoint here; it is read when needed instead
        # (the property below), so the app starts while the provider is down.
        super(SessionRefresh, self).__init__(get_response)
        self.OIDC_EXEMPT_URLS = []
        self.OIDC_AUTHENTICATION_CALLBACK_URL = "oidc_authentication_callback"
        self.OIDC_USE_NONCE = True
        self.OIDC_STATE_SIZE = 32
        self.OIDC_NONCE_SIZE = 32

    @property
    def OIDC_OP_AUTHORIZATION_ENDPOINT(self) -> str:  # noqa: N802 (the parent's name)
        return discovery.provider().authorization_endpoint

    @property
    def OIDC_RP_CLIENT_ID(self) -> str:  # noqa: N802
        return self.get_settings("OIDC_RP_CLIENT_ID")

    @property
    def OIDC_RP_SCOPES(self) -> str:  # noqa: N802
        return self.get_settings("OIDC_RP_SCOPES")

    @cached_property
    def exempt_urls(self) -> set[str]:
        return {
            reverse(name)
            for name in ("oidc_authentication_init", "oidc_authentication_callback", "logout")
        }

    def is_refreshable_url(self, request) -> bool:
        if not discovery.sso_enabled():
            return False
        navigating = request.headers.get("Sec-Fetch-Mode", "navigate") == "navigate"
        wants_html = "text/html" in request.headers.get("Accept", "")
        return navigating and wants_html and super().is_refreshable_url(request)

    def process_request(self, request):
        try:
            return super().process_request(request)
        except discovery.SsoUnavailable as exc:
            # The provider is down: the session goes on until it answers again.
            log.warning("single sign-on re-check skipped: %s", exc)
            return None
