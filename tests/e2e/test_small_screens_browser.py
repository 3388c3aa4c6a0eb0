"""In headless Chromium: the chat page on small and large screens (a compact header, the sidebar
a drawer below 900 px, Send on one line), the small things (favicon, the model id once, "↓ Latest",
Enter during an upload, scaled images said so, no broken image for a refused file, the usage
dashboard's period menu), and Lighthouse's findings (code contrast, layout shift, compressed
static files). Screenshots at 390, 820 and 1440 px in light and dark go to test-artifacts/."""

from __future__ import annotations

import gzip
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ARTIFACTS, open_empty_conversation
from tests.e2e.test_dashboard_browser import admin_login
from tests.e2e.test_images_browser import png
from tests.e2e.test_ui_a11y_browser import AXE
from tests.e2e.test_ui_browser import login, make_user

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
CODE_REPLY = """[[offline reply pace_ms=1]]
## Adding up a column

| column | type |
| --- | --- |
| amount | Decimal |

```python
import csv

def total(path: str) -> int:
    with open(path, newline="") as f:
        return sum(int(row["amount"]) for row in csv.DictReader(f))
```
"""
HEIGHTS = {390: 844, 820: 1180, 1000: 800, 1440: 900}


@pytest.fixture
def user(app_env) -> str:
    return make_user(app_env)


def open_page(browser, app_server, user, width, scheme="light"):
    context = browser.new_context(
        viewport={"width": width, "height": HEIGHTS[width]}, color_scheme=scheme
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    login(page, app_server, user)
    return page


def new_chat(page):
    open_empty_conversation(page)


def send(page, text: str, count: int) -> None:
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("composer").press("Enter")
    expect(page.locator(ASSISTANT)).to_have_count(count, timeout=15000)
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "done", timeout=15000)


def conversation(page) -> str:
    """A conversation with a question, a calculator step and a reply with a table and code."""
    new_chat(page)
    send(page, "What is 12 * 7? [[offline call=calculator pace_ms=1]]", 1)
    send(page, CODE_REPLY, 2)
    return page.url


def header_height(page) -> float:
    return page.evaluate(
        "() => document.querySelector('.chat-header').getBoundingClientRect().bottom"
    )


# --- item 3: small screens; the screenshots ------------------------------------------------------


def test_screenshots_at_three_widths_in_light_and_dark(browser, app_server, user):
    page = open_page(browser, app_server, user, 1440)
    url = conversation(page)
    page.context.close()
    ARTIFACTS.mkdir(exist_ok=True)
    for width in (390, 820, 1440):
        for scheme in ("light", "dark"):
            page = open_page(browser, app_server, user, width, scheme)
            page.goto(url)
            expect(page.locator(ASSISTANT)).to_have_count(2)
            expect(page.locator(".code-block")).to_have_count(1)
            expect(page.get_by_test_id("context-text")).not_to_be_empty()
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert (background == "rgb(26, 25, 24)") == (scheme == "dark")
            page.screenshot(path=str(ARTIFACTS / f"chat-{width}-{scheme}.png"))
            assert page.errors == []
            page.context.close()


@pytest.mark.parametrize("width", [390, 820])
def test_the_header_is_compact_and_the_sidebar_a_drawer_on_small_screens(
    browser, app_server, user, width
):
    page = open_page(browser, app_server, user, width)
    conversation(page)
    # Everything above the messages (top bar, banner, chat header) stays under a fifth of the
    # screen's height; it was about 40 % at 390 px.
    assert header_height(page) <= 0.2 * HEIGHTS[width]
    title = page.get_by_test_id("conversation-title")
    assert title.bounding_box()["height"] < 30  # one line, cut short when long
    sidebar = page.get_by_test_id("sidebar")
    expect(sidebar).not_to_be_visible()
    toggle = page.get_by_test_id("sidebar-toggle")
    toggle.click()
    expect(sidebar).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(sidebar).not_to_be_visible()
    assert page.errors == []


