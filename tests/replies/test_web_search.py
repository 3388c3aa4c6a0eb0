"""Web search in replies: Anthropic's server tool, off unless the server allows it, toggled per
conversation or per send; the searches and their cited answer saved, sent back, and priced."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse

from chat.models import ApiCall, Conversation, Message
from tests.conftest import open_socket, send_and_wait

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]

# claude-sonnet-4-6 (the suite's default model) in chat/claude/models.json, USD.
PER_MTOK = {"input": Decimal("3.00"), "cache_write_5m": Decimal("3.75"), "output": Decimal("15")}
PER_SEARCH = Decimal("10.00") / 1000


@pytest.fixture
def searching(settings):
    settings.CLAUDE_WEB_SEARCH = True
    settings.CLAUDE_WEB_SEARCH_MAX_USES = 3
    settings.CLAUDE_WEB_SEARCH_ALLOWED_DOMAINS = ["example.org"]
    return settings


@sync_to_async
def reply_of(frames: list[dict]) -> tuple[Message, list[ApiCall]]:
    message_id = frames[-1]["message_id"]
    calls = list(ApiCall.objects.filter(message_id=message_id).order_by("id"))
    return Message.objects.get(pk=message_id), calls


def kinds(message: Message) -> list[str]:
    return [b["type"] for b in message.content]


def web_tools(request: dict) -> list[dict]:
    return [t for t in request["body"].get("tools", []) if t.get("name") == "web_search"]


async def test_a_send_that_asks_for_search_on_a_server_without_it_is_refused(
    alice, conversation, offline_requests
):
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "What is new?", web_search=True)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "forbidden"
    assert await sync_to_async(Message.objects.filter(conversation=conversation).count)() == 0
    assert offline_requests.all() == []


async def test_a_turn_with_two_searches_is_saved_and_priced_as_computed_by_hand(
    alice, conversation, offline_requests, searching
):
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(
            ws, "[[offline search=2]] What is new in Lisbon?", web_search=True
        )
    assert frames[-1]["type"] == "done", frames[-1]
    (request,) = offline_requests.all()
    assert web_tools(request) == [
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "max_uses": 3,
            "allowed_domains": ["example.org"],
        }
    ]
    message, calls = await reply_of(frames)
    assert kinds(message).count("server_tool_use") == 2
    assert kinds(message).count("web_search_tool_result") == 2
    cited = [c for b in message.content if b["type"] == "text" for c in b.get("citations", [])]
    assert cited and all(c["type"] == "web_search_result_location" for c in cited)
    assert all(c["url"].startswith("https://example.org") for c in cited)
    (call,) = calls
    assert call.web_search_requests == 2
    by_hand = (
        call.input_tokens * PER_MTOK["input"]
        + call.cache_write_5m_tokens * PER_MTOK["cache_write_5m"]
        + call.output_tokens * PER_MTOK["output"]
    ) / 1_000_000 + 2 * PER_SEARCH
    assert call.cache_read_tokens == 0 and call.cache_write_1h_tokens == 0
    assert call.cost == by_hand
    assert Decimal(frames[-1]["cost"]) == by_hand


async def test_the_toggle_turns_search_on_for_the_conversation_and_a_send_can_turn_it_off(
    alice, conversation, offline_requests, searching, client
):
    await sync_to_async(client.force_login)(alice)
    url = reverse("chat:web_search", args=[conversation.pk])
    response = await sync_to_async(client.post)(url, {"enabled": "1"})
    assert response.status_code == 302
    assert await sync_to_async(lambda: Conversation.objects.get(pk=conversation.pk).web_search)()
    async with open_socket(conversation.pk, alice) as ws:
        assert (await send_and_wait(ws, "Hello [[offline search=0]]"))[-1]["type"] == "done"
        assert (await send_and_wait(ws, "Again", web_search=False))[-1]["type"] == "done"
    first, second = offline_requests.all()
    assert len(web_tools(first)) == 1 and web_tools(second) == []


async def test_the_toggle_is_refused_where_the_server_allows_no_search(alice, conversation, client):
    await sync_to_async(client.force_login)(alice)
    url = reverse("chat:web_search", args=[conversation.pk])
    response = await sync_to_async(client.post)(url, {"enabled": "1"})
    assert response.status_code == 403
    assert not await sync_to_async(
        lambda: Conversation.objects.get(pk=conversation.pk).web_search
    )()


async def test_searched_turns_go_back_to_the_api_unchanged(
    alice, conversation, offline_requests, searching
):
    async with open_socket(conversation.pk, alice) as ws:
        first = await send_and_wait(ws, "[[offline search=1]] Latest news?", web_search=True)
        second = await send_and_wait(ws, "And more?", web_search=True)
    assert first[-1]["type"] == "done" and second[-1]["type"] == "done", second[-1]
    saved, _ = await reply_of(first)
    sent_back = offline_requests.all()[-1]["body"]["messages"][1]
    assert sent_back["role"] == "assistant"
    # As saved, but for the cache breakpoint the request puts on its newest block.
    unmarked = [{k: v for k, v in b.items() if k != "cache_control"} for b in sent_back["content"]]
    assert unmarked == saved.content


async def test_a_paused_search_turn_is_continued_to_its_answer(
    alice, conversation, offline_requests, searching
):
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(
            ws, "[[offline search=2 search_pause]] What is new?", web_search=True
        )
    assert frames[-1]["type"] == "done" and frames[-1]["stop_reason"] == "end_turn"
    message, calls = await reply_of(frames)
    assert [c.purpose for c in calls] == ["reply", "continuation"]
    assert sum(c.web_search_requests for c in calls) == 2
    assert any(b["type"] == "text" and b.get("citations") for b in message.content)
    assert len(offline_requests.all()) == 2


async def test_web_search_must_be_true_or_false(alice, conversation, searching):
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "Hi", web_search="yes")
    assert frames[-1]["code"] == "invalid_frame"


def opaque_keys(value) -> set[str]:
    """Every key named encrypted_* anywhere in `value`."""
    if isinstance(value, list):
        return set().union(*(opaque_keys(v) for v in value)) if value else set()
    if isinstance(value, dict):
        own = {k for k in value if k.startswith("encrypted_")}
        return own.union(*(opaque_keys(v) for v in value.values()))
    return set()


async def test_tabs_see_each_search_as_a_tool_step_and_the_sources_at_done(
    alice, conversation, searching
):
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "[[offline search=1]] Latest news?", web_search=True)
    done = frames[-1]
    assert done["type"] == "done", done
    steps = [f for f in frames if f["type"] == "tool"]
    asked, answered = steps
    assert asked["name"] == answered["name"] == "web_search" and asked["id"] == answered["id"]
    assert asked["result"] is None and asked["input"]["query"]
    assert not answered["is_error"]
    message, _ = await reply_of(frames)
    (result,) = [b for b in message.content if b["type"] == "web_search_tool_result"]
    pages = result["content"]
    assert answered["result"].splitlines() == [f"{p['title']} — {p['url']}" for p in pages]
    # The done frame carries the saved blocks, citations and sources, without what only the
    # API may read back; the saved message keeps those for the next request.
    assert [b["type"] for b in done["content"]] == kinds(message)
    assert any(b.get("citations") for b in done["content"] if b["type"] == "text")
    assert opaque_keys(message.content) == {"encrypted_content", "encrypted_index"}
    assert opaque_keys(done["content"]) == set()
    assert "encrypted" not in str(frames)


async def test_a_failed_search_is_a_failed_tool_step_not_a_failed_reply(
    alice, conversation, searching
):
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(
            ws, "[[offline search=1 search_error=too_many_requests]] News?", web_search=True
        )
    assert frames[-1]["type"] == "done", frames[-1]
    answered = [f for f in frames if f["type"] == "tool" and f["result"] is not None]
    assert [(f["result"], f["is_error"]) for f in answered] == [
        ("Search failed: too_many_requests", True)
    ]


async def test_the_page_shows_saved_search_turns_without_their_encrypted_fields(
    alice, conversation, searching, client
):
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "[[offline search=2]] Latest news?", web_search=True)
    assert frames[-1]["type"] == "done"
    await sync_to_async(client.force_login)(alice)
    page = await sync_to_async(client.get)(reverse("chat:conversation", args=[conversation.pk]))
    assert page.status_code == 200
    assert b"encrypted_" not in page.content and b"web_search_tool_result" in page.content
