"""In headless Chromium: the conversation list (search, rename, pin, archive, delete with undo),
long conversations loading on scroll, export / import, settings, and the phone layout."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ARTIFACTS, open_empty_conversation
from tests.e2e.test_ui_browser import login, make_user, manage_shell

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def logged_in(page, app_server, app_env):
    login(page, app_server, make_user(app_env))
    return page


def new_chat(page):
    """New chat: the first page, nothing stored yet, the message box focused."""
    with page.expect_navigation():
        page.get_by_test_id("new-chat").click()
    expect(page.get_by_test_id("composer")).to_be_focused()


def chat_once(page, text: str) -> int:
    new_chat(page)
    page.get_by_test_id("composer").fill(text + " [[offline words=6 pace_ms=1]]")
    page.get_by_test_id("composer").press("Enter")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "done", timeout=15000)
    return int(re.search(r"/c/(\d+)/$", page.url).group(1))


def item(page, pk: int):
    return page.locator(f'[data-testid="conversation-item"][data-conversation-id="{pk}"]')


def test_search_rename_pin_archive_and_delete_with_undo(logged_in):
    page = logged_in
    zebra = chat_once(page, "Tell me about zebras")
    other = chat_once(page, "Tell me about lighthouses")

    page.get_by_test_id("search-input").fill("zebras")
    page.get_by_test_id("search-input").press("Enter")
    expect(page.get_by_test_id("conversation-item")).to_have_count(1)
    expect(item(page, zebra)).to_be_visible()
    page.get_by_test_id("clear-search").click()
    expect(page.get_by_test_id("search-heading")).to_have_count(0)

    item(page, zebra).get_by_test_id("item-menu").click()
    item(page, zebra).get_by_test_id("item-rename").click()
    field = page.get_by_test_id("rename-inline-input")
    field.fill("Stripes")
    field.press("Enter")
    expect(item(page, zebra).get_by_test_id("conversation-title-text")).to_have_text("Stripes")

    item(page, zebra).get_by_test_id("item-menu").click()
    with page.expect_navigation():  # pin and archive reload the page: the server orders the list
        item(page, zebra).get_by_test_id("item-pin").click()
    pinned = page.locator('[data-testid="conversation-group"][data-group="Pinned"]')
    expect(pinned.get_by_test_id("conversation-item")).to_have_count(1)
    expect(pinned).to_contain_text("Stripes")

    item(page, other).get_by_test_id("item-menu").click()
    with page.expect_navigation():
        item(page, other).get_by_test_id("item-archive").click()
    expect(item(page, other)).to_have_count(0)
    page.get_by_test_id("show-archived").click()
    expect(item(page, other)).to_be_visible()
    page.get_by_test_id("show-active").click()
    expect(page.get_by_test_id("show-archived")).to_be_visible()

    item(page, zebra).get_by_test_id("item-menu").click()
    item(page, zebra).get_by_test_id("item-delete").click()
    expect(item(page, zebra)).to_have_count(0)
    page.get_by_test_id("undo-delete").click()
    expect(page.get_by_test_id("toast")).to_contain_text("Restored")
    page.reload()
    expect(item(page, zebra)).to_be_visible()

    item(page, zebra).get_by_test_id("item-menu").click()
    item(page, zebra).get_by_test_id("item-delete").click()
    expect(item(page, zebra)).to_have_count(0)
    page.reload()
    expect(item(page, zebra)).to_have_count(0)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-desktop-list.png"))
    assert page.errors == []


def test_a_long_conversation_loads_older_messages_on_scroll(logged_in, app_env, app_server):
    page = logged_in
    pk = open_empty_conversation(page)
    manage_shell(
        app_env,
        "from chat.models import Conversation, Message\n"
        f"c = Conversation.objects.get(pk={pk}); parent = None\n"
        "for i in range(130):\n"
        "    parent = Message.objects.create(conversation=c, parent=parent,"
        " role='user' if i % 2 == 0 else 'assistant',"
        " content=[{'type': 'text', 'text': f'numbered message {i}'}])\n"
        "c.leaf = parent; c.save()\n"
        # seeded as yesterday's, so they do not count against the per-minute send limit
        "from django.utils import timezone; from datetime import timedelta\n"
        "c.messages.update(created_at=timezone.now() - timedelta(days=1))\n",
    )
    page.reload()
    messages = page.get_by_test_id("message")
    expect(messages).to_have_count(50)
    expect(messages.first).to_contain_text("numbered message 80")
    for expected in (100, 130):
        page.get_by_test_id("messages").evaluate("el => { el.scrollTop = 0; }")
        expect(messages).to_have_count(expected)
    expect(messages.first).to_contain_text("numbered message 0")
    expect(page.get_by_test_id("load-older")).to_be_hidden()
    assert page.errors == []


def test_export_and_import(logged_in, tmp_path):
    page = logged_in
    chat_once(page, "Something worth keeping")
    page.get_by_test_id("export-toggle").click()
    with page.expect_download() as download:
        page.get_by_test_id("export-json").click()
    path = tmp_path / "export.json"
    download.value.save_as(path)
    data = json.loads(path.read_text())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    with page.expect_download() as md:
        page.get_by_test_id("export-md").click()
    assert md.value.suggested_filename.endswith(".md")
    assert "Something worth keeping" in pathlib.Path(md.value.path()).read_text()

    exported_from = page.url
    page.get_by_test_id("import-file").set_input_files(str(path))  # chosen: imported at once
    # The import is a new conversation: wait for its page, not the one already open
    # (which has the same two messages and would pass the checks below at once).
    page.wait_for_url(lambda url: re.search(r"/c/\d+/$", url) and url != exported_from)
    page.wait_for_load_state()
    expect(page.get_by_test_id("message")).to_have_count(2)
    expect(page.get_by_test_id("message").first).to_contain_text("Something worth keeping")


def test_settings_theme_time_zone_and_default_model(logged_in, app_server):
    page = logged_in
    page.get_by_test_id("settings-link").click()
    page.wait_for_url(app_server + "/settings/")
    page.get_by_test_id("settings-time_zone").fill("Mars/Olympus")
    page.get_by_test_id("settings-save").click()
    expect(page.get_by_test_id("error-time_zone")).to_be_visible()
    page.get_by_test_id("settings-time_zone").fill("Asia/Tokyo")
    page.get_by_test_id("settings-theme").select_option("dark")
    page.get_by_test_id("settings-default_model").select_option("claude-haiku-4-5")
    page.get_by_test_id("settings-system_prompt").fill("Answer like a pirate.")
    page.get_by_test_id("settings-save").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    expect(page.get_by_test_id("prompt-version")).to_contain_text("Version 1")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(26, 25, 24)"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-desktop-settings-dark.png"))
    page.get_by_test_id("back-to-chat").click()
    new_chat(page)
    expect(page.get_by_test_id("model-picker")).to_have_value("claude-haiku-4-5")
    page.get_by_test_id("settings-link").click()
    page.get_by_test_id("settings-theme").select_option("system")
    page.get_by_test_id("settings-default_model").select_option("")
    page.get_by_test_id("settings-system_prompt").fill("")
    page.get_by_test_id("settings-save").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "system")


def test_phone_layout_drawer_and_chat(browser, app_server, app_env):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, app_server, make_user(app_env))
    sidebar = page.get_by_test_id("sidebar")
    toggle = page.get_by_test_id("sidebar-toggle")
    expect(toggle).to_be_visible()
    expect(sidebar).not_to_be_in_viewport()
    toggle.click()
    expect(sidebar).to_be_in_viewport()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-phone-drawer.png"))
    new_chat(page)
    expect(sidebar).not_to_be_in_viewport()
    page.get_by_test_id("composer").fill("Hello from a phone [[offline pace_ms=1]]")
    page.get_by_test_id("send").click()
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "done", timeout=15000)
    page.screenshot(path=str(ARTIFACTS / "ui-phone-chat.png"))
    wide = page.evaluate(
        "() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth + 1"
        " && getComputedStyle(e).visibility !== 'hidden' && !e.closest('#sidebar')).map(e => e.className || e.tagName)"
    )
    assert wide == []  # nothing overflows sideways
    assert errors == []
    context.close()


def test_deleting_the_open_conversation_offers_undo(logged_in, app_server):
    page = logged_in
    pk = chat_once(page, "Keep me")
    page.get_by_test_id("delete").click()
    page.wait_for_url(app_server + f"/?undo={pk}")
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    page.get_by_test_id("undo-form").locator("button").click()
    page.wait_for_url(app_server + f"/c/{pk}/")
    expect(page.get_by_test_id("message")).to_have_count(2)
