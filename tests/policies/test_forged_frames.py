"""Forged frames against each policy, through the real socket: every one is refused with an
`error` frame (`forbidden`, or `budget_exceeded` for a money budget), and nothing is saved or
started — no message, no ledger row, no reservation, no request to Claude."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from chat.models import ApiCall, Attachment, BudgetReservation, Message
from tests.conftest import open_socket, send_and_wait
from tests.policies.conftest import group_policy
from tests.support.uploads import image_bytes, verified_file

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies", "s3"),
]

TEXT = "text/plain"


@pytest.fixture(autouse=True)
def _search_on_the_server(settings):
    settings.CLAUDE_WEB_SEARCH = True
    settings.IMAGE_DELIVERY = "base64"


@sync_to_async
def nothing_saved(conversation) -> dict:
    return {
        "messages": Message.objects.filter(conversation=conversation).count(),
        "calls": ApiCall.objects.filter(conversation=conversation).count(),
        "reservations": BudgetReservation.objects.count(),
        "sent files": Attachment.objects.filter(message__isnull=False).count(),
    }


NOTHING = {"messages": 0, "calls": 0, "reservations": 0, "sent files": 0}


def two_images(owner) -> list[int]:
    return [verified_file(owner, image_bytes(), "image/png", f"{n}.png").pk for n in (1, 2)]


def a_document(owner) -> list[int]:
    return [verified_file(owner, b"Tide tables for May.\n", TEXT, "tides.txt").pk]


# (name, policy fields, the frame's fields, files made before the policy, code, words of the message)
CASES = [
    (
        "model",
        {"allowed_models": ["claude-haiku-4-5"]},
        {"model": "claude-opus-5-5"},
        None,
        "forbidden",
        "Claude Opus 5.5",
    ),
    (
        "no model of the catalogue",
        {"allowed_models": ["claude-retired-1"]},
        {},
        None,
        "forbidden",
        "No model",
    ),
    (
        "effort",
        {"max_effort": "medium"},
        {"model": "claude-opus-5", "effort": "high"},
        None,
        "forbidden",
        "thinking effort high",
    ),
    ("web search", {"web_search": False}, {"web_search": True}, None, "forbidden", "Web search"),
    ("document", {"documents": False}, {}, a_document, "forbidden", "Documents"),
    ("file count", {"max_files_per_message": 1}, {}, two_images, "forbidden", "at most 1 files"),
    (
        "money budget",
        {"daily_cost": Decimal("0.0001")},
        {},
        None,
        "budget_exceeded",
        "daily budget of $0.00",
    ),
]


@pytest.mark.parametrize(
    ("policy", "fields", "files", "code", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_a_forged_send_is_refused_and_nothing_is_saved(
    alice, conversation, offline_requests, policy, fields, files, code, words
):
    ids = await sync_to_async(files)(alice) if files else []
    await sync_to_async(group_policy)("limited", alice, **policy)
    offline_requests.clear()
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "Hello", attachments=ids, **fields)
    assert [f["type"] for f in frames] == ["error"]
    assert frames[0]["code"] == code and words in frames[0]["message"], frames[0]
    assert frames[0]["retryable"] is False
    assert await nothing_saved(conversation) == NOTHING
    assert offline_requests.all() == []


async def test_the_same_frames_pass_for_a_user_whose_other_group_allows_them(
    alice, titled_conversation, offline_requests
):
    """The most generous group wins: a second group allowing the model, effort and search."""
    await sync_to_async(group_policy)(
        "limited", alice, allowed_models=["claude-haiku-4-5"], max_effort="low", web_search=False
    )
    await sync_to_async(group_policy)("wide", alice, allowed_models=["claude-opus-5"])
    async with open_socket(titled_conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "Hello", model="claude-opus-5", effort="low")
    assert frames[-1]["type"] == "done", frames[-1]
    (request,) = offline_requests.all()
    assert request["body"]["model"] == "claude-opus-5"


# The first reply: cut at max_tokens (Continue takes it), or failed once (retry takes it).
FIRST = {
    "regenerate": "[[offline stop=max_tokens]] Hello",
    "continue": "[[offline stop=max_tokens]] Hello",
    "edit": "[[offline stop=max_tokens]] Hello",
    "retry": "[[offline words=6 error_after=2 fail_times=1 pace_ms=1]] Hello",
}


@pytest.mark.parametrize("command", sorted(FIRST))
async def test_a_stored_model_no_longer_allowed_is_replaced_before_the_next_reply(
    alice, titled_conversation, offline_requests, command
):
    """Every path that starts a reply asks the policy: the conversation moves to an allowed
    model (a `notice` frame says so) instead of running the one the user may no longer use."""
    conversation = titled_conversation
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, FIRST[command])
        assert frames[-1]["type"] == ("error" if command == "retry" else "done"), frames[-1]
        await sync_to_async(group_policy)("haiku only", alice, allowed_models=["claude-haiku-4-5"])
        offline_requests.clear()
        frame = {"type": command}
        if command == "edit":
            frame = {"type": "edit", "message_id": frames[0]["message"]["id"], "text": "Again"}
        if command == "retry":
            frame = {"type": "retry", "message_id": frames[-1]["message_id"]}
        await ws.send_json_to(frame)
        seen = []
        while not seen or seen[-1]["type"] not in ("done", "error"):
            seen.append(await ws.receive_json_from(timeout=10))
    # A retry resends the failing directive, which the new model's first request obeys too:
    # what matters here is where the request went.
    if command != "retry":
        assert seen[-1]["type"] == "done", seen[-1]
    [notice] = [f for f in seen if f["type"] == "notice"]
    assert notice["model"] == "claude-haiku-4-5"
    assert notice["previous_model"] == "claude-sonnet-4-6"
    assert {r["body"]["model"] for r in offline_requests.all()} == {"claude-haiku-4-5"}


@pytest.mark.parametrize(
    ("model", "stored"),
    [("claude-opus-5", "max"), ("claude-sonnet-5-5", "")],
    ids=["stored effort", "default effort of a model that always thinks"],
)
async def test_a_stored_effort_and_search_toggle_are_kept_within_the_policy(
    alice, titled_conversation, offline_requests, model, stored
):
    """Settings saved before a policy changed are lowered, not refused: the effort to the
    highest allowed (also the default effort, high, of a model that always thinks), web search
    off."""
    conversation = titled_conversation
    conversation.model, conversation.thinking_effort = model, stored
    conversation.web_search = True
    await sync_to_async(conversation.save)()
    await sync_to_async(group_policy)("careful", alice, max_effort="medium", web_search=False)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "Hello")
    assert frames[-1]["type"] == "done", frames[-1]
    (request,) = offline_requests.all()
    assert request["body"]["output_config"]["effort"] == "medium"
    assert not [t for t in request["body"].get("tools", []) if t.get("name") == "web_search"]
