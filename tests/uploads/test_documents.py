"""Documents (PDF, plain text, Markdown) through the upload flow, and the blocks sent to Claude.

Uploads go through the endpoints and the local S3 server, as the browser's would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re

import pytest
import requests
from django.test import Client

from chat.models import PDF_PAGE_TOKENS, Attachment
from chat.uploads import attachments, blocks, documents
from chat.uploads.errors import AttachmentError
from tests.support.documents import scanned_pdf, text_pdf
from tests.support.uploads import image_bytes, stored, upload

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        not os.environ.get("AWS_S3_ENDPOINT_URL"),
        reason="needs the local S3: scripts/services.sh start && . .run/services/env",
    ),
]

MARKDOWN = "# Notes\n\nCafé *crème* — 1 € ✓\n".encode()


@pytest.fixture
def web(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def upload_and_finish(web, data: bytes, content_type: str, name: str):
    """start → POST to S3 → finish; returns (row, finish response, start json)."""
    body = {"content_type": content_type, "byte_size": len(data), "name": name}
    response = web.post(
        "/attachments/start/", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    started = response.json()
    upload(started["upload"], data, timeout=30)
    finished = web.post(f"/attachments/{started['id']}/finish/")
    return Attachment.objects.get(pk=started["id"]), finished, started


def test_it_works_for_a_pdf(web, alice, s3, settings):
    data = text_pdf(3)
    row, response, started = upload_and_finish(web, data, "application/pdf", "Report 2026.pdf")
    assert started["max_bytes"] == settings.DOCUMENT_MAX_BYTES
    assert started["upload"]["fields"]["Content-Type"] == "application/pdf"
    assert response.status_code == 200, response.content
    assert response.json() == {
        "id": row.pk,
        "kind": "document",
        "state": "verified",
        "width": None,
        "height": None,
        "byte_size": len(data),
        "token_estimate": 3 * PDF_PAGE_TOKENS,
        "page_count": 3,
        "has_text_layer": True,
        "thumbnail_url": f"/attachments/{row.pk}/",
    }
    assert row.key.startswith(f"documents/{alice.pk}/") and row.key.endswith(".pdf")
    # The stored object is the uploaded file itself; the upload's key is gone.
    assert stored(s3, row.key) == data
    assert row.sha256 == hashlib.sha256(data).hexdigest()
    assert stored(s3, row.key.replace("documents/", "uploads/", 1)) is None
    head = s3.head_object(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=row.key)
    assert head["ContentType"] == "application/pdf"


def test_a_scanned_pdf_is_accepted_without_a_text_layer(web, s3):
    row, response, _ = upload_and_finish(web, scanned_pdf(), "application/pdf", "scan.pdf")
    assert response.status_code == 200, response.content
    assert response.json()["page_count"] == 1
    assert response.json()["has_text_layer"] is False


@pytest.mark.parametrize(
    ("content_type", "extension"), [("text/plain", "txt"), ("text/markdown", "md")]
)
def test_it_works_for_text_and_markdown(web, alice, s3, settings, content_type, extension):
    row, response, started = upload_and_finish(web, MARKDOWN, content_type, f"notes.{extension}")
    assert started["max_bytes"] == settings.TEXT_DOCUMENT_MAX_BYTES
    assert response.status_code == 200, response.content
    assert response.json()["kind"] == "document"
    assert response.json()["page_count"] is None
    assert response.json()["token_estimate"] == (len(MARKDOWN) + 3) // 4
    assert row.key == f"documents/{alice.pk}/{row.key.rsplit('/', 1)[1]}"
    assert row.key.endswith(f".{extension}") and stored(s3, row.key) == MARKDOWN


def test_a_document_opens_as_utf8_text_or_pdf(web, s3):
    text, _, _ = upload_and_finish(web, MARKDOWN, "text/markdown", "notes.md")
    redirect = web.get(f"/attachments/{text.pk}/")
    assert redirect.status_code == 302
    fetched = requests.get(redirect["Location"], timeout=10)
    assert fetched.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert fetched.text == MARKDOWN.decode()
    pdf, _, _ = upload_and_finish(web, text_pdf(1), "application/pdf", "a.pdf")
    fetched = requests.get(web.get(f"/attachments/{pdf.pk}/")["Location"], timeout=10)
    assert fetched.headers["Content-Type"] == "application/pdf"


def test_the_limits_differ_by_kind(web, settings):
    settings.TEXT_DOCUMENT_MAX_BYTES = 1000

    def start(content_type, size):
        body = {"content_type": content_type, "byte_size": size, "name": "x"}
        return web.post(
            "/attachments/start/", data=json.dumps(body), content_type="application/json"
        )

    refused = start("text/plain", 1001)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == ("The plain text file is 1 KB; the limit is 1 KB.")
    assert start("application/pdf", 1001).status_code == 201
    too_big = start("application/pdf", settings.DOCUMENT_MAX_BYTES + 1)
    assert too_big.json()["error"]["message"] == "The PDF is 32.0 MB; the limit is 32.0 MB."
    assert start("image/png", settings.IMAGE_UPLOAD_MAX_BYTES + 1).status_code == 400


# --- blocks ---------------------------------------------------------------------------------------


def verified_document(web, data: bytes, content_type: str, name: str) -> Attachment:
    row, response, _ = upload_and_finish(web, data, content_type, name)
    assert response.status_code == 200, response.content
    row.refresh_from_db()
    return row


def test_a_pdf_is_stored_as_a_reference_and_sent_as_a_url_or_base64(web, s3, settings):
    data = text_pdf(2)
    row = verified_document(web, data, "application/pdf", "Q3 report.pdf")
    assert blocks.message_attachment_ref(row) == {
        "type": "document",
        "attachment_id": row.pk,
        "media_type": "application/pdf",
        "title": "Q3 report.pdf",
        "page_count": 2,
        "token_estimate": 2 * PDF_PAGE_TOKENS,
    }
    settings.IMAGE_DELIVERY = "auto"  # the local S3 is on loopback: base64
    block = blocks.attachment_block(row)
    assert block == {
        "type": "document",
        "source": {
            "type": "base64",
            "media_type": "application/pdf",
            "data": base64.b64encode(data).decode("ascii"),
        },
        "citations": {"enabled": True},
        "title": "Q3 report.pdf",
    }
    settings.IMAGE_DELIVERY = "url"
    block = blocks.document_block(row)
    assert block["source"]["type"] == "url" and block["citations"] == {"enabled": True}
    fetched = requests.get(block["source"]["url"], timeout=10)
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["Content-Type"] == "application/pdf"


@pytest.mark.parametrize("mode", ["url", "base64"])
def test_text_is_sent_as_a_text_source_whatever_the_delivery(web, s3, settings, mode):
    settings.IMAGE_DELIVERY = mode
    row = verified_document(web, b"\xef\xbb\xbf" + MARKDOWN, "text/markdown", "notes.md")
    assert blocks.document_block(row) == {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": MARKDOWN.decode()},
        "citations": {"enabled": True},
        "title": "notes.md",
    }


def test_a_document_changed_in_the_bucket_is_not_sent(web, s3, settings):
    row = verified_document(web, b"plain words", "text/plain", "a.txt")
    s3.put_object(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=row.key, Body=b"other words")
    with pytest.raises(AttachmentError, match="no longer available"):
        blocks.document_block(row)


def test_an_untitled_document_has_no_title_and_an_image_is_no_document(web, alice, s3):
    row = verified_document(web, b"words", "text/plain", "")
    assert "title" not in blocks.document_block(row)
    image, response, _ = upload_and_finish(web, image_bytes(), "image/png", "a.png")
    with pytest.raises(AttachmentError, match="not been verified"):
        blocks.document_block(image)
    assert blocks.attachment_block(image)["type"] == "image"


# --- sending --------------------------------------------------------------------------------------


def test_a_send_takes_documents_only_when_its_caller_sends_them(web, alice, s3):
    image, _, _ = upload_and_finish(web, image_bytes(), "image/png", "a.png")
    pdf = verified_document(web, text_pdf(1), "application/pdf", "a.pdf")
    with pytest.raises(AttachmentError, match="cannot be used"):
        attachments.verified_for_send(owner=alice, ids=[image.pk, pdf.pk])
    assert attachments.verified_for_send(owner=alice, ids=[image.pk]) == [image]
    both = attachments.verified_for_send(
        owner=alice, ids=[pdf.pk, image.pk], kinds=(Attachment.Kind.IMAGE, Attachment.Kind.DOCUMENT)
    )
    assert both == [pdf, image]


def test_someone_elses_document_cannot_be_sent(web, alice, bob, s3):
    pdf = verified_document(web, text_pdf(1), "application/pdf", "a.pdf")
    with pytest.raises(AttachmentError):
        attachments.verified_for_send(owner=bob, ids=[pdf.pk], kinds=("image", "document"))


@pytest.mark.parametrize(
    ("window", "limit"), [(1_000_000, 600), (2_000_000, 600), (200_000, 100), (999_999, 100)]
)
def test_the_page_limit_follows_the_models_window(window, limit):
    assert documents.page_limit(context_window=window) == limit


def test_the_pages_of_a_send_are_counted_together(settings):
    settings.DOCUMENT_MAX_PAGES_SMALL_WINDOW = 100
    pdfs = [Attachment(page_count=60), Attachment(page_count=40), Attachment(page_count=None)]
    documents.check_pages_for_model(pdfs, context_window=200_000)
    with pytest.raises(AttachmentError, match="have 101 pages; this model reads at most 100"):
        documents.check_pages_for_model([*pdfs, Attachment(page_count=1)], context_window=200_000)
    documents.check_pages_for_model([Attachment(page_count=600)], context_window=1_000_000)


def test_the_admin_lists_a_document_with_its_pages_and_no_thumbnail(client, superuser, s3):
    client.force_login(superuser)
    pdf = verified_document(client, text_pdf(4), "application/pdf", "Q3.pdf")
    listing = client.get("/admin/chat/attachment/?kind__exact=document")
    assert listing.status_code == 200 and b"Q3.pdf" in listing.content
    assert b"X-Amz-Signature" not in listing.content  # no thumbnail of a PDF
    detail = client.get(f"/admin/chat/attachment/{pdf.pk}/change/")
    assert detail.status_code == 200
    assert re.search(rb"Page count:.*?<div class=\"readonly\">4</div>", detail.content, re.S)
