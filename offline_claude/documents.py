"""``document`` blocks, read as the Messages API reads them, and the citations a reply makes.

Sources (Citations and PDF support pages of Claude's documentation): ``base64`` (a PDF,
``media_type: application/pdf``), ``text`` (plain text, ``media_type: text/plain``),
``content`` (custom content: a string or text blocks) and ``url`` (a PDF the model
fetches). Optional ``title`` (at most 500 characters), ``context``, ``citations:
{enabled}``, ``cache_control``. Citations must be enabled on all or none of a request's
documents, and cannot be used with structured outputs (``output_config.format``).

Reading: a PDF's pages are counted and their text taken with pypdf; the pages of every PDF
in the request add up against the model's limit (600 on 1M-window models, else 100).
Text is chunked into sentences (a sentence keeps the whitespace after it, so the chunks
tile the text); custom content is chunked by its blocks. A citation's ``cited_text`` is
exactly the chunk: ``text[start_char_index:end_char_index]`` for plain text, a sentence of
page ``start_page_number`` for a PDF, block ``start_block_index`` for custom content (end
indices exclusive, pages 1-indexed, ``document_index`` counts every document block of the
request across its messages).

A ``url`` is fetched with a short timeout from loopback hosts only (the offline model has
no internet; the app's local S3 listens on loopback), without proxies or redirects; any
failure is the API's answer to an unreachable URL.

Tokens: a PDF page costs its text (at least 1,500 tokens, the low end of the documentation's
"1,500–3,000 tokens per page") plus its image (``ceil(w*h/750)`` of the page at 72 dpi, at
most 1,600); plain text and custom content cost ``ceil(chars/4)``; title and context too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import io
import ipaddress
import math
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from pypdf import PdfReader
from pypdf.errors import PyPdfError

from .errors import invalid
from .lineup import Model

MAX_PAGES_1M = 600
MAX_PAGES = 100
MAX_TITLE_CHARS = 500
PAGE_TEXT_TOKENS = 1500
MAX_PAGE_IMAGE_TOKENS = 1600
FETCH_TIMEOUT_S = 5.0
MAX_FETCH_BYTES = 32 * 1024 * 1024
UNREACHABLE = "Unable to download the file. Please verify the URL and try again."
NOT_VALID = "The PDF specified was not valid."
WITH_STRUCTURED_OUTPUTS = "Citations cannot be used together with structured outputs."
MIXED_CITATIONS = "Citations must be enabled on all or none of the documents in a request."
_SOURCE_TAGS = "'base64', 'text', 'content', 'url', 'file'"
_SENTENCE_RE = re.compile(r"\S.*?(?:[.!?]+(?=\s|$)|$)\s*", re.S)
_CACHE_SIZE = 32


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


# ---------------------------------------------------------------------------- validation


def _check_source(source: Any, path: str) -> None:
    if not isinstance(source, dict):
        raise invalid(f"{path}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") != "application/pdf":
            raise invalid(f"{path}.source.base64.media_type: Input should be 'application/pdf'")
        if not isinstance(source.get("data"), str) or not source["data"]:
            raise invalid(f"{path}.source.base64.data: Field required")
    elif kind == "text":
        if source.get("media_type") != "text/plain":
            raise invalid(f"{path}.source.text.media_type: Input should be 'text/plain'")
        if not isinstance(source.get("data"), str):
            raise invalid(f"{path}.source.text.data: Field required")
    elif kind == "content":
        content = source.get("content")
        if isinstance(content, list):
            for k, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") not in ("text", "image"):
                    raise invalid(
                        f"{path}.source.content.content.{k}: Input tag found using 'type' does "
                        "not match any of the expected tags: 'text', 'image'"
                    )
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    raise invalid(f"{path}.source.content.content.{k}.text: Field required")
        elif not isinstance(content, str):
            raise invalid(f"{path}.source.content.content: Input should be a valid string or list")
    elif kind == "url":
        if not isinstance(source.get("url"), str) or not source["url"]:
            raise invalid(f"{path}.source.url.url: Field required")
    elif kind == "file":
        raise invalid(f"{path}.source.file: the offline model serves no Files API")
    else:
        raise invalid(
            f"{path}.source: Input tag {kind!r} found using 'type' does not match any of the "
            f"expected tags: {_SOURCE_TAGS}"
        )


def check_block(block: dict[str, Any], path: str) -> None:
    """Validate a ``document`` block's shape (its contents are read by :func:`load`)."""
    path = f"{path}.document"
    _check_source(block.get("source"), path)
    title = block.get("title")
    if title is not None:
        if not isinstance(title, str):
            raise invalid(f"{path}.title: Input should be a valid string")
        if len(title) > MAX_TITLE_CHARS:
            raise invalid(f"{path}.title: String should have at most {MAX_TITLE_CHARS} characters")
    if block.get("context") is not None and not isinstance(block["context"], str):
        raise invalid(f"{path}.context: Input should be a valid string")
    citations = block.get("citations")
    if citations is not None:
        if not isinstance(citations, dict):
            raise invalid(f"{path}.citations: Input should be a valid dictionary")
        if "enabled" in citations and not isinstance(citations["enabled"], bool):
            raise invalid(f"{path}.citations.enabled: Input should be a valid boolean")


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Chunk:
    """The smallest citable piece: a sentence (of a page) or a custom content block."""

    text: str
    start: int
    """Character offset (plain text), page number (PDF) or block index (custom content)."""


