"""No reply is lost to its content: NUL and lone surrogates are made storable where they enter.

On PostgreSQL a text column refuses NUL, jsonb refuses `\\u0000` in any string or key, and no
UTF-8 encoder takes a surrogate. Model output with them is saved with U+FFFD in their place;
what a user types with them is refused with a clear message; a search never fails on them.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from chat.conversations import lifecycle, search, tree
from chat.models import Conversation, Message
from chat.replies import checkpoints, planning
from chat.text import REPLACEMENT, has_unstorable, storable, storable_json
from tests.conftest import open_socket, recv, recv_until, send_frame

NUL, LONE = "\x00", "\ud800"


def live(test):
    """A test that streams a reply: a real transaction, and no reply left running after it."""
    return pytest.mark.django_db(transaction=True)(pytest.mark.usefixtures("finish_replies")(test))


# What the offline model is told to write: `escapes` turns each \uXXXX into its code point.
STEER = "[[offline reply escapes]]\nbefore\\u0000after lone\\udc00 end"
SAVED = f"before{REPLACEMENT}after lone{REPLACEMENT} end"


def nothing_unstorable(value) -> bool:
    return not has_unstorable(json.dumps(value, ensure_ascii=False))


@sync_to_async
def saved(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)


# --- the function -----------------------------------------------------------------------------


def test_storable_replaces_nul_and_every_surrogate_and_nothing_else():
    assert storable(f"a{NUL}b{LONE}c\udfff") == f"a{REPLACEMENT}b{REPLACEMENT}c{REPLACEMENT}"
    text = "plain é 😀 \ufffd \t\n"
    assert storable(text) is text
    # Character by character: text saved whole equals the same text streamed in pieces.
    pieces = ["x\ud83d", "\ude00y", NUL]
    assert storable("".join(pieces)) == "".join(storable(p) for p in pieces)


def test_storable_json_cleans_keys_and_values_without_touching_the_original():
    blocks = [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {f"k{NUL}": [f"v{LONE}", 1, None]}},
        {"type": "text", "text": "fine"},
    ]
    before = json.dumps(blocks)
    cleaned = storable_json(blocks)
    assert cleaned[0]["input"] == {f"k{REPLACEMENT}": [f"v{REPLACEMENT}", 1, None]}
    assert cleaned[1] is blocks[1]  # unchanged parts are shared, not copied
    assert json.dumps(blocks) == before
    clean = [{"type": "text", "text": "ok"}]
    assert storable_json(clean) is clean


# --- model output: replies, checkpoints, tool blocks, titles, summaries ------------------------


@live
async def test_a_reply_with_nul_and_a_lone_surrogate_is_saved_and_ends_in_done(
    alice, titled_conversation
):
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame(STEER))
        frames = await recv_until(ws, "done", "error")
        # The conversation is free at once: no reply left `streaming`, no `busy`.
        await ws.send_json_to(send_frame("[[offline words=3]] again"))
        second = await recv_until(ws, "done", "error")

    assert frames[-1]["type"] == "done" and frames[-1]["stop_reason"] == "end_turn"
    streamed = "".join(f["text"] for f in frames if f["type"] == "delta")
    assert streamed == SAVED  # tabs keep the streamed text: it is what was saved
    message = await saved(frames[-1]["message_id"])
    assert message.status == Message.Status.DONE and message.text == SAVED
    assert second[-1]["type"] == "done"


@live
async def test_a_checkpoint_of_partial_text_with_nul_is_saved(alice, titled_conversation, settings):
    settings.STREAM_CHECKPOINT_S = 3600  # the test takes the checkpoint itself
    words = " ".join(f"w{i}\\u0000x\\ud800" for i in range(60))
    async with open_socket(titled_conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame(f"[[offline reply escapes pace_ms=30]]\n{words}"))
        start = await recv_until(ws, "start")
        delta = await recv(ws)
        assert delta["type"] == "delta" and REPLACEMENT in delta["text"]
        assert await checkpoints.CHECKPOINTS.save_due() == 1
        partial = await saved(start[-1]["message_id"])
        frames = await recv_until(ws, "done", "error")

    assert partial.status == Message.Status.STREAMING
    assert partial.text.startswith(delta["text"]) and REPLACEMENT in partial.text
    assert nothing_unstorable(partial.content)
    assert frames[-1]["type"] == "done"


def tool_turn(note: str) -> list[dict]:
    return [
        {"type": "text", "text": f"Looking{NUL}"},
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "lookup",
            "input": {f"query{NUL}": f"a{LONE}b", "nested": [{"x": NUL}]},
        },
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"found{NUL}{LONE}"},
        {"type": "text", "text": note},
    ]


@pytest.mark.django_db
def test_checkpoints_of_tool_inputs_and_results_with_nul_are_saved(alice, titled_conversation):
    reply = Message.objects.create(
        conversation=titled_conversation, role="assistant", content=[], status="streaming"
    )
    blocks = tool_turn("so far")
    assert checkpoints.checkpoint_many([checkpoints.Checkpoint(reply.pk, blocks, 7)]) == 1
    reply.refresh_from_db()
    assert reply.stream_seq == 7 and reply.content == storable_json(blocks)
    assert reply.content[1]["input"] == {
        f"query{REPLACEMENT}": f"a{REPLACEMENT}b",
        "nested": [{"x": REPLACEMENT}],
    }


@pytest.mark.django_db
def test_a_finished_turn_with_nul_in_tool_blocks_and_the_error_is_saved(alice, titled_conversation):
    reply = Message.objects.create(
        conversation=titled_conversation, role="assistant", content=[], status="streaming"
    )
    checkpoints.turn_finish(
        message_id=reply.pk,
        conversation_id=titled_conversation.pk,
        content=tool_turn(f"done{LONE}"),
        status=Message.Status.ERROR,
        stop_reason=f"odd{NUL}",
        error_code="upstream_error",
        error_message=f"upstream said {NUL}{LONE}",
    )
    reply.refresh_from_db()
    assert reply.status == Message.Status.ERROR
    assert reply.content[2]["content"] == f"found{REPLACEMENT}{REPLACEMENT}"
    assert reply.text == f"Looking{REPLACEMENT}\n\ndone{REPLACEMENT}"
    assert reply.error_message == f"upstream said {REPLACEMENT}{REPLACEMENT}"
    assert reply.stop_reason == f"odd{REPLACEMENT}"


@live
async def test_a_model_made_title_with_nul_and_a_lone_surrogate_is_saved(alice):
    conversation = await sync_to_async(lifecycle.conversation_create)(owner=alice)
    async with open_socket(conversation.pk, alice) as ws:
        # The title request quotes the exchange, directive included: its reply is the first
        # line after the directive, as the model writes it.
        await ws.send_json_to(send_frame("[[offline reply escapes]]\nTrip\\u0000 to\\ud800 Lyon"))
        frames = await recv_until(ws, "title")
    title = f"Trip{REPLACEMENT} to{REPLACEMENT} Lyon"
    assert frames[-1]["title"] == title
    await sync_to_async(conversation.refresh_from_db)()
    assert conversation.title == title


@pytest.mark.django_db
def test_a_summary_with_nul_is_saved(alice, titled_conversation):
    first = Message.objects.create(
        conversation=titled_conversation, role="user", content=[{"type": "text", "text": "hi"}]
    )
    planning.store_summary(
        conversation_id=titled_conversation.pk, summary=f"Said hi{NUL}{LONE}", upto_id=first.pk
    )
    titled_conversation.refresh_from_db()
    assert titled_conversation.summary == f"Said hi{REPLACEMENT}{REPLACEMENT}"


# --- user input: refused where typed, searched without failing --------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["application/json", "text/html"])
def test_renaming_to_a_title_with_nul_is_refused_clearly(
    client, alice, titled_conversation, accept
):
    client.force_login(alice)
    response = client.post(
        reverse("chat:rename", args=[titled_conversation.pk]),
        {"title": "Bad\x00name"},
        headers={"accept": accept},
    )
    assert response.status_code == 400
    assert b"cannot be stored" in response.content
    titled_conversation.refresh_from_db()
    assert titled_conversation.title == "Named"


@pytest.mark.django_db
def test_a_search_with_nul_answers_and_reads_it_as_a_space(client, alice, bob):
    mine = lifecycle.conversation_create(owner=alice)
    Message.objects.create(
        conversation=mine, role="user", content=[{"type": "text", "text": "zebra crossing"}]
    )
    client.force_login(alice)
    response = client.get(reverse("chat:index") + "?q=zebra%00crossing")
    assert response.status_code == 200
    assert [c.pk for c in response.context["conversations"]] == [mine.pk]
    assert response.context["query"] == "zebra crossing"
    only_nul = client.get(reverse("chat:index") + "?q=%00")  # no words: the plain list
    assert only_nul.status_code == 200 and only_nul.context["query"] == ""
    # The selector itself, as the tool reaches it with model-written queries.
    assert [c.pk for c in search.search_conversations(alice, f"zebra{LONE}")] == [mine.pk]


def export_with_nul() -> dict:
    return {
        "model": "claude-sonnet-4-6",
        "title": f"Imported{NUL}",
        "system": f"Be brief{LONE}",
        "messages": [
            {"role": "user", "content": f"What is 2+2?{NUL}"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": f"Let me{LONE} compute."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "calculator",
                        "input": {f"expression{NUL}": f"2+2{NUL}"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"4{NUL}"}
                ],
            },
            {"role": "assistant", "content": f"It is 4.{LONE}"},
        ],
    }


def assert_imported_storably(owner) -> None:
    imported = Conversation.objects.select_related("system_prompt").get(owner=owner)
    assert imported.title == f"Imported{REPLACEMENT}"
    assert imported.system_prompt.text == f"Be brief{REPLACEMENT}"
    messages = tree.active_path(imported).messages
    assert messages[0].text == f"What is 2+2?{REPLACEMENT}"
    assert all(nothing_unstorable(m.content) for m in messages)
    use = next(b for b in messages[1].content if b["type"] == "tool_use")
    assert use["input"] == {f"expression{REPLACEMENT}": f"2+2{REPLACEMENT}"}
    assert messages[1].text.endswith(f"It is 4.{REPLACEMENT}")


@pytest.mark.django_db
def test_importing_a_json_body_with_nul_and_lone_surrogates_saves_it_storably(client, alice):
    client.force_login(alice)
    body = json.dumps(export_with_nul())  # \u0000 and \ud800 escapes, as an export holds them
    response = client.post(reverse("chat:import"), body, content_type="application/json")
    assert response.status_code == 201
    assert_imported_storably(alice)


@pytest.mark.django_db
def test_importing_a_file_with_nul_and_lone_surrogates_saves_it_storably(client, alice):
    client.force_login(alice)
    upload = SimpleUploadedFile(
        "chat.json", json.dumps(export_with_nul()).encode(), "application/json"
    )
    response = client.post(reverse("chat:import"), {"file": upload})
    assert response.status_code == 302
    assert_imported_storably(alice)
