"""Images: start → upload straight to S3 → finish, against the local S3 server (moto).

moto enforces nothing of a presigned POST policy, so these tests assert the policy the app signs
and that finish refuses whatever a browser could have put there instead.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from datetime import UTC, datetime, timedelta

import pytest
import requests
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from chat.models import Attachment, Message
from chat.uploads import attachments, blocks
from chat.uploads.errors import AttachmentError
from claudeweb.middleware import storage_origins
from tests.support.uploads import image_bytes, started, stored, upload

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        not os.environ.get("AWS_S3_ENDPOINT_URL"),
        reason="needs the local S3: scripts/services.sh start && . .run/services/env",
    ),
]


# --- helpers ----------------------------------------------------------------------------------


def verified(owner, data: bytes | None = None, content_type="image/png") -> Attachment:
    data = data or image_bytes()
    attachment, post = started(owner, data, content_type)
    upload(post, data)
    return attachments.finish_upload(owner=owner, attachment_id=attachment.pk)


def refused(s3, owner, attachment: Attachment, message: str) -> None:
    """finish refuses it with that message; the row is rejected and the object is gone."""
    with pytest.raises(AttachmentError) as exc:
        attachments.finish_upload(owner=owner, attachment_id=attachment.pk)
    assert exc.value.code == "attachment_invalid"
    assert re.search(message, exc.value.message), exc.value.message
    attachment.refresh_from_db()
    assert attachment.state == "rejected"
    assert attachment.reject_reason == exc.value.message
    assert stored(s3, attachment.key) is None


def api(client: Client, method: str, url: str, body=None, **extra):
    if method == "get":
        return client.get(url, **extra)
    data = json.dumps(body) if body is not None else None
    return getattr(client, method)(url, data=data, content_type="application/json", **extra)


# --- start ------------------------------------------------------------------------------------


def test_start_signs_the_exact_policy(alice, settings):
    attachment, post = started(alice, b"x" * 1234, name="../../etc/My\x00 holiday.png")
    assert re.fullmatch(rf"uploads/{alice.pk}/[0-9a-f]{{32}}\.png", attachment.key)
    assert (attachment.state, attachment.byte_size) == ("pending", 1234)
    assert attachment.original_name == "My holiday.png"
    assert post["fields"]["key"] == attachment.key
    assert post["fields"]["Content-Type"] == "image/png"

    policy = json.loads(base64.b64decode(post["fields"]["policy"]))
    conditions = policy["conditions"]
    assert {"bucket": settings.AWS_STORAGE_BUCKET_NAME} in conditions
    assert {"key": attachment.key} in conditions
    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 1, settings.IMAGE_UPLOAD_MAX_BYTES] in conditions
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "starts-with"]
    expires = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    lifetime = (expires - datetime.now(UTC)).total_seconds()
    assert (
        settings.PRESIGN_POST_EXPIRY_SECONDS - 5 <= lifetime <= settings.PRESIGN_POST_EXPIRY_SECONDS
    )


@pytest.mark.parametrize(
    ("content_type", "byte_size", "message"),
    [
        ("application/msword", 100, "Only JPEG, PNG, GIF or WebP images or PDF"),
        ("image/svg+xml", 100, "SVG images are not accepted"),
        ("text/html", 100, "Only JPEG"),
        ("image/png", 0, "byte_size"),
        ("image/png", "100", "byte_size"),
        ("image/png", 20 * 1024 * 1024 + 1, "the limit is 20.0 MB"),
    ],
)
def test_start_refuses_what_cannot_be_an_image(alice, content_type, byte_size, message):
    with pytest.raises(AttachmentError, match=message) as exc:
        attachments.start_upload(
            owner=alice, content_type=content_type, byte_size=byte_size, name="x"
        )
    assert exc.value.code == "attachment_invalid"
    assert not Attachment.objects.exists()


def test_start_limits_uploads_in_flight(alice, settings):
    settings.IMAGE_MAX_PER_MESSAGE = 1
    started(alice, b"x"), started(alice, b"x")
    with pytest.raises(AttachmentError) as exc:
        started(alice, b"x")
    assert exc.value.code == "rate_limited"


# --- the whole flow ---------------------------------------------------------------------------


def test_it_works(client, alice, s3):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    exif[0x010F] = "SecretCam"  # Make
    original = image_bytes("JPEG", (3000, 1500), exif=exif.tobytes(), quality=95)
    client.force_login(alice)
    body = {"content_type": "image/jpeg", "byte_size": len(original), "name": "cat.jpg"}
    response = api(client, "post", reverse("chat:attachment_start"), body)
    assert response.status_code == 201
    start = response.json()
    assert start["max_bytes"] == settings.IMAGE_UPLOAD_MAX_BYTES
    assert start["expires_in"] == settings.PRESIGN_POST_EXPIRY_SECONDS
    upload(start["upload"], original)

    response = client.post(reverse("chat:attachment_finish", args=[start["id"]]))
    assert response.status_code == 200
    result = response.json()
    attachment = Attachment.objects.get(pk=start["id"])
    # Rotated upright by its EXIF orientation, then capped at IMAGE_LONG_EDGE_PX.
    assert (result["width"], result["height"]) == (784, 1568)
    assert result == {
        "id": attachment.pk,
        "kind": "image",
        "state": "verified",
        "width": 784,
        "height": 1568,
        "byte_size": attachment.byte_size,
        "token_estimate": (784 * 1568 + 749) // 750,
        "page_count": None,
        "has_text_layer": None,
        "thumbnail_url": f"/attachments/{attachment.pk}/",
    }
    assert attachment.verified_at is not None
    # The clean copy has a key of its own; the upload's key (its POST may still be valid) is gone.
    upload_key = start["upload"]["fields"]["key"]
    assert attachment.key == upload_key.replace("uploads/", "images/", 1)
    assert stored(s3, upload_key) is None
    upload(start["upload"], b"<html>not an image</html>")  # a late re-post cannot touch it
    data = stored(s3, attachment.key)
    assert hashlib.sha256(data).hexdigest() == attachment.sha256
    assert len(data) == attachment.byte_size <= settings.IMAGE_STORED_MAX_BYTES
    head = s3.head_object(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=attachment.key)
    assert head["ContentType"] == "image/jpeg"
    with Image.open(io.BytesIO(data)) as img:
        assert (img.format, img.size) == ("JPEG", (784, 1568))
        assert len(img.getexif()) == 0
        assert "exif" not in img.info and "icc_profile" not in img.info


@pytest.mark.parametrize(
    ("fmt", "content_type", "mode"),
    [
        ("JPEG", "image/jpeg", "RGB"),
        ("PNG", "image/png", "RGBA"),
        ("GIF", "image/gif", "P"),
        ("WEBP", "image/webp", "RGB"),
    ],
)
def test_each_format_keeps_its_format(alice, s3, fmt, content_type, mode):
    attachment = verified(alice, image_bytes(fmt, (2000, 100), mode=mode), content_type)
    head = s3.head_object(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=attachment.key)
    assert head["ContentType"] == content_type
    with Image.open(io.BytesIO(stored(s3, attachment.key))) as img:
        assert img.format == fmt
        assert img.size == (1568, 78) == (attachment.width, attachment.height)


def test_too_big_images_step_down_until_they_fit(alice, s3, settings):
    settings.IMAGE_STORED_MAX_BYTES = 150_000
    png = verified(alice, image_bytes("PNG", (600, 400), noise=True))
    assert png.byte_size <= 150_000 and png.content_type == "image/png"
    assert (png.width, png.height) < (600, 400)  # a PNG shrinks: it has no quality to lower
    jpeg = verified(alice, image_bytes("JPEG", (600, 400), noise=True, quality=100), "image/jpeg")
    assert jpeg.byte_size <= 150_000


# --- refusals ---------------------------------------------------------------------------------

HTML = b"<!doctype html><html><script>alert(document.cookie)</script></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>'


@pytest.mark.parametrize(
    ("data", "message"),
    [(HTML, "contents are not a PNG image"), (SVG, "contents are not a PNG image")],
)
def test_finish_refuses_a_type_lie(alice, s3, data, message):
    attachment, post = started(alice, data, name="innocent.png")
    upload(post, data)
    refused(s3, alice, attachment, message)


def test_finish_refuses_a_file_not_uploaded_as_declared(alice, s3):
    data = image_bytes()
    attachment, post = started(alice, data)
    upload(post, data, content_type="text/html")  # S3 would refuse this; moto does not
    refused(s3, alice, attachment, "not uploaded as a PNG image")


def test_finish_refuses_a_file_larger_than_declared(alice, s3):
    attachment, post = started(alice, b"", byte_size=100)
    upload(post, image_bytes("PNG", (300, 300), noise=True))
    refused(s3, alice, attachment, "not the size that was declared")


def test_finish_refuses_a_file_over_the_limit(alice, s3, settings):
    settings.IMAGE_UPLOAD_MAX_BYTES = 10_000
    attachment, post = started(alice, b"", byte_size=9_000)
    upload(post, image_bytes("PNG", (300, 300), noise=True))
    refused(s3, alice, attachment, r"the limit is 10 KB")


@pytest.mark.parametrize(
    ("size", "max_pixels"),
    [
        ((12000, 12000), 50_000_000),  # over twice the limit: Pillow's own error
        ((1200, 1200), 1_000_000),  # just over the limit: our check, before decoding
    ],
)
def test_finish_refuses_a_decompression_bomb(alice, s3, settings, size, max_pixels):
    settings.IMAGE_MAX_PIXELS = max_pixels
    bomb = image_bytes("PNG", size, mode="1")
    assert len(bomb) < 50_000
    attachment, post = started(alice, bomb)
    upload(post, bomb)
    refused(s3, alice, attachment, "too many pixels")


@pytest.mark.parametrize(("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_finish_refuses_a_truncated_image(alice, s3, fmt, content_type):
    whole = image_bytes(fmt, (200, 200), noise=True)
    data = whole[: len(whole) // 2]
    attachment, post = started(alice, data, content_type)
    upload(post, data)
    refused(s3, alice, attachment, "damaged")


def test_finish_without_an_upload_is_refused(alice, s3):
    attachment, _ = started(alice, image_bytes())
    refused(s3, alice, attachment, "No file was uploaded")


def test_a_finished_upload_cannot_be_finished_again(alice, s3):
    attachment = verified(alice)
    with pytest.raises(AttachmentError, match="already been finished"):
        attachments.finish_upload(owner=alice, attachment_id=attachment.pk)
    attachment.refresh_from_db()
    assert attachment.state == "verified"
    assert hashlib.sha256(stored(s3, attachment.key)).hexdigest() == attachment.sha256


def test_someone_elses_upload_is_not_found(alice, bob, s3):
    data = image_bytes()
    attachment, post = started(alice, data)
    upload(post, data)
    with pytest.raises(AttachmentError) as exc:
        attachments.finish_upload(owner=bob, attachment_id=attachment.pk)
    assert exc.value.code == "not_found"
    attachment.refresh_from_db()
    assert attachment.state == "pending"
    assert stored(s3, attachment.key) == data


# --- send -------------------------------------------------------------------------------------


def test_verified_for_send_returns_the_owners_images_in_order(alice, bob, conversation):
    first, second = verified(alice), verified(alice)
    assert attachments.verified_for_send(owner=alice, ids=[second.pk, first.pk]) == [second, first]
    assert attachments.verified_for_send(owner=alice, ids=[]) == []

    message = Message.objects.create(conversation=conversation, role="user", content=[])
    attachments.attach_to_message(attachments=[first], message=message)
    pending, _ = started(alice, image_bytes())
    missing = "missing, not verified yet, or already sent"
    for ids in ([first.pk], [pending.pk], [999_999], [2**70]):
        with pytest.raises(AttachmentError, match=missing):
            attachments.verified_for_send(owner=alice, ids=ids)
    with pytest.raises(AttachmentError, match=missing):  # no different from a missing id
        attachments.verified_for_send(owner=bob, ids=[second.pk])


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("1", "list of attachment ids"),
        ([True], "list of attachment ids"),
        (["1"], "list of attachment ids"),
        ([1, 1], "attached twice"),
        (list(range(1, 12)), "At most 10 files"),
    ],
)
def test_verified_for_send_checks_its_input(alice, ids, message):
    with pytest.raises(AttachmentError, match=message) as exc:
        attachments.verified_for_send(owner=alice, ids=ids)
    assert exc.value.code == "attachment_invalid"


def test_the_stored_reference_and_the_api_blocks(alice, s3, settings):
    attachment = verified(alice)
    assert blocks.message_image_ref(attachment) == {
        "type": "image",
        "attachment_id": attachment.pk,
        "media_type": "image/png",
        "width": 64,
        "height": 48,
    }
    settings.IMAGE_DELIVERY = "auto"  # the local S3 is on loopback: base64
    block = blocks.image_block(attachment)
    assert block["source"]["type"] == "base64"
    assert block["source"]["media_type"] == "image/png"
    assert base64.b64decode(block["source"]["data"]) == stored(s3, attachment.key)

    settings.IMAGE_DELIVERY = "url"
    block = blocks.image_block(attachment)
    assert block["type"] == "image" and block["source"]["type"] == "url"
    fetched = requests.get(block["source"]["url"], timeout=10)
    assert fetched.status_code == 200
    assert fetched.headers["Content-Type"] == "image/png"
    assert hashlib.sha256(fetched.content).hexdigest() == attachment.sha256
    assert "X-Amz-Expires=600" in block["source"]["url"]


def test_base64_delivery_refuses_a_changed_object(alice, s3, settings):
    settings.IMAGE_DELIVERY = "base64"
    attachment = verified(alice)
    s3.put_object(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=attachment.key, Body=HTML)
    with pytest.raises(AttachmentError, match="no longer available"):
        blocks.image_block(attachment)


PRIVATE = "http://127.0.0.1:9 http://localhost:9 http://[::1]:9 http://minio:9 http://10.0.0.5"
PUBLIC = "https://files.example.com https://a1.r2.cloudflarestorage.com https://8.8.8.8"


def test_auto_delivery_uses_base64_for_private_endpoints():
    assert all(blocks.endpoint_is_private(url) for url in PRIVATE.split())
    assert not any(blocks.endpoint_is_private(url) for url in [None, *PUBLIC.split()])


# --- cancel and cleanup -----------------------------------------------------------------------


def test_cleanup_removes_old_unsent_images_only(alice, s3, conversation):
    old_pending, _ = started(alice, image_bytes())
    old_verified, old_sent, fresh = verified(alice), verified(alice), verified(alice)
    message = Message.objects.create(conversation=conversation, role="user", content=[])
    attachments.attach_to_message(attachments=[old_sent], message=message)
    long_ago = timezone.now() - timedelta(hours=30)
    Attachment.objects.exclude(pk=fresh.pk).update(created_at=long_ago)

    assert attachments.cleanup_unsent(older_than_hours=24) == 2
    assert set(Attachment.objects.values_list("pk", flat=True)) == {old_sent.pk, fresh.pk}
    assert stored(s3, old_verified.key) is None
    assert stored(s3, old_sent.key) is not None and stored(s3, fresh.key) is not None
    call_command("cleanup_attachments", "--older-than-hours", "0", stdout=io.StringIO())
    assert list(Attachment.objects.all()) == [old_sent]


def upload_keys(s3) -> dict:
    """Every object under uploads/ with its LastModified."""
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.AWS_STORAGE_BUCKET_NAME, Prefix="uploads/"
    )
    return {o["Key"]: o["LastModified"] for page in pages for o in page.get("Contents", [])}


def test_cleanup_removes_upload_objects_no_attachment_owns(alice, s3, settings):
    data = image_bytes()
    done, post = started(alice, data)
    upload(post, data)
    done = attachments.finish_upload(owner=alice, attachment_id=done.pk)
    upload(post, data)  # posted again with the still-valid signature: no row points here
    orphan = post["fields"]["key"]
    pending, pending_post = started(alice, data)
    upload(pending_post, data)
    expiry = timedelta(seconds=settings.PRESIGN_POST_EXPIRY_SECONDS)
    modified = upload_keys(s3)
    assert {orphan, pending.key} <= modified.keys()

    # Younger than the signature's lifetime: it may be an upload in flight, it stays.
    attachments.cleanup_orphan_uploads(now=modified[orphan] + expiry - timedelta(seconds=1))
    assert stored(s3, orphan) == data

    later = max(modified[orphan], modified[pending.key]) + expiry + timedelta(seconds=1)
    before = upload_keys(s3)
    deleted = attachments.cleanup_orphan_uploads(now=later)
    after = upload_keys(s3)
    assert orphan not in after
    assert deleted == len(before.keys() - after.keys())
    assert stored(s3, pending.key) == data  # owned by a pending upload: kept, however old
    assert stored(s3, done.key) is not None  # the verified image (under images/) is untouched
    owned = set(Attachment.objects.values_list("key", flat=True))
    assert all(key in owned or changed >= later - expiry for key, changed in after.items())


def test_cancel_deletes_the_image_unless_sent(client, alice, s3, conversation):
    attachment, sent = verified(alice), verified(alice)
    message = Message.objects.create(conversation=conversation, role="user", content=[])
    attachments.attach_to_message(attachments=[sent], message=message)
    client.force_login(alice)
    assert client.delete(reverse("chat:attachment", args=[attachment.pk])).status_code == 204
    assert not Attachment.objects.filter(pk=attachment.pk).exists()
    assert stored(s3, attachment.key) is None
    response = client.delete(reverse("chat:attachment", args=[sent.pk]))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "attachment_invalid"
    assert stored(s3, sent.key) is not None


# --- access -----------------------------------------------------------------------------------


def test_open_redirects_to_a_fresh_presigned_get(client, alice):
    attachment = verified(alice)
    pending, _ = started(alice, image_bytes())
    client.force_login(alice)
    response = client.get(reverse("chat:attachment", args=[attachment.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(settings.AWS_S3_ENDPOINT_URL)
    assert "X-Amz-Signature=" in response["Location"]
    assert response["Cache-Control"] == "private, max-age=300"
    assert requests.get(response["Location"], timeout=10).status_code == 200
    assert client.get(reverse("chat:attachment", args=[pending.pk])).status_code == 404


def test_it_requires_login(client, alice):
    attachment = verified(alice)
    url = reverse("chat:attachment", args=[attachment.pk])
    for method, path in [
        ("post", reverse("chat:attachment_start")),
        ("post", reverse("chat:attachment_finish", args=[attachment.pk])),
        ("delete", url),
        ("get", reverse("chat:attachment_limits")),
    ]:
        response = api(client, method, path, {})
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert Attachment.objects.filter(pk=attachment.pk).exists()


def test_it_checks_ownership(client, alice, bob, s3):
    attachment = verified(alice)
    client.force_login(bob)
    for method, name in [("post", "attachment_finish"), ("delete", "attachment")]:
        for pk in (attachment.pk, 999_999):
            response = getattr(client, method)(reverse(f"chat:{name}", args=[pk]))
            assert response.status_code == 404, name
            assert response.json()["error"]["code"] == "not_found"
    assert client.get(reverse("chat:attachment", args=[attachment.pk])).status_code == 404
    attachment.refresh_from_db()
    assert attachment.state == "verified" and stored(s3, attachment.key) is not None


def test_csrf_is_enforced(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    body = {"content_type": "image/png", "byte_size": 10, "name": "a.png"}
    assert api(client, "post", reverse("chat:attachment_start"), body).status_code == 403
    page = client.get(reverse("chat:index"))
    token = re.search(rb'name="csrf-token" content="([^"]+)"', page.content)
    assert token, "the chat page carries the CSRF token for scripts"
    response = api(
        client, "post", reverse("chat:attachment_start"), body, HTTP_X_CSRFTOKEN=token[1].decode()
    )
    assert response.status_code == 201
    attachment_url = reverse("chat:attachment", args=[response.json()["id"]])
    assert client.delete(attachment_url).status_code == 403


def test_limits_and_the_page_policy(client, alice):
    client.force_login(alice)
    assert client.get(reverse("chat:attachment_limits")).json() == {
        "content_types": ["image/jpeg", "image/png", "image/gif", "image/webp"],
        "max_bytes": settings.IMAGE_UPLOAD_MAX_BYTES,
        "browser_long_edge_px": settings.IMAGE_BROWSER_LONG_EDGE_PX,
        "max_per_message": settings.IMAGE_MAX_PER_MESSAGE,
        "documents_allowed": True,
        "document_types": ["application/pdf", "text/plain", "text/markdown"],
        "document_max_bytes": settings.DOCUMENT_MAX_BYTES,
        "text_document_max_bytes": settings.TEXT_DOCUMENT_MAX_BYTES,
        "document_max_pages": settings.DOCUMENT_MAX_PAGES,
    }
    csp = client.get(reverse("chat:index"))["Content-Security-Policy"]
    origin = settings.AWS_S3_ENDPOINT_URL.rstrip("/")
    assert f"img-src 'self' data: blob: {origin};" in csp
    assert f"connect-src 'self' {origin};" in csp
    assert "script-src 'self';" in csp
    assert storage_origins(None, "pics", "eu-west-1", "auto") == [
        "https://pics.s3.amazonaws.com",
        "https://pics.s3.eu-west-1.amazonaws.com",
    ]


def test_the_admin_shows_a_thumbnail(client, superuser):
    attachment = verified(superuser)
    client.force_login(superuser)
    page = client.get(reverse("admin:chat_attachment_changelist"))
    assert page.status_code == 200
    assert re.search(rb'<img src="http://[^"]+X-Amz-Signature=[^"]+"', page.content)
    detail = client.get(reverse("admin:chat_attachment_change", args=[attachment.pk]))
    assert detail.status_code == 200
    assert re.search(
        rb'<img src="http://[^"]+" alt="photo.png" width="64" height="48"', detail.content
    )
    client.post(reverse("admin:chat_attachment_delete", args=[attachment.pk]), {"post": "yes"})
    assert not Attachment.objects.exists()
