"""Single sign-on in Chromium, against the test OpenID provider's own login, consent and logout
pages (tests/oidc_provider/): the first sign-in makes the user with its groups, a group change at
the provider shows at the next sign-in, logout goes through the provider's end-session, and a
user disabled at the provider cannot get back in.

The app runs in a Daphne of its own here (its environment names the provider), on a port picked
before the provider starts, since the provider's client is registered for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.support.oidc import OidcProvider, oidc_provider
from tests.support.servers import (
    AppServer,
    app_environment,
    drop_database,
    free_port,
    fresh_database,
)


@pytest.fixture(scope="module")
def sso(offline_claude_url, tmp_path_factory) -> Iterator[tuple[AppServer, OidcProvider]]:
    port = free_port()
    with oidc_provider(app_url=f"http://127.0.0.1:{port}") as provider:
        database_url = fresh_database(
            f"claudeweb_e2e_sso_{os.getpid()}", tmp_path_factory.mktemp("sso-db")
        )
        env = app_environment(
            database_url=database_url, claude_url=offline_claude_url, **provider.app_settings()
        )
        server = AppServer(env, tmp_path_factory.mktemp("sso-app"))
        server.manage("migrate", "-v", "0")
        server.start(port=port)
        try:
            yield server, provider
        finally:
            server.stop()
            drop_database(database_url)


@pytest.fixture
def sso_page(page):
    # The provider's development pages @import a web font; there is no internet here.
    page.route("https://fonts.googleapis.com/**", lambda route: route.abort())
    return page


def user_record(server: AppServer, username: str) -> dict | None:
    return server.query(
        "import json\n"
        "from django.contrib.auth.models import User\n"
        f"u = User.objects.filter(identities__subject__isnull=False, username={username!r}).first()\n"
        "print(json.dumps(u and {'pk': u.pk, 'email': u.email, 'groups': sorted("
        "u.groups.values_list('name', flat=True)), 'identities': list(u.identities.values_list("
        "'subject', flat=True))}))"
    )


def signed_in_sessions(server: AppServer, username: str) -> int:
    return server.query(
        "import json\n"
        "from django.contrib.auth.models import User\n"
        "from django.contrib.sessions.models import Session\n"
        f"pk = str(User.objects.get(username={username!r}).pk)\n"
        "print(json.dumps(sum(s.get_decoded().get('_auth_user_id') == pk"
        " for s in Session.objects.all())))"
    )


def sign_in(page, server: AppServer, login: str) -> None:
    """From the app's login page through the provider's login and consent pages."""
    page.goto(server.url + "/login/")
    page.get_by_test_id("login-sso").click()
    page.locator('input[name="login"]').fill(login)
    page.locator('input[name="password"]').fill("any-password")
    page.get_by_role("button", name="Sign-in").click()
    consent = page.get_by_role("button", name="Continue")
    app_home = page.locator("#main")  # the app's pages; the provider's have none
    expect(consent.or_(app_home).first).to_be_visible()
    if consent.is_visible():
        consent.click()
    page.wait_for_url(server.url + "/")


def log_out(page, server: AppServer) -> None:
    """The app's logout, then the provider's "sign out" confirmation, back to the login page."""
    page.evaluate(
        """() => {
            const form = document.createElement("form");
            form.method = "post";
            form.action = "/logout/";
            const token = document.querySelector('meta[name="csrf-token"]').content;
            form.innerHTML = `<input type="hidden" name="csrfmiddlewaretoken" value="${token}">`;
            document.body.append(form);
            form.submit();
        }"""
    )
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(server.url + "/login/")


def test_first_sign_in_creates_the_user_with_its_groups(sso, sso_page):
    server, provider = sso
    page = sso_page
    page.goto(server.url + "/login/")
    expect(page.get_by_test_id("login-sso")).to_have_text("Sign in with Test SSO")
    sign_in(page, server, "sub-alice")
    assert page.errors == []
    alice = user_record(server, "alice")
    assert alice["email"] == "alice@example.test"
    assert alice["groups"] == ["researchers", "staff-chat"]
    assert alice["identities"] == ["sub-alice"]


def test_a_group_change_at_the_provider_shows_at_the_next_sign_in(sso, sso_page):
    server, provider = sso
    page = sso_page
    sign_in(page, server, "sub-bob")
    assert user_record(server, "bob")["groups"] == ["builders"]
    log_out(page, server)
    provider.set_account("sub-bob", groups=["builders", "reviewers"])
    try:
        sign_in(page, server, "sub-bob")
        bob = user_record(server, "bob")
        assert bob["groups"] == ["builders", "reviewers"]
    finally:
        provider.set_account("sub-bob", groups=["builders"])


def test_logout_ends_the_session_and_goes_through_the_providers_end_session(sso, sso_page):
    server, provider = sso
    page = sso_page
    sign_in(page, server, "sub-carol")
    log_out(page, server)
    # The app's session is gone …
    page.goto(server.url + "/")
    page.wait_for_url(server.url + "/login/?next=/")
    # … and so is the provider's: signing in again asks for the login, not straight through.
    page.get_by_test_id("login-sso").click()
    expect(page.locator('input[name="login"]')).to_be_visible()
    assert page.url.startswith(provider.issuer + "/interaction/")


def test_a_user_disabled_at_the_provider_cannot_get_back_in(sso, sso_page):
    server, provider = sso
    page = sso_page
    provider.set_account("sub-dave", preferred_username="dave", groups=["builders"])
    provider.set_id_token_ttl(3)
    try:
        sign_in(page, server, "sub-dave")
    finally:
        provider.set_id_token_ttl(3600)
    assert signed_in_sessions(server, "dave") == 1
    provider.set_account("sub-dave", disabled=True)
    # Wait until the session's ID token has expired (its exp, kept in the session).
    [cookie] = [c for c in page.context.cookies(server.url) if c["name"] == "sessionid"]
    expiry = server.query(
        "import json\n"
        "from django.contrib.sessions.models import Session\n"
        f"s = Session.objects.get(session_key={cookie['value']!r}).get_decoded()\n"
        "print(json.dumps(s['oidc_id_token_expiration']))"
    )
    deadline = time.monotonic() + 30
    while time.time() <= expiry:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # The next page load re-checks with the provider, which refuses: logged out here.
    page.goto(server.url + "/settings/")
    page.wait_for_url(server.url + "/login/")
    expect(page.get_by_role("status")).to_contain_text("Single sign-on did not complete")
    page.goto(server.url + "/")
    page.wait_for_url(server.url + "/login/?next=/")
    # Signing in again: the provider keeps asking for the login; the app is never reached.
    page.get_by_test_id("login-sso").click()
    for _ in range(2):
        page.locator('input[name="login"]').fill("sub-dave")
        page.locator('input[name="password"]').fill("any-password")
        page.get_by_role("button", name="Sign-in").click()
        expect(page.locator('input[name="login"]')).to_be_visible()
        assert page.url.startswith(provider.issuer)
    assert signed_in_sessions(server, "dave") == 0
