"""Hostile and broken documents, through the endpoints and the local S3 server, as a script sends them.

Each is refused with a clear reason (`attachment_invalid`, 400, the row rejected, nothing left
under the upload's key or the verified key) or accepted safely (stored as checked, served with
its own Content-Type). Every finish returns within FINISH_SECONDS: the PDF is read in a child
process with limits of time and memory, so no file can hold the server longer.
"""

from __future__ import annotations

import io
import json
import os
import time
import tracemalloc
import zipfile
import zlib

import pytest
from django.test import Client

from chat.models import Attachment
from chat.uploads import documents
from chat.uploads.verification import verified_key
from tests.support.documents import assemble, one_page, rewritten, stream, text_pdf
from tests.support.uploads import stored, upload

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        not os.environ.get("AWS_S3_ENDPOINT_URL"),
        reason="needs the local S3: scripts/services.sh start && . .run/services/env",
    ),
]

# A finish of the worst file below takes about 0.4 s (most of it starting the child process);
# plain pypdf spent 12.9 s counting one of them (the page listed 100,000 times).
FINISH_SECONDS = 5
PDF = "application/pdf"
HTML = b"<!doctype html><html><body><script>window.__xss=1</script></body></html>"


@pytest.fixture
def web(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def upload_and_finish(web, data: bytes, declared: str, *, sent_as=None, byte_size=None):
    """start → POST to S3 → finish (timed); returns (row, finish response)."""
    size = len(data) if byte_size is None else byte_size
    body = {"content_type": declared, "byte_size": size, "name": "file"}
    response = web.post(
        "/attachments/start/", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    started = response.json()
    upload(started["upload"], data, sent_as, timeout=30)
    began = time.monotonic()
    finished = web.post(f"/attachments/{started['id']}/finish/")
    assert time.monotonic() - began < FINISH_SECONDS, "the check was not bounded in time"
    return Attachment.objects.get(pk=started["id"]), finished


def assert_refused(s3, row: Attachment, response, message: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "attachment_invalid"
    assert message.lower() in error["message"].lower(), error["message"]
    row.refresh_from_db()
    assert row.state == "rejected" and row.reject_reason == error["message"]
    assert stored(s3, row.key) is None, "the refused upload is still in S3"
    assert stored(s3, verified_key(row.key)) is None, "a verified copy was written"


# --- the files ----------------------------------------------------------------------------------


def cyclic_tree() -> bytes:
    """The page tree's /Kids points back at the tree itself."""
    return assemble(
        {
            1: b"<< /Type /Catalog /Pages 2 0 R >>",
            2: b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>",
            3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        }
    )


def deep_tree(depth: int = 5000) -> bytes:
    """A chain of `depth` page-tree nodes with one page at the end."""
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>"}
    for level in range(depth):
        objects[2 + level] = b"<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % (3 + level)
    objects[2 + depth] = b"<< /Type /Page /MediaBox [0 0 612 792] >>"
    return assemble(objects)


def one_page_listed(times: int = 100_000) -> bytes:
    """One page listed `times` times in /Kids: plain pypdf counts 100,000 pages, in 12.9 s."""
    kids = b" ".join([b"3 0 R"] * times)
    return assemble(
        {
            1: b"<< /Type /Catalog /Pages 2 0 R >>",
            2: b"<< /Type /Pages /Kids [%s] /Count 1 >>" % kids,
            3: b"<< /Type /Page /MediaBox [0 0 612 792] >>",
        }
    )


def zero_pages() -> bytes:
    return assemble(
        {1: b"<< /Type /Catalog /Pages 2 0 R >>", 2: b"<< /Type /Pages /Kids [] /Count 0 >>"}
    )


def bomb(mib: int = 200) -> bytes:
    """A page whose content stream is 200 KB compressed and 200 MB decompressed (made a MiB at
    a time: the test process never holds the 200 MB either)."""
    deflate = zlib.compressobj(9)
    spaces = b" " * (1 << 20)
    data = deflate.compress(b"BT /F1 24 Tf 72 720 Td (x) Tj ET ")
    data += b"".join(deflate.compress(spaces) for _ in range(mib)) + deflate.flush()
    return one_page(content=data, content_filter=b" /Filter /FlateDecode")


def zip_archive() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil.html", HTML)
    return archive.getvalue()


def without_xref_table() -> bytes:
    good = text_pdf(1)
    return good[: good.index(b"xref")] + b"startxref\n0\n%%EOF\n"


def xref_loop() -> bytes:
    """The trailer's /Prev points at its own cross-reference table."""
    good = text_pdf(1)
    end = good.rindex(b"startxref")
    trailer = good[:end].replace(b"trailer\n<<", b"trailer\n<< /Prev %d" % good.index(b"xref"))
    return trailer + good[end:]


JAVASCRIPT = b" /OpenAction << /S /JavaScript /JS (app.alert\\(document.cookie\\)) >>"
EMBEDDED = b" /Names << /EmbeddedFiles << /Names [(evil.html) 10 0 R] >> >>"
EMBEDDED_OBJECTS = {
    10: b"<< /Type /Filespec /F (evil.html) /EF << /F 11 0 R >> >>",
    11: stream(HTML, extra=b" /Type /EmbeddedFile"),
}


REFUSED = [
    # (id, bytes factory, declared type, expected message)
    ("encrypted", lambda: rewritten(text_pdf(1), user_password="secret"), PDF, "encrypted"),
    (
        "encrypted-owner-password-only",
        lambda: rewritten(text_pdf(1), user_password="", owner_password="owner"),
        PDF,
        "encrypted",
    ),
    ("deep-page-tree", deep_tree, PDF, "too large or too deep"),
    ("cyclic-page-tree", cyclic_tree, PDF, "lists a node more than once"),
    ("one-page-listed-1000-times", lambda: one_page_listed(1000), PDF, "more than once"),
    ("one-page-listed-100000-times", one_page_listed, PDF, "too large or too deep"),
    ("count-in-the-millions", lambda: text_pdf(1, count=5_000_000), PDF, "5,000,000 pages"),
    ("count-below-the-pages", lambda: text_pdf(3, count=1), PDF, "declares 1 pages and holds 3"),
    ("601-pages", lambda: text_pdf(601), PDF, "601 pages; at most 600"),
    ("zero-pages", zero_pages, PDF, "no pages"),
    ("decompression-bomb", bomb, PDF, "too large"),
    (
        "millions-of-operators",
        lambda: one_page(content=b"0 0 m " * 3_000_000, compress=True),
        PDF,
        "too large",
    ),
    (
        "huge-mediabox",
        lambda: one_page().replace(b"[0 0 612 792]", b"[0 0 1000000000 1000000000]"),
        PDF,
        "at most 14,400 on a side",
    ),
    ("no-cross-reference-table", without_xref_table, PDF, "damaged"),
    ("no-catalogue", lambda: text_pdf(1).replace(b"/Root 1 0 R", b""), PDF, "damaged"),
    ("truncated", lambda: text_pdf(5)[:900], PDF, "incomplete"),
    ("html-named-pdf", lambda: HTML, PDF, "not a PDF"),
    ("zip-named-pdf", zip_archive, PDF, "not a PDF"),
    ("html-before-a-pdf-polyglot", lambda: HTML + text_pdf(1), PDF, "not a PDF"),
    ("text-declared-pdf", lambda: b"just words", PDF, "not a PDF"),
    ("pdf-declared-text", lambda: text_pdf(1), "text/plain", "not UTF-8"),
    ("invalid-utf8-text", lambda: "café".encode("latin-1"), "text/plain", "not UTF-8"),
    ("text-with-nul", lambda: b"one\x00two", "text/markdown", "NUL"),
    ("utf16-text", lambda: "words".encode("utf-16"), "text/plain", "in UTF-8: it contains NUL"),
]


@pytest.mark.parametrize(
    ("make", "declared", "message"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refused_with_a_clear_reason(web, s3, make, declared, message):
    row, response = upload_and_finish(web, make(), declared)
    assert_refused(s3, row, response, message)


# --- accepted, safely ---------------------------------------------------------------------------

ACCEPTED = [
    # (id, bytes factory, pages): stored byte for byte, served as application/pdf from the bucket
    ("malformed-xref-offsets", lambda: text_pdf(1).replace(b"0000000", b"9999999"), 1),
    ("xref-prev-loop", xref_loop, 1),
    ("absurd-xref-size", lambda: text_pdf(2).replace(b"/Size 8", b"/Size 2147483647"), 2),
    ("javascript-open-action", lambda: one_page(JAVASCRIPT), 1),
    ("embedded-html-file", lambda: one_page(EMBEDDED, extra_objects=EMBEDDED_OBJECTS), 1),
    ("large-uncompressed-content", lambda: one_page(content=b"0 0 m " * 300_000), 1),
]


@pytest.mark.parametrize(
    ("make", "pages"), [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED]
)
def test_accepted_as_uploaded(web, s3, settings, make, pages):
    data = make()
    row, response = upload_and_finish(web, data, PDF)
    assert response.status_code == 200, response.content
    assert response.json()["page_count"] == pages
    assert stored(s3, row.key) == data
    head = s3.head_object(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=row.key)
    assert head["ContentType"] == PDF


@pytest.mark.parametrize(
    "tail", [zip_archive(), HTML], ids=["pdf-zip-polyglot", "pdf-html-polyglot"]
)
def test_whatever_follows_the_pdf_is_not_stored(web, s3, tail):
    pdf = text_pdf(1)
    row, response = upload_and_finish(web, pdf + tail, PDF)
    assert response.status_code == 200, response.content
    assert stored(s3, row.key) == pdf
    assert response.json()["byte_size"] == len(pdf)


# --- sizes, types and limits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "declared", "data"),
    [
        ("TEXT_DOCUMENT_MAX_BYTES", "text/plain", b"a" * 5000),
        ("DOCUMENT_MAX_BYTES", PDF, text_pdf(20)),
    ],
    ids=["oversize-text", "oversize-pdf"],
)
def test_an_oversize_document_is_refused_and_removed(web, s3, settings, setting, declared, data):
    setattr(settings, setting, 4000)
    # Declared within the limit, uploaded larger: S3 would refuse (content-length-range); the
    # local server does not, so finish must.
    row, response = upload_and_finish(web, data, declared, byte_size=3000)
    assert_refused(s3, row, response, "the limit is 4 KB")


def test_a_content_type_lie_at_upload_is_refused(web, s3):
    row, response = upload_and_finish(web, text_pdf(1), PDF, sent_as="text/html")
    assert_refused(s3, row, response, "not uploaded as a PDF document")


def test_a_pdf_check_that_runs_out_of_time_is_refused(web, s3, monkeypatch):
    monkeypatch.setattr(documents, "PDF_CHECK_SECONDS", 0.01)
    row, response = upload_and_finish(web, text_pdf(1), PDF)
    assert_refused(s3, row, response, "too complex to check")


def test_a_pdf_check_that_runs_out_of_memory_is_refused(web, s3, monkeypatch):
    # Below what the interpreter and pypdf need: the child fails as a bomb's would.
    monkeypatch.setattr(documents, "PDF_CHECK_MEMORY_BYTES", 16 * 1024 * 1024)
    row, response = upload_and_finish(web, text_pdf(1), PDF)
    assert_refused(s3, row, response, "too complex to check")


def test_a_bomb_costs_the_server_little_memory(web, s3):
    data = bomb()
    tracemalloc.start()
    try:
        row, response = upload_and_finish(web, data, PDF)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_refused(s3, row, response, "too large")
    # The server's process holds the file a few times over (read, sent to the child), never
    # the 200 MB it inflates to.
    assert peak < 4 * len(data) + 8 * 1024 * 1024, peak


def test_the_child_stops_a_bomb_at_pypdfs_ceiling():
    answer = documents.probe_pdf(bomb())
    assert "too large" in answer["refused"]
    # The interpreter and pypdf take ~38 MB; one stream decompresses to at most 16 MiB (73 MB
    # measured), where pypdf's own ceiling of 75 MB would allow three times that.
    assert answer["max_rss_bytes"] < 100 * 1024 * 1024, answer


def test_the_next_upload_still_works(web, s3):
    row, response = upload_and_finish(web, deep_tree(), PDF)
    assert response.status_code == 400
    row, response = upload_and_finish(web, text_pdf(2), PDF)
    assert response.status_code == 200 and response.json()["page_count"] == 2
