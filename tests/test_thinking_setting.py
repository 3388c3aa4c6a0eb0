"""The thinking setting: saved per conversation, the send frame's `effort`, what reaches the
request (read from the offline Claude's request records), and thinking in the page and ledger."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat.claude import catalogue
from chat.conversations import lifecycle
from chat.models import ApiCall, Conversation, Message
from chat.replies import meters
from tests.conftest import open_socket, recv, recv_until

OPUS_47 = "claude-opus-4-7"  # adaptive; does not think unasked
SONNET_46 = "claude-sonnet-4-6"  # manual-and-adaptive; low, medium, high, max (no xhigh)
SONNET_55 = "claude-sonnet-5-5"  # always thinks
HAIKU_45 = "claude-haiku-4-5"  # manual budgets only: takes no effort
ADAPTIVE = {"type": "adaptive", "display": "summarized"}


def conversation_of(user, model: str = OPUS_47, effort: str = "") -> Conversation:
    conversation = lifecycle.conversation_create(owner=user, model=model)
    conversation.title = "Named"  # no background title call
    conversation.thinking_effort = effort
    conversation.save()
    return conversation


def client_of(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def post_thinking(client: Client, conversation: Conversation, **data):
    return client.post(f"/c/{conversation.pk}/thinking/", data, HTTP_ACCEPT="application/json")


def effort_of(conversation: Conversation) -> str:
    return Conversation.objects.get(pk=conversation.pk).thinking_effort


# --- the setting ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_alice_saves_her_conversations_thinking_effort(alice):
    conversation = conversation_of(alice)
    response = post_thinking(client_of(alice), conversation, effort="xhigh")
    assert response.status_code == 200
    assert response.json() == {"id": conversation.pk, "thinking_effort": "xhigh"}
    assert effort_of(conversation) == "xhigh"
    response = post_thinking(client_of(alice), conversation, effort="")
    assert response.status_code == 200 and effort_of(conversation) == ""


@pytest.mark.django_db
def test_it_checks_ownership_bob_cannot_set_alices_thinking(alice, bob):
    conversation = conversation_of(alice, effort="low")
    response = post_thinking(client_of(bob), conversation, effort="max")
    assert response.status_code == 404
    assert effort_of(conversation) == "low"


@pytest.mark.django_db
def test_it_needs_a_login_and_the_csrf_token(alice):
    conversation = conversation_of(alice)
    response = Client().post(f"/c/{conversation.pk}/thinking/", {"effort": "low"})
    assert response.status_code == 302 and "/login/" in response["Location"]
    strict = client_of(alice, enforce_csrf_checks=True)
    assert post_thinking(strict, conversation, effort="low").status_code == 403
    assert client_of(alice).get(f"/c/{conversation.pk}/thinking/").status_code == 405
    assert effort_of(conversation) == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model", "effort", "message"),
    [
        (SONNET_46, "xhigh", "takes the thinking efforts low, medium, high, max, not xhigh"),
        (HAIKU_45, "low", "does not take a thinking effort"),
        (OPUS_47, "extreme", "effort is blank or one of low, medium, high, xhigh, max"),
    ],
)
def test_an_effort_the_model_does_not_take_is_refused(alice, model, effort, message):
    conversation = conversation_of(alice, model=model, effort="")
    response = post_thinking(client_of(alice), conversation, effort=effort)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert effort_of(conversation) == ""


@pytest.mark.django_db
def test_the_effort_is_checked_against_the_model_the_picker_names(alice):
    conversation = conversation_of(alice, model=SONNET_46)
    client = client_of(alice)
    assert post_thinking(client, conversation, effort="xhigh", model=OPUS_47).status_code == 200
    assert effort_of(conversation) == "xhigh"
    refused = post_thinking(client, conversation, effort="low", model="claude-nope-1")
    assert refused.status_code == 400 and effort_of(conversation) == "xhigh"
    # Saving the effort does not change the model: the picker applies to the next message.
    assert Conversation.objects.get(pk=conversation.pk).model == SONNET_46


def test_the_nearest_effort_a_model_takes_replaces_one_it_does_not():
    sonnet_46 = catalogue.get_model(SONNET_46)
    assert catalogue.nearest_effort(sonnet_46, "xhigh") == "high"  # a tie goes to the lower
    assert catalogue.nearest_effort(sonnet_46, "max") == "max"
    assert catalogue.nearest_effort(sonnet_46, "") == ""
    assert catalogue.nearest_effort(catalogue.get_model(HAIKU_45), "high") == ""
    assert catalogue.efforts_of(catalogue.get_model(HAIKU_45)) == ()
    assert "xhigh" in catalogue.efforts_of(catalogue.get_model(SONNET_55))


@pytest.mark.django_db
def test_the_page_lists_each_models_efforts_and_the_conversations_setting(alice):
    conversation = conversation_of(alice, model=SONNET_46, effort="medium")
    html = client_of(alice).get(f"/c/{conversation.pk}/").content.decode()
    start = html.index('<script id="chat-config" type="application/json">')
    config = json.loads(html[start:].split(">", 1)[1].split("</script>", 1)[0])
    assert config["thinking_effort"] == "medium"
    assert config["thinking_url"] == f"/c/{conversation.pk}/thinking/"
    models = {m["id"]: m for m in config["models"]}
    assert models[SONNET_46]["efforts"] == ["low", "medium", "high", "max"]
    assert models[SONNET_46]["always_thinks"] is False
    assert models[SONNET_55]["always_thinks"] is True
    assert models[HAIKU_45]["efforts"] == []
    assert 'data-testid="thinking-picker"' in html


# --- the send frame and the request ----------------------------------------------------------


async def send(ws, text: str, **extra) -> list[dict]:
    await ws.send_json_to({"type": "send", "client_id": str(uuid.uuid4()), "text": text, **extra})
    return await recv_until(ws, "done", "error", timeout=30)


@sync_to_async
def new_conversation(user, model: str = OPUS_47, effort: str = "") -> Conversation:
    return conversation_of(user, model=model, effort=effort)


@sync_to_async
def saved_reply(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)


@sync_to_async
def message_count(conversation: Conversation) -> int:
    return Message.objects.filter(conversation=conversation).count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_the_effort_in_the_send_frame_reaches_the_request(alice, offline_requests):
    conversation = await new_conversation(alice, effort="high")
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send(ws, "[[offline words=8]] think first", effort="low")
    assert frames[-1]["type"] == "done" and frames[-1]["stop_reason"] == "end_turn"
    body = offline_requests.all()[-1]["body"]
    assert body["thinking"] == ADAPTIVE
    assert body["output_config"] == {"effort": "low"}
    # Thinking streamed beside the text, never in it; the setting itself is unchanged.
    thinking = "".join(f["text"] for f in frames if f["type"] == "thinking")
    reply = await saved_reply(frames[-1]["message_id"])
    assert reply.content[0] == {
        "type": "thinking",
        "thinking": thinking,
        "signature": reply.content[0]["signature"],
    }
    assert thinking and thinking not in reply.text
    assert "".join(f["text"] for f in frames if f["type"] == "delta") == reply.text
    assert await sync_to_async(effort_of)(conversation) == "high"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_without_an_effort_in_the_frame_the_conversations_setting_is_asked(
    alice, offline_requests
):
    conversation = await new_conversation(alice, effort="max")
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send(ws, "[[offline words=4]] hi")
    assert frames[-1]["type"] == "done"
    body = offline_requests.all()[-1]["body"]
    assert body["thinking"] == ADAPTIVE and body["output_config"] == {"effort": "max"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_thinking_is_off_when_the_setting_is_off(alice, offline_requests):
    # Haiku 5.5 thinks unasked: "Off" must turn it off, not leave it to the model.
    conversation = await new_conversation(alice, model="claude-haiku-5-5", effort="")
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send(ws, "[[offline words=4]] hi")
    assert frames[-1]["type"] == "done"
    body = offline_requests.all()[-1]["body"]
    assert body["thinking"] == {"type": "disabled"} and "output_config" not in body
    assert not [f for f in frames if f["type"] == "thinking"]
    reply = await saved_reply(frames[-1]["message_id"])
    assert [b["type"] for b in reply.content] == ["text"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_an_always_thinking_model_without_an_effort_asks_nothing_and_still_thinks(
    alice, offline_requests
):
    conversation = await new_conversation(alice, model=SONNET_55, effort="")
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send(ws, "[[offline words=5]] hi")
    assert frames[-1]["type"] == "done" and frames[-1]["stop_reason"] == "end_turn"
    body = offline_requests.all()[-1]["body"]
    assert "thinking" not in body and "output_config" not in body  # never "disabled"
    reply = await saved_reply(frames[-1]["message_id"])
    # It thinks by default, its thinking not displayed (display defaults to omitted on 5.x).
    assert reply.content[0]["type"] == "thinking" and reply.content[0]["thinking"] == ""
    assert len(reply.text.split()) == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_an_always_thinking_model_takes_an_effort(alice, offline_requests):
    conversation = await new_conversation(alice, model=SONNET_55)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send(ws, "[[offline words=5]] hi", effort="xhigh")
    assert frames[-1]["type"] == "done"
    body = offline_requests.all()[-1]["body"]
    assert body["thinking"] == ADAPTIVE and body["output_config"] == {"effort": "xhigh"}
    assert [f for f in frames if f["type"] == "thinking"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
@pytest.mark.parametrize("effort", ["extreme", "", "HIGH", 3, True, None, ["low"]])
async def test_an_effort_that_is_not_a_level_is_an_invalid_frame(alice, offline_requests, effort):
    conversation = await new_conversation(alice)
    async with open_socket(conversation.pk, alice) as ws:
        frame = {"type": "send", "client_id": str(uuid.uuid4()), "text": "hi", "effort": effort}
        if effort is None:
            frame["effort"] = {"level": "low"}
        await ws.send_json_to(frame)
        error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "invalid_frame"
    assert "effort must be one of low, medium, high, xhigh, max" in error["message"]
    assert await message_count(conversation) == 0 and offline_requests.all() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
@pytest.mark.parametrize(
    ("model", "frame_model", "effort", "message"),
    [
        (SONNET_46, None, "xhigh", "Claude Sonnet 4.6 takes the thinking efforts"),
        (OPUS_47, HAIKU_45, "low", "Claude Haiku 4.5 does not take a thinking effort."),
    ],
)
async def test_a_level_the_model_does_not_take_is_an_invalid_frame_and_starts_nothing(
    alice, offline_requests, model, frame_model, effort, message
):
    conversation = await new_conversation(alice, model=model)
    extra = {"model": frame_model} if frame_model else {}
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(
            {"type": "send", "client_id": str(uuid.uuid4()), "text": "hi", "effort": effort} | extra
        )
        error = await recv(ws)
    assert error["code"] == "invalid_frame" and message in error["message"]
    assert error["retryable"] is False and error["message_id"] is None
    assert await message_count(conversation) == 0 and offline_requests.all() == []
    assert (await sync_to_async(Conversation.objects.get)(pk=conversation.pk)).model == model


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_the_effort_is_checked_against_the_model_the_message_goes_to(alice, offline_requests):
    conversation = await new_conversation(alice, model=SONNET_46)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send(ws, "[[offline words=4]] hi", model=OPUS_47, effort="xhigh")
    assert frames[-1]["type"] == "done"
    body = offline_requests.all()[-1]["body"]
    assert body["model"] == OPUS_47 and body["output_config"] == {"effort": "xhigh"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_model_change_keeps_the_nearest_effort_the_new_model_takes(alice, offline_requests):
    conversation = await new_conversation(alice, model=OPUS_47, effort="xhigh")
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send(ws, "[[offline words=4]] hi", model=SONNET_46)
        assert frames[-1]["type"] == "done"
        assert await sync_to_async(effort_of)(conversation) == "high"
        frames = await send(ws, "[[offline words=4]] again", model=HAIKU_45)
    assert frames[-1]["type"] == "done"
    first, second = [r["body"] for r in offline_requests.all()]
    assert first["model"] == SONNET_46 and first["output_config"] == {"effort": "high"}
    # Haiku 4.5 takes no effort: its thinking is off.
    assert second["model"] == HAIKU_45 and second["thinking"] == {"type": "disabled"}
    assert await sync_to_async(effort_of)(conversation) == ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_regenerate_edit_and_continue_use_the_conversations_setting(
    alice, offline_requests, settings
):
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 40
    conversation = await new_conversation(alice, model=OPUS_47, effort="medium")
    async with open_socket(conversation.pk, alice) as ws:
        first = await send(ws, "[[offline words=4]] hi", effort="low")
        user_id = first[0]["message"]["id"]
        await ws.send_json_to({"type": "regenerate"})
        regenerated = await recv_until(ws, "done", "error", timeout=30)
        await ws.send_json_to(
            {"type": "edit", "message_id": user_id, "text": "[[offline words=60]] longer"}
        )
        edited = await recv_until(ws, "done", "error", timeout=30)
        assert edited[-1]["stop_reason"] == "max_tokens"
        await ws.send_json_to({"type": "continue"})
        continued = await recv_until(ws, "done", "error", timeout=30)
    assert [f[-1]["type"] for f in (regenerated, edited, continued)] == ["done"] * 3
    bodies = [r["body"] for r in offline_requests.all()]
    assert [b["output_config"]["effort"] for b in bodies] == ["low", "medium", "medium", "medium"]
    assert all(b["thinking"] == ADAPTIVE for b in bodies)


# --- what the page gets of thinking ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_pages_get_thinking_text_but_never_signatures_or_redacted_data(alice):
    conversation = await new_conversation(alice, model=OPUS_47, effort="high")
    async with open_socket(conversation.pk, alice) as ws:
        shown = await send(ws, "[[offline words=4]] first")
        redacted = await send(ws, "[[offline words=4 redact]] second")
        await ws.send_json_to({"type": "resume", "after_seq": 0})
        resumed = await recv_until(ws, "message", "done", timeout=10)
    thinking = await saved_reply(shown[-1]["message_id"])
    hidden = await saved_reply(redacted[-1]["message_id"])
    signature = thinking.content[0]["signature"]
    data = hidden.content[0]["data"]
    assert hidden.content[0]["type"] == "redacted_thinking" and signature and data

    client = await sync_to_async(client_of)(alice)
    page = await sync_to_async(client.get)(f"/c/{conversation.pk}/")
    listed = await sync_to_async(client.get)(f"/c/{conversation.pk}/messages/")
    for body in (page.content.decode(), listed.content.decode(), json.dumps(resumed)):
        assert signature not in body and data not in body
    by_id = {m["id"]: m for m in listed.json()["messages"]}
    assert by_id[thinking.pk]["content"][0] == {
        "type": "thinking",
        "thinking": thinking.content[0]["thinking"],
    }
    assert by_id[hidden.pk]["content"][0] == {"type": "redacted_thinking"}


# --- thinking tokens are output tokens -------------------------------------------------------


def ask_again(base_url: str, record: dict) -> dict:
    """The recorded request again, not streamed, with its beta header (compaction) if any."""
    headers = {
        "content-type": "application/json",
        "x-api-key": "test-key",
        "anthropic-version": "2023-06-01",
    }
    if "anthropic-beta" in record["headers"]:
        headers["anthropic-beta"] = record["headers"]["anthropic-beta"]
    replay = urllib.request.Request(
        base_url + "/v1/messages",
        data=json.dumps({**record["body"], "stream": False}).encode(),
        headers=headers,
    )
    with urllib.request.urlopen(replay, timeout=10) as response:
        return json.load(response)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_thinking_replys_output_tokens_are_the_apis_figure(
    alice, offline_requests, offline_claude_url
):
    words = 7
    conversation = await new_conversation(alice, model=OPUS_47, effort="high")
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send(ws, f"[[offline words={words}]] count me")
    assert frames[-1]["type"] == "done"
    record = offline_requests.all()[-1]
    # The same request again, not streamed: the API's own usage for it (replies are
    # deterministic), counting the thinking in output_tokens.
    answer = await sync_to_async(ask_again)(offline_claude_url, record)
    assert answer["content"][0]["type"] == "thinking" and answer["content"][0]["thinking"]
    api_output = answer["usage"]["output_tokens"]
    assert api_output > words  # the thinking counts, beside the text's one token a word

    @sync_to_async
    def ledger():
        call = ApiCall.objects.get(message_id=frames[-1]["message_id"])
        fresh = Conversation.objects.get(pk=conversation.pk)
        return call, fresh, meters.conversation_meters(fresh)

    call, fresh, shown = await ledger()
    assert call.output_tokens == api_output
    assert frames[-1]["usage"]["output_tokens"] == api_output
    assert fresh.output_tokens == api_output
    assert (
        shown["budget_used"]
        == fresh.input_tokens + fresh.cache_creation_tokens + (fresh.cache_read_tokens) + api_output
    )
