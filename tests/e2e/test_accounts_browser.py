"""Accounts in the browser: an open chat tab whose user is deactivated (from another process,
through Redis) is told at once and taken to the login page; the password pages pass axe."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.test_ui_a11y_browser import serious_violations
from tests.e2e.test_ui_browser import PASSWORD, login, make_user, manage_shell


def test_a_deactivated_users_open_tab_goes_to_the_login_page(page, app_server, app_env):
    name = make_user(app_env)
    login(page, app_server, name)
    page.get_by_test_id("composer").fill("Hello [[offline reply pace_ms=1]]")
    page.get_by_test_id("composer").press("Enter")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    expect(page.locator('[data-testid="message"][data-role="assistant"]')).to_have_attribute(
        "data-status", "done", timeout=15000
    )
    manage_shell(
        app_env,
        "from django.contrib.auth import get_user_model\n"
        f"u = get_user_model().objects.get(username={name!r})\n"
        "u.is_active = False\n"
        "u.save()\n",
    )
    # The socket closes with 4401; the page says so and goes to the login page.
    expect(page).to_have_url(re.compile(r"/login/"), timeout=5000)
    page.goto(app_server + "/")
    expect(page).to_have_url(re.compile(r"/login/"))


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_password_pages_pass_axe(browser, app_server, app_env, scheme):
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, color_scheme=scheme, bypass_csp=True
    )
    page = context.new_page()
    page.goto(app_server + "/password/reset/")
    assert serious_violations(page) == []
    page.get_by_test_id("email").fill("nobody@example.com")
    page.get_by_test_id("password-reset-submit").click()
    expect(page.get_by_test_id("password-reset-sent")).to_be_visible()
    assert serious_violations(page) == []

    login(page, app_server, make_user(app_env))
    page.goto(app_server + "/settings/")
    page.get_by_test_id("password-change-link").click()
    page.get_by_test_id("new_password1").fill("short")
    page.get_by_test_id("password-change-submit").click()
    expect(page.get_by_test_id("password-change")).to_contain_text("This field is required")
    assert serious_violations(page) == []
    page.get_by_test_id("old_password").fill(PASSWORD)
    page.get_by_test_id("new_password1").fill("another-long-passphrase")
    page.get_by_test_id("new_password2").fill("another-long-passphrase")
    page.get_by_test_id("password-change-submit").click()
    expect(page).to_have_url(app_server + "/settings/")
    expect(page.locator(".flash-success")).to_contain_text("Password changed")
    context.close()