@pytest.mark.parametrize("width", [390, 1000, 1440])
def test_send_stays_on_one_line_beside_the_composer_controls(browser, app_server, user, width):
    page = open_page(browser, app_server, user, width)
    new_chat(page)
    if width >= 1000:
        expect(page.get_by_test_id("sidebar")).to_be_visible()  # beside the chat from 900 px
    send_button = page.get_by_test_id("send").bounding_box()
    attach = page.get_by_test_id("attach").bounding_box()
    assert send_button["height"] < 45  # one line of text
    # The bar is one row: Attach and Send share it.
    assert (
        abs((send_button["y"] + send_button["height"] / 2) - (attach["y"] + attach["height"] / 2))
        < 4
    )
    assert send_button["x"] + send_button["width"] <= width


# --- item 9: small things ----------------------------------------------------------------------


def test_the_page_has_a_favicon_and_shows_the_model_id_once(logged_in_page):
    page, app_server = logged_in_page
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    page.reload()
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    icon = page.locator('link[rel="icon"]')
    assert icon.get_attribute("type") == "image/svg+xml"
    response = page.request.get(app_server + icon.get_attribute("href"))
    assert response.status == 200 and response.body().startswith(b"<svg")
    assert missing == []
    model = page.get_by_test_id("model-picker").input_value()
    header = page.locator(".chat-header").inner_text()
    assert header.count(model) <= 1
    label = page.get_by_test_id("model-picker").locator("option:checked").inner_text()
    assert header.count(label) == 1


@pytest.fixture
def logged_in_page(browser, app_server, user):
    page = open_page(browser, app_server, user, 1440)
    new_chat(page)
    yield page, app_server
    ARTIFACTS.mkdir(exist_ok=True)
    page.context.close()


def test_latest_button_appears_while_reading_above_a_streaming_reply(logged_in_page):
    page, _ = logged_in_page
    messages = page.get_by_test_id("messages")
    button = page.get_by_test_id("scroll-bottom")
    page.get_by_test_id("composer").fill("Long one [[offline words=3000 pace_ms=5]]")
    page.get_by_test_id("composer").press("Enter")
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "streaming")
    expect(button).to_be_hidden()
    # The reply grows past the screen; the user scrolls up to read.
    page.wait_for_function(
        "el => el.scrollHeight > 3 * el.clientHeight", arg=messages.element_handle()
    )
    messages.evaluate("el => el.scrollTo({top: 0})")
    expect(button).to_be_visible()
    button.click()
    expect(button).to_be_hidden()
    # Back at the end, new text keeps the list there while the reply streams on.
    before = messages.evaluate("el => el.scrollHeight")
    page.wait_for_function(
        "([el, h]) => el.scrollHeight > h + 200", arg=[messages.element_handle(), before]
    )
    assert messages.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight") < 150
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "streaming")
    page.get_by_test_id("stop").click()
    expect(page.locator(ASSISTANT).last).not_to_have_attribute("data-status", "streaming")


