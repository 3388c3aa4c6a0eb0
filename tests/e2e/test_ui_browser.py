"""In headless Chromium: the chat's controls for replies (continue, regenerate, edit, versions),
tool steps, model picker, meters, rendering (tables, code, math), composer and shortcuts."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ARTIFACTS, ROOT, open_empty_conversation

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
USER = '[data-testid="message"][data-role="user"]'


PASSWORD = "ui-password-123"
_users = itertools.count()


def manage_shell(app_env, code: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
        env=app_env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def login(page, app_server: str, username: str) -> None:
    page.goto(app_server + "/login/")
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(app_server + "/")


def make_user(app_env) -> str:
    """A user of its own per test: an empty list, and the per-user send rate not shared."""
    name = f"ui{os.getpid()}n{next(_users)}"
    manage_shell(
        app_env,
        "from django.contrib.auth import get_user_model\n"
        f"get_user_model().objects.create_user({name!r}, password={PASSWORD!r})",
    )
    return name


@pytest.fixture
def logged_in(page, app_server, app_env):
    login(page, app_server, make_user(app_env))
    return page


def new_chat(page):
    open_empty_conversation(page)


def send(page, text: str) -> None:
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("composer").press("Enter")


def last_reply_done(page, timeout: int = 15000):
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", re.compile("done|error"), timeout=timeout)
    return reply


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=False)


RICH_REPLY = r"""Here is a table:

| Planet | Moons |
| --- | --- |
| Earth | 1 |
| Mars | 2 |

Inline math $E = mc^2$ and a price of $5 and $10.

$$
\int_0^1 x^2 \, dx = \frac{1}{3}
$$

```python
print("hello")
```

