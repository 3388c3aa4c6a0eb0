"""Checking an upload: what arrived in S3 is refused, or stored as a clean copy.

The checks run in order, cheapest first (key shape, HEAD, magic bytes, then Pillow for an image
within the pixel limit, pypdf in a child process for a PDF, UTF-8 for text), at most
IMAGE_VERIFY_CONCURRENCY at once in a process (`decode_slots`, shared by images and documents).
The clean copy is written under `images/…` or `documents/…`, never over the upload's key.
Raises AttachmentError.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from chat.models import Attachment
from chat.uploads import documents, storage
from chat.uploads.documents import CheckedDocument, DocumentKind, DocumentRefused
from chat.uploads.errors import BUSY, AttachmentError, invalid
from chat.uploads.images import (
    ALLOWED_LABEL,
    KINDS,
    Encoded,
    ImageKind,
    ImageRefused,
    decode,
    reencode,
    sniff,
)

log = logging.getLogger(__name__)


def size_text(n: int) -> str:
    """A byte count for a user: KB below a megabyte, MB with one decimal above."""
    if n < 1024 * 1024:
        return f"{max(1, round(n / 1024))} KB"
    return f"{n / (1024 * 1024):.1f} MB"


UploadKind = ImageKind | DocumentKind
DOCUMENTS_LABEL = documents.ALLOWED_LABEL
ACCEPTED_LABEL = f"{ALLOWED_LABEL} images or {DOCUMENTS_LABEL} documents"


def kind_of(content_type: object) -> UploadKind:
    """The accepted kind for a declared content type; raises AttachmentError otherwise."""
    if not isinstance(content_type, str):
        raise invalid(
            f"Attach an image ({ALLOWED_LABEL}) or a document ({documents.ALLOWED_LABEL})."
        )
    declared = content_type.strip().lower()
    kind = KINDS.get(declared) or documents.KINDS.get(declared)
    if kind is None:
        if "svg" in content_type.lower():
            raise invalid(f"SVG images are not accepted; use {ALLOWED_LABEL}.")
        raise invalid(f"Only {ACCEPTED_LABEL} can be attached, not {content_type[:60]!r}.")
    return kind


def attachment_kind(kind: UploadKind) -> str:
    """The row's kind (Attachment.Kind) for an upload kind."""
    return Attachment.Kind.DOCUMENT if isinstance(kind, DocumentKind) else Attachment.Kind.IMAGE


def max_bytes(kind: UploadKind) -> int:
    """The largest upload of this kind: IMAGE_UPLOAD_MAX_BYTES, DOCUMENT_MAX_BYTES (PDF) or
    TEXT_DOCUMENT_MAX_BYTES."""
    return kind.max_bytes if isinstance(kind, DocumentKind) else settings.IMAGE_UPLOAD_MAX_BYTES


def noun(kind: UploadKind) -> str:
    """What a message calls the file: "image", "PDF", "plain text file", "Markdown file"."""
    if isinstance(kind, ImageKind):
        return "image"
    return "PDF" if kind.is_pdf else f"{kind.label} file"


class DecodeSlots:
    """At most IMAGE_VERIFY_CONCURRENCY image decodes at once in this process.

    One finish decoding a 6000×4000 JPEG peaked at 374 MB before reduced decoding, and 20 at once
    (one user's in-flight cap) at 3.07 GB, each taking up to 11.9 s. Finish is a synchronous view:
    under Daphne each request runs in a thread of its own, so a slot is a thread-level lock; the
    limit is read on every acquire, so it follows the setting. The counters make the waiting
    observable (log lines, tests) where a BoundedSemaphore would hide them.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.busy = 0
        self.waiting = 0

    def _free(self) -> bool:
        return self.busy < settings.IMAGE_VERIFY_CONCURRENCY

    def acquire(self, *, timeout: float) -> bool:
        with self._changed:
            self.waiting += 1
            self._changed.notify_all()
            try:
                if not self._changed.wait_for(self._free, timeout=timeout):
                    return False
                self.busy += 1
                return True
            finally:
                self.waiting -= 1
                self._changed.notify_all()

    def release(self) -> None:
        with self._changed:
            self.busy -= 1
            self._changed.notify_all()

    def wait_until(self, predicate, *, timeout: float) -> bool:
        """Waits until predicate(self) holds (checked after each change); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout=timeout)


