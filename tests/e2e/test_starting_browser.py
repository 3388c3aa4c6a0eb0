"""In headless Chromium: starting a chat on the first page (the first message creates the
conversation), search in place with snippets, menus that close, Undo as a toast on a phone, the
tab's title after a rename, and export / import keeping the title."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.e2e.test_ui_browser import login, make_user

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
PHONE = {"width": 390, "height": 844}
CONVERSATION_URL = re.compile(r"/c/(\d+)/$")


@pytest.fixture
def logged_in(page, app_server, app_env):
    login(page, app_server, make_user(app_env))
    return page


def go_new(page) -> None:
    with page.expect_navigation():
        page.get_by_test_id("new-chat").click()
    expect(page.get_by_test_id("composer")).to_be_focused()


def send_first(page, text: str) -> int:
    """Write on the first page and send: the URL becomes the new conversation's."""
    page.get_by_test_id("composer").fill(text + " [[offline words=6 pace_ms=1]]")
    page.get_by_test_id("composer").press("Enter")
    page.wait_for_url(CONVERSATION_URL)
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "done", timeout=15000)
    return int(CONVERSATION_URL.search(page.url).group(1))


def item(page, pk: int):
    return page.locator(f'[data-testid="conversation-item"][data-conversation-id="{pk}"]')


# --- item 2: starting a chat -------------------------------------------------------------------


def test_the_first_page_takes_a_message_with_the_choices_made_there(logged_in, app_server):
    page = logged_in
    expect(page.get_by_test_id("composer")).to_be_focused()
    expect(page.get_by_test_id("list-empty")).to_be_visible()
    expect(page.get_by_test_id("chat-actions")).to_be_hidden()
    expect(page.get_by_test_id("connection-status")).to_be_hidden()
    page.evaluate("window.samePage = true")
    page.get_by_test_id("model-picker").select_option("claude-opus-4-7")
    page.get_by_test_id("thinking-picker").select_option("low")
    page.get_by_test_id("web-search-toggle").check()

    pk = send_first(page, "Tell me about zebras")
    assert page.evaluate("window.samePage") is True  # the URL changed without a page load
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    expect(page.get_by_test_id("chat-actions")).to_be_visible()
    expect(page.get_by_test_id("message")).to_have_count(2)
    expect(item(page, pk).get_by_test_id("conversation-link")).to_have_attribute(
        "aria-current", "page"
    )
    expect(page.get_by_test_id("conversation-item")).to_have_count(1)

    page.reload()  # the choices are the conversation's, not only the page's
    expect(page.get_by_test_id("model-picker")).to_have_value("claude-opus-4-7")
    expect(page.get_by_test_id("thinking-picker")).to_have_value("low")
    expect(page.get_by_test_id("web-search-toggle")).to_be_checked()
    expect(page.get_by_test_id("export-json")).to_have_attribute("href", f"/c/{pk}/export.json")
    assert page.errors == []


def test_new_chat_and_alt_n_store_nothing_and_focus_the_message_box(logged_in, app_server):
    page = logged_in
    send_first(page, "One real quokka conversation")
    for _ in range(3):
        go_new(page)
        assert page.url == app_server + "/"
    send_first(page, "Another real one")
    with page.expect_navigation():
        page.keyboard.press("Alt+n")
    expect(page.get_by_test_id("composer")).to_be_focused()
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    # two conversations written in; the New chat clicks and Alt+N left nothing behind
    expect(page.get_by_test_id("conversation-item")).to_have_count(2)
    page.get_by_test_id("search-input").fill("quokka")  # searching includes no empty one
    expect(page.get_by_test_id("conversation-item")).to_have_count(1)
    assert page.errors == []


# --- item 8: lists and menus -------------------------------------------------------------------


def test_search_in_place_keeps_the_open_conversation_and_shows_a_snippet(logged_in):
    page = logged_in
    zebra = send_first(page, "Tell me about zebras and their stripes")
    go_new(page)
    here = send_first(page, "Tell me about lighthouses")
    page.evaluate("window.samePage = true")

    page.get_by_test_id("search-input").fill("zebras")  # results as you type
    expect(page.get_by_test_id("search-heading")).to_have_text("Results for “zebras”")
    expect(page.get_by_test_id("conversation-item")).to_have_count(1)
    snippet = item(page, zebra).get_by_test_id("conversation-snippet")
    expect(snippet).to_contain_text("zebras and their stripes")
    expect(snippet.locator("mark")).to_have_text(["zebras"])
    page.get_by_test_id("search-input").press("Enter")
    expect(page.get_by_test_id("conversation-item")).to_have_count(1)
    assert page.url.endswith(f"/c/{here}/") and page.evaluate("window.samePage") is True
    expect(page.get_by_test_id("message")).to_have_count(2)
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")

    page.get_by_test_id("clear-search").click()
    expect(page.get_by_test_id("search-heading")).to_have_count(0)
    expect(page.get_by_test_id("conversation-item")).to_have_count(2)
    expect(page.get_by_test_id("search-input")).to_have_value("")
    expect(item(page, here).get_by_test_id("conversation-link")).to_have_attribute(
        "aria-current", "page"
    )
    assert page.evaluate("window.samePage") is True
    assert page.errors == []


