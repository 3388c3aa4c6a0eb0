"""In headless Chromium: a failed reply retried in place, naming its model; a reply's actions
(copy as Markdown, details on a touch screen, thumbs up or down with a comment, seen by admins);
tool steps shown in the order they happened among the text."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import E2E_PASSWORD, E2E_USER
from tests.e2e.test_citations_browser import turn_on_web_search
from tests.e2e.test_ui_browser import login, make_user, new_chat, send

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
INTRO = "I'll use the `calculator` tool for that."
INTRO_SHOWN = "I'll use the calculator tool for that."


@pytest.fixture
def user_page(page, app_server, app_env):
    """The page, logged in as a user of its own: the per-user send rate is not shared."""
    login(page, app_server, make_user(app_env))
    return page


def finished(page, status: str = "done", timeout: int = 20000):
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", status, timeout=timeout)
    return reply


def model_label(page) -> str:
    return page.get_by_test_id("model-picker").locator("option:checked").inner_text().strip()


def test_a_failed_reply_is_retried_in_its_place_and_its_error_names_the_model(user_page):
    page = user_page
    new_chat(page)
    label = model_label(page)
    send(page, "Count for me [[offline words=8 error_after=2 fail_times=1 pace_ms=1]]")
    failed = finished(page, "error")
    failed_id = failed.get_attribute("data-message-id")
    expect(failed.get_by_test_id("message-status")).to_contain_text(
        f"{label} is overloaded right now"
    )
    expect(failed.get_by_test_id("regenerate")).to_have_count(0)
    failed.get_by_test_id("retry").click()
    reply = finished(page)
    # In its place: one reply, not a second version beside the failed one.
    expect(page.locator(ASSISTANT)).to_have_count(1)
    assert reply.get_attribute("data-message-id") != failed_id
    expect(reply.get_by_test_id("versions")).to_be_hidden()
    assert len(reply.get_by_test_id("message-body").inner_text().split()) == 8
    page.reload()
    expect(page.locator(ASSISTANT)).to_have_count(1)
    expect(finished(page).get_by_test_id("versions")).to_be_hidden()
    assert page.errors == []


COPIED = "A **bold** claim, `code` and a [link](https://example.com/).\n\n- one\n- two"


def test_copy_puts_the_reply_on_the_clipboard_as_markdown_without_citation_markers(
    user_page, app_server
):
    page = user_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_server)
    new_chat(page)
    send(page, f"[[offline reply pace_ms=1]]\n{COPIED}")
    reply = finished(page)
    reply.get_by_test_id("copy-reply").click()
    expect(reply.get_by_test_id("copy-reply")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == COPIED

    turn_on_web_search(page)
    send(page, "[[offline search=1 pace_ms=1]] Latest news about the offline model?")
    cited = finished(page)
    expect(cited.get_by_test_id("cite-marker").first).to_be_visible()
    cited.get_by_test_id("copy-reply").click()
    expect(cited.get_by_test_id("copy-reply")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied and not re.search(r"\[\d+\]", copied)
    assert copied.split()[:3] == cited.get_by_test_id("message-body").inner_text().split()[:3]
    assert page.errors == []


def test_on_a_touch_screen_the_replys_details_open_with_a_tap(browser, app_server, app_env):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        login(page, app_server, make_user(app_env))
        new_chat(page)
        assert page.evaluate("matchMedia('(hover: none)').matches")
        send(page, "Hello [[offline words=5 pace_ms=1]]")
        reply = finished(page)
        meta = reply.get_by_test_id("message-meta")
        toggle = reply.get_by_test_id("meta-toggle")
        expect(meta).to_be_hidden()
        toggle.tap()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(meta).to_be_visible()
        expect(meta.get_by_test_id("usage")).to_contain_text("out")
        expect(meta).to_contain_text("$")
        expect(meta.locator("time")).to_be_visible()
        toggle.tap()
        expect(meta).to_be_hidden()
        assert errors == []
    finally:
        context.close()


def test_a_thumb_and_its_comment_are_stored_and_admins_see_them(user_page, app_server):
    page = user_page
    new_chat(page)
    send(page, "Rate me [[offline words=5 pace_ms=1]]")
    reply = finished(page)
    down = reply.get_by_test_id("feedback-down")
    with page.expect_response(lambda r: r.url.endswith("/feedback/")) as saved:
        down.click()
    assert saved.value.status == 200
    expect(down).to_have_attribute("aria-pressed", "true")
    form = reply.get_by_test_id("feedback-form")
    expect(form.get_by_test_id("feedback-comment")).to_be_focused()
    form.get_by_test_id("feedback-comment").fill("<b>Too short</b>")
    with page.expect_response(lambda r: r.url.endswith("/feedback/")) as saved:
        form.get_by_test_id("feedback-send").click()
    assert saved.value.json()["feedback"] == {"rating": "down", "comment": "<b>Too short</b>"}
    expect(form).to_have_count(0)
    conversation_url = page.url
    page.reload()
    reply = finished(page)
    expect(reply.get_by_test_id("feedback-down")).to_have_attribute("aria-pressed", "true")
    expect(reply.get_by_test_id("feedback-up")).to_have_attribute("aria-pressed", "false")
    # Changed: up, once (one rating per reply), then shown as such.
    with page.expect_response(lambda r: r.url.endswith("/feedback/")):
        reply.get_by_test_id("feedback-up").click()
    expect(reply.get_by_test_id("feedback-up")).to_have_attribute("aria-pressed", "true")
    expect(reply.get_by_test_id("feedback-down")).to_have_attribute("aria-pressed", "false")
    reply.get_by_test_id("feedback-form").get_by_role("button", name="Skip").click()

    # An admin sees it beside the conversation, and on the dashboard's count.
    conversation_id = re.search(r"/c/(\d+)/", conversation_url).group(1)
    page.goto(app_server + "/admin/login/?next=/admin/")
    page.locator("#id_username").fill(E2E_USER)
    page.locator("#id_password").fill(E2E_PASSWORD)
    page.locator("input[type=submit]").click()
    page.goto(f"{app_server}/admin/chat/conversation/{conversation_id}/change/")
    expect(page.locator("body")).to_contain_text("1 up, 0 down")
    page.goto(app_server + "/admin/usage/?period=today")
    up = int(page.locator('[data-feedback="up"]').inner_text())
    assert up >= 1
    assert page.errors == []


def steps_order(reply) -> list[str]:
    """The body's parts in order: 'text: …' for a run of text, 'steps: N' for a group."""
    return reply.get_by_test_id("message-body").evaluate(
        """body => [...body.children].map(part => part.dataset.testid === 'tool-steps'
              ? 'steps: ' + part.querySelectorAll('[data-testid=tool]').length
              : 'text: ' + part.innerText.trim().split('\\n')[0])"""
    )


