"""Two Daphne processes on one database and one Redis: tabs of one conversation on different
processes see the same reply, and stop and resume work across them.

The channel layer (chat/layers.py) keeps frames in-process while no other process has a member
of the conversation's group; these tests are what shows it still reaches the other process.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import send_frame
from tests.support.servers import AppServer, ws_connect, ws_until


def assemble(frames: list[dict], message_id: int) -> tuple[str, list[int]]:
    """Apply a reply's deltas as the browser does: in seq order, each once."""
    text, last, seqs = "", 0, []
    for frame in frames:
        if frame["type"] == "delta" and frame["message_id"] == message_id:
            seqs.append(frame["seq"])
            if frame["seq"] == last + 1:
                text, last = text + frame["text"], frame["seq"]
    return text, seqs


@pytest.fixture
def two_processes(app_factory, private_redis):
    first, seed = app_factory(REDIS_URL=private_redis.url)
    second = AppServer(first.env, first.tmp)
    first.start()
    second.start()
    yield first, second, seed
    second.stop()


async def test_tabs_on_two_processes_share_a_reply_its_resume_and_its_stop(two_processes):
    first, second, seed = two_processes
    async with ws_connect(first, seed) as tab_a:
        # 1. A reply runs in the first process; a tab opens on the second one mid-reply and, as
        # the browser does when it opens, asks to resume from nothing.
        await tab_a.send(json.dumps(send_frame("[[offline words=150 pace_ms=20]]")))
        head = await ws_until(tab_a, "start")
        message_id = head[-1]["message_id"]
        head += await ws_until(tab_a, "delta")
        async with ws_connect(second, seed) as tab_b:
            await tab_b.send(json.dumps({"type": "resume", "after_seq": 0}))
            frames_a = await ws_until(tab_a, "done", "error")
            frames_b = await ws_until(tab_b, "done", "error")
            text_a, seqs_a = assemble(head + frames_a, message_id)
            text_b, seqs_b = assemble(frames_b, message_id)
            assert frames_a[-1]["type"] == frames_b[-1]["type"] == "done"
            assert len(text_a.split()) == 150 and text_b == text_a
            # Each tab got every delta, in order, exactly once.
            assert seqs_a == list(range(1, len(seqs_a) + 1))
            assert seqs_b == seqs_a

            # 2. The next reply streams live to both tabs, and a stop from the second process
            # ends it in the first.
            await tab_a.send(json.dumps(send_frame("[[offline words=400 pace_ms=20]]")))
            start_b = (await ws_until(tab_b, "start"))[-1]
            live_b = await ws_until(tab_b, "delta")
            await tab_b.send(json.dumps({"type": "stop"}))
            frames_a = await ws_until(tab_a, "done", "error")
            live_b += await ws_until(tab_b, "done", "error")
            assert frames_a[-1]["type"] == live_b[-1]["type"] == "done"
            assert frames_a[-1]["stop_reason"] == live_b[-1]["stop_reason"] == "stopped"
            text_a, seqs_a = assemble(frames_a, start_b["message_id"])
            text_b, seqs_b = assemble(live_b, start_b["message_id"])
            assert 0 < len(text_b.split()) < 400 and text_b == text_a
            assert seqs_b == list(range(1, len(seqs_b) + 1))

            # 3. A tab opening on the second process while a third reply runs resumes that
            # reply, not the earlier ones still kept for replay in the first process.
            await tab_a.send(json.dumps(send_frame("[[offline words=150 pace_ms=20]]")))
            start = (await ws_until(tab_a, "start"))[-1]
            async with ws_connect(second, seed) as tab_c:
                await tab_c.send(json.dumps({"type": "resume", "after_seq": 0}))
                frames_c = await ws_until(tab_c, "done", "error")
            assert frames_c[-1]["type"] == "done"
            assert frames_c[-1]["message_id"] == start["message_id"]
            text_c, seqs_c = assemble(frames_c, start["message_id"])
            assert len(text_c.split()) == 150
            assert seqs_c == list(range(1, len(seqs_c) + 1))
