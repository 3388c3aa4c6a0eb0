"""Hostile uploads, through the HTTP endpoints and the local S3 server, as a script would send them.

Each refusal must be clear (`{"error": {"code", "message"}}` with the right status), leave the
request path working (the same user's next valid upload succeeds), and store nothing half-done:
the row is rejected (or never made) and no S3 object is left under the upload's key or the
verified key. What is accepted is always the server's own re-encoding.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zlib

import pytest
import requests
from django.test import Client
from PIL import Image

from chat.models import Attachment
from chat.uploads.verification import verified_key
from tests.conftest import make_user
from tests.support.uploads import image_bytes, stored, upload

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        not os.environ.get("AWS_S3_ENDPOINT_URL"),
        reason="needs the local S3: scripts/services.sh start && . .run/services/env",
    ),
]

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def web(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def start(web: Client, content_type="image/png", byte_size=10, name="photo.png", raw=None):
    body = (
        raw
        if raw is not None
        else json.dumps({"content_type": content_type, "byte_size": byte_size, "name": name})
    )
    return web.post("/attachments/start/", data=body, content_type="application/json")


def upload_and_finish(web, data: bytes, content_type="image/png", *, sent_as=None, name="a.png"):
    """start → POST to S3 → finish; returns (attachment row, finish response, start json)."""
    response = start(web, content_type, len(data), name)
    assert response.status_code == 201, response.content
    started = response.json()
    upload(started["upload"], data, sent_as, timeout=30)
    finished = web.post(f"/attachments/{started['id']}/finish/")
    return Attachment.objects.get(pk=started["id"]), finished, started


def assert_refused(s3, row: Attachment, response, status: int, code: str, message: str):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert message.lower() in error["message"].lower(), error["message"]
    row.refresh_from_db()
    assert row.state == "rejected" and row.reject_reason == error["message"]
    assert row.sha256 == "" or row.sha256 is None
    assert stored(s3, row.key) is None, "the refused upload is still in S3"
    assert stored(s3, verified_key(row.key)) is None, "a verified copy was written"


def assert_still_works(web, s3):
    """The same user can still upload a plain image afterwards."""
    row, response, _ = upload_and_finish(web, image_bytes())
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "verified"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bomb(width: int, height: int, *, bit_depth=1, colour=0, idat_mib: int = 2) -> bytes:
    """A PNG header claiming width×height, its IDAT a few MiB of compressed zeros."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    zeros = zlib.compressobj(9)
    body = b"".join(zeros.compress(b"\0" * (1 << 20)) for _ in range(idat_mib)) + zeros.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )


def animated_gif(frames: int) -> bytes:
    images = [Image.new("P", (32, 32), i % 256) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=10, loop=0)
    return out.getvalue()


HTML = b"<!doctype html><html><body><script>window.__xss=1</script></body></html>"
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
    b"<script>alert(2)</script></svg>"
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


# --- refused at finish (the bytes) ---------------------------------------------------------------

REFUSED_AT_FINISH = [
    # (id, bytes factory, declared type, sent Content-Type, expected message)
    ("html-named-png", lambda: HTML, "image/png", None, "contents are not a PNG"),
    ("svg-with-script-as-png", lambda: SVG, "image/png", None, "contents are not a PNG"),
    ("pdf-as-png", lambda: PDF, "image/png", None, "contents are not a PNG"),
    ("jpeg-declared-png", lambda: image_bytes("JPEG"), "image/png", None, "contents are not a PNG"),
    ("png-declared-gif", lambda: image_bytes("PNG"), "image/gif", None, "contents are not a GIF"),
    ("gif-declared-webp", lambda: image_bytes("GIF", mode="P"), "image/webp", None, "not a WebP"),
    (
        "magic-only",
        lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
        "image/png",
        None,
        "damaged",
    ),
    (
        "truncated-png",
        lambda: image_bytes("PNG", (200, 200), noise=True)[:3000],
        "image/png",
        None,
        "damaged",
    ),
    (
        "truncated-jpeg",
        lambda: image_bytes("JPEG", (200, 200), noise=True)[:2000],
        "image/jpeg",
        None,
        "damaged",
    ),
    (
        "zip-bomb-png-huge-idat",
        lambda: png_bomb(60_000, 60_000, idat_mib=4),
        "image/png",
        None,
        "too many pixels",
    ),
    ("huge-dimensions", lambda: png_bomb(65_535, 65_535, idat_mib=0), "image/png", None, "pixels"),
    ("zero-width", lambda: png_bomb(0, 10, idat_mib=0), "image/png", None, ""),
    (
        "content-type-lie-at-upload",
        lambda: image_bytes("PNG"),
        "image/png",
        "text/html",
        "not uploaded as a PNG",
    ),
    (
        "svg-type-at-upload",
        lambda: image_bytes("PNG"),
        "image/png",
        "image/svg+xml",
        "not uploaded as a PNG",
    ),
]


