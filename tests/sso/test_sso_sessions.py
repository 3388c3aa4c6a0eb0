"""A single sign-on session: logout through the provider's end_session_endpoint, the silent
re-check (prompt=none) once the ID token has expired, and a user disabled at the provider."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from chat.accounts.backend import EXPIRY_KEY, ID_TOKEN_KEY
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

PAGE = {"HTTP_ACCEPT": "text/html,application/xhtml+xml", "HTTP_SEC_FETCH_MODE": "navigate"}


def wait_until_expired(browser) -> None:
    """Wait for the session's ID token to expire (its `exp`, a few seconds away)."""
    expiry = browser.app.session[EXPIRY_KEY]
    deadline = time.monotonic() + 30
    while time.time() <= expiry:
        assert time.monotonic() < deadline, "the ID token never expired"
        time.sleep(0.1)


@pytest.fixture
def short_tokens(sso):
    sso.set_id_token_ttl(2)
    yield sso
    sso.set_id_token_ttl(3600)


def test_logout_ends_the_session_and_goes_through_the_providers_logout(browser, sso):
    browser.sign_in("sub-alice")
    id_token = browser.app.session[ID_TOKEN_KEY]
    response = browser.app.post("/logout/")
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == sso.issuer + "/session/end"
    query = parse_qs(location.query)
    assert query["id_token_hint"] == [id_token]
    assert query["post_logout_redirect_uri"] == ["http://testserver/login/"]
    assert not browser.user().is_authenticated
    assert browser.app.get("/")["Location"].startswith("/login/")


def test_a_password_session_logs_out_locally_only(sso, client):
    client.force_login(make_user("dora"))
    response = client.post("/logout/")
    assert response["Location"] == "/login/"


def test_the_session_lasts_as_long_as_the_id_token(browser, sso):
    browser.sign_in("sub-alice")
    assert abs(browser.app.session[EXPIRY_KEY] - (time.time() + 3600)) < 60
    assert browser.app.get("/", **PAGE).status_code == 200


def test_an_expired_session_is_rechecked_silently_and_goes_on(browser, sso, short_tokens):
    browser.sign_in("sub-alice")
    user = browser.user()
    sso.set_account("sub-alice", groups=["researchers"])
    try:
        wait_until_expired(browser)
        # A script's request is not redirected; a page load is, with prompt=none.
        assert browser.app.get("/c/list/", HTTP_ACCEPT="application/json").status_code == 200
        recheck = browser.app.get("/settings/", **PAGE)
        assert recheck.status_code == 302
        assert recheck["Location"].startswith(sso.issuer + "/auth?")
        assert parse_qs(urlsplit(recheck["Location"]).query)["prompt"] == ["none"]
        back = browser.follow(recheck["Location"])  # no login page: the provider knows her
        assert back["Location"] == "/settings/"
        assert browser.user().pk == user.pk
        # the re-check synced the groups again
        assert set(user.groups.values_list("name", flat=True)) == {"researchers"}
        assert browser.app.get("/settings/", **PAGE).status_code == 200
    finally:
        sso.set_account("sub-alice", groups=["researchers", "staff-chat"])


def test_a_user_disabled_at_the_provider_is_logged_out_at_the_recheck(browser, sso, short_tokens):
    browser.sign_in("sub-bob")
    sso.set_account("sub-bob", disabled=True)
    try:
        wait_until_expired(browser)
        recheck = browser.app.get("/", **PAGE)
        back = browser.follow(recheck["Location"])
        error = parse_qs(back.request["QUERY_STRING"])["error"]
        assert error in (["login_required"], ["interaction_required"])
        assert back["Location"] == "/login/"
        assert not browser.user().is_authenticated
        assert browser.app.get("/", **PAGE)["Location"].startswith("/login/")
    finally:
        sso.set_account("sub-bob", disabled=False)


def test_a_password_session_is_never_rechecked(sso, client):
    client.force_login(make_user("dora"))
    assert client.get("/", **PAGE).status_code == 200