[safe](https://example.com) and [unsafe](javascript:alert(1))
"""


def test_markdown_tables_code_math_and_links(logged_in):
    page = logged_in
    new_chat(page)
    send(page, "[[offline reply pace_ms=1]]\n" + RICH_REPLY)
    reply = last_reply_done(page)
    expect(reply.locator("table td")).to_have_count(4)
    expect(reply.locator("math")).to_have_count(2)  # inline and display
    assert "$5 and $10" in reply.inner_text()  # currency is not math
    expect(reply.get_by_test_id("copy-code")).to_have_count(1)
    safe = reply.locator("a", has_text="safe").first
    assert safe.get_attribute("rel") == "noopener noreferrer"
    assert reply.locator("a", has_text="unsafe").get_attribute("href") is None
    page.mouse.move(10, 10)
    shot(page, "ui-desktop-chat.png")
    assert page.errors == []


KATEX_FILES = re.compile(r"/vendor/katex/katex\.(mjs|min\.css)$")

# Records whether a formula's source (shown while KaTeX loads) was ever put in the page.
RECORD_PENDING_MATH = """
window.__mathPendingSeen = false;
new MutationObserver((records) => {
  for (const record of records) {
    for (const node of record.addedNodes) {
      if (node.nodeType !== 1) continue;
      if (node.matches(".math-pending") || node.querySelector(".math-pending")) {
        window.__mathPendingSeen = true;
      }
    }
  }
}).observe(document, { childList: true, subtree: true });
"""


def test_katex_is_fetched_only_for_replies_with_math(logged_in):
    """KaTeX (and its stylesheet) is not part of the chat page: a conversation without math never
    asks for it; the first formula fetches it; a reloaded page with math waits for it and draws
    the formulas at once, never their source (docs/ui.md, "Rendering")."""
    page = logged_in
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    new_chat(page)
    no_math = "## Costs\n\nA price of $5 is not math.\n\n```python\nprint(1)\n```\n"
    send(page, "[[offline reply pace_ms=1]]\n" + no_math)
    reply = last_reply_done(page)
    expect(reply.locator("code.hljs")).to_have_count(1)
    page.reload()
    expect(page.locator(ASSISTANT).last.locator("code.hljs")).to_have_count(1)
    assert "$5 is not math" in page.locator(ASSISTANT).last.inner_text()
    assert not [url for url in fetched if KATEX_FILES.search(url)]
    assert page.locator("math").count() == 0

    send(page, "[[offline reply pace_ms=1]]\nInline $E = mc^2$ and\n\n$$\n\\frac{1}{3}\n$$\n")
    reply = last_reply_done(page)
    expect(reply.locator("math")).to_have_count(2)
    expect(reply.locator(".math-pending")).to_have_count(0)
    katex_files = {KATEX_FILES.search(url)[1] for url in fetched if KATEX_FILES.search(url)}
    assert katex_files == {"mjs", "min.css"}
    # KaTeX's stylesheet applies (its fonts).
    expect(reply.locator(".katex").first).to_have_css("font-family", re.compile("KaTeX_Main"))

    page.add_init_script(RECORD_PENDING_MATH)
    page.reload()
    reply = page.locator(ASSISTANT).last
    expect(reply.locator("math")).to_have_count(2)
    assert page.evaluate("window.__mathPendingSeen") is False
    assert page.errors == []


def test_a_formula_before_katex_arrives_shows_its_source_then_renders(logged_in):
    """A reply that ends while KaTeX is still on its way shows each formula's source (escaped,
    as text), and is rendered again with the formulas once KaTeX has loaded."""
    page = logged_in
    held = []
    page.route(KATEX_FILES, lambda route: held.append(route))
    new_chat(page)
    send(page, "[[offline reply pace_ms=1]]\nEnergy: $E = mc^2 <b>x</b>$\n")
    reply = last_reply_done(page)
    pending = reply.locator(".math-pending")
    expect(pending).to_have_text("$E = mc^2 <b>x</b>$")
    expect(reply.locator("math")).to_have_count(0)
    assert reply.locator("b").count() == 0  # the source is text, not markup
    assert held, "the formula asked for KaTeX"
    for route in held:
        route.continue_()
    expect(reply.locator("math")).to_have_count(1)
    expect(reply.locator(".math-pending")).to_have_count(0)
    assert page.errors == []


def test_code_colours_follow_the_device_theme(logged_in):
    """The code colour stylesheets do not hold up the first paint (their media is set by the
    script): with the "system" theme the light or dark one applies as the device says."""
    page = logged_in
    new_chat(page)
    send(page, "[[offline reply pace_ms=1]]\n```python\nimport csv\n```\n")
    keyword = last_reply_done(page).locator(".hljs-keyword").first
    expect(keyword).to_have_css("color", "rgb(215, 58, 73)")  # github.min.css
    page.emulate_media(color_scheme="dark")
    expect(keyword).to_have_css("color", "rgb(255, 123, 114)")  # github-dark.min.css
    assert page.errors == []


def test_continue_after_max_tokens_grows_the_same_reply(logged_in):
    page = logged_in
    new_chat(page)
    send(page, "[[offline words=40 stop=max_tokens pace_ms=1]]")
    reply = last_reply_done(page)
    expect(reply).to_have_attribute("data-stop-reason", "max_tokens")
    expect(reply.get_by_test_id("message-status")).to_contain_text("Truncated")
    reply_id = reply.get_attribute("data-message-id")
    reply.get_by_test_id("continue").click()
    reply = page.locator(f'[data-message-id="{reply_id}"]')
    expect(reply).to_have_attribute("data-stop-reason", "end_turn", timeout=15000)
    expect(page.locator(ASSISTANT)).to_have_count(1)  # the same bubble, not a new one
    expect(reply.get_by_test_id("continue")).to_have_count(0)
    assert len(reply.get_by_test_id("message-body").inner_text().split()) == 40
    assert page.errors == []


def test_regenerate_edit_and_switch_versions(logged_in):
    page = logged_in
    new_chat(page)
    send(page, "First question [[offline words=8 pace_ms=1]]")
    first = last_reply_done(page)
    first_id = first.get_attribute("data-message-id")
    first.get_by_test_id("regenerate").click()
    expect(page.locator(ASSISTANT)).to_have_count(1)
    reply = page.locator(ASSISTANT).last
    expect(reply).not_to_have_attribute("data-message-id", first_id, timeout=10000)
    reply = last_reply_done(page)
    expect(reply.get_by_test_id("version-label")).to_have_text("2/2")
    reply.get_by_test_id("version-prev").click()
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-message-id", first_id)
    expect(page.locator(ASSISTANT).last.get_by_test_id("version-label")).to_have_text("1/2")

    question = page.locator(USER).last
    question.get_by_test_id("edit").click()
    question.get_by_test_id("edit-input").fill("Edited question [[offline words=5 pace_ms=1]]")
    question.get_by_test_id("edit-save").click()
    user = page.locator(USER).last
    expect(user.get_by_test_id("message-body")).to_have_text(re.compile("Edited question"))
    expect(user.get_by_test_id("version-label")).to_have_text("2/2")
    last_reply_done(page)
    expect(page.locator(ASSISTANT)).to_have_count(1)
    page.reload()
    expect(page.locator(USER).last.get_by_test_id("version-label")).to_have_text("2/2")
    assert page.errors == []


def test_tool_steps_model_picker_meters_and_reply_details(logged_in):
    page = logged_in
    new_chat(page)
    page.get_by_test_id("model-picker").select_option("claude-haiku-4-5")
    send(page, "Please calculate 12 * 7 [[offline call=calculator pace_ms=1]]")
    reply = last_reply_done(page)
    tool = reply.get_by_test_id("tool")
    expect(tool).to_have_count(1)
    expect(tool).to_contain_text("calculator")
    tool.locator("summary").click()
    expect(tool).to_contain_text("84")
    # the title frame names the conversation in the header and the list, without a reload
    title = page.get_by_test_id("conversation-title")
    expect(title).not_to_have_text("New conversation", timeout=10000)
    current = page.locator(".conversation-link.is-current .conversation-title")
    expect(current).to_have_text(title.inner_text())
    expect(page.get_by_test_id("announcer")).to_contain_text("finished replying")
    expect(page.get_by_test_id("context-text")).to_have_text(re.compile(r"\d.* / .*\(\d+%\)"))
    expect(page.get_by_test_id("budget-text")).to_have_text(
        re.compile(r"^\$\d+\.\d\d of \$5\.00 left today$")
    )
    reply.hover()
    meta = reply.get_by_test_id("message-meta")
    expect(meta).to_be_visible()
    expect(meta.get_by_test_id("usage")).to_contain_text("out")
    expect(meta).to_contain_text("claude-haiku-4-5")
    page.reload()
    expect(page.get_by_test_id("model-picker")).to_have_value("claude-haiku-4-5")
    reply = page.locator(ASSISTANT).last
    expect(reply.get_by_test_id("tool")).to_have_count(1)
    expect(reply.get_by_test_id("usage")).to_contain_text("$")
    assert page.errors == []


@pytest.mark.parametrize(
    ("stop", "label"),
    [("refusal", "declined"), ("stop_sequence", "stop sequence")],
)
def test_stop_reasons_are_shown(logged_in, stop, label):
    page = logged_in
    new_chat(page)
    send(page, f"[[offline words=5 stop={stop} pace_ms=1]]")
    reply = last_reply_done(page)
    expect(reply.get_by_test_id("message-status")).to_contain_text(label)


def test_stop_with_escape_and_composer_keys(logged_in):
    page = logged_in
    new_chat(page)
    composer = page.get_by_test_id("composer")
    before = composer.bounding_box()["height"]
    composer.fill("line one")
    composer.press("Shift+Enter")
    for line in ("two", "three", "four"):  # Shift+Enter: new lines, nothing sent
        composer.type(line)
        composer.press("Shift+Enter")
    expect(page.locator(ASSISTANT)).to_have_count(0)
    assert composer.bounding_box()["height"] > before  # grows with its text
    composer.fill("Long one [[offline words=2000 pace_ms=20]]")
    composer.press("Enter")
    expect(page.get_by_test_id("stop")).to_be_visible(timeout=15000)
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "streaming")
    page.locator("body").press("Escape")
    reply = last_reply_done(page)
    expect(reply).to_have_attribute("data-stop-reason", "stopped")
    expect(page.get_by_test_id("stop")).to_be_hidden()


def test_shortcuts_and_help_dialog(logged_in):
    page = logged_in
    new_chat(page)
    page.locator("body").click()
    page.keyboard.press("?")
    expect(page.get_by_test_id("help-dialog")).to_be_visible()
    expect(page.get_by_test_id("help-dialog")).to_contain_text("New chat")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("help-dialog")).to_be_hidden()
    page.keyboard.press("Alt+K")
    expect(page.get_by_test_id("composer")).to_be_focused()
    page.locator("body").click()
    page.keyboard.press("/")
    expect(page.get_by_test_id("search-input")).to_be_focused()
    page.locator("body").click()
    with page.expect_navigation():
        page.keyboard.press("Alt+N")  # New chat: the first page, the message box focused
    assert re.search(r"/c/\d+/$", page.url) is None
    expect(page.get_by_test_id("composer")).to_be_focused()


def test_a_dropped_connection_shows_reconnecting_and_recovers(logged_in):
    page = logged_in
    sockets = []

    def through(ws):
        server = ws.connect_to_server()  # a real socket to the app, which the test can cut
        sockets.append((ws, server))

    page.route_web_socket(re.compile(r"/ws/conversations/"), through)
    new_chat(page)
    ws, server = sockets[-1]
    server.close()
    ws.close(code=4000, reason="cut by the test")
    status = page.get_by_test_id("connection-status")
    expect(status).to_have_attribute("data-state", "reconnecting")
    expect(status).to_contain_text("Reconnecting…")
    expect(status).to_have_attribute("data-state", "open", timeout=15000)
    assert len(sockets) >= 2
    page.get_by_test_id("composer").fill("Back again [[offline words=5 pace_ms=1]]")
    page.get_by_test_id("composer").press("Enter")
    last_reply_done(page)
