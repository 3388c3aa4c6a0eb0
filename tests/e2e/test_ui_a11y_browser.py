"""Accessibility: axe-core (vendored for tests only, injected here, never served in a page)
finds no serious or critical violations on the login, chat and settings pages, in both themes."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ROOT
from tests.e2e.test_ui_browser import login, make_user

AXE = ROOT / "static" / "vendor" / "axe" / "axe.min.js"
ASSISTANT = '[data-testid="message"][data-role="assistant"]'


def serious_violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async () => await axe.run(document, {runOnly: {type: 'tag', values:"
        " ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}})"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — "
        + "; ".join(
            n["target"][0] if isinstance(n["target"][0], str) else str(n["target"])
            for n in v["nodes"][:5]
        )
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_login_chat_and_settings_pages_pass_axe(browser, app_server, app_env, scheme):
    # bypass_csp: axe is injected as an inline script, which the app's policy rightly refuses.
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, color_scheme=scheme, bypass_csp=True
    )
    page = context.new_page()
    page.goto(app_server + "/login/")
    assert serious_violations(page) == []

    login(page, app_server, make_user(app_env))
    expect(page.get_by_test_id("composer")).to_be_focused()  # the first page: write at once
    assert serious_violations(page) == []
    page.get_by_test_id("composer").fill(
        "Please calculate 2+2 [[offline call=calculator pace_ms=1]]"
    )
    page.get_by_test_id("composer").press("Enter")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "done", timeout=15000)
    page.get_by_test_id("composer").fill(
        "[[offline reply pace_ms=1]]\n| a | b |\n|---|---|\n| 1 | $x^2$ |"
    )
    page.get_by_test_id("composer").press("Enter")
    expect(page.locator(ASSISTANT)).to_have_count(2)
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "done", timeout=15000)
    # a searching reply: its steps, citation markers, Sources and an open marker's popover
    page.get_by_test_id("web-search-toggle").check()
    page.get_by_test_id("composer").fill("[[offline search=1 pace_ms=1]] Tide clocks?")
    page.get_by_test_id("composer").press("Enter")
    expect(page.locator(ASSISTANT)).to_have_count(3)
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "done", timeout=15000)
    # search in place: results with a snippet of the match beside the open conversation
    page.get_by_test_id("search-input").fill("calculate")
    expect(page.get_by_test_id("conversation-snippet").first).to_contain_text("calculate")
    page.locator(ASSISTANT).last.get_by_test_id("cite-marker").first.click()
    expect(page.get_by_test_id("cite-popover")).to_be_visible()
    assert serious_violations(page) == []

    page.goto(app_server + "/settings/")
    assert serious_violations(page) == []
    context.close()
