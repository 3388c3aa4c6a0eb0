"""Single sign-on's configuration: off by default, the system check against half a
configuration, PASSWORD_LOGIN off, the login page, and a provider that does not answer."""

from __future__ import annotations

import socket

import pytest
from django.core.checks import run_checks

from chat.accounts import discovery
from tests.conftest import make_user
from tests.support.oidc import sign_in_at_provider

pytestmark = pytest.mark.django_db


def check_ids(settings, **values) -> set[str]:
    for name, value in values.items():
        setattr(settings, name, value)
    return {m.id for m in run_checks() if m.id.startswith("claudeweb.E03")}


# --- off by default ------------------------------------------------------------------------------


def test_without_an_issuer_the_sso_routes_are_not_found_and_the_login_page_is_unchanged(client):
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404
    page = client.get("/login/").content.decode()
    assert 'data-testid="login-username"' in page
    assert "Sign in with" not in page


# --- the system check ----------------------------------------------------------------------------


def test_the_check_accepts_sso_off_and_a_whole_configuration(settings):
    assert check_ids(settings) == set()
    whole = {
        "OIDC_ISSUER": "https://sso.example.com/realms/staff",
        "OIDC_RP_CLIENT_ID": "claudeweb",
        "OIDC_RP_CLIENT_SECRET": "s3cret",
    }
    assert check_ids(settings, **whole) == set()
    assert check_ids(settings, PASSWORD_LOGIN=False) == set()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"OIDC_ISSUER": "https://sso.example.com"}, {"claudeweb.E030"}),
        (
            {"OIDC_ISSUER": "https://sso.example.com", "OIDC_RP_CLIENT_ID": "claudeweb"},
            {"claudeweb.E030"},
        ),
        ({"OIDC_RP_CLIENT_ID": "claudeweb", "OIDC_RP_CLIENT_SECRET": "s"}, {"claudeweb.E031"}),
        (
            {
                "OIDC_ISSUER": "sso.example.com",
                "OIDC_RP_CLIENT_ID": "claudeweb",
                "OIDC_RP_CLIENT_SECRET": "s",
            },
            {"claudeweb.E032"},
        ),
        ({"PASSWORD_LOGIN": False}, {"claudeweb.E033"}),
    ],
    ids=["issuer-only", "no-secret", "no-issuer", "not-a-url", "nobody-could-sign-in"],
)
def test_the_check_refuses_half_a_configuration(settings, values, expected):
    assert check_ids(settings, **values) == expected


# --- the login page ------------------------------------------------------------------------------


def test_the_login_page_offers_the_provider_by_name_escaped(sso, client, settings):
    settings.OIDC_PROVIDER_NAME = "<b>Acme</b> SSO"
    page = client.get("/login/?next=/settings/").content.decode()
    assert "Sign in with &lt;b&gt;Acme&lt;/b&gt; SSO" in page
    assert 'href="/oidc/authenticate/?next=/settings/"' in page
    assert 'data-testid="login-username"' in page  # the password form is still there


def test_sign_in_returns_to_next(browser):
    start = browser.app.get("/oidc/authenticate/?next=/settings/")
    assert browser.follow(start["Location"], login="sub-carol")["Location"] == "/settings/"


def test_sign_in_does_not_return_to_another_site(browser):
    start = browser.app.get("/oidc/authenticate/?next=https://evil.example/")
    assert browser.follow(start["Location"], login="sub-carol")["Location"] == "/"


# --- PASSWORD_LOGIN off --------------------------------------------------------------------------


@pytest.fixture
def sso_only(sso, settings):
    settings.PASSWORD_LOGIN = False
    return sso


def test_password_login_off_hides_the_form(sso_only, client):
    page = client.get("/login/").content.decode()
    assert "Sign in with Test SSO" in page
    assert 'data-testid="login-username"' not in page and 'type="password"' not in page


def test_password_login_off_refuses_a_post_even_from_a_superuser(sso_only, client, superuser):
    response = client.post("/login/", {"username": "root", "password": "root-password-123"})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session
    response = client.post("/admin/login/", {"username": "root", "password": "root-password-123"})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_password_login_off_sends_the_admin_login_to_single_sign_on(sso_only, client, superuser):
    response = client.get("/admin/login/?next=/admin/usage/")
    assert response["Location"] == "/login/?next=%2Fadmin%2Fusage%2F"
    client.force_login(superuser)
    assert client.get("/admin/login/")["Location"] == "/admin/"
    client.force_login(make_user("dora"))
    assert client.get("/admin/login/").status_code == 403