def test_tool_steps_show_in_the_order_they_happened_among_the_text(user_page):
    page = user_page
    new_chat(page)
    send(page, "What is 6*7? [[offline call=calculator rounds=2 pace_ms=20]]")
    reply = page.locator(ASSISTANT).last
    # While it streams: the first step follows the first text, not above it.
    expect(reply.get_by_test_id("tool-steps").first).to_be_visible(timeout=15000)
    live = steps_order(reply)
    assert live[:2] == [f"text: {INTRO_SHOWN}", "steps: 1"]
    reply = finished(page)
    expected = [
        f"text: {INTRO_SHOWN}",
        "steps: 1",
        f"text: {INTRO_SHOWN}",
        "steps: 1",
        "text: Thanks, I got the tool results:",
    ]
    assert steps_order(reply) == expected
    # Each round's sentence once, in its place: never twice in a row.
    assert reply.get_by_test_id("message-body").inner_text().count(INTRO_SHOWN) == 2
    page.reload()
    assert steps_order(finished(page)) == expected

    new_chat(page)  # directives of earlier messages would carry over (rounds=2)
    send(page, "And 2+2? [[offline call=calculator pace_ms=1]]")
    reply = finished(page)
    assert steps_order(reply) == [
        f"text: {INTRO_SHOWN}",
        "steps: 1",
        "text: Thanks, I got the tool results:",
    ]
    assert reply.get_by_test_id("message-body").inner_text().count(INTRO_SHOWN) == 1
    assert page.errors == []
