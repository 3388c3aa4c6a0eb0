"""In headless Chromium: the header's thinking setting, and thinking streamed into a panel
beside the reply that collapses when the reply moves on and is rebuilt after a reload."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import open_empty_conversation

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
EFFORTS = [
    "Low effort",
    "Medium effort",
    "High effort (default)",
    "Extra high effort",
    "Max effort",
]


def new_chat(page):
    open_empty_conversation(page)


def option_labels(select) -> list[str]:
    return [o.strip() for o in select.locator("option").all_inner_texts()]


def test_the_thinking_setting_follows_the_model_picked(logged_in):
    page = logged_in
    new_chat(page)
    models = page.get_by_test_id("model-picker")
    setting = page.get_by_test_id("thinking-setting")
    picker = page.get_by_test_id("thinking-picker")
    models.select_option("claude-sonnet-5-5")  # always thinks: no "Off"
    expect(setting).to_be_visible()
    assert option_labels(picker) == ["Always on", *EFFORTS]
    models.select_option("claude-opus-4-7")
    assert option_labels(picker) == ["Off", *EFFORTS]
    with page.expect_response(re.compile(r"/thinking/$")) as saved:
        picker.select_option("xhigh")
    assert saved.value.ok
    models.select_option("claude-haiku-4-5")  # no adaptive thinking: no setting
    expect(setting).to_be_hidden()
    models.select_option("claude-sonnet-4-6")  # no xhigh: the nearest level it takes
    expect(picker).to_have_value("high")
    assert "Extra high effort" not in option_labels(picker)
    models.select_option("claude-opus-4-7")  # the choice comes back where it is taken
    expect(picker).to_have_value("xhigh")
    page.reload()
    expect(page.get_by_test_id("thinking-picker")).to_have_value("xhigh")
    assert page.errors == []


def test_thinking_streams_into_a_panel_that_collapses_and_is_there_after_a_reload(logged_in):
    page = logged_in
    new_chat(page)
    page.get_by_test_id("model-picker").select_option("claude-opus-4-7")
    with page.expect_response(re.compile(r"/thinking/$")):
        page.get_by_test_id("thinking-picker").select_option("high")
    composer = page.get_by_test_id("composer")
    composer.fill("Think it over [[offline words=30 pace_ms=90]]")
    composer.press("Enter")

    reply = page.locator(ASSISTANT).last
    panel = reply.get_by_test_id("thinking")
    toggle = panel.get_by_test_id("thinking-toggle")
    # While the model thinks, the panel is open and says so.
    expect(toggle).to_have_text("Thinking…")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(panel.get_by_test_id("thinking-text")).to_contain_text("The user wrote")
    expect(reply).to_have_attribute("data-status", "streaming")
    # Once the text comes, it collapses to how long it thought.
    expect(toggle).to_have_text(re.compile(r"^Thought for \d+ s$"), timeout=15000)
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(panel.get_by_test_id("thinking-body")).to_be_hidden()
    expect(reply).to_have_attribute("data-status", "done", timeout=20000)
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    thought = panel.get_by_test_id("thinking-text").inner_text()
    assert "I am the offline model" in thought
    body = reply.get_by_test_id("message-body").inner_text()
    assert len(body.split()) == 30 and "The user wrote" not in body

    page.reload()
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "done")
    panel = reply.get_by_test_id("thinking")
    toggle = panel.get_by_test_id("thinking-toggle")
    expect(toggle).to_have_text("Thinking")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(panel.get_by_test_id("thinking-text")).to_have_text(thought)
    assert "The user wrote" not in reply.get_by_test_id("message-body").inner_text()
    # No signature reached the page: the saved message's thinking is its text alone.
    config = page.locator("#chat-config").text_content()
    assert '"signature"' not in config
    assert page.errors == []


def test_redacted_thinking_says_so(logged_in):
    page = logged_in
    new_chat(page)
    page.get_by_test_id("model-picker").select_option("claude-opus-4-7")
    with page.expect_response(re.compile(r"/thinking/$")):
        page.get_by_test_id("thinking-picker").select_option("low")
    composer = page.get_by_test_id("composer")
    composer.fill("Keep it to yourself [[offline words=5 redact pace_ms=1]]")
    composer.press("Enter")
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "done", timeout=15000)
    # Nothing of it streams; the saved message, read at the end, tells of it.
    expect(reply.get_by_test_id("thinking-redacted")).to_have_text("Some thinking was redacted.")
    page.reload()
    reply = page.locator(ASSISTANT).last
    expect(reply.get_by_test_id("thinking-redacted")).to_be_visible()
    assert page.errors == []
