"""Checkpoints: the partial text of every reply streaming in a process, saved together."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from chat.conversations import lifecycle, turns
from chat.models import Message
from chat.replies import checkpoints, runner
from tests.conftest import open_socket, recv_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]


async def test_streaming_replies_are_checkpointed_in_one_statement(alice, monkeypatch, settings):
    settings.STREAM_CHECKPOINT_S = 0.2
    batches: list[list[int]] = []
    real = checkpoints.checkpoint_many

    def recording(items):
        batches.append([item.message_id for item in items])
        return real(items)

    monkeypatch.setattr(checkpoints, "checkpoint_many", recording)
    first, second = [
        await sync_to_async(lifecycle.conversation_create)(owner=alice) for _ in range(2)
    ]
    async with open_socket(first.pk, alice) as a, open_socket(second.pk, alice) as b:
        for ws in (a, b):
            await ws.send_json_to(
                {
                    "type": "send",
                    "client_id": str(uuid.uuid4()),
                    "text": "[[offline words=150 pace_ms=10]] go",
                }
            )
        frames_a, frames_b = await asyncio.gather(
            recv_until(a, "done", "error"), recv_until(b, "done", "error")
        )

    ids = {frames_a[1]["message_id"], frames_b[1]["message_id"]}
    assert frames_a[-1]["type"] == frames_b[-1]["type"] == "done"
    # Both replies streamed for over a second: at least one tick saved both in one statement,
    # and no tick saved a reply twice.
    assert any(set(batch) == ids for batch in batches), batches
    assert all(len(batch) == len(set(batch)) for batch in batches)


def test_a_checkpoint_never_overwrites_a_finished_reply(alice):
    conversation = lifecycle.conversation_create(owner=alice)
    started = turns.turn_start(
        conversation=conversation, text="hi", client_id=uuid.uuid4(), model=None
    )
    streaming = started.assistant_message
    done = Message.objects.create(
        conversation=conversation,
        parent=streaming,
        role=Message.Role.ASSISTANT,
        content=[{"type": "text", "text": "final"}],
        status=Message.Status.DONE,
    )
    before = Message.objects.get(pk=streaming.pk).updated_at
    text = 'so far: it\'s "quoted" \\ ünï 😀\n%s ?'
    written = checkpoints.checkpoint_many(
        [
            checkpoints.Checkpoint(streaming.pk, [{"type": "text", "text": text}], 3),
            checkpoints.Checkpoint(done.pk, [{"type": "text", "text": "stale"}], 2),
        ]
    )
    assert written == 1
    streaming.refresh_from_db()
    done.refresh_from_db()
    assert streaming.text == text and streaming.stream_seq == 3
    assert streaming.content == [{"type": "text", "text": text}]
    assert streaming.updated_at > before
    assert done.text == "final" and done.stream_seq == 0


def test_checkpoints_work_on_sqlite_the_embedded_default(tmp_path):
    # `make run` uses SQLite; the statement is written per database (see checkpoint_many).
    script = """
import uuid
from django.contrib.auth import get_user_model
from chat.conversations import lifecycle
from chat.conversations import turns
from chat.replies import checkpoints, runner
from chat.models import Message
user = get_user_model().objects.create_user("cp")
conversation = lifecycle.conversation_create(owner=user)
reply = turns.turn_start(
    conversation=conversation, text="hi", client_id=uuid.uuid4(), model=None
).assistant_message
text = 'it\\'s "quoted" \\\\ ünï 😀 %s ?'
written = checkpoints.checkpoint_many([checkpoints.Checkpoint(reply.pk, [{"type": "text", "text": text}], 4)])
reply.refresh_from_db()
assert written == 1, written
assert reply.text == text and reply.stream_seq == 4, (reply.text, reply.stream_seq)
print("ok", reply.updated_at.isoformat())
"""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env.pop("REDIS_URL", None)
    env.setdefault("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # no call is made
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, timeout=120)
    done = subprocess.run(
        [*manage, "shell", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("ok 20")


async def test_a_checkpoint_holds_the_text_of_its_deltas_and_no_more(alice, settings):
    """A tab that reloads shows the last checkpoint and resumes after its `stream_seq`: the
    checkpoint's text must be exactly the deltas up to that seq, or text that was still waiting
    to be coalesced would show twice (once saved, once in the next delta)."""
    settings.STREAM_CHECKPOINT_S = 3600  # the test takes the checkpoints itself
    settings.STREAM_COALESCE_MS = 1500  # after the first delta, the rest waits: text pending
    conversation = await sync_to_async(lifecycle.conversation_create)(owner=alice)
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(
            {
                "type": "send",
                "client_id": str(uuid.uuid4()),
                "text": "[[offline words=40 pace_ms=5]] go",
            }
        )
        first = await recv_until(ws, "delta")
        delta = first[-1]
        reply = runner.local_reply(conversation.pk)
        # Wait (on the condition, bounded) until more text came than the first delta holds.
        for _ in range(2000):
            if len(reply.text) > len(delta["text"]):
                break
            await asyncio.sleep(0.005)
        assert len(reply.text) > len(delta["text"])

        assert await checkpoints.CHECKPOINTS.save_due() == 1
        saved = await Message.objects.aget(pk=delta["message_id"])
        assert (saved.stream_seq, saved.text) == (delta["seq"], delta["text"])

        frames = await recv_until(ws, "done", "error")

    assert frames[-1]["type"] == "done"
    streamed = delta["text"] + "".join(f["text"] for f in frames if f["type"] == "delta")
    final = await Message.objects.aget(pk=delta["message_id"])
    # What a tab resuming after the checkpoint gets: the saved text, then the later deltas.
    later = "".join(
        f["text"] for f in frames if f["type"] == "delta" and f["seq"] > saved.stream_seq
    )
    assert saved.text + later == streamed == final.text
