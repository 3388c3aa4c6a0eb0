"""Documents in replies: a PDF or text file sent with a message goes to Claude as a cited
`document` block, stays in the conversation's later requests (cached), and the model's
pages-per-request limit is kept before anything is saved."""

from __future__ import annotations

import base64

import pytest
from asgiref.sync import sync_to_async

from chat.models import Attachment, Message
from tests.conftest import open_socket, recv_until, send_and_wait
from tests.support.documents import text_pdf
from tests.support.uploads import verified_file

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies", "s3"),
]

PDF = "application/pdf"


@pytest.fixture(autouse=True)
def _base64(settings):
    settings.IMAGE_DELIVERY = "base64"  # the local S3 is on loopback: the API could not fetch it


uploaded = sync_to_async(verified_file)


@sync_to_async
def saved(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)


@sync_to_async
def user_message_of(reply_id: int) -> Message:
    return Message.objects.get(pk=saved.func(reply_id).parent_id)


def citations(message: Message) -> list[dict]:
    return [c for b in message.content if b["type"] == "text" for c in b.get("citations", [])]


def first_user_content(request: dict) -> list[dict]:
    return request["body"]["messages"][0]["content"]


async def test_a_pdf_sent_with_a_message_is_read_and_cited_by_page(
    alice, conversation, offline_requests
):
    data = text_pdf(3, "Harbour tides on page")
    pdf = await uploaded(alice, data, PDF, "Tides <2026>.pdf")
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(
            ws, "[[offline cite_page=2]] What does page 2 say?", attachments=[pdf.pk]
        )
    assert frames[-1]["type"] == "done", frames[-1]
    (request,) = offline_requests.all()
    document, question = first_user_content(request)
    assert document == {
        "type": "document",
        "source": {"type": "base64", "media_type": PDF, "data": base64.b64encode(data).decode()},
        "citations": {"enabled": True},
        "title": "Tides <2026>.pdf",
        "cache_control": {"type": "ephemeral"},
    }
    assert question["type"] == "text" and question["text"].endswith("What does page 2 say?")
    reply = await saved(frames[-1]["message_id"])
    (cited,) = {(c["type"], c["start_page_number"], c["end_page_number"]) for c in citations(reply)}
    assert cited == ("page_location", 2, 3)  # page 2; the end page is exclusive
    assert all("Harbour tides on page 2" in c["cited_text"] for c in citations(reply))
    assert all(c["document_title"] == "Tides <2026>.pdf" for c in citations(reply))
    assert frames[-1]["content"] == reply.content  # the tab gets the citations at done
    sent = await user_message_of(reply.pk)
    assert sent.content[0] == {
        "type": "document",
        "attachment_id": pdf.pk,
        "media_type": PDF,
        "title": "Tides <2026>.pdf",
        "page_count": 3,
        "token_estimate": pdf.token_estimate,
    }
    assert await sync_to_async(lambda: Attachment.objects.get(pk=pdf.pk).message_id)() == sent.pk


async def test_the_pdf_goes_with_every_later_request_and_is_read_from_the_cache(
    alice, conversation, offline_requests
):
    pdf = await uploaded(alice, text_pdf(3), PDF, "report.pdf")
    async with open_socket(conversation.pk, alice) as ws:
        first = await send_and_wait(ws, "Summarise the report.", attachments=[pdf.pk])
        second = await send_and_wait(ws, "And its last page?")
    assert first[-1]["type"] == "done" and second[-1]["type"] == "done", second[-1]
    one, two = offline_requests.all()
    assert first_user_content(two)[0]["source"] == first_user_content(one)[0]["source"]
    calls = await sync_to_async(
        lambda: list(
            Message.objects.get(pk=second[-1]["message_id"]).api_calls.all()
            | Message.objects.get(pk=first[-1]["message_id"]).api_calls.all()
        )
    )()
    write, read = sorted(calls, key=lambda c: c.pk)
    # At least 1,500 tokens a page (the low end of the documentation's per-page figure).
    assert write.cache_write_5m_tokens >= 3 * 1500, "the turn that attaches the PDF caches it"
    assert read.cache_read_tokens >= write.cache_write_5m_tokens, "the next turn reads it back"


