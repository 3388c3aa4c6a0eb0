"""In headless Chromium: attach images (button, drop, paste), watch them upload straight to the
local S3, send one, and see the offline model describe it."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from tests.e2e.conftest import open_empty_conversation

UPLOAD_BYTES_PER_S = 40_000


def new_chat(page):
    open_empty_conversation(page)


def png(size: tuple[int, int]) -> bytes:
    """A picture with some detail, so that it does not compress to nothing."""
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(img)
    for x in range(0, size[0], 40):
        draw.line([(x, 0), (size[0] - x, size[1])], fill=(200, 80, 30), width=3)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def slow_uploads(logged_in):
    """Throttles the browser's uploads, so that the progress bar can be seen moving."""
    cdp = logged_in.context.new_cdp_session(logged_in)
    cdp.send("Network.enable")

    def throttle(on: bool) -> None:
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": UPLOAD_BYTES_PER_S if on else -1,
            },
        )

    return throttle


def test_an_attached_image_uploads_and_reaches_the_model(logged_in, slow_uploads, tmp_path):
    page = logged_in
    new_chat(page)
    expect(page.get_by_test_id("attach")).to_be_visible()
    picture = tmp_path / "landscape.png"
    picture.write_bytes(png((3000, 2000)))  # above the browser's 2048 px: shrunk before upload

    slow_uploads(True)
    page.get_by_test_id("attach-input").set_input_files(str(picture))
    item = page.get_by_test_id("attachment-item")
    progress = item.get_by_test_id("attachment-progress")
    expect(item).to_have_attribute("data-state", "uploading", timeout=10000)
    expect(progress).to_be_visible()
    expect(page.get_by_test_id("send")).to_be_disabled()
    slow_uploads(False)

    expect(item).to_have_attribute("data-state", "ready", timeout=20000)
    expect(progress).to_have_attribute("value", "100")
    expect(progress).to_be_hidden()
    thumb = item.get_by_test_id("attachment-thumb")
    expect(thumb).to_be_visible()
    assert thumb.evaluate("img => img.naturalWidth") == 2048  # the browser's copy
    # Verified and re-encoded by the server at 1568 px: 1568 × 1045 / 750 tokens.
    expect(item).to_contain_text("1568×1045")
    expect(page.get_by_test_id("token-estimate")).to_have_text("1 image: about 2,185 input tokens")
    expect(page.get_by_test_id("send")).to_be_enabled()

    page.get_by_test_id("composer").fill("What is in this picture?")
    page.get_by_test_id("composer").press("Enter")
    user = page.locator('[data-testid="message"][data-role="user"]').last
    expect(user).to_contain_text("What is in this picture?", timeout=10000)
    expect(page.get_by_test_id("attachment-preview")).to_be_hidden()
    image = user.get_by_test_id("message-image").locator("img")
    expect(image).to_be_visible()
    # Loaded through /attachments/<id>/ and its redirect to a presigned GET on the bucket.
    page.wait_for_function(
        "img => img.complete && img.naturalWidth === 1568", arg=image.element_handle()
    )

    reply = page.locator('[data-testid="message"][data-role="assistant"]').last
    expect(reply).to_have_attribute("data-status", "done", timeout=20000)
    expect(reply.get_by_test_id("message-body")).to_contain_text(
        "an image image/png of 1568×1045 px"
    )

    image.click()
    expect(page.get_by_test_id("image-viewer")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("image-viewer")).to_be_hidden()
    assert page.errors == []


def test_drop_paste_and_cancel(logged_in):
    page = logged_in
    new_chat(page)
    data = base64.b64encode(png((120, 80))).decode()
    page.evaluate(
        """data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = () => {
              const t = new DataTransfer();
              t.items.add(new File([bytes], "shot.png", {type: "image/png"}));
              return t;
            };
            document.getElementById("composer").dispatchEvent(
              new DragEvent("drop", {dataTransfer: transfer(), bubbles: true, cancelable: true}));
            document.getElementById("composer-input").dispatchEvent(
              new ClipboardEvent("paste", {clipboardData: transfer(), bubbles: true, cancelable: true}));
        }""",
        data,
    )
    items = page.get_by_test_id("attachment-item")
    expect(items).to_have_count(2)
    for i in range(2):
        expect(items.nth(i)).to_have_attribute("data-state", "ready", timeout=15000)
    expect(page.get_by_test_id("token-estimate")).to_have_text("2 images: about 26 input tokens")

    with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        items.first.get_by_test_id("attachment-cancel").click()
    assert deleted.value.status == 204
    expect(items).to_have_count(1)
    expect(page.get_by_test_id("token-estimate")).to_have_text("1 image: about 13 input tokens")
    assert page.errors == []


def test_a_file_that_is_not_an_image_is_refused(logged_in, tmp_path):
    page = logged_in
    new_chat(page)
    fake = tmp_path / "innocent.png"
    fake.write_bytes(b"<!doctype html><script>alert(1)</script>")
    page.get_by_test_id("attach-input").set_input_files(str(fake))
    item = page.get_by_test_id("attachment-item")
    expect(item).to_have_attribute("data-state", "failed")
    expect(item).to_contain_text("cannot be read as an image")
    expect(page.get_by_test_id("send")).to_be_enabled()
    item.get_by_test_id("attachment-cancel").click()
    expect(page.get_by_test_id("attachment-preview")).to_be_hidden()