@dataclass(frozen=True)
class Pdf:
    """What the model reads of a PDF: each page's text and its image cost."""

    pages: tuple[str, ...]
    image_tokens: tuple[int, ...]

    @property
    def tokens(self) -> int:
        return sum(
            max(PAGE_TEXT_TOKENS, _text_tokens(text)) + image
            for text, image in zip(self.pages, self.image_tokens, strict=True)
        )


_PDFS: collections.OrderedDict[str, Pdf] = collections.OrderedDict()


def _remember(key: str, pdf: Pdf) -> Pdf:
    _PDFS[key] = pdf
    _PDFS.move_to_end(key)
    while len(_PDFS) > _CACHE_SIZE:
        _PDFS.popitem(last=False)
    return pdf


def read_pdf(raw: bytes) -> Pdf:
    """Page texts and image costs of a PDF; raises ``ValueError`` if it is not one."""
    if not raw.lstrip().startswith(b"%PDF"):
        raise ValueError("no PDF header")
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            raise ValueError("encrypted")
        pages, images = [], []
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            width, height = float(page.mediabox.width), float(page.mediabox.height)
            images.append(min(MAX_PAGE_IMAGE_TOKENS, max(1, math.ceil(width * height / 750))))
    except (PyPdfError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ValueError(str(exc)) from exc
    return Pdf(tuple(pages), tuple(images))


def _cached_pdf(raw: bytes) -> Pdf:
    """``read_pdf`` through the cache (on the event loop's thread: the cache is not locked)."""
    key = hashlib.sha256(raw).hexdigest()
    found = _PDFS.get(key)
    return found if found is not None else _remember(key, read_pdf(raw))


async def _read_pdf(raw: bytes) -> Pdf:
    """``_cached_pdf`` with the parsing in a worker thread (a 600-page PDF takes ~0.3 s)."""
    key = hashlib.sha256(raw).hexdigest()
    found = _PDFS.get(key)
    return found if found is not None else _remember(key, await asyncio.to_thread(read_pdf, raw))


def _is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)


def fetch(url: str) -> bytes:
    """GET ``url`` (http(s), a loopback host, no redirects, within ``FETCH_TIMEOUT_S``).

    Raises ``OSError`` when the URL is refused or cannot be read.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OSError(f"unsupported URL {url!r}")
    if not _is_loopback(parts.hostname):
        raise OSError(f"{parts.hostname} is not a loopback host")
    try:
        with _OPENER.open(url, timeout=FETCH_TIMEOUT_S) as response:
            data = response.read(MAX_FETCH_BYTES + 1)
    except (urllib.error.URLError, ValueError) as exc:
        raise OSError(str(exc)) from exc
    if len(data) > MAX_FETCH_BYTES:
        raise OSError("too large")
    return data


@dataclass(frozen=True)
class Document:
    """One document block of the request, read."""

    index: int
    message: int
    kind: str  # pdf | text | content
    title: str | None
    context: str | None
    citations: bool
    chunks: tuple[Chunk, ...]
    pages: int = 0
    chars: int = 0
    pdf: Pdf | None = None

    @property
    def label(self) -> str:
        """How the reply names it."""
        return f"*{self.title}*" if self.title else f"document {self.index + 1}"

    def citation(self, chunk: Chunk) -> dict[str, Any]:
        """The API's citation object for ``chunk``."""
        base = {"cited_text": chunk.text, "document_index": self.index}
        base["document_title"] = self.title
        if self.kind == "pdf":
            where = {"start_page_number": chunk.start, "end_page_number": chunk.start + 1}
            return {"type": "page_location", **base, **where}
        if self.kind == "content":
            where = {"start_block_index": chunk.start, "end_block_index": chunk.start + 1}
            return {"type": "content_block_location", **base, **where}
        where = {"start_char_index": chunk.start, "end_char_index": chunk.start + len(chunk.text)}
        return {"type": "char_location", **base, **where}


