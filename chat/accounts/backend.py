"""The authentication backend for single sign-on: mozilla-django-oidc's, with the endpoints
from discovery, the ID token's issuer and audience checked, and users matched by (issuer, sub)
(chat.accounts.identities) rather than by email."""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from chat.accounts import discovery, identities

log = logging.getLogger(__name__)

# The session keys mozilla-django-oidc reads: the ID token (for the provider's logout) and when
# the SessionRefresh middleware re-checks the session with the provider (a Unix time).
ID_TOKEN_KEY = "oidc_id_token"  # noqa: S105 (a session key, not a secret)
EXPIRY_KEY = "oidc_id_token_expiration"


class SsoBackend(OIDCAuthenticationBackend):
    get_settings = staticmethod(discovery.setting)

    def __init__(self, *args, **kwargs) -> None:
        # Django makes a backend for every authenticate() and every session's get_user(): the
        # provider is only asked (discovery) when a sign-in needs its endpoints.
        self.UserModel = get_user_model()

    def __getattr__(self, name: str):
        if name.startswith("OIDC_"):
            return self.get_settings(name, None)
        raise AttributeError(name)

    def authenticate(self, request, **kwargs):
        # Only the callback view passes a nonce; a password sign-in is not ours.
        if not discovery.sso_enabled() or "nonce" not in kwargs:
            return None
        return super().authenticate(request, **kwargs)

    def verify_token(self, token, **kwargs):
        payload = super().verify_token(token, **kwargs)
        if "nonce" in kwargs:  # the ID token (verify_token also reads signed user info)
            audience = payload.get("aud")
            audiences = audience if isinstance(audience, list) else [audience]
            if payload.get("iss") != discovery.provider().issuer:
                raise SuspiciousOperation("the ID token is from another issuer")
            if self.OIDC_RP_CLIENT_ID not in audiences:
                raise SuspiciousOperation("the ID token is for another client")
            self.request.session[EXPIRY_KEY] = payload.get("exp", 0)
        return payload

    def get_userinfo(self, access_token, id_token, payload):
        """The ID token's claims with the user info endpoint's over them (some providers put
        groups in one, some in the other); both must name the same `sub`."""
        userinfo = super().get_userinfo(access_token, id_token, payload)
        if userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("the user info is about another subject")
        return {**payload, **userinfo}

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        try:
            return identities.sign_in(issuer=discovery.provider().issuer, claims=claims)
        except identities.ClaimsError as exc:
            raise SuspiciousOperation(str(exc)) from None
