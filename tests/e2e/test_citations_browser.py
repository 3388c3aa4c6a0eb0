"""In headless Chromium: the web search switch, a searching reply's steps, its numbered citation
markers and Sources (streamed, then reloaded), a failed search, and a PDF's page citations."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.test_images_browser import new_chat

ASSISTANT = '[data-testid="message"][data-role="assistant"]'


def turn_on_web_search(page) -> None:
    toggle = page.get_by_test_id("web-search-toggle")
    expect(toggle).not_to_be_checked()
    with page.expect_response(lambda r: r.url.endswith("/web-search/")) as saved:
        toggle.check()
    assert saved.value.status == 200
    assert saved.value.json()["web_search"] is True


def ask(page, text: str):
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("composer").press("Enter")
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "done", timeout=20000)
    return reply


def citations_of(reply) -> dict:
    """What a reader sees of the reply's citations: the markers in order and the sources."""
    markers = reply.get_by_test_id("cite-marker")
    sources = reply.get_by_test_id("source")
    return {
        "markers": markers.all_inner_texts(),
        "sources": [" ".join(t.split()) for t in sources.all_inner_texts()],
    }


def check_web_citations(page, reply) -> dict:
    steps = reply.locator('[data-testid="tool"][data-tool-name="web_search"]')
    expect(steps).to_have_count(2)
    for i in range(2):
        expect(steps.nth(i)).to_have_attribute("data-state", "done")
        expect(steps.nth(i).locator("summary")).to_contain_text("Web search")
    steps.first.locator("summary").click()
    expect(steps.first.locator(".tool-data").last).to_contain_text("https://")

    seen = citations_of(reply)
    assert seen["markers"], "no citation markers"
    numbers = [int(m.strip("[]")) for m in seen["markers"]]
    # numbered per reply by distinct source, in order of first use, each listed once
    first_uses = list(dict.fromkeys(numbers))
    assert first_uses == list(range(1, len(first_uses) + 1))
    assert len(seen["sources"]) == len(first_uses)

    links = reply.get_by_test_id("source-link")
    expect(links).to_have_count(len(first_uses))
    for i in range(links.count()):
        link = links.nth(i)
        expect(link).to_have_attribute("target", "_blank")
        expect(link).to_have_attribute("rel", "noopener noreferrer")
        href = link.get_attribute("href")
        assert re.match(r"https://[a-z.]*example\.(org|com|net)/", href), href
        source = reply.get_by_test_id("source").nth(i)
        host = href.split("/")[2]
        expect(source.get_by_test_id("source-host")).to_have_text(host)
        expect(source.get_by_test_id("source-age")).not_to_be_empty()

    # a marker shows its cited text; Escape closes it and gives the marker its focus back
    marker = reply.get_by_test_id("cite-marker").first
    marker.focus()
    page.keyboard.press("Enter")
    popover = reply.get_by_test_id("cite-popover")
    expect(popover).to_be_visible()
    expect(marker).to_have_attribute("aria-expanded", "true")
    expect(popover.get_by_test_id("cited-text").first).not_to_be_empty()
    expect(popover.get_by_test_id("source-link")).to_have_attribute("rel", "noopener noreferrer")
    page.keyboard.press("Escape")
    expect(popover).to_have_count(0)
    expect(marker).to_be_focused()
    expect(marker).to_have_attribute("aria-expanded", "false")
    return seen


def copied_text(page, reply) -> str:
    """The plain text a copy of the whole reply's body puts on the clipboard."""
    return reply.get_by_test_id("message-body").evaluate(
        """body => {
            window.getSelection().selectAllChildren(body);
            const data = new DataTransfer();
            body.dispatchEvent(new ClipboardEvent("copy", {clipboardData: data, bubbles: true, cancelable: true}));
            return data.getData("text/plain");
        }"""
    )


def test_web_search_steps_markers_and_sources_stay_after_a_reload(logged_in):
    page = logged_in
    new_chat(page)
    turn_on_web_search(page)
    reply = ask(page, "[[offline search=2 pace_ms=1]] What is new about tide clocks?")
    streamed = check_web_citations(page, reply)

    body = reply.get_by_test_id("message-body")
    assert (
        body.locator(".cite-marker").first.evaluate("m => getComputedStyle(m).userSelect") == "none"
    )
    copied = copied_text(page, reply)
    assert copied.strip() and "[1]" not in copied
    assert (
        copied.split()
        == body.evaluate(
            "b => { const c = b.cloneNode(true); c.querySelectorAll('.cite-marker').forEach(m => m.remove()); return c.innerText; }"
        ).split()
    )

    page.reload()
    expect(page.get_by_test_id("web-search-toggle")).to_be_checked()
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "done")
    assert check_web_citations(page, reply) == streamed
    assert page.errors == []


def test_a_failed_search_is_a_failed_step_and_the_reply_still_ends(logged_in):
    page = logged_in
    new_chat(page)
    turn_on_web_search(page)
    reply = ask(page, "[[offline search=1 search_error=too_many_requests pace_ms=1]] Latest news?")
    for _attempt in ("streamed", "reloaded"):
        step = reply.locator('[data-testid="tool"][data-tool-name="web_search"]')
        expect(step).to_have_count(1)
        expect(step).to_have_attribute("data-state", "failed")
        expect(step.locator("summary")).to_contain_text("failed")
        step.locator("summary").click()
        expect(step).to_contain_text("Search failed: too_many_requests")
        expect(reply.get_by_test_id("source")).to_have_count(0)
        page.reload()
        reply = page.locator(ASSISTANT).last
        expect(reply).to_have_attribute("data-status", "done")
    assert page.errors == []


def test_the_switch_is_saved_and_a_send_follows_it(logged_in):
    page = logged_in
    new_chat(page)
    turn_on_web_search(page)
    with page.expect_response(lambda r: r.url.endswith("/web-search/")) as saved:
        page.get_by_test_id("web-search-toggle").uncheck()
    assert saved.value.json()["web_search"] is False
    reply = ask(page, "[[offline search=1 pace_ms=1]] What is the latest on tide clocks?")
    # the tool was not offered: no search step, no sources
    expect(reply.get_by_test_id("tool")).to_have_count(0)
    expect(reply.get_by_test_id("sources")).to_be_hidden()
    page.reload()
    expect(page.get_by_test_id("web-search-toggle")).not_to_be_checked()
    assert page.errors == []
