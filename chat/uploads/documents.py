"""Document bytes in, checked document bytes out: the PDF and text side of attachments (no S3).

`check` refuses anything but a readable, unencrypted PDF of 1..DOCUMENT_MAX_PAGES pages, or
UTF-8 text without NUL, and returns what is stored: the uploaded bytes themselves (a PDF is not
rewritten: pypdf is no sanitiser and a rewrite could lose what Claude should read), except that
whatever follows a PDF's last `%%EOF` is dropped — no PDF reader reads it, and it is where a
PDF/ZIP or PDF/HTML polyglot keeps its second file. The PDF is read in a child process under
hard limits of time and memory (chat/uploads/pdf_probe.py); chat/uploads/verification.py bounds
how many checks run at once. Raises `DocumentRefused` with a message for the user.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from chat.uploads.errors import invalid

logger = logging.getLogger(__name__)

PDF = "application/pdf"
PDF_MAGIC = b"%PDF-"
EOF_MARKER = b"%%EOF"
# Limits of the child process that reads a PDF: wall clock (it is killed), CPU time and address
# space (the kernel stops it). A 600-page PDF is read in about 0.3 s, most of it starting Python
# and importing pypdf; a file that needs more than this is refused as too complex. The address
# space holds the interpreter and pypdf (~60 MB), the file (at most 32 MiB, twice) and one
# decompressed stream (pypdf_probe's 16 MiB ceiling).
PDF_CHECK_SECONDS = 20
PDF_CHECK_CPU_SECONDS = 15
PDF_CHECK_MEMORY_BYTES = 512 * 1024 * 1024
PROBE = Path(__file__).with_name("pdf_probe.py")
# Windows sizes in tokens: at or above this, the API takes DOCUMENT_MAX_PAGES pages per PDF.
LARGE_WINDOW_TOKENS = 1_000_000
TOO_COMPLEX = "The PDF is too complex to check; save it again (print to PDF) and attach the copy."


class DocumentRefused(ValueError):
    """The file is not an acceptable document; str(exc) says why, for the user."""


@dataclass(frozen=True)
class DocumentKind:
    content_type: str
    extension: str
    label: str  # "PDF", "plain text", "Markdown"

    @property
    def is_pdf(self) -> bool:
        return self.content_type == PDF

    @property
    def max_bytes(self) -> int:
        return settings.DOCUMENT_MAX_BYTES if self.is_pdf else settings.TEXT_DOCUMENT_MAX_BYTES


KINDS = {
    kind.content_type: kind
    for kind in (
        DocumentKind(PDF, "pdf", "PDF"),
        DocumentKind("text/plain", "txt", "plain text"),
        DocumentKind("text/markdown", "md", "Markdown"),
    )
}
EXTENSIONS = frozenset(kind.extension for kind in KINDS.values())
ALLOWED_LABEL = "PDF, plain text or Markdown"


@dataclass(frozen=True)
class CheckedDocument:
    data: bytes  # what is stored
    page_count: int | None = None  # PDFs
    has_text_layer: bool | None = None  # PDFs


def check(data: bytes, kind: DocumentKind) -> CheckedDocument:
    """The document to store, or DocumentRefused. Text is checked here; a PDF in a child process."""
    if kind.is_pdf:
        return _check_pdf(data)
    _check_text(data, kind)
    return CheckedDocument(data)


def _check_text(data: bytes, kind: DocumentKind) -> None:
    if b"\0" in data:
        raise DocumentRefused(f"The file is not {kind.label} in UTF-8: it contains NUL bytes.")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentRefused(
            f"The file is not UTF-8 text (byte {exc.start:,} is not); save it as UTF-8."
        ) from None


def _check_pdf(data: bytes) -> CheckedDocument:
    if not data.startswith(PDF_MAGIC):
        raise DocumentRefused("The file's contents are not a PDF.")
    data = _through_last_eof(data)
    answer = probe_pdf(data)
    if "refused" in answer:
        raise DocumentRefused(str(answer["refused"]))
    return CheckedDocument(data, page_count=int(answer["pages"]), has_text_layer=answer["text"])


def _through_last_eof(data: bytes) -> bytes:
    """The PDF up to its last %%EOF and that line's end; refuses a file without one (cut off)."""
    end = data.rfind(EOF_MARKER)
    if end < 0:
        raise DocumentRefused("The PDF is incomplete: its end is missing.")
    end += len(EOF_MARKER)
    for eol in (b"\r\n", b"\n", b"\r"):
        if data.startswith(eol, end):
            return data[: end + len(eol)]
    return data[:end]


def probe_pdf(data: bytes) -> dict:
    """pdf_probe.py's answer for the PDF; refuses one it could not read within its limits."""
    limits = (settings.DOCUMENT_MAX_PAGES, PDF_CHECK_MEMORY_BYTES, PDF_CHECK_CPU_SECONDS)
    command = [sys.executable, "-I", str(PROBE), *map(str, limits)]
    try:
        done = subprocess.run(
            command, input=data, capture_output=True, timeout=PDF_CHECK_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        logger.warning("PDF check stopped after %s s", PDF_CHECK_SECONDS)
        raise DocumentRefused(TOO_COMPLEX) from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = None
    if done.returncode != 0 or not isinstance(answer, dict):
        # Killed by its CPU limit, or out of memory: the file asked for more than it may.
        logger.warning(
            "PDF check failed (exit %s): %s",
            done.returncode,
            done.stderr[-500:].decode(errors="replace"),
        )
        raise DocumentRefused(TOO_COMPLEX)
    logger.debug("PDF check: %s", answer)
    return answer


def page_limit(*, context_window: int) -> int:
    """The PDF pages one request to a model may carry: DOCUMENT_MAX_PAGES (the API's 600) with a
    window of 1M tokens or more, DOCUMENT_MAX_PAGES_SMALL_WINDOW (the API's 100) below."""
    if context_window >= LARGE_WINDOW_TOKENS:
        return settings.DOCUMENT_MAX_PAGES
    return min(settings.DOCUMENT_MAX_PAGES_SMALL_WINDOW, settings.DOCUMENT_MAX_PAGES)


def check_pages_for_model(attachments, *, context_window: int) -> None:
    """Raises AttachmentError (attachment_invalid) when the PDFs among the attachments have more
    pages together than one request to the model may carry (the API counts the whole request).

    For the send path: the model is known only then (chat/claude/catalogue.py has its window).
    """
    limit = page_limit(context_window=context_window)
    pages = sum(a.page_count or 0 for a in attachments)
    if pages > limit:
        raise invalid(
            f"The attached PDFs have {pages:,} pages; this model reads at most {limit:,} pages "
            "in one request."
        )
