"""Decoding uploads within bounds: a few decodes at once per process, large JPEGs decoded reduced,
decompression bombs refused from the header (docs/images.md, "Memory").
"""

from __future__ import annotations

import io
import os
import threading
import warnings

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from PIL import Image, ImageChops, ImageDraw, ImageStat

from chat.models import Attachment
from chat.uploads import attachments, errors, storage, verification
from chat.uploads.errors import AttachmentError
from chat.uploads.images import KINDS, ImageRefused, decode, reencode
from tests.support.uploads import started, stored, upload

needs_s3 = pytest.mark.skipif(
    not os.environ.get("AWS_S3_ENDPOINT_URL"),
    reason="needs the local S3: scripts/services.sh start && . .run/services/env",
)
JPEG = KINDS["image/jpeg"]
WAIT_S = 10


def photo(size: tuple[int, int], **save) -> bytes:
    """A JPEG with gradients, hard edges and fine lines: what a resize can visibly get wrong."""
    width, height = size
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(img)
    for x in range(0, width, max(1, width // 40)):
        draw.line([(x, 0), (width - x, height)], fill=(200, 40, 40), width=3)
    draw.ellipse(
        [width // 4, height // 4, width * 3 // 4, height * 3 // 4], outline="blue", width=9
    )
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, **save)
    return out.getvalue()


def with_header_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with the size its frame header (SOF0) announces replaced; the pixels stay small."""
    at = jpeg.index(b"\xff\xc0") + 5  # marker, length (2), precision (1), then height, width
    return jpeg[:at] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[at + 4 :]


# --- reduced decoding ----------------------------------------------------------------------------


def test_a_large_jpeg_is_decoded_reduced_and_resized_exactly(settings):
    settings.IMAGE_LONG_EDGE_PX = 1568
    data = photo((4000, 3000))

    img = decode(data, JPEG, fit_edge=1568)
    # Half size is the smallest reduction still at or above 1568 × 1176: a quarter of the pixels.
    assert img.size == (2000, 1500)
    reduced = reencode(img, JPEG)
    assert (reduced.width, reduced.height) == (1568, 1176)

    # As good as resizing the whole decode: against an exact LANCZOS resize of all 12 million
    # pixels, the stored image is no further off than the one made from the whole decode.
    whole = reencode(decode(data, JPEG), JPEG)
    with Image.open(io.BytesIO(data)) as original:
        exact = original.convert("RGB").resize((1568, 1176), Image.Resampling.LANCZOS)
    assert error(reduced, exact) <= error(whole, exact) + 0.5
    assert error(reduced, exact) < 5  # of 255, per channel: JPEG quality 85 alone gives ~4


def error(encoded, reference: Image.Image) -> float:
    """The mean difference per pixel of the worst channel."""
    with Image.open(io.BytesIO(encoded.data)) as img:
        difference = ImageChops.difference(img.convert("RGB"), reference)
    return max(ImageStat.Stat(difference).mean)


def test_a_jpeg_near_the_stored_size_is_decoded_whole(settings):
    data = photo((3000, 1500))
    assert decode(data, JPEG, fit_edge=1568).size == (3000, 1500)
    assert decode(data, JPEG).size == (3000, 1500)


def test_exif_orientation_still_applies_to_a_reduced_decode():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img = decode(photo((4000, 2000), exif=exif.tobytes()), JPEG, fit_edge=1000)
    assert img.size == (500, 1000)  # a quarter of the pixels on each side, then upright


# --- bombs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        (6000, 4200),  # just over the limit: a reduced decode would be small, still refused
        (60000, 60000),  # far over it: Pillow's own guard, at open
    ],
)
def test_a_jpeg_bomb_is_refused_from_its_header_before_decoding(settings, size):
    settings.IMAGE_MAX_PIXELS = 25_000_000
    # The scan holds the pixels of a 64 × 48 image: any decode of the announced size would fail
    # as a damaged file, so this message shows the header was judged before decoding.
    bomb = with_header_size(photo((64, 48)), *size)
    with pytest.raises(ImageRefused, match="too many pixels"), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's, at open
        decode(bomb, JPEG, fit_edge=settings.IMAGE_LONG_EDGE_PX)


# --- decodes at once -----------------------------------------------------------------------------


def _finish_in_thread(owner, attachment_id: int, results: dict) -> threading.Thread:
    def run() -> None:
        try:
            results[attachment_id] = attachments.finish_upload(
                owner=owner, attachment_id=attachment_id
            ).state
        except AttachmentError as exc:
            results[attachment_id] = exc.code
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@needs_s3
@pytest.mark.django_db(transaction=True)
def test_at_most_the_configured_number_of_decodes_run_at_once(alice, s3, settings, monkeypatch):
    settings.IMAGE_VERIFY_CONCURRENCY = 2
    settings.IMAGE_VERIFY_WAIT_SECONDS = WAIT_S
    slots = verification.decode_slots
    lock = threading.Lock()
    seen = {"active": 0, "most": 0, "entered": 0}
    both_decoding = threading.Barrier(2, timeout=WAIT_S)
    real_decode = verification.decode

    def observed_decode(data, kind, **options):
        with lock:
            seen["active"] += 1
            seen["most"] = max(seen["most"], seen["active"])
            seen["entered"] += 1
            first_two = seen["entered"] <= 2
        try:
            if first_two:
                # Both first decodes meet here, and stay until the third finish waits for a slot.
                both_decoding.wait()
                slots.wait_until(lambda s: s.waiting >= 1, timeout=WAIT_S)
            return real_decode(data, kind, **options)
        finally:
            with lock:
                seen["active"] -= 1

    monkeypatch.setattr(verification, "decode", observed_decode)
    data = photo((800, 600))
    rows = []
    for _ in range(3):
        attachment, post = started(alice, data, "image/jpeg")
        upload(post, data)
        rows.append(attachment)
    results: dict = {}
    threads = [_finish_in_thread(alice, a.pk, results) for a in rows]
    for thread in threads:
        thread.join(timeout=3 * WAIT_S)

    assert results == {a.pk: "verified" for a in rows}
    assert seen == {"active": 0, "most": 2, "entered": 3}
    assert (slots.busy, slots.waiting) == (0, 0)


@needs_s3
def test_a_finish_with_no_free_slot_is_busy_and_can_be_retried(alice, s3, settings):
    settings.IMAGE_VERIFY_CONCURRENCY = 1
    settings.IMAGE_VERIFY_WAIT_SECONDS = 0
    data = photo((800, 600))
    attachment, post = started(alice, data, "image/jpeg")
    upload(post, data)
    web = Client()
    web.force_login(alice)
    url = reverse("chat:attachment_finish", args=[attachment.pk])

    with verification.decode_slot():  # another finish is decoding
        response = web.post(url)
    assert response.status_code == 503
    assert response["Retry-After"] == str(errors.BUSY_RETRY_AFTER_S)
    assert response.json()["error"]["code"] == "busy"
    attachment.refresh_from_db()
    assert attachment.state == Attachment.State.PENDING
    assert stored(s3, attachment.key) == data

    response = web.post(url)
    assert response.status_code == 200
    assert response.json()["state"] == "verified"


# --- S3 client -----------------------------------------------------------------------------------


def test_request_threads_share_one_s3_client():
    # Daphne runs each request on a new thread; a client per thread cost 13 MiB and 0.3 s each.
    clients = []
    threads = [threading.Thread(target=lambda: clients.append(storage.client())) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clients[0] is clients[1] is storage.client()
