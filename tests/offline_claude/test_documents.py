"""Document blocks and citations on the offline Claude, through the real anthropic SDK.

What Claude's documentation says (Citations; PDF support): PDFs cite pages (1-indexed,
exclusive end), plain text cites characters (0-indexed, exclusive end), custom content cites
blocks; ``document_index`` counts the request's documents across messages; a request holds
at most 600 PDF pages (100 when the model's context window is under 1M tokens); streaming adds
``citations_delta`` events that each add one citation to the current text block.
"""

from __future__ import annotations

import base64
import http.server
import io
import math
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message
from pypdf import PdfReader

from tests.support.pdfs import make_pdf

MODEL = "claude-sonnet-4-6"  # a 1M-token context window
HAIKU = "claude-haiku-4-5"  # a 200k-token context window
PAGES = ["Alpha opens the report. It has two sentences.", "", "Gamma closes the report."]
NOTES = "The grass is green. The sky is blue.\nWater is wet."


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        data = self.files.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.send_header("content-length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def files() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback HTTP server serving ``files[path]``; yields (base URL, files)."""
    served: dict[str, bytes] = {}
    handler = type("Files", (_Files,), {"files": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def pdf_block(raw: bytes, **fields: Any) -> dict[str, Any]:
    source = {"type": "base64", "media_type": "application/pdf", "data": b64(raw)}
    return {"type": "document", "source": source, **fields}


def text_block(data: str, **fields: Any) -> dict[str, Any]:
    source = {"type": "text", "media_type": "text/plain", "data": data}
    return {"type": "document", "source": source, **fields}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


CITED = {"citations": {"enabled": True}}


async def ask(client: anthropic.AsyncAnthropic, *content: Any, model: str = MODEL) -> Message:
    messages = [{"role": "user", "content": list(content)}]
    return await client.messages.create(model=model, max_tokens=400, messages=messages)


def citations(message: Message) -> list[Any]:
    return [c for block in message.content if block.citations for c in block.citations]


def page_texts(raw: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(raw)).pages]


async def test_a_pdf_is_described_and_quoted_with_page_citations(
    client: anthropic.AsyncAnthropic,
) -> None:
    raw = make_pdf(PAGES)
    reply = await ask(
        client, pdf_block(raw, title="Report", **CITED), {"type": "text", "text": "?"}
    )

    text = "".join(b.text for b in reply.content)
    assert "*Report*: a PDF of 3 pages" in text
    found = citations(reply)
    assert [(c.type, c.start_page_number, c.end_page_number) for c in found] == [
        ("page_location", 1, 2),
        ("page_location", 3, 4),
    ]
    pages = page_texts(raw)
    for citation in found:
        assert citation.document_index == 0
        assert citation.document_title == "Report"
        assert citation.cited_text.strip()
        assert citation.cited_text in pages[citation.start_page_number - 1]
    cited_blocks = [b for b in reply.content if b.citations]
    assert [b.text for b in cited_blocks] == ["Alpha opens the report.", "Gamma closes the report."]
    uncited = [b for b in reply.content if not b.citations]
    assert uncited and all(b.citations is None for b in uncited)


async def test_cite_page_quotes_the_first_sentence_of_that_page(
    client: anthropic.AsyncAnthropic,
) -> None:
    raw = make_pdf(["One.", "Two is here. More of two.", "Three."])
    question = {"type": "text", "text": "[[offline cite_page=2]]\nWhat is on page 2?"}
    reply = await ask(client, pdf_block(raw, **CITED), question)

    (citation,) = citations(reply)
    assert (citation.start_page_number, citation.end_page_number) == (2, 3)
    assert citation.cited_text.strip() == "Two is here."
    assert citation.cited_text in page_texts(raw)[1]
    assert citation.document_title is None


async def test_a_scanned_looking_pdf_has_nothing_to_cite(client: anthropic.AsyncAnthropic) -> None:
    reply = await ask(client, pdf_block(make_pdf(["", ""]), title="Scan", **CITED))

    assert citations(reply) == []
    assert "*Scan* has no text I can quote" in "".join(b.text for b in reply.content)


async def test_a_text_document_cites_character_ranges_and_counts_earlier_documents(
    client: anthropic.AsyncAnthropic,
) -> None:
    messages = [
        {
            "role": "user",
            "content": [text_block("Earlier.", **CITED), {"type": "text", "text": "a"}],
        },
        {"role": "assistant", "content": "Noted."},
        {
            "role": "user",
            "content": [text_block(NOTES, title="Notes", **CITED), {"type": "text", "text": "b"}],
        },
    ]
    reply = await client.messages.create(model=MODEL, max_tokens=400, messages=messages)

    found = citations(reply)
    assert len(found) == 2
    for citation in found:
        assert citation.type == "char_location"
        assert citation.document_index == 1
        assert citation.document_title == "Notes"
        assert NOTES[citation.start_char_index : citation.end_char_index] == citation.cited_text
    assert found[0].cited_text == "The grass is green. "
    assert (found[0].start_char_index, found[0].end_char_index) == (0, 20)
    assert found[1].cited_text == "Water is wet."


async def test_a_custom_content_document_cites_its_blocks(client: anthropic.AsyncAnthropic) -> None:
    parts = [{"type": "text", "text": "First chunk"}, {"type": "text", "text": "Second chunk"}]
    source = {"type": "content", "content": parts}
    reply = await ask(client, {"type": "document", "source": source, **CITED})

    found = citations(reply)
    assert [(c.type, c.start_block_index, c.end_block_index) for c in found] == [
        ("content_block_location", 0, 1),
        ("content_block_location", 1, 2),
    ]
    assert [c.cited_text for c in found] == ["First chunk", "Second chunk"]


async def test_without_citations_the_reply_quotes_but_cites_nothing(
    client: anthropic.AsyncAnthropic,
) -> None:
    reply = await ask(client, text_block(NOTES, title="Notes"))

    assert citations(reply) == []
    assert "> The grass is green." in "".join(b.text for b in reply.content)


async def test_streamed_citations_accumulate_to_the_non_streamed_ones(
    client: anthropic.AsyncAnthropic,
) -> None:
    content = [
        pdf_block(make_pdf(PAGES), title="Report", **CITED),
        text_block(NOTES, title="Notes", **CITED),
    ]
    messages = [{"role": "user", "content": content}]
    whole = await client.messages.create(model=MODEL, max_tokens=400, messages=messages)
    deltas: list[Any] = []
    async with client.messages.stream(model=MODEL, max_tokens=400, messages=messages) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "citations_delta":
                deltas.append(event.delta.citation)
        streamed = await stream.get_final_message()

    assert len(deltas) == 4
    assert deltas == citations(whole)
    assert [b.model_dump() for b in streamed.content] == [b.model_dump() for b in whole.content]


async def test_a_cited_block_streams_its_citations_inside_the_text_block(server_url: str) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 400,
        "stream": True,
        "messages": [{"role": "user", "content": [text_block("Only one sentence.", **CITED)]}],
    }
    headers = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
    async with httpx2.AsyncClient(base_url=server_url, timeout=10) as http:
        response = await http.post("/v1/messages", json=body, headers=headers)
    events = [chunk.split("\ndata: ", 1) for chunk in response.text.strip().split("\n\n")]
    cited = [i for i, (_, data) in enumerate(events) if '"citations_delta"' in data]

    assert len(cited) == 1
    start, delta, text = (events[cited[0] + k][1] for k in (-1, 0, 1))
    assert '"content_block":{"type":"text","text":"","citations":[]}' in start
    assert '"start_char_index":0,"end_char_index":18' in delta
    assert '"text_delta"' in text


async def test_a_url_document_is_fetched_and_cited(
    client: anthropic.AsyncAnthropic, files: tuple[str, dict[str, bytes]]
) -> None:
    base, served = files
    raw = make_pdf(PAGES)
    served["/report.pdf"] = raw
    block = {"type": "document", "source": {"type": "url", "url": f"{base}/report.pdf"}, **CITED}

    reply = await ask(client, block)

    assert "a PDF of 3 pages" in "".join(b.text for b in reply.content)
    found = citations(reply)
    assert found and all(c.cited_text in page_texts(raw)[c.start_page_number - 1] for c in found)


@pytest.mark.parametrize("where", ["/missing.pdf", "remote"])
async def test_an_unreachable_url_is_a_400(
    client: anthropic.AsyncAnthropic, files: tuple[str, dict[str, bytes]], where: str
) -> None:
    # 192.0.2.1 is TEST-NET-1: never loopback, so refused before any connection.
    url = f"{files[0]}{where}" if where.startswith("/") else "http://192.0.2.1/a.pdf"
    block = {"type": "document", "source": {"type": "url", "url": url}}

    with pytest.raises(anthropic.BadRequestError) as caught:
        await ask(client, block)
    assert caught.value.body["error"]["message"] == (
        "Unable to download the file. Please verify the URL and try again."
    )


async def test_a_url_that_is_not_a_pdf_is_not_valid(
    client: anthropic.AsyncAnthropic, files: tuple[str, dict[str, bytes]]
) -> None:
    files[1]["/page.html"] = b"<html>withdrawn</html>"
    block = {"type": "document", "source": {"type": "url", "url": f"{files[0]}/page.html"}}

    with pytest.raises(anthropic.BadRequestError, match="The PDF specified was not valid"):
        await ask(client, block)


@pytest.mark.parametrize(("model", "limit"), [(HAIKU, 100), (MODEL, 600)])
async def test_more_pages_than_the_model_takes_is_a_400(
    client: anthropic.AsyncAnthropic, model: str, limit: int
) -> None:
    at_limit = await ask(client, pdf_block(make_pdf([""] * limit)), model=model)
    assert f"a PDF of {limit} pages" in "".join(b.text for b in at_limit.content)

    with pytest.raises(anthropic.BadRequestError) as caught:
        await ask(client, pdf_block(make_pdf([""] * (limit + 1))), model=model)
    assert caught.value.body["error"] == {
        "type": "invalid_request_error",
        "message": (
            f"messages.0.content.0.pdf.source.base64.data: A maximum of {limit} PDF pages "
            "may be provided."
        ),
    }


async def test_the_page_limit_counts_every_pdf_of_the_request(
    client: anthropic.AsyncAnthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await ask(
            client, pdf_block(make_pdf([""] * 60)), pdf_block(make_pdf([""] * 41)), model=HAIKU
        )
    assert caught.value.body["error"]["message"].startswith(
        "messages.0.content.1.pdf.source.base64.data: A maximum of 100 PDF pages"
    )


async def test_a_request_over_32_mb_is_too_large(client: anthropic.AsyncAnthropic) -> None:
    # PDF support: "Maximum request size | 32 MB"; the body is read whole, then refused.
    huge = pdf_block(b"%PDF-1.4\n" + b"0" * (25 * 1024 * 1024))

    with pytest.raises(anthropic.APIStatusError) as caught:
        await ask(client, huge)
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"type": "document"}, "messages.0.content.0.document.source: Field required"),
        (
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "image/png", "data": "x"},
            },
            "messages.0.content.0.document.source.base64.media_type: Input should be "
            "'application/pdf'",
        ),
        (
            {"type": "document", "source": {"type": "text", "media_type": "text/plain"}},
            "messages.0.content.0.document.source.text.data: Field required",
        ),
        (
            {"type": "document", "source": {"type": "gopher"}},
            "messages.0.content.0.document.source: Input tag 'gopher' found using 'type' does "
            "not match any of the expected tags: 'base64', 'text', 'content', 'url', 'file'",
        ),
        (
            {"type": "document", "source": {"type": "url"}},
            "messages.0.content.0.document.source.url.url: Field required",
        ),
        (
            text_block("x", citations={"enabled": "yes"}),
            "messages.0.content.0.document.citations.enabled: Input should be a valid boolean",
        ),
        (
            text_block("x", title="t" * 501),
            "messages.0.content.0.document.title: String should have at most 500 characters",
        ),
        (
            pdf_block(b"<html>not a pdf</html>"),
            "messages.0.content.0.pdf.source.base64.data: The PDF specified was not valid.",
        ),
    ],
)
async def test_a_malformed_document_block_is_a_400(
    client: anthropic.AsyncAnthropic, block: dict[str, Any], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await ask(client, block)
    assert caught.value.body["error"] == {"type": "invalid_request_error", "message": message}


async def test_citations_on_some_documents_only_is_a_400(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="all or none of the documents"):
        await ask(client, text_block("a.", **CITED), text_block("b."))


async def test_citations_with_structured_outputs_is_a_400(client: anthropic.AsyncAnthropic) -> None:
    # Citations: "Citations cannot be used together with Structured Outputs ... 400 error."
    schema = {"type": "json_schema", "schema": {"type": "object"}}
    messages = [{"role": "user", "content": [text_block("a.", **CITED)]}]
    with pytest.raises(anthropic.BadRequestError, match="structured outputs"):
        await client.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=messages,
            extra_body={"output_config": {"format": schema}},
        )
    uncited = [{"role": "user", "content": [text_block("a.")]}]
    await client.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=uncited,
        extra_body={"output_config": {"format": schema}},
    )


