"""In headless Chromium: a chat page whose messages the server draws (chat/views/drawn.py) shows
them before any script runs, as the page's own renderer would, and the script adopts them."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.test_ui_browser import ASSISTANT, last_reply_done, login, make_user, new_chat, send


@pytest.fixture
def logged_in(page, app_server, app_env):
    """A user of its own: this file's sends do not count against the shared user's rate."""
    login(page, app_server, make_user(app_env))
    return page


# Markdown of the kinds a reply holds, each written by both renderers (marked in the browser,
# markdown-it on the server).
REPLY = """## Reading a file

Some *emphasis*, **strong**, ~~gone~~, `inline code` and a [link](https://example.com/docs).

1. first
2. second
   - nested a
   - nested b

> A quote
> over two lines

| column | type |
| :--- | ---: |
| name | str |
| amount | Decimal |

```python
def total(rows):
    return sum(r["amount"] for r in rows if r)
```

```
just some words
```

<b>not bold</b> and ![a chart](https://example.com/c.png) and [bad](javascript:alert(1))

---

The last line, with www.example.org in it.
"""

# The body's elements (tag, link target, column alignment) in order, and its text: what both
# renderers must agree on. Code colouring (spans in code) is left out: drawn code is coloured
# later, by the same highlighter.
SHAPE = """(body) => {
  const tags = [];
  const walk = (node, depth) => {
    for (const child of node.children) {
      if (child.tagName === "SPAN" && child.closest("pre")) continue;
      let tag = "-".repeat(depth) + child.tagName;
      const href = child.getAttribute("href");
      if (href !== null) tag += "[" + new URL(href).href + "]";
      if (child.getAttribute("align")) tag += "{" + child.getAttribute("align") + "}";
      tags.push(tag);
      walk(child, depth + 1);
    }
  };
  walk(body, 0);
  return { tags, text: body.textContent.replace(/\\s+/g, " ").trim() };
}"""

# The reply's parts and code elements as the parser made them: recorded when parsing ends, before
# any of the page's (deferred) scripts has run.
RECORD_PARSED = """
document.addEventListener("readystatechange", () => {
  if (document.readyState !== "interactive") return;
  const reply = document.querySelector('[data-role="assistant"]');
  window.__parsed = reply ? [...reply.querySelectorAll(".message-part, .message-part *")] : [];
});
"""
# True when the reply's parts and code are still those nodes (nothing drew them again).
SAME_AS_PARSED = """(reply) => {
  const now = [...reply.querySelectorAll(".message-part, .message-part *")]
    .filter((node) => !(node.tagName === "SPAN" && node.closest("pre")));
  return now.length > 0 && now.every((node) => window.__parsed.includes(node));
}"""


def test_a_drawn_page_shows_its_messages_without_script_as_the_script_renders_them(
    logged_in, browser
):
    page = logged_in
    new_chat(page)
    send(page, "[[offline reply pace_ms=1]]\n" + REPLY)
    reply = last_reply_done(page)
    rendered = reply.get_by_test_id("message-body").evaluate(SHAPE)
    url = page.url

    context = browser.new_context(
        java_script_enabled=False,
        storage_state=page.context.storage_state(),
        viewport={"width": 390, "height": 640},
    )
    try:
        still = context.new_page()
        still.goto(url)
        messages = still.get_by_test_id("messages")
        expect(still.locator(ASSISTANT)).to_have_count(1)
        expect(still.locator(ASSISTANT).locator("pre code")).to_have_count(2)
        drawn = still.locator(ASSISTANT).get_by_test_id("message-body").evaluate(SHAPE)
        assert drawn == rendered
        # The list opens at its end, where the script keeps it.
        sizes = messages.evaluate("e => [e.scrollTop, e.clientHeight, e.scrollHeight]")
        assert sizes[2] > sizes[1], "the conversation must be taller than the list"
        assert sizes[0] + sizes[1] >= sizes[2] - 1, sizes
    finally:
        context.close()


def test_the_script_adopts_the_drawn_messages_instead_of_drawing_them_again(logged_in):
    page = logged_in
    new_chat(page)
    page.get_by_test_id("model-picker").select_option("claude-opus-4-7")
    with page.expect_response(re.compile(r"/thinking/$")):
        page.get_by_test_id("thinking-picker").select_option("low")  # a reply with thinking
    send(page, "[[offline reply pace_ms=1]]\n" + REPLY)
    last_reply_done(page)
    page.add_init_script(RECORD_PARSED)
    answers: list[str] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framereceived",
            lambda payload: answers.append(json.loads(payload).get("type", "")),
        ),
    )
    page.reload()
    # The answer to the page's `resume`: the reply just finished, replayed (its deltas and
    # `done`), or the saved reply (`message`); either would draw it again if the script did.
    deadline = time.monotonic() + 15
    while not {"done", "message"} & set(answers):
        assert time.monotonic() < deadline, answers
        page.wait_for_timeout(50)
    reply = page.locator(ASSISTANT).last
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    expect(reply.locator("pre code .hljs-keyword").first).to_be_visible()  # coloured by the server
    # The unlabelled block, which the server leaves plain: the page guesses its language (and
    # fetches highlight.js for it) once it has adopted the reply.
    expect(reply.locator("pre:not([data-lang='python']) code")).to_have_attribute(
        "data-coloured", "true"
    )
    expect(reply.get_by_test_id("message-actions").locator("button").first).to_be_visible()
    assert page.locator("article[data-drawn]").count() == 0
    assert reply.evaluate(SAME_AS_PARSED), "the script drew the reply again"
    # What the script adds to drawn messages works: the thinking panel opens, Copy copies.
    toggle = reply.get_by_test_id("thinking-toggle")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(reply.get_by_test_id("thinking-body")).to_be_visible()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    reply.get_by_test_id("copy-code").first.click()
    expect(reply.get_by_test_id("copy-code").first).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == 'def total(rows):\n    return sum(r["amount"] for r in rows if r)'
    assert page.errors == []


LOADED = """(name) => performance.getEntriesByType("resource").some((e) => e.name.includes(name))"""


def test_a_drawn_page_fetches_the_renderer_only_when_a_reply_needs_it(logged_in):
    """marked and DOMPurify are not fetched for a page the server drew until the reader does
    something or a frame needs a render: a reply sent from another tab to a page nobody has
    touched is shown, as text first, then rendered."""
    page = logged_in
    new_chat(page)
    send(page, "[[offline reply pace_ms=1]]\nHello")
    last_reply_done(page)
    untouched = page.context.new_page()
    untouched.goto(page.url)
    expect(untouched.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    assert untouched.locator("article[data-drawn]").count() == 0  # adopted
    assert not untouched.evaluate(LOADED, "marked.esm.js")
    assert not untouched.evaluate(LOADED, "purify.es.mjs")
    assert not untouched.evaluate(LOADED, "highlight.min.js")

    send(
        page,
        "[[offline reply pace_ms=1]]\n## Sent elsewhere\n\n| a | b |\n| --- | --- |\n| 1 | 2 |",
    )
    reply = untouched.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "done", timeout=15000)
    expect(reply.locator("h2")).to_have_text("Sent elsewhere")
    expect(reply.locator("table td")).to_have_count(2)
    assert "##" not in reply.get_by_test_id("message-body").inner_text()
    assert untouched.evaluate(LOADED, "marked.esm.js")
    assert page.errors == []
