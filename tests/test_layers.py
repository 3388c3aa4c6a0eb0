"""The channel layer (chat/layers.py) against the real Redis: two layer instances stand for two
processes (each has its own connections and process id)."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from chat.layers import LocalFirstPubSubChannelLayer

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL")

TIMEOUT_S = 5


@pytest.fixture
async def processes():
    prefix = f"test-layers-{uuid.uuid4().hex[:8]}"
    layers = [
        LocalFirstPubSubChannelLayer(hosts=[os.environ["REDIS_URL"]], prefix=prefix)
        for _ in range(2)
    ]
    yield layers
    for layer in layers:
        await layer.flush()


def count_publishes(layer, monkeypatch, method: str = "publish_counted") -> list[str]:
    """The channels this layer published to through `method` of its shards, in order
    (publish_counted: group messages; publish: messages to one channel)."""
    loop_layer = layer._get_layer()
    published: list[str] = []
    for shard in loop_layer._shards:
        real = getattr(shard, method)

        async def counted(channel, message, real=real):
            published.append(channel)
            return await real(channel, message)

        monkeypatch.setattr(shard, method, counted)
    return published


async def receive(layer, channel) -> dict:
    return await asyncio.wait_for(layer.receive(channel), TIMEOUT_S)


async def next_is_marker(layer, channel, other, group) -> bool:
    """Whether the next message on `channel` is a marker sent now from the other process: what
    this process published before (a duplicate, say) would have reached Redis first and arrived
    before it."""
    await other.group_send(group, {"type": "chat.frame", "marker": True})
    return (await receive(layer, channel)).get("marker") is True


async def test_a_group_with_members_only_here_stops_going_through_redis(processes, monkeypatch):
    a, b = processes
    tab = await a.new_channel()
    await a.group_add("conversation.1", tab)
    published = count_publishes(a, monkeypatch)
    for n in range(5):
        await a.group_send("conversation.1", {"type": "chat.frame", "n": n})
    assert [(await receive(a, tab))["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    # The first publish reached this process's subscription only; the rest stayed in-process.
    assert len(published) == 1
    # Its own publish is not delivered a second time.
    assert await next_is_marker(a, tab, b, "conversation.1")


async def test_a_member_in_another_process_gets_every_frame_after_its_join(processes, monkeypatch):
    a, b = processes
    tab_a, runner_a = await a.new_channel(), await a.new_channel()
    await a.group_add("conversation.1", tab_a)
    await a.group_add("reply.1", runner_a)
    await a.group_send("conversation.1", {"type": "chat.frame", "n": 0})  # now alone
    assert (await receive(a, tab_a))["n"] == 0

    tab_b = await b.new_channel()
    await b.group_add("conversation.1", tab_b)
    # What a tab does once open: ask the reply to resume. It reaches process A after B's join.
    await b.group_send("reply.1", {"type": "reply.resume"})
    assert (await receive(a, runner_a))["type"] == "reply.resume"

    for n in range(1, 4):
        await a.group_send("conversation.1", {"type": "chat.frame", "n": n})
    assert [(await receive(b, tab_b))["n"] for _ in range(3)] == [1, 2, 3]
    assert [(await receive(a, tab_a))["n"] for _ in range(3)] == [1, 2, 3]
    assert await next_is_marker(a, tab_a, b, "conversation.1")  # exactly once here too

    # B leaves: A publishes once more, finds itself alone, and stops publishing.
    await b.group_discard("conversation.1", tab_b)
    published = count_publishes(a, monkeypatch)
    for n in range(4, 8):
        await a.group_send("conversation.1", {"type": "chat.frame", "n": n})
    assert [(await receive(a, tab_a))["n"] for _ in range(4)] == [4, 5, 6, 7]
    assert published == [published[0]]


async def test_a_frame_from_another_process_reaches_the_members_here(processes):
    a, b = processes
    tab_a = await a.new_channel()
    await a.group_add("conversation.2", tab_a)
    await b.group_send("conversation.2", {"type": "chat.frame", "from": "b"})
    assert (await receive(a, tab_a))["from"] == "b"


async def test_sending_to_a_channel_of_this_process_skips_redis(processes, monkeypatch):
    a, b = processes
    reply_to = await a.new_channel()
    calls = count_publishes(a, monkeypatch, "publish")
    await a.send(reply_to, {"type": "chat.replay", "frames": []})
    assert (await receive(a, reply_to))["type"] == "chat.replay"
    assert calls == []
    # A channel of another process still goes through Redis.
    await b.send(reply_to, {"type": "chat.replay", "frames": [1]})
    assert (await receive(a, reply_to))["frames"] == [1]