def sentences(text: str) -> list[Chunk]:
    """``text`` split into sentences with their character offsets; each keeps the whitespace
    after it, so ``text[c.start:c.start + len(c.text)] == c.text`` for every chunk."""
    return [Chunk(m.group(0), m.start()) for m in _SENTENCE_RE.finditer(text)]


def _content_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [str(p.get("text", "")) if p.get("type") == "text" else "" for p in content]


def _meta(block: dict[str, Any]) -> dict[str, Any]:
    citations = block.get("citations") or {}
    return {
        "title": block.get("title"),
        "context": block.get("context"),
        "citations": bool(citations.get("enabled", False)),
    }


def _from_pdf(pdf: Pdf, **common: Any) -> Document:
    chunks = [
        Chunk(c.text, number)
        for number, page in enumerate(pdf.pages, start=1)
        for c in sentences(page)
    ]
    return Document(kind="pdf", chunks=tuple(chunks), pages=len(pdf.pages), pdf=pdf, **common)


async def _read(block: dict[str, Any], path: str, **common: Any) -> Document:
    source = block["source"]
    kind = source["type"]
    if kind == "text":
        data = source["data"]
        return Document(kind="text", chunks=tuple(sentences(data)), chars=len(data), **common)
    if kind == "content":
        texts = _content_texts(source["content"])
        chunks = tuple(Chunk(t, k) for k, t in enumerate(texts) if t)
        return Document(kind="content", chunks=chunks, chars=sum(map(len, texts)), **common)
    if kind == "url":
        try:
            raw = await asyncio.to_thread(fetch, source["url"])
        except OSError:
            raise invalid(UNREACHABLE) from None
        try:
            pdf = await _read_pdf(raw)
        except ValueError:
            raise invalid(f"{path}.pdf.source.url: {NOT_VALID}") from None
        _remember(f"url:{source['url']}", pdf)
        return _from_pdf(pdf, **common)
    try:
        pdf = await _read_pdf(base64.b64decode(source["data"], validate=True))
    except (binascii.Error, ValueError):
        raise invalid(f"{path}.pdf.source.base64.data: {NOT_VALID}") from None
    return _from_pdf(pdf, **common)


@dataclass(frozen=True)
class Library:
    """Every document of a request, in order (their ``document_index``)."""

    documents: tuple[Document, ...] = ()

    def in_message(self, index: int) -> list[Document]:
        return [d for d in self.documents if d.message == index]

    def __bool__(self) -> bool:
        return bool(self.documents)


def page_limit(model: Model) -> int:
    """PDF pages a request may hold: 600, or 100 when the context window is under 1M."""
    return MAX_PAGES_1M if model.max_input_tokens >= 1_000_000 else MAX_PAGES


def _source_path(block: dict[str, Any], path: str) -> str:
    return (
        f"{path}.pdf.source.url"
        if block["source"]["type"] == "url"
        else (f"{path}.pdf.source.base64.data")
    )


