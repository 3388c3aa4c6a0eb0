"""The chat socket end to end: consumer → runner → real SDK → offline Claude on loopback."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from chat.conversations import lifecycle
from chat.models import ApiCall, Message
from tests.conftest import open_socket, recv, recv_until, send_frame

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]


def deltas_of(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["type"] == "delta"]


def joined(frames: list[dict]) -> str:
    return "".join(f["text"] for f in deltas_of(frames))


@sync_to_async
def reply_row(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)


@sync_to_async
def calls_of(message_id: int) -> list[ApiCall]:
    return list(ApiCall.objects.filter(message_id=message_id).order_by("id"))


async def test_it_streams_a_reply_in_order_and_saves_it(alice, conversation):
    text = "Hello **world**.\n\n```python\nprint('hi')\n```\nThe end."
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(
            send_frame(
                f"[[offline reply pace_ms=2]]\n{text}",
                client_id="c0ffee00-0000-4000-8000-000000000001",
            )
        )
        frames = await recv_until(ws, "done", "error")

    ack, start = frames[0], frames[1]
    assert ack["type"] == "message" and ack["client_id"] == "c0ffee00-0000-4000-8000-000000000001"
    assert ack["message"]["role"] == "user" and text in ack["message"]["text"]
    assert start["type"] == "start" and start["model"] == conversation.model
    deltas = deltas_of(frames)
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert all(d["message_id"] == start["message_id"] for d in deltas)
    assert joined(frames) == text
    done = frames[-1]
    assert done["type"] == "done" and done["stop_reason"] == "end_turn"
    assert done["usage"]["output_tokens"] > 0 and done["usage"]["input_tokens"] > 0

    saved = await reply_row(start["message_id"])
    assert saved.status == Message.Status.DONE and saved.text == text
    assert saved.stop_reason == "end_turn"
    [call] = await calls_of(saved.pk)
    assert call.output_tokens == done["usage"]["output_tokens"]
    assert call.input_tokens == done["usage"]["input_tokens"]
    assert call.request_id.startswith("req_")
    assert call.ttft_ms is not None and call.duration_ms >= call.ttft_ms
    assert Decimal(done["cost"]) == call.cost > 0


async def test_it_coalesces_deltas(alice, conversation, settings):
    settings.STREAM_COALESCE_MS = 40
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=200 pace_ms=2]]"))
        frames = await recv_until(ws, "done", "error")
    assert frames[-1]["type"] == "done"
    # 200 tokens at 2 ms each take ≈ 400 ms: ~10 frames at 40 ms, far fewer than 200.
    assert 2 <= len(deltas_of(frames)) <= 40
    assert len(joined(frames).split()) == 200


async def test_the_first_text_is_sent_at_once_not_after_the_coalesce_wait(
    alice, conversation, settings
):
    settings.STREAM_COALESCE_MS = 1000
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=40 pace_ms=5]]"))
        frames = await recv_until(ws, "done", "error")
    assert frames[-1]["type"] == "done"
    # The reply takes ≈ 200 ms, well inside one coalesce wait: the first delta carries only the
    # first words (sent as they came), the rest follows in later frames.
    first, *rest = deltas_of(frames)
    assert rest and len(first["text"].split()) < 40
    assert len(joined(frames).split()) == 40


async def test_it_prices_cache_writes_and_reads_from_the_catalogue(alice, settings):
    settings.CLAUDE_SYSTEM_PROMPT = "You are a careful assistant. " * 40  # cacheable prefix
    conversation = await sync_to_async(lifecycle.conversation_create)(
        owner=alice, model="claude-sonnet-4-6"
    )
    dones = []
    async with open_socket(conversation.pk, alice) as ws:
        for _ in range(2):
            await ws.send_json_to(send_frame("[[offline words=5]]"))
            dones.append((await recv_until(ws, "done", "error"))[-1])
    first, second = dones
    assert first["usage"]["cache_creation_input_tokens"] > 0
    assert (
        second["usage"]["cache_read_input_tokens"] == first["usage"]["cache_creation_input_tokens"]
    )
    call = (await calls_of(second["message_id"]))[0]
    # Sonnet: $3 input, $3.75 5-minute cache write, $0.30 cache read, $15 output per MTok.
    expected = (
        Decimal(call.input_tokens) * Decimal("3")
        + Decimal(call.cache_write_5m_tokens) * Decimal("3.75")
        + Decimal(call.cache_read_tokens) * Decimal("0.30")
        + Decimal(call.output_tokens) * Decimal("15")
    ) / Decimal(1_000_000)
    assert call.cache_read_tokens > 0
    assert call.cost == expected
    assert Decimal(second["cost"]) == expected


async def test_stop_keeps_the_partial_text(alice, conversation):
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=2000 pace_ms=5]]"))
        frames = await recv_until(ws, "delta")
        frames += [await recv(ws)]
        await ws.send_json_to({"type": "stop"})
        frames += await recv_until(ws, "done", "error")
    done = frames[-1]
    assert done["type"] == "done" and done["stop_reason"] == "stopped"
    saved = await reply_row(done["message_id"])
    assert saved.status == Message.Status.DONE and saved.stop_reason == "stopped"
    assert saved.text == joined(frames)
    assert 0 < len(saved.text.split()) < 2000
    [call] = await calls_of(saved.pk)
    assert call.input_tokens > 0  # what message_start reported is recorded


async def test_stop_with_no_reply_running_does_nothing(alice, conversation):
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "stop"})
        assert await ws.receive_nothing(timeout=0.3)


async def test_a_closed_tab_does_not_lose_the_reply_and_resume_fills_the_gap(alice, conversation):
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=300 pace_ms=3]]"))
        first = await recv_until(ws, "delta")
        first += [await recv(ws)]
    seen = deltas_of(first)
    last_seq = seen[-1]["seq"]
    await asyncio.sleep(0.2)  # the reply goes on while no tab is open
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "resume", "after_seq": last_seq})
        rest = await recv_until(ws, "done", "error")
    resumed = deltas_of(rest)
    assert [d["seq"] for d in resumed] == list(range(last_seq + 1, last_seq + 1 + len(resumed)))
    text = "".join(d["text"] for d in seen + resumed)
    assert rest[-1]["type"] == "done"
    saved = await reply_row(rest[-1]["message_id"])
    assert saved.text == text and len(text.split()) == 300


async def test_a_tab_joining_mid_reply_gets_no_live_delta_before_its_resume(alice, conversation):
    async with open_socket(conversation.pk, alice) as a:
        await a.send_json_to(send_frame("[[offline words=120 pace_ms=15]]"))
        await recv_until(a, "delta")
        async with open_socket(conversation.pk, alice) as b:
            # Live deltas go on while the new tab has said nothing yet…
            for _ in range(3):
                await recv_until(a, "delta")
            # …and reach it only after the answer to its resume, in order from seq 1.
            await b.send_json_to({"type": "resume", "after_seq": 0})
            frames_b = await recv_until(b, "done", "error")
        frames_a = await recv_until(a, "done", "error")
    seqs = [d["seq"] for d in deltas_of(frames_b)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert frames_b[-1]["type"] == frames_a[-1]["type"] == "done"
    saved = await reply_row(frames_b[-1]["message_id"])
    assert joined(frames_b) == saved.text and len(saved.text.split()) == 120


async def test_a_tab_that_joined_mid_reply_gets_its_end_only_after_its_deltas(alice, conversation):
    """The reply ends while the new tab has not resumed yet: the tab must not get `done` first
    (it would finish the reply with the text it had)."""
    async with open_socket(conversation.pk, alice) as a:
        await a.send_json_to(send_frame("[[offline words=40 pace_ms=10]]"))
        await recv_until(a, "delta")
        async with open_socket(conversation.pk, alice) as b:
            frames_a = await recv_until(a, "done", "error")
            await b.send_json_to({"type": "resume", "after_seq": 0})
            frames_b = await recv_until(b, "done", "error")
            # Exactly one end: a marker frame (an invalid one, answered with an error) comes next.
            await b.send_json_to({"type": "no-such-frame"})
            after = await recv(b)
    assert frames_a[-1]["type"] == "done"
    kinds = [f["type"] for f in frames_b]
    assert kinds[0] == "delta" and kinds.count("done") == 1 and kinds[-1] == "done", kinds
    seqs = [d["seq"] for d in deltas_of(frames_b)]
    assert seqs == list(range(1, len(seqs) + 1))
    saved = await reply_row(frames_b[-1]["message_id"])
    assert joined(frames_b) == saved.text and len(saved.text.split()) == 40
    assert after["type"] == "error" and after["code"] == "invalid_frame"


async def test_a_finished_reply_kept_for_replay_lets_its_request_go(alice, conversation):
    from chat.replies import runner

    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("first [[offline words=20]]"))
        await recv_until(ws, "done")
        await ws.send_json_to(send_frame("second [[offline words=20]]"))
        frames = await recv_until(ws, "done")
    reply = runner.local_reply(conversation.pk)
    assert reply is not None and reply.final_frame == frames[-1]  # still replayable…
    # …without the request it was made from (the whole conversation, in a long one).
    assert reply.plan.history == [] and reply.plan.system == [] and reply.plan.tools == []
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "resume", "after_seq": 0})
        replay = await recv_until(ws, "done")
    assert joined(replay) == joined(frames)


async def test_resume_after_the_reply_finished_replays_it(alice, conversation):
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=20]]"))
        frames = await recv_until(ws, "done")
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "resume", "after_seq": 0})
        replay = await recv_until(ws, "done")
    assert joined(replay) == joined(frames)
    assert replay[-1] == frames[-1]


async def test_resume_of_an_old_reply_answers_with_the_saved_message(alice, conversation, settings):
    settings.STREAM_REPLAY_KEEP_S = 0
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=5]]"))
        done = (await recv_until(ws, "done"))[-1]
    await asyncio.sleep(0.05)
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "resume", "after_seq": 0})
        frame = await recv(ws)
    assert frame["type"] == "message" and frame["message"]["id"] == done["message_id"]
    assert frame["message"]["status"] == "done" and len(frame["message"]["text"].split()) == 5


async def test_two_tabs_see_the_same_reply(alice, conversation):
    async with open_socket(conversation.pk, alice) as a, open_socket(conversation.pk, alice) as b:
        await a.send_json_to(send_frame("[[offline words=50 pace_ms=2]]"))
        frames_a = await recv_until(a, "done")
        frames_b = await recv_until(b, "done")
    assert frames_a == frames_b
    assert frames_b[0]["type"] == "message"


async def test_a_second_send_while_a_reply_runs_is_refused(alice, conversation):
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=200 pace_ms=5]]"))
        await recv_until(ws, "start")
        await ws.send_json_to(send_frame("again"))
        frames = await recv_until(ws, "error")
        error = frames[-1]
        assert error["code"] == "busy" and error["retryable"] is True and error["message"]
        frames += await recv_until(ws, "done")
    assert [f["type"] for f in frames].count("start") == 0
    count = await sync_to_async(Message.objects.filter(conversation=conversation).count)()
    assert count == 2


async def test_a_repeated_client_id_does_not_start_a_second_reply(
    alice, conversation, offline_requests
):
    frame = send_frame("[[offline words=3]]")
    conversation.title = "Named"  # no title call: the socket stays quiet after the reply
    await sync_to_async(conversation.save)()
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(frame)
        await recv_until(ws, "done")
        await ws.send_json_to(frame)
        ack = await recv(ws)
        assert ack["type"] == "message" and ack["client_id"] == frame["client_id"]
        assert await ws.receive_nothing(timeout=0.3)
    assert len(offline_requests.all()) == 1
    count = await sync_to_async(Message.objects.filter(conversation=conversation).count)()
    assert count == 2


async def test_history_is_sent_with_the_pinned_system_prompt(alice, conversation, offline_requests):
    async with open_socket(conversation.pk, alice) as ws:
        for word in ("first", "second"):
            await ws.send_json_to(send_frame(f"{word} [[offline words=3]]"))
            await recv_until(ws, "done")
    first, second = (r["body"] for r in offline_requests.all())
    assert first["system"] == second["system"]
    assert first["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert second["messages"][0] == first["messages"][0]
    assert second["stream"] is True


@pytest.fixture
def reply_elsewhere(monkeypatch):
    """Make the socket treat the reply as running in another process: it must use the layer."""
    from chat.replies import consumers

    monkeypatch.setattr(consumers.runner, "local_reply", lambda conversation_id: None)


async def test_stop_reaches_a_reply_in_another_process(alice, conversation, reply_elsewhere):
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=2000 pace_ms=5]]"))
        frames = await recv_until(ws, "delta")
        await ws.send_json_to({"type": "stop"})
        frames += await recv_until(ws, "done", "error")
    assert frames[-1]["stop_reason"] == "stopped"
    saved = await reply_row(frames[-1]["message_id"])
    assert saved.text == joined(frames) and len(saved.text.split()) < 2000


async def test_resume_asks_a_reply_in_another_process(alice, conversation, reply_elsewhere):
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=300 pace_ms=3]]"))
        first = await recv_until(ws, "delta")
    last_seq = deltas_of(first)[-1]["seq"]
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "resume", "after_seq": last_seq})
        rest = await recv_until(ws, "done", "error")
    resumed = deltas_of(rest)
    assert [d["seq"] for d in resumed] == list(range(last_seq + 1, last_seq + 1 + len(resumed)))
    saved = await reply_row(rest[-1]["message_id"])
    assert saved.text == joined(first) + joined(rest)


async def test_no_delta_is_overtaken_by_done_when_sending_is_slow(alice, conversation, monkeypatch):
    # A slow channel layer: the reply ends while a frame is still being sent. The text that
    # came meanwhile must still go out before `done`.
    from chat.replies.delivery import Delivery

    original = Delivery.broadcast

    async def slow_broadcast(self, frame):
        if frame["type"] == "delta":
            await asyncio.sleep(0.3)  # longer than the whole stream takes
        await original(self, frame)

    monkeypatch.setattr(Delivery, "broadcast", slow_broadcast)
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=60 pace_ms=2]]"))
        frames = await recv_until(ws, "done", "error")
    saved = await reply_row(frames[-1]["message_id"])
    assert joined(frames) == saved.text and len(saved.text.split()) == 60


async def test_deltas_reach_the_tab_while_the_database_thread_is_busy(
    alice, conversation, settings
):
    # Channels' own dispatch hops to the database thread before every message (to close stale
    # connections): each delta of every reply would wait behind other requests' queries.
    import threading

    settings.STREAM_COALESCE_MS = 0
    release = threading.Event()
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=150 pace_ms=5]]"))
        await recv_until(ws, "delta")
        # Occupy the database thread (sync_to_async is thread-sensitive) until released.
        busy = asyncio.create_task(sync_to_async(release.wait)(10))
        try:
            during = [await recv(ws, timeout=3) for _ in range(20)]
        finally:
            release.set()
            await busy
        rest = await recv_until(ws, "done", "error")
    assert all(f["type"] == "delta" for f in during)
    assert rest[-1]["type"] == "done"


async def test_a_frame_for_the_tab_waits_until_the_command_in_hand_is_done(
    alice, conversation, monkeypatch
):
    from channels.layers import get_channel_layer

    from chat.replies import delivery
    from chat.replies.consumers import ChatConsumer
    from chat.replies.tab_feed import TabFeed

    order: list[str] = []
    in_command = asyncio.Event()

    async def slow_stop(self, frame):
        order.append("stop begins")
        in_command.set()
        await asyncio.sleep(0.2)
        order.append("stop ends")

    original_forward = TabFeed.forward

    async def recording_forward(self, frame):
        order.append(f"forward {frame['type']}")
        await original_forward(self, frame)

    monkeypatch.setattr(ChatConsumer, "cmd_stop", slow_stop)
    monkeypatch.setattr(TabFeed, "forward", recording_forward)
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "stop"})
        await asyncio.wait_for(in_command.wait(), 5)
        await get_channel_layer().group_send(
            delivery.group_name(conversation.pk),
            {"type": "chat.frame", "frame": {"type": "notice", "text": "x"}},
        )
        assert await recv(ws) == {"type": "notice", "text": "x"}
    assert order == ["stop begins", "stop ends", "forward notice"]


async def test_a_tab_joining_after_a_tool_step_gets_the_step_in_its_replay(alice, conversation):
    """Tool steps are replayed with the deltas, each after the delta it names: a tab that joins
    (or reloads) mid-reply sees the steps taken so far, not only at the end."""
    async with open_socket(conversation.pk, alice) as a:
        await a.send_json_to(
            send_frame("What is 6*7? [[offline call=calculator words=200 pace_ms=10]]")
        )
        live = await recv_until(a, "tool")
        while not (live[-1]["type"] == "tool" and live[-1]["result"] is not None):
            live += await recv_until(a, "tool")
        live += await recv_until(a, "delta")  # the answer after the step has begun
        async with open_socket(conversation.pk, alice) as b:
            await b.send_json_to({"type": "resume", "after_seq": 0})
            frames_b = await recv_until(b, "done", "error")
        frames_a = live + await recv_until(a, "done", "error")
    assert frames_b[-1]["type"] == frames_a[-1]["type"] == "done"

    def steps_in_place(frames):
        seen, placed = 0, []
        for frame in frames:
            if frame["type"] == "delta":
                seen = frame["seq"]
            elif frame["type"] == "tool":
                placed.append((frame["id"], frame["result"] is not None, frame["seq"], seen))
        return placed

    replayed = steps_in_place(frames_b)
    assert replayed == steps_in_place(frames_a)  # the same steps, in the same places
    assert [(done, seq == seen) for _, done, seq, seen in replayed] == [(False, True), (True, True)]
