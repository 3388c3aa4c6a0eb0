"""Citations streamed by the API (documents and web search) are kept in the saved blocks, exactly
as the API's whole (non-streamed) response holds them: each text block with its `citations`."""

from __future__ import annotations

import base64

import anthropic
import pytest
from django.conf import settings

from chat.claude import client
from chat.claude.records import CallRecord
from tests.support.pdfs import make_pdf

pytestmark = pytest.mark.django_db
MODEL = "claude-sonnet-4-6"
PAGES = ["The harbour opened in 1887.", "Its lighthouse is red and white.", "Ferries run hourly."]


def document_turn(question: str) -> list[dict]:
    pdf = base64.b64encode(make_pdf(PAGES)).decode()
    return [
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
                    "title": "harbour.pdf",
                    "citations": {"enabled": True},
                },
                {"type": "text", "text": question},
            ],
        }
    ]


async def streamed(messages: list[dict], **options) -> CallRecord:
    record = CallRecord(model=MODEL)
    async for _ in client.stream_round(
        model=MODEL,
        system=[],
        messages=messages,
        max_tokens=1024,
        record=record,
        **options,
    ):
        pass
    return record


async def whole(messages: list[dict], **options) -> list[dict]:
    sdk = anthropic.AsyncAnthropic(
        api_key="test-key", base_url=settings.ANTHROPIC_BASE_URL, max_retries=0
    )
    response = await sdk.messages.create(model=MODEL, max_tokens=1024, messages=messages, **options)
    return [block.model_dump(mode="json", exclude_unset=True) for block in response.content]


def cited(blocks: list[dict]) -> list[list[dict]]:
    return [b["citations"] for b in blocks if b["type"] == "text" and b.get("citations")]


async def test_page_citations_of_a_pdf_are_saved_as_the_api_sends_them():
    messages = document_turn("[[offline cite_page=2]]\nWhat colour is the lighthouse?")
    record = await streamed(messages)
    sources = cited(record.content)
    assert sources, record.content
    page = sources[0][0]
    assert page["type"] == "page_location"
    assert page["start_page_number"] == 2 and page["end_page_number"] == 3  # exclusive end
    assert page["cited_text"].strip() in PAGES[1]
    assert page["document_title"] == "harbour.pdf"
    assert sources == cited(await whole(messages))


async def test_web_search_results_and_their_citations_are_saved_whole():
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    messages = [{"role": "user", "content": "[[offline search=2]] What is new in Lisbon?"}]
    record = await streamed(messages, tools=[tool])
    kinds = [b["type"] for b in record.content]
    assert kinds.count("server_tool_use") == 2 and kinds.count("web_search_tool_result") == 2
    results = [b for b in record.content if b["type"] == "web_search_tool_result"]
    assert all(r["content"] and r["content"][0]["encrypted_content"] for r in results)
    sources = cited(record.content)
    assert sources and all(c["type"] == "web_search_result_location" for s in sources for c in s)
    assert record.usage.web_search_requests == 2
    assert sources == cited(await whole(messages, tools=[tool]))