async def load(body: dict[str, Any], model: Model) -> Library:
    """Read every document block of a validated request: fetch URLs, read PDFs, count pages
    against the model's limit. Raises :class:`~offline_claude.errors.ApiError` as the API
    answers."""
    messages = body["messages"]
    documents: list[Document] = []
    pages, limit = 0, page_limit(model)
    for i, message in enumerate(messages):
        content = message["content"]
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if block.get("type") != "document":
                continue
            path = f"messages.{i}.content.{j}"
            if message["role"] != "user":
                raise invalid(f"{path}: document blocks are only allowed in user messages")
            common = {"index": len(documents), "message": i, **_meta(block)}
            document = await _read(block, path, **common)
            pages += document.pages
            if pages > limit:
                too_many = f"A maximum of {limit} PDF pages may be provided."
                raise invalid(f"{_source_path(block, path)}: {too_many}")
            documents.append(document)
    if len({d.citations for d in documents}) > 1:
        raise invalid(MIXED_CITATIONS)
    config = body.get("output_config")
    has_format = isinstance(config, dict) and config.get("format") is not None
    if any(d.citations for d in documents) and (has_format or body.get("output_format")):
        raise invalid(WITH_STRUCTURED_OUTPUTS)
    return Library(tuple(documents))


def block_tokens(block: dict[str, Any]) -> int:
    """Input tokens of a document block (see module docstring); never raises."""
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    named = [block[k] for k in ("title", "context") if isinstance(block.get(k), str)]
    extra = sum(_text_tokens(text) for text in named)
    kind = source.get("type")
    if kind == "text":
        return extra + _text_tokens(str(source.get("data", "")))
    if kind == "content":
        content = source.get("content")
        texts = _content_texts(content) if isinstance(content, (str, list)) else []
        return extra + sum(_text_tokens(t) for t in texts)
    pdf: Pdf | None = None
    if kind == "url":
        pdf = _PDFS.get(f"url:{source.get('url')}")
    elif kind == "base64":
        try:
            pdf = _cached_pdf(base64.b64decode(str(source.get("data", "")), validate=True))
        except (binascii.Error, ValueError):
            pdf = None
    one_page = PAGE_TEXT_TOKENS + MAX_PAGE_IMAGE_TOKENS  # what an unread PDF is counted as
    return extra + (pdf.tokens if pdf is not None else one_page)


# ---------------------------------------------------------------------------- replying


@dataclass
class Reply:
    """A reply about documents as text parts, each with its citations (``None``: uncited)."""

    parts: list[tuple[str, list[dict[str, Any]] | None]] = field(default_factory=list)

    def say(self, text: str, citations: list[dict[str, Any]] | None = None) -> None:
        self.parts.append((text, citations))


def _kind_phrase(document: Document) -> str:
    if document.kind == "pdf":
        return f"a PDF of {document.pages} page{'s' if document.pages != 1 else ''}"
    noun = "plain text document" if document.kind == "text" else "custom content document"
    return f"a {noun} of {document.chars} characters"


def _chosen(document: Document, cite_page: int | None) -> list[Chunk] | str:
    """The chunks to quote, or why there are none."""
    if document.kind == "pdf" and cite_page is not None:
        on_page = [c for c in document.chunks if c.start == cite_page]
        if not on_page:
            return (
                f"no text on page {cite_page}"
                if cite_page <= document.pages
                else (f"no page {cite_page}")
            )
        return on_page[:1]
    if not document.chunks:
        return "no text I can quote (a scan, perhaps)"
    first, last = document.chunks[0], document.chunks[-1]
    return [first] if first == last else [first, last]


def reply(library: Library, anchor: int, cite_page: int | None = None) -> Reply | None:
    """What the model says about the documents of the user's message ``anchor`` (``None``
    if it holds none): what it received, then a quote of each with citations when enabled."""
    documents = library.in_message(anchor)
    if not documents:
        return None
    out = Reply()
    listed = "\n".join(f"- {d.label}: {_kind_phrase(d)}" for d in documents)
    out.say(f"**Offline Claude** here. I received {len(documents)} document(s):\n\n{listed}\n\n")
    for document in documents:
        chosen = _chosen(document, cite_page)
        if isinstance(chosen, str):
            out.say(f"{document.label} has {chosen}.\n\n")
            continue
        out.say(f"From {document.label}:\n\n")
        for chunk in chosen:
            quote = " ".join(chunk.text.split())
            if document.citations:
                out.say("> ")
                out.say(quote, [document.citation(chunk)])
                out.say("\n\n")
            else:
                out.say(f"> {quote}\n\n")
    out.say("That is what the documents say.")
    return out
