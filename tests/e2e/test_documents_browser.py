"""In headless Chromium: attach documents (a PDF, a refused one), send a PDF and see the offline
model's page citations, streamed and after a reload."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.test_images_browser import new_chat
from tests.support.documents import text_pdf

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
USER = '[data-testid="message"][data-role="user"]'
# "3 pages", then the server's token estimate when it makes one ("≈ 1.2k tokens").
PDF_CAPTION = re.compile(r"^3 pages( · ≈ \d+(\.\d)?k? tokens)?$")


def attach(page, path) -> object:
    page.get_by_test_id("attach-input").set_input_files(str(path))
    return page.get_by_test_id("attachment-item").last


def test_a_pdf_shows_as_a_document_chip_and_a_file_that_is_not_one_is_refused(logged_in, tmp_path):
    page = logged_in
    new_chat(page)
    expect(page.get_by_test_id("attach-input")).to_have_attribute(
        "accept", re.compile(r"application/pdf.*text/markdown")
    )
    report = tmp_path / "Quarterly report.pdf"
    report.write_bytes(text_pdf(3))
    item = attach(page, report)
    expect(item).to_have_attribute("data-state", "ready", timeout=15000)
    expect(item).to_have_attribute("data-kind", "document")
    expect(item.get_by_test_id("attachment-name")).to_have_text("Quarterly report.pdf")
    expect(item.locator("figcaption")).to_have_text(PDF_CAPTION)
    expect(item.locator("img")).to_have_count(0)  # no image, so no broken-image icon
    expect(page.get_by_test_id("token-estimate")).to_contain_text("1 document")

    fake = tmp_path / "invoice.pdf"
    fake.write_bytes(b"<!doctype html><script>alert(1)</script>")
    refused = attach(page, fake)
    expect(refused).to_have_attribute("data-state", "failed", timeout=15000)
    expect(refused).to_contain_text("The file's contents are not a PDF.")
    expect(page.get_by_test_id("send")).to_be_enabled()
    assert page.errors == []


def test_a_sent_pdf_is_cited_by_page_and_the_citations_stay_after_a_reload(logged_in, tmp_path):
    page = logged_in
    new_chat(page)
    report = tmp_path / "Tides.pdf"
    report.write_bytes(text_pdf(3, "Tide clocks were checked on page"))
    item = attach(page, report)
    expect(item).to_have_attribute("data-state", "ready", timeout=15000)
    page.get_by_test_id("composer").fill("[[offline cite_page=2 pace_ms=1]] What does page 2 say?")
    page.get_by_test_id("composer").press("Enter")
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "done", timeout=20000)

    for _attempt in ("streamed", "reloaded"):
        question = page.locator(USER).last
        chip = question.get_by_test_id("message-document")
        expect(chip).to_contain_text("Tides.pdf")
        expect(chip).to_contain_text("3 pages")
        expect(reply.get_by_test_id("cite-marker")).to_have_text(["[1]"])
        source = reply.get_by_test_id("source")
        expect(source).to_have_count(1)
        expect(source).to_contain_text("Tides.pdf")
        expect(source.get_by_test_id("source-where")).to_have_text("p. 2")
        expect(source.locator("a")).to_have_count(0)  # a document source is not a link
        reply.get_by_test_id("cite-marker").click()
        expect(reply.get_by_test_id("cited-text")).to_contain_text(
            "Tide clocks were checked on page 2"
        )
        page.keyboard.press("Escape")
        page.reload()
        reply = page.locator(ASSISTANT).last
        expect(reply).to_have_attribute("data-status", "done")
    assert page.errors == []