@pytest.mark.parametrize(
    ("make", "declared", "sent_as", "message"),
    [case[1:] for case in REFUSED_AT_FINISH],
    ids=[case[0] for case in REFUSED_AT_FINISH],
)
def test_refused_at_finish(web, s3, make, declared, sent_as, message):
    data = make()
    began = time.monotonic()
    row, response, _ = upload_and_finish(web, data, declared, sent_as=sent_as)
    assert time.monotonic() - began < 20, "refusing it took too long"
    assert_refused(s3, row, response, 400, "attachment_invalid", message)
    assert_still_works(web, s3)


def test_an_empty_upload_is_refused(web, s3):
    """Declared 10 bytes, sent none: S3 would refuse (content-length-range 1..); finish does too."""
    response = start(web, "image/png", 10)
    started = response.json()
    requests.post(
        started["upload"]["url"],
        data=started["upload"]["fields"],
        files={"file": ("f", b"")},
        timeout=10,
    )
    row = Attachment.objects.get(pk=started["id"])
    finished = web.post(f"/attachments/{started['id']}/finish/")
    assert finished.status_code == 400
    row.refresh_from_db()
    assert row.state == "rejected"
    assert stored(s3, row.key) is None and stored(s3, verified_key(row.key)) is None


# --- refused at start (the declaration) ----------------------------------------------------------

REFUSED_AT_START = [
    ("svg-type", {"content_type": "image/svg+xml", "byte_size": 10}, "SVG images are not"),
    ("zip-type", {"content_type": "application/zip", "byte_size": 10}, "Only JPEG"),
    ("html-type", {"content_type": "text/html", "byte_size": 10}, "Only JPEG"),
    ("no-type", {"byte_size": 10}, "Attach an image"),
    ("type-list", {"content_type": ["image/png"], "byte_size": 10}, "Attach an image"),
    ("zero-bytes", {"content_type": "image/png", "byte_size": 0}, "byte_size"),
    ("negative-bytes", {"content_type": "image/png", "byte_size": -1}, "byte_size"),
    ("float-bytes", {"content_type": "image/png", "byte_size": 10.5}, "byte_size"),
    ("bool-bytes", {"content_type": "image/png", "byte_size": True}, "byte_size"),
    ("huge-bytes", {"content_type": "image/png", "byte_size": 10**30}, "the limit is"),
]