def upload_throttle(page):
    """Sets the browser's upload speed (bytes/s, -1: unthrottled), through one CDP session."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")

    def throttle(bytes_per_s: int) -> None:
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": bytes_per_s,
            },
        )

    return throttle


def test_enter_during_an_upload_sends_when_the_upload_is_done(logged_in_page, tmp_path):
    page, _ = logged_in_page
    picture = tmp_path / "wide.png"
    picture.write_bytes(png((3000, 2000)))  # scaled down in the browser, then by the server
    throttle = upload_throttle(page)
    throttle(60_000)
    page.get_by_test_id("attach-input").set_input_files(str(picture))
    item = page.get_by_test_id("attachment-item")
    expect(item).to_have_attribute("data-state", "uploading", timeout=10000)
    page.get_by_test_id("composer").fill("What is in this picture?")
    page.get_by_test_id("composer").press("Enter")
    notice = page.get_by_test_id("composer-notice")
    expect(notice).to_have_text("Your message will be sent when the attachments have uploaded.")
    expect(page.locator('[data-testid="message"][data-role="user"]')).to_have_count(0)
    throttle(-1)
    user_message = page.locator('[data-testid="message"][data-role="user"]')
    expect(user_message).to_have_count(1, timeout=20000)
    expect(user_message).to_contain_text("What is in this picture?")
    expect(user_message.get_by_test_id("message-image")).to_have_count(1)
    expect(notice).to_be_hidden()
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "done", timeout=20000)
    expect(reply).to_contain_text("1568×1045")


def test_an_image_scaled_down_says_so_on_its_chip(logged_in_page, tmp_path):
    page, _ = logged_in_page
    picture = tmp_path / "wide.png"
    picture.write_bytes(png((3000, 2000)))
    page.get_by_test_id("attach-input").set_input_files(str(picture))
    item = page.get_by_test_id("attachment-item")
    expect(item).to_have_attribute("data-state", "ready", timeout=20000)
    expect(item).to_contain_text("3000×2000 scaled to 1568×1045")
    small = tmp_path / "small.png"
    small.write_bytes(png((120, 80)))
    page.get_by_test_id("attach-input").set_input_files(str(small))
    second = page.get_by_test_id("attachment-item").nth(1)
    expect(second).to_have_attribute("data-state", "ready", timeout=20000)
    expect(second).to_contain_text("120×80 ·")
    expect(second).not_to_contain_text("scaled")


def test_a_refused_file_shows_its_kind_not_a_broken_image(logged_in_page, tmp_path):
    page, _ = logged_in_page
    fake = tmp_path / "holiday.png"
    fake.write_bytes(b"this is not a picture at all")
    page.get_by_test_id("attach-input").set_input_files(str(fake))
    item = page.get_by_test_id("attachment-item")
    expect(item).to_have_attribute("data-state", "failed")
    expect(item.locator("img")).to_have_count(0)
    expect(item.get_by_test_id("attachment-doc-icon")).to_have_text("PNG")
    expect(item).to_contain_text("cannot be read as an image")


def test_the_dashboard_period_menu_names_the_period_shown(page, app_server):
    admin_login(page, app_server)
    page.goto(app_server + "/admin/usage/")
    expect(page.locator("#id_period")).to_have_value("30d")
    days = page.locator(".usage-range")
    expect(days).to_contain_text("(30 days)")
    page.goto(app_server + "/admin/usage/?users_sort=-requests")
    expect(page.locator("#id_period")).to_have_value("30d")


# --- item 10: Lighthouse's findings --------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_highlighted_code_meets_wcag_aa_contrast(browser, app_server, user, scheme):
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, color_scheme=scheme, bypass_csp=True
    )
    page = context.new_page()
    login(page, app_server, user)
    new_chat(page)
    send(page, CODE_REPLY, 1)
    expect(page.locator(".code-block .hljs-built_in").first).to_be_visible()
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async () => await axe.run('.code-block', {runOnly: ['color-contrast']})"
    )
    assert [n["target"] for v in result["violations"] for n in v["nodes"]] == []
    assert result["passes"], "axe found no text to check"
    context.close()


def test_the_chat_page_does_not_shift_while_it_loads_on_a_phone(browser, app_server, user):
    page = open_page(browser, app_server, user, 390)
    url = conversation(page)
    # Each shift with what moved (for the failure message).
    page.add_init_script(
        """window.__shifts = [];
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) {
            if (e.hadRecentInput) continue;
            const moved = e.sources.map((s) => s.node
              ? `${s.node.nodeName}.${s.node.className || ""}#${s.node.id || ""}`
                + ` ${JSON.stringify(s.previousRect.toJSON())}→${JSON.stringify(s.currentRect.toJSON())}`
              : "?");
            window.__shifts.push([e.value, moved]);
          }
        }).observe({type: "layout-shift", buffered: true});"""
    )
    page.goto(url)
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    expect(page.get_by_test_id("context-text")).not_to_be_empty()
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    shifts = page.evaluate("() => window.__shifts")
    total = sum(value for value, _ in shifts)
    assert total < 0.02, f"layout shift {total:.3f}: {shifts}"


def test_static_files_are_served_compressed_and_pages_are_not(app_server):
    def get(path: str):
        request = urllib.request.Request(app_server + path, headers={"Accept-Encoding": "gzip"})
        return urllib.request.urlopen(request, timeout=10)

    with get("/static/chat/chat.js") as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in response.headers["Vary"]
        body = gzip.decompress(response.read())
    assert body.startswith(b"// The chat page")
    with get("/login/") as response:  # a page with a CSRF token: never compressed (BREACH)
        assert response.headers["Content-Encoding"] is None