async def test_a_text_file_is_sent_as_its_text_and_cited_by_characters(
    alice, conversation, offline_requests
):
    text = "The ferry leaves at nine. It returns at five.\n"
    notes = await uploaded(alice, text.encode(), "text/markdown", "ferry.md")
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "When does the ferry leave?", attachments=[notes.pk])
    assert frames[-1]["type"] == "done", frames[-1]
    (request,) = offline_requests.all()
    document = first_user_content(request)[0]
    assert document["source"] == {"type": "text", "media_type": "text/plain", "data": text}
    reply = await saved(frames[-1]["message_id"])
    assert citations(reply), reply.content
    for cited in citations(reply):
        assert cited["type"] == "char_location"
        assert text[cited["start_char_index"] : cited["end_char_index"]] == cited["cited_text"]


async def test_pdfs_past_the_models_pages_per_request_are_refused_and_nothing_is_saved(
    alice, conversation, offline_requests, settings
):
    settings.DOCUMENT_MAX_PAGES_SMALL_WINDOW = 5
    first = await uploaded(alice, text_pdf(3), PDF, "a.pdf")
    second = await uploaded(alice, text_pdf(3), PDF, "b.pdf")
    async with open_socket(conversation.pk, alice) as ws:
        ok = await send_and_wait(ws, "Read a.", attachments=[first.pk], model="claude-haiku-4-5")
        refused = await send_and_wait(ws, "Now read b.", attachments=[second.pk])
    assert ok[-1]["type"] == "done", ok[-1]
    error = refused[-1]
    assert error["type"] == "error" and error["code"] == "attachment_invalid"
    assert error["message"].startswith("The PDFs of this conversation have 6 pages together; ")
    assert "Claude Haiku 4.5 reads at most 5 pages in one request" in error["message"]
    assert len(offline_requests.all()) == 1
    count = await sync_to_async(Message.objects.filter(conversation=conversation).count)()
    assert count == 2  # the first turn only
    second_row = await sync_to_async(Attachment.objects.get)(pk=second.pk)
    assert second_row.message_id is None  # still free to send elsewhere


async def test_an_edited_message_keeps_its_document(alice, conversation, offline_requests):
    pdf = await uploaded(alice, text_pdf(2), PDF, "plan.pdf")
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "Read the plan.", attachments=[pdf.pk])
        sent = await user_message_of(frames[-1]["message_id"])
        await ws.send_json_to({"type": "edit", "message_id": sent.pk, "text": "Read it again."})
        edited = await recv_until(ws, "done", "error")
    assert edited[-1]["type"] == "done", edited[-1]
    again = await user_message_of(edited[-1]["message_id"])
    assert again.pk != sent.pk and again.content[0] == sent.content[0]
    assert first_user_content(offline_requests.all()[-1])[0]["type"] == "document"


async def test_files_past_the_request_size_are_refused_before_the_call(
    alice, conversation, offline_requests, settings
):
    settings.CLAUDE_REQUEST_MAX_BYTES = 1024 * 1024
    # Each PDF is ~420 kB, ~560 kB as base64: one fits in a 1 MiB request, two do not.
    padding = "x" * 60_000
    first = await uploaded(alice, text_pdf(7, padding), PDF, "a.pdf")
    second = await uploaded(alice, text_pdf(7, padding), PDF, "b.pdf")
    async with open_socket(conversation.pk, alice) as ws:
        ok = await send_and_wait(ws, "Read a.", attachments=[first.pk])
        refused = await send_and_wait(ws, "Now b.", attachments=[second.pk])
    assert ok[-1]["type"] == "done", ok[-1]
    error = refused[-1]
    assert error["type"] == "error" and error["code"] == "attachment_invalid", error
    assert "one request to the API may carry at most 1.0 MB" in error["message"]
    assert len(offline_requests.all()) == 1
    assert await sync_to_async(Message.objects.filter(conversation=conversation).count)() == 2
