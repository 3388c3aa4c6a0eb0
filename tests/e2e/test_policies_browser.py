"""In headless Chromium: a user whose group policy allows two models, efforts up to medium, no
web search and no documents is offered only those, and a send goes to an allowed model."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.test_ui_browser import login, make_user, manage_shell

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
CONVERSATION_URL = re.compile(r"/c/(\d+)/$")
ALLOWED = ["claude-haiku-5-5", "claude-opus-5"]


def restrict(app_env, username: str) -> None:
    manage_shell(
        app_env,
        "from django.contrib.auth import get_user_model\n"
        "from django.contrib.auth.models import Group\n"
        "from chat.models import GroupPolicy\n"
        f"group = Group.objects.create(name='interns-' + {username!r})\n"
        f"group.user_set.add(get_user_model().objects.get(username={username!r}))\n"
        "GroupPolicy.objects.create(group=group, allowed_models="
        f"{ALLOWED!r}, max_effort='medium', web_search=False, documents=False)",
    )


@pytest.fixture
def restricted(page, app_server, app_env):
    username = make_user(app_env)
    restrict(app_env, username)
    login(page, app_server, username)
    return page


def test_the_page_offers_only_what_the_policy_allows(restricted):
    page = restricted
    picker = page.get_by_test_id("model-picker")
    expect(picker).to_be_visible()
    offered = picker.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert offered == ALLOWED
    expect(picker).to_have_value("claude-haiku-5-5")  # the server's default is not allowed
    # The server allows search; this user's policy does not: no switch at all.
    expect(page.get_by_test_id("web-search-toggle")).to_have_count(0)
    expect(page.get_by_test_id("web-search-setting")).to_have_count(0)
    picker.select_option("claude-opus-5")
    levels = page.get_by_test_id("thinking-picker").locator("option")
    values = levels.evaluate_all("options => options.map(o => o.value)")
    assert [v for v in values if v] == ["low", "medium"]
    accept = page.get_by_test_id("attach-input").get_attribute("accept")
    assert "image/png" in accept and "pdf" not in accept

    page.get_by_test_id("composer").fill("Hello [[offline words=4 pace_ms=1]]")
    page.get_by_test_id("composer").press("Enter")
    page.wait_for_url(CONVERSATION_URL)
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "done", timeout=15000)
    expect(page.get_by_test_id("model-picker")).to_have_value("claude-opus-5")
    assert page.errors == []
