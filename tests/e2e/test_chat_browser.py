"""In headless Chromium: log in, chat, reload mid-reply, and model text never runs as script."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.conftest import open_empty_conversation

WORDS = 600  # ~9 s at 15 ms a token: still streaming when the page reloads


def new_chat(page):
    open_empty_conversation(page)


def send(page, text: str) -> None:
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("composer").press("Enter")


def test_a_reply_streams_in_and_survives_a_reload(logged_in):
    page = logged_in
    new_chat(page)
    send(page, f"Tell me a story [[offline words={WORDS} pace_ms=15]]")
    reply = page.locator('[data-testid="message"][data-role="assistant"]').last
    expect(reply).to_have_attribute("data-status", "streaming")
    body = reply.get_by_test_id("message-body")
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll("
        "'[data-role=assistant] [data-testid=message-body]')].pop();"
        " return m && m.innerText.trim().split(/\\s+/).length > 20; }"
    )
    partial_words = len(body.inner_text().split())
    assert 20 < partial_words < WORDS  # still streaming when we reload

    page.reload()
    reply = page.locator('[data-testid="message"][data-role="assistant"]').last
    expect(reply).to_have_attribute("data-status", "done", timeout=20000)
    text = reply.get_by_test_id("message-body").inner_text()
    assert len(text.split()) == WORDS
    # the user's message is there too, and the composer is ready again
    expect(page.locator('[data-testid="message"][data-role="user"]')).to_have_count(1)
    expect(page.get_by_test_id("stop")).to_be_hidden()
    assert page.errors == []


XSS_REPLY = """Here you go:

<script>window.__xss = 1</script>
<img src=x onerror="window.__xss = 2">
[click me](javascript:window.__xss=3)
<a href="data:text/html,<script>alert(1)</script>">data link</a>
<svg onload="window.__xss = 4"></svg>

```html
<script>window.__xss = 5</script>
```
"""


def test_model_output_never_runs_script(logged_in):
    page = logged_in
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    new_chat(page)
    send(page, "[[offline reply pace_ms=1]]\n" + XSS_REPLY)
    reply = page.locator('[data-testid="message"][data-role="assistant"]').last
    expect(reply).to_have_attribute("data-status", "done", timeout=10000)
    for link in reply.locator("a").all():
        href = link.get_attribute("href") or ""
        assert not href.lower().startswith(("javascript:", "data:")), href
    assert reply.locator("script, img[onerror], svg[onload]").count() == 0
    page.reload()
    reply = page.locator('[data-testid="message"][data-role="assistant"]').last
    expect(reply).to_have_attribute("data-status", "done")
    assert "window.__xss = 5" in reply.inner_text()  # code shown as text
    assert page.evaluate("() => window.__xss") is None
    assert dialogs == []