async def test_a_document_in_an_assistant_message_is_a_400(
    client: anthropic.AsyncAnthropic,
) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [text_block("mine.")]},
        {"role": "user", "content": "and?"},
    ]
    with pytest.raises(anthropic.BadRequestError, match="only allowed in user messages"):
        await client.messages.create(model=MODEL, max_tokens=50, messages=messages)


async def test_a_pdf_costs_its_pages_in_input_tokens(client: anthropic.AsyncAnthropic) -> None:
    question = {"type": "text", "text": "What does it say?"}
    document = pdf_block(make_pdf(PAGES))
    alone = await client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": [question]}]
    )
    with_pdf = await client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": [document, question]}]
    )
    reply = await ask(client, document, question)

    letter_page_image = math.ceil(612 * 792 / 750)
    assert with_pdf.input_tokens - alone.input_tokens == 3 * (1500 + letter_page_image)
    assert reply.usage.input_tokens == with_pdf.input_tokens


async def test_a_text_document_costs_its_characters(client: anthropic.AsyncAnthropic) -> None:
    question = {"type": "text", "text": "What does it say?"}
    alone = await client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": [question]}]
    )
    with_text = await client.messages.count_tokens(
        model=MODEL,
        messages=[{"role": "user", "content": [text_block(NOTES, title="Notes"), question]}],
    )
    assert with_text.input_tokens - alone.input_tokens == math.ceil(len(NOTES) / 4) + 2
