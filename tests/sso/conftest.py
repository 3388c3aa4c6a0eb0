"""Single sign-on against the real test OpenID provider (tests/oidc_provider/), the app served
by Django's test client (host `testserver`), so the provider's client is registered for
http://testserver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from django.test import Client

from chat.accounts import discovery
from tests.support.oidc import OidcProvider, oidc_provider, sign_in_at_provider

APP_URL = "http://testserver"


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with oidc_provider(app_url=APP_URL) as running:
        yield running


@pytest.fixture
def sso(provider, settings) -> OidcProvider:
    """SSO on, for this provider; the provider's discovery document fetched afresh."""
    for name, value in provider.app_settings().items():
        setattr(settings, name.replace("OIDC_CLIENT", "OIDC_RP_CLIENT"), value)
    discovery.forget()
    yield provider
    discovery.forget()


class SsoBrowser:
    """A browser as far as sign-in goes: the app's session (Django's test client) and the
    provider's cookies (a requests session)."""

    def __init__(self) -> None:
        self.app = Client()
        self.at_provider = requests.Session()

    def sign_in(self, login: str):
        """Click "Sign in", sign in at the provider as `login`, come back; the app's answer."""
        start = self.app.get("/oidc/authenticate/")
        assert start.status_code == 302, start.status_code
        return self.follow(start["Location"], login=login)

    def follow(self, provider_url: str, *, login: str = ""):
        callback = sign_in_at_provider(provider_url, login=login, browser=self.at_provider)
        assert callback.startswith(APP_URL + "/oidc/callback/"), callback
        return self.app.get(callback)

    def user(self):
        from django.contrib.auth import get_user

        class Request:
            session = self.app.session

        return get_user(Request())


@pytest.fixture
def browser(sso) -> SsoBrowser:
    return SsoBrowser()