decode_slots = DecodeSlots()


@contextmanager
def decode_slot() -> Iterator[None]:
    """Holds one decode slot; raises AttachmentError(busy) when none frees up within
    IMAGE_VERIFY_WAIT_SECONDS (the upload stays pending: finish may be retried)."""
    if not decode_slots.acquire(timeout=settings.IMAGE_VERIFY_WAIT_SECONDS):
        log.warning(
            "Image check refused: %d decoding, %d waiting", decode_slots.busy, decode_slots.waiting
        )
        raise AttachmentError(
            BUSY, "The server is busy checking other images; this one will be checked shortly."
        )
    try:
        yield
    finally:
        decode_slots.release()


def verify_upload(attachment: Attachment) -> Encoded | CheckedDocument:
    """Checks the uploaded object and stores the clean copy. Raises AttachmentError.

    Order: key shape → HEAD (exists, size, type) → a decode slot → read (bounded) → magic bytes →
    an image: Pillow open (four formats, pixel limit before decoding), decode (reduced for a
    large JPEG), re-encode; a document: its checks (chat/uploads/documents.py) → write to the
    verified key. The clean copy lives under another key than the upload, so the upload's
    presigned POST (valid for minutes) can never overwrite what was verified.
    """
    kind = kind_of(attachment.content_type)
    limit = max_bytes(kind)
    head = storage.head(attachment.key)
    if head is None:
        raise invalid("No file was uploaded.")
    size = int(head.get("ContentLength", 0))
    if size < 1 or size > limit:
        raise invalid(f"The file is {size_text(size)}; the limit is {size_text(limit)}.")
    if size != attachment.byte_size:
        raise invalid("The uploaded file is not the size that was declared.")
    if (head.get("ContentType") or "").lower() != kind.content_type:
        if isinstance(kind, DocumentKind):
            raise invalid(f"The file was not uploaded as a {kind.label} document.")
        raise invalid(f"The file was not uploaded as a {kind.label} image.")
    # The read is inside the slot too: a waiting finish then holds no bytes (up to 32 MB each).
    with decode_slot():
        data = _read(attachment.key, size=size)
        if isinstance(kind, DocumentKind):
            clean = _check_document(data, kind)
        else:
            clean = _reencode(data, kind)
        del data
    storage.write(verified_key(attachment.key), clean.data, kind.content_type)
    return clean


def row_fields(clean: Encoded | CheckedDocument) -> dict:
    """What a verified row records besides size and hash: pixels, or pages and text layer."""
    if isinstance(clean, CheckedDocument):
        return {"page_count": clean.page_count, "has_text_layer": clean.has_text_layer}
    return {"width": clean.width, "height": clean.height}


def _read(key: str, *, size: int) -> bytes:
    # At most the size HEAD gave (checked against the limit) + 1: the HTTP layer allocates a
    # buffer of the size asked for, which was 20 MB for every image when this asked for the limit.
    data = storage.read(key, limit=size)
    if data is None:
        raise invalid("No file was uploaded.")
    if len(data) != size:
        raise invalid("The uploaded file changed while it was being checked.")
    return data


def _reencode(data: bytes, kind: ImageKind) -> Encoded:
    """The image checked and re-encoded; nothing large outlives the call."""
    if sniff(data) != kind.content_type:
        raise invalid(f"The file's contents are not a {kind.label} image.")
    try:
        return reencode(decode(data, kind, fit_edge=settings.IMAGE_LONG_EDGE_PX), kind)
    except ImageRefused as exc:
        raise invalid(str(exc)) from None


def _check_document(data: bytes, kind: DocumentKind) -> CheckedDocument:
    try:
        return documents.check(data, kind)
    except DocumentRefused as exc:
        raise invalid(str(exc)) from None


def verified_key(upload_key: str) -> str:
    """`uploads/<user>/<uuid>.<ext>` → `images/<user>/<uuid>.<ext>`, or `documents/…` for a
    document (the extension, made by start_upload, tells which)."""
    rest = upload_key.removeprefix("uploads/")
    folder = "documents/" if rest.rsplit(".", 1)[-1] in documents.EXTENSIONS else "images/"
    return folder + rest