def test_an_sso_staff_user_reaches_the_admin_with_password_login_off(sso_only, browser):
    browser.sign_in("sub-alice")
    user = browser.user()
    user.is_staff = True
    user.save()
    assert browser.app.get("/admin/").status_code == 200


# --- failures ------------------------------------------------------------------------------------


def test_a_provider_that_does_not_answer_is_a_clear_error(sso, settings, client):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings.OIDC_ISSUER = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings.OIDC_TIMEOUT = 0.5
        with pytest.raises(discovery.SsoUnavailable, match=r"did not answer within 0\.5 s"):
            discovery.provider()
        response = client.get("/oidc/authenticate/")
    assert response.status_code == 503
    assert b"could not be reached" in response.content


def test_a_discovery_document_for_another_issuer_is_refused(sso, settings):
    # The same server under another name: its document names http://127.0.0.1:<port>.
    settings.OIDC_ISSUER = sso.issuer.replace("127.0.0.1", "localhost")
    with pytest.raises(discovery.SsoUnavailable, match="names the issuer"):
        discovery.fetch(settings.OIDC_ISSUER, timeout=5)


def test_the_discovery_document_is_fetched_once(sso, settings):
    first = discovery.provider()
    assert discovery.provider() is first
    assert first.end_session_endpoint == sso.issuer + "/session/end"


def test_a_callback_with_an_unknown_state_signs_nobody_in(browser):
    start = browser.app.get("/oidc/authenticate/")
    callback = sign_in_at_provider(
        start["Location"], login="sub-carol", browser=browser.at_provider
    )
    other = type(browser)()  # another browser, without this state in its session
    other.app.get("/login/")
    response = other.app.get(callback.replace("http://testserver", ""))
    assert response.status_code in (302, 400)
    assert not other.user().is_authenticated


def test_the_provider_refusing_ends_on_the_login_page_with_a_message(browser):
    start = browser.app.get("/oidc/authenticate/")
    state = start["Location"].split("state=")[1].split("&")[0]
    response = browser.app.get(f"/oidc/callback/?error=access_denied&state={state}", follow=True)
    assert response.redirect_chain[-1][0] == "/login/"
    assert b"Single sign-on did not complete" in response.content
    assert not browser.user().is_authenticated


def test_a_user_deactivated_here_cannot_sign_in_with_the_provider(browser):
    browser.sign_in("sub-carol")
    carol = browser.user()
    browser.app.post("/logout/")
    carol.is_active = False
    carol.save()
    response = browser.sign_in("sub-carol")
    assert response["Location"] == "/login/"
    assert not browser.user().is_authenticated


def test_a_user_disabled_at_the_provider_cannot_sign_in(browser, sso):
    sso.set_account("sub-carol", disabled=True)
    try:
        start = browser.app.get("/oidc/authenticate/")
        with pytest.raises(AssertionError, match="never sent the browser back"):
            sign_in_at_provider(start["Location"], login="sub-carol", browser=browser.at_provider)
        assert not browser.user().is_authenticated
    finally:
        sso.set_account("sub-carol", disabled=False)


def test_the_logout_form_may_continue_to_the_provider_only_when_sso_is_on(client, settings):
    """CSP form-action: the logout form's redirect goes on to the provider's logout."""
    policy = client.get("/login/")["Content-Security-Policy"]
    assert "form-action 'self';" in policy
    settings.OIDC_ISSUER = "https://sso.example.com/realms/staff"
    policy = client.get("/login/")["Content-Security-Policy"]
    assert "form-action 'self' https://sso.example.com;" in policy


# --- who reaches the new routes while single sign-on is on (the access matrix runs with it off) --


@pytest.mark.parametrize("role", ["anon", "user", "superuser"])
def test_with_sso_on_anyone_may_start_a_sign_in_and_a_bare_callback_signs_nobody_in(
    sso, client, role, superuser
):
    user = {"anon": None, "user": make_user("dora"), "superuser": superuser}[role]
    if user is not None:
        client.force_login(user)
    start = client.get("/oidc/authenticate/")
    assert start.status_code == 302 and start["Location"].startswith(sso.issuer + "/auth?")
    callback = client.get("/oidc/callback/")
    assert callback.status_code == 302 and callback["Location"] == "/login/"
    assert client.session.get("_auth_user_id") == (str(user.pk) if user else None)


def test_the_user_admin_shows_the_identity_read_only(browser, superuser):
    browser.sign_in("sub-carol")
    carol = browser.user()
    admin = type(browser)().app
    admin.force_login(superuser)
    page = admin.get(f"/admin/auth/user/{carol.pk}/change/").content.decode()
    assert "Single sign-on identities" in page and "sub-carol" in page
    assert 'name="identities-0-subject"' not in page  # shown, not editable