def test_the_item_and_export_menus_close_on_escape_and_a_click_outside(logged_in):
    page = logged_in
    pk = send_first(page, "A conversation with menus")
    menu = item(page, pk).locator("details.item-menu")
    toggle = item(page, pk).get_by_test_id("item-menu")
    toggle.click()
    expect(item(page, pk).get_by_test_id("item-rename")).to_be_visible()
    page.keyboard.press("Escape")
    expect(menu).not_to_have_attribute("open", "")
    expect(toggle).to_be_focused()
    toggle.click()
    expect(item(page, pk).get_by_test_id("item-rename")).to_be_visible()
    page.get_by_test_id("messages").click()
    expect(item(page, pk).get_by_test_id("item-rename")).to_be_hidden()

    page.get_by_test_id("export-toggle").click()
    expect(page.get_by_test_id("export-json")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("export-json")).to_be_hidden()
    expect(page.get_by_test_id("export-toggle")).to_be_focused()
    page.get_by_test_id("export-toggle").click()
    expect(page.get_by_test_id("export-json")).to_be_visible()
    page.get_by_test_id("conversation-title").click()
    expect(page.get_by_test_id("export-json")).to_be_hidden()
    assert page.errors == []


def test_undo_after_delete_is_a_toast_a_phone_shows_with_the_drawer_shut(
    browser, app_server, app_env
):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, app_server, make_user(app_env))
    sidebar = page.get_by_test_id("sidebar")
    first = send_first(page, "Keep me around")
    page.get_by_test_id("sidebar-toggle").click()  # New chat is in the drawer
    go_new(page)
    second = send_first(page, "Delete me from the header")

    page.get_by_test_id("delete").click()  # the header's Delete: the first page, with Undo
    page.wait_for_url(app_server + f"/?undo={second}")
    expect(sidebar).not_to_be_in_viewport()
    expect(page.get_by_test_id("undo-form")).to_be_in_viewport()
    page.get_by_test_id("undo-form").get_by_role("button", name="Undo").click()
    page.wait_for_url(app_server + f"/c/{second}/")

    page.get_by_test_id("sidebar-toggle").click()  # the list's Delete, from the drawer
    item(page, first).get_by_test_id("item-menu").click()
    item(page, first).get_by_test_id("item-delete").click()
    expect(item(page, first)).to_have_count(0)
    page.keyboard.press("Escape")  # the drawer shuts; the toast stays in view
    expect(sidebar).not_to_be_in_viewport()
    expect(page.get_by_test_id("undo-delete")).to_be_in_viewport()
    page.get_by_test_id("undo-delete").click()
    expect(page.get_by_test_id("toast")).to_contain_text("Restored")
    expect(item(page, first)).to_have_count(1)
    assert errors == []
    context.close()


def test_the_tab_title_follows_a_rename(logged_in):
    page = logged_in
    pk = send_first(page, "Name me")
    item(page, pk).get_by_test_id("item-menu").click()
    item(page, pk).get_by_test_id("item-rename").click()
    page.get_by_test_id("rename-inline-input").fill("Harbour plans")
    page.get_by_test_id("rename-inline-input").press("Enter")
    expect(page.get_by_test_id("conversation-title")).to_have_text("Harbour plans")
    expect(page).to_have_title("Harbour plans · claudeweb")
    page.reload()
    expect(page).to_have_title("Harbour plans · claudeweb")
    assert page.errors == []


def test_a_json_export_imports_with_its_title_and_a_bad_file_says_why(logged_in, tmp_path):
    page = logged_in
    pk = send_first(page, "Worth keeping")
    page.get_by_test_id("rename-toggle").click()
    page.get_by_test_id("rename-input").fill("Tide tables")
    page.get_by_test_id("rename-submit").click()
    expect(page).to_have_title("Tide tables · claudeweb")
    page.get_by_test_id("export-toggle").click()
    with page.expect_download() as download:
        page.get_by_test_id("export-json").click()
    exported = tmp_path / "export.json"
    download.value.save_as(exported)
    assert json.loads(exported.read_text())["title"] == "Tide tables"

    chooser = page.get_by_label("Import a conversation…")
    expect(page.get_by_test_id("import-button")).to_be_visible()
    expect(chooser).to_have_attribute("type", "file")
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    chooser.set_input_files(str(broken))
    error = page.get_by_test_id("import-error")
    expect(error).to_have_text("Import failed: The file is not JSON (UTF-8).")
    assert page.url.endswith(f"/c/{pk}/")  # still in the open conversation

    chooser.set_input_files(str(exported))
    page.wait_for_url(lambda url: CONVERSATION_URL.search(url) and not url.endswith(f"/{pk}/"))
    expect(page.get_by_test_id("conversation-title")).to_have_text("Tide tables")
    expect(page).to_have_title("Tide tables · claudeweb")
    expect(page.get_by_test_id("message")).to_have_count(2)
    assert page.errors == []