@pytest.mark.parametrize(
    "body", [case[1] for case in REFUSED_AT_START], ids=[case[0] for case in REFUSED_AT_START]
)
def test_refused_at_start(web, s3, body):
    message = dict((case[0], case[2]) for case in REFUSED_AT_START)
    response = start(web, raw=json.dumps({**body, "name": "x.png"}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "attachment_invalid"
    expected = next(case[2] for case in REFUSED_AT_START if case[1] == body)
    assert expected.lower() in error["message"].lower(), (error, message)
    assert not Attachment.objects.exists()
    assert_still_works(web, s3)


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'"x"', b"\xff\xfe", b"{" * 10_000, b'{"a": NaN}'],
    ids=["not-json", "array", "string", "bad-utf8", "deep-nesting", "nan"],
)
def test_a_malformed_start_body_is_a_clear_error(web, s3, raw):
    response = web.post("/attachments/start/", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("invalid_request", "attachment_invalid")
    assert not Attachment.objects.exists()


# --- names ---------------------------------------------------------------------------------------

NAMES = [
    ("path-traversal", "../../etc/passwd.png", "passwd.png"),
    ("windows-traversal", "..\\..\\windows\\win.ini.png", "win.ini.png"),
    ("nul-byte", "a\x00b.png", "ab.png"),
    ("rtl-override", "photo\u202egnp.exe", "photognp.exe"),
    ("zero-width", "ja\u200bvascript.png", "javascript.png"),
    ("html", '<img src=x onerror="alert(1)">.png', '<img src=x onerror="alert(1)">.png'),
    ("very-long", "a" * 10_000 + ".png", "a" * 255),
    ("only-dots", "..", ".."),
    ("emoji", "😀" * 300, "😀" * 255),
]


@pytest.mark.parametrize(
    ("name", "shown"), [case[1:] for case in NAMES], ids=[case[0] for case in NAMES]
)
def test_file_names_never_reach_the_key_and_are_cleaned_for_display(web, alice, name, shown):
    response = start(web, "image/png", 10, name)
    assert response.status_code == 201
    row = Attachment.objects.get(pk=response.json()["id"])
    assert row.key.startswith(f"uploads/{alice.pk}/") and row.key.endswith(".png")
    assert ".." not in row.key and "\\" not in row.key and "passwd" not in row.key
    assert row.original_name == shown
    assert response.json()["upload"]["fields"]["key"] == row.key


# --- accepted, but only as the server's clean re-encoding ----------------------------------------


def test_a_png_html_polyglot_is_stored_without_its_payload(web, s3):
    data = image_bytes("PNG", (40, 40)) + HTML
    row, response, _ = upload_and_finish(web, data)
    assert response.status_code == 200
    clean = stored(s3, row.key)
    assert clean and b"<script" not in clean and b"<html" not in clean
    assert stored(s3, row.key.replace("images/", "uploads/", 1)) is None


def test_a_gif_zip_polyglot_is_stored_without_its_payload(web, s3):
    archive = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil.html", HTML)
    data = image_bytes("GIF", (40, 40), mode="P") + archive.getvalue()
    row, response, _ = upload_and_finish(web, data, "image/gif", name="a.gif")
    assert response.status_code == 200
    clean = stored(s3, row.key)
    assert b"PK\x03\x04" not in clean and b"evil.html" not in clean


def test_a_jpeg_with_a_comment_payload_loses_it(web, s3):
    img = Image.new("RGB", (50, 50), "red")
    out = io.BytesIO()
    img.save(out, "JPEG", comment=b"<script>alert(1)</script>")
    row, response, _ = upload_and_finish(web, out.getvalue(), "image/jpeg", name="a.jpg")
    assert response.status_code == 200
    assert b"<script" not in stored(s3, row.key)


def test_an_animated_gif_with_thousands_of_frames_keeps_one(web, s3):
    data = animated_gif(3000)
    began = time.monotonic()
    row, response, _ = upload_and_finish(web, data, "image/gif", name="a.gif")
    assert time.monotonic() - began < 20
    assert response.status_code == 200, response.content
    with Image.open(io.BytesIO(stored(s3, row.key))) as img:
        assert img.format == "GIF" and getattr(img, "n_frames", 1) == 1


@pytest.mark.parametrize(
    ("make", "content_type", "fmt"),
    [
        (lambda: image_bytes("JPEG", (60, 40), mode="CMYK"), "image/jpeg", "JPEG"),
        (lambda: image_bytes("PNG", (60, 40), mode="I;16"), "image/png", "PNG"),
        (lambda: image_bytes("PNG", (60, 40), mode="LA"), "image/png", "PNG"),
        (lambda: image_bytes("PNG", (60, 40), mode="1"), "image/png", "PNG"),
        (
            lambda: image_bytes("PNG", (60, 40), mode="P", transparency=0),
            "image/png",
            "PNG",
        ),
        (lambda: image_bytes("WEBP", (60, 40), mode="RGBA"), "image/webp", "WEBP"),
    ],
    ids=["cmyk-jpeg", "16-bit-png", "grey-alpha-png", "1-bit-png", "palette-transparent", "webp"],
)
def test_unusual_colour_modes_are_normalised(web, s3, make, content_type, fmt):
    row, response, _ = upload_and_finish(web, make(), content_type, name="a")
    assert response.status_code == 200, response.content
    with Image.open(io.BytesIO(stored(s3, row.key))) as img:
        assert img.format == fmt and img.size == (60, 40)
        assert img.mode in ("RGB", "RGBA", "L", "P", "LA")


# --- ids, replay and flooding --------------------------------------------------------------------


def test_an_object_replaced_after_finish_does_not_change_what_is_served(web, s3):
    row, response, started = upload_and_finish(web, image_bytes())
    assert response.status_code == 200
    before = stored(s3, row.key)
    upload(started["upload"], HTML, timeout=30)  # the upload's signature is still valid for minutes
    assert stored(s3, row.key) == before
    again = web.post(f"/attachments/{row.pk}/finish/")
    assert again.status_code == 400 and "already been finished" in again.json()["error"]["message"]
    row.refresh_from_db()
    assert row.state == "verified" and stored(s3, row.key) == before


def test_finishing_someone_elses_upload_is_not_found(web, s3, bob):
    theirs = Client()
    theirs.force_login(bob)
    data = image_bytes()
    started = start(theirs, "image/png", len(data)).json()
    upload(started["upload"], data, timeout=30)
    response = web.post(f"/attachments/{started['id']}/finish/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    row = Attachment.objects.get(pk=started["id"])
    assert row.state == "pending" and stored(s3, row.key) == data
    assert web.delete(f"/attachments/{started['id']}/").status_code == 404
    assert web.get(f"/attachments/{started['id']}/").status_code == 404
    assert theirs.post(f"/attachments/{started['id']}/finish/").status_code == 200


@pytest.mark.parametrize("pk", ["0", "99999999", str(2**63), str(2**70)], ids=str)
def test_finishing_a_missing_or_absurd_id_is_not_found(web, pk):
    response = web.post(f"/attachments/{pk}/finish/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert web.get(f"/attachments/{pk}/").status_code == 404


def test_finishing_twice_or_after_a_refusal_is_refused(web, s3):
    row, response, _ = upload_and_finish(web, HTML)
    assert response.status_code == 400
    again = web.post(f"/attachments/{row.pk}/finish/")
    assert again.status_code == 400
    assert "was refused" in again.json()["error"]["message"]


def test_an_upload_to_a_reused_id_after_cancel_is_gone(web, s3):
    row, response, started = upload_and_finish(web, image_bytes())
    assert web.delete(f"/attachments/{row.pk}/").status_code == 204
    assert stored(s3, row.key) is None
    assert web.post(f"/attachments/{row.pk}/finish/").status_code == 404
    assert web.get(f"/attachments/{row.pk}/").status_code == 404


def test_start_flooding_hits_the_in_flight_cap(web, alice, s3, settings):
    settings.IMAGE_MAX_PER_MESSAGE = 3
    codes = [start(web, "image/png", 10).status_code for _ in range(10)]
    assert codes[:6] == [201] * 6
    assert set(codes[6:]) == {429}
    refused = start(web, "image/png", 10)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert Attachment.objects.filter(owner=alice).count() == 6
    # another user is not affected
    other = Client()
    other.force_login(make_user("dave"))
    assert start(other, "image/png", 10).status_code == 201


def test_an_over_limit_upload_is_refused_and_removed(web, s3, settings):
    settings.IMAGE_UPLOAD_MAX_BYTES = 5_000
    response = start(web, "image/png", 4_000)
    started = response.json()
    big = image_bytes("PNG", (300, 300), noise=True)
    # S3 would refuse (content-length-range); moto does not
    upload(started["upload"], big, timeout=30)
    finished = web.post(f"/attachments/{started['id']}/finish/")
    row = Attachment.objects.get(pk=started["id"])
    assert_refused(s3, row, finished, 400, "attachment_invalid", "the limit is")
    assert settings.IMAGE_UPLOAD_MAX_BYTES == 5_000
