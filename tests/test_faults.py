"""Faults: what the user sees and what is stored when something fails.

- Upstream before the stream (429 with retry-after, 500, 529), with the SDK's retries on.
- Upstream during the stream: an `error` event, a dropped connection, a stall.
- The browser's socket dropped mid-reply, then resumed.
- The Daphne process killed (SIGKILL) mid-reply and restarted.
- Redis restarted while a reply runs.
- PostgreSQL briefly unavailable when a reply finishes.

The first four groups run in-process on the real ASGI stack; the process and Redis faults run
the app as a Daphne subprocess against a database of its own (like the browser tests), talked to
with the `websockets` client. PostgreSQL's outage is made without touching the shared server's
other databases: the test database stops accepting connections (`ALLOW_CONNECTIONS false`) and
its open connections are ended with `pg_terminate_backend`; PostgreSQL here listens on a Unix
socket only, so a TCP proxy would need the app's database settings rewritten mid-test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connections

from chat.claude.client import reset_clients
from chat.models import ApiCall, Message
from tests.conftest import open_socket, recv, recv_until, run_turn, send_frame
from tests.support.servers import ws_connect, ws_recv, ws_until

IS_POSTGRES = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


@sync_to_async
def saved(message_id: int) -> tuple[Message, list[ApiCall]]:
    return (
        Message.objects.get(pk=message_id),
        # the reply's own calls (a background title call may be recorded against it too)
        list(
            ApiCall.objects.filter(message_id=message_id)
            .exclude(purpose__in=[ApiCall.Purpose.TITLE, ApiCall.Purpose.SUMMARY])
            .order_by("pk")
        ),
    )


@sync_to_async
def user_message_of(reply_id: int) -> Message:
    return Message.objects.get(pk=Message.objects.get(pk=reply_id).parent_id)


def streamed(frames: list[dict]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "delta")


def with_retries(settings, retries: int = 2) -> None:
    settings.CLAUDE_MAX_RETRIES = retries
    reset_clients()


# --- upstream errors before the stream ------------------------------------------------------------


@pytest.mark.parametrize(
    ("directive", "code", "text"),
    [
        ("status=429 retry_after=3", "upstream_rate_limited", "Try again in 3 s"),
        ("status=500", "upstream_error", "server error"),
        ("status=529", "upstream_overloaded", "overloaded"),
    ],
    ids=["429-retry-after", "500", "529"],
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_an_upstream_error_before_the_stream(
    alice, conversation, offline_requests, directive, code, text
):
    frames = await run_turn(alice, conversation, f"ask [[offline {directive}]]", timeout=20)
    kinds = [f["type"] for f in frames]
    assert kinds == ["message", "start", "error"], kinds
    error = frames[-1]
    assert (error["code"], error["retryable"]) == (code, True)
    assert text.lower() in error["message"].lower()
    message, calls = await saved(error["message_id"])
    assert message.status == "error" and message.error_code == code and message.text == ""
    assert message.error_message == error["message"]
    assert (await user_message_of(message.pk)).text == f"ask [[offline {directive}]]"
    [call] = calls
    assert call.error_code == code and call.output_tokens == 0 and call.cost == 0
    assert len(offline_requests.all()) == 1  # no retries (CLAUDE_MAX_RETRIES=0)


@pytest.mark.parametrize("status", [429, 500, 529])
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_the_sdk_retries_and_the_retried_request_succeeds(
    alice, conversation, offline_requests, settings, status
):
    with_retries(settings, 2)
    directive = f"words=12 status={status} retry_after=0 fail_times=2"
    frames = await run_turn(alice, conversation, f"[[offline {directive}]]", timeout=30)
    done = frames[-1]
    assert done["type"] == "done", done
    assert not [f for f in frames if f["type"] == "error"]
    assert len(streamed(frames).split()) == 12
    assert len(offline_requests.all()) == 3  # two failures, then the answer
    message, calls = await saved(done["message_id"])
    assert message.status == "done" and len(message.text.split()) == 12
    # One reply, one ledger row: the SDK's retries are inside one call.
    [call] = calls
    assert call.error_code == "" and call.output_tokens == 12
    assert done["usage"]["output_tokens"] == 12


@pytest.mark.parametrize(
    ("status", "code"),
    [(429, "upstream_rate_limited"), (500, "upstream_error"), (529, "upstream_overloaded")],
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_failure_past_the_retries_reaches_the_user(
    alice, conversation, offline_requests, settings, status, code
):
    with_retries(settings, 2)
    directive = f"words=12 status={status} retry_after=0 fail_times=3"
    frames = await run_turn(alice, conversation, f"[[offline {directive}]]", timeout=30)
    error = frames[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", code, True)
    assert len(offline_requests.all()) == 3  # the first try and two retries
    message, [call] = await saved(error["message_id"])
    assert message.status == "error" and message.error_code == code
    assert call.error_code == code


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_non_retryable_error_is_not_retried(
    alice, conversation, offline_requests, settings
):
    with_retries(settings, 2)
    frames = await run_turn(alice, conversation, "[[offline status=401]]", timeout=20)
    assert (frames[-1]["code"], frames[-1]["retryable"]) == ("upstream_auth", False)
    assert len(offline_requests.all()) == 1


# --- upstream failures during the stream ----------------------------------------------------------

MID_STREAM = [
    ("error-event", "error_after=8", "upstream_overloaded"),
    ("error-event-api-error", "error_after=8 error_type=api_error", "upstream_error"),
    ("connection-dropped", "drop_after=8", "upstream_disconnected"),
    ("stall", "stall_after=8 stall_s=30", "upstream_timeout"),
]


@pytest.mark.parametrize(
    ("directive", "code"), [c[1:] for c in MID_STREAM], ids=[c[0] for c in MID_STREAM]
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_failure_mid_stream(
    alice, conversation, offline_requests, settings, directive, code
):
    """Never retried once the stream started (even with retries on); text so far is kept."""
    with_retries(settings, 2)
    settings.CLAUDE_READ_TIMEOUT_S = 1.0
    reset_clients()
    began = time.monotonic()
    frames = await run_turn(
        alice, conversation, f"[[offline words=50 pace_ms=1 {directive}]]", timeout=20
    )
    elapsed = time.monotonic() - began
    error = frames[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", code, True)
    assert error["message"]
    text = streamed(frames)
    assert len(text.split()) == 8
    seqs = [f["seq"] for f in frames if f["type"] == "delta"]
    assert seqs == list(range(1, len(seqs) + 1))
    message, [call] = await saved(error["message_id"])
    assert message.status == "error" and message.error_code == code
    assert message.text == text and message.stream_seq == seqs[-1]
    assert call.error_code == code and call.input_tokens > 0
    assert len(offline_requests.all()) == 1
    if code == "upstream_timeout":
        assert 0.9 < elapsed < 6, elapsed  # the read timeout (1 s) fired, not the 30 s stall


# --- the browser's socket dropped mid-reply, then resumed -----------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_dropped_socket_resumes_with_no_gap_and_no_duplicate(alice, conversation):
    words = 120
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(
            {
                "type": "send",
                "client_id": str(uuid.uuid4()),
                "text": f"[[offline words={words} pace_ms=15]]",
            }
        )
        frames = await recv_until(ws, "start")
        message_id = frames[-1]["message_id"]
        seen: dict[int, str] = {}
        while len(seen) < 8:
            frame = await recv(ws)
            assert frame["type"] == "delta"
            seen[frame["seq"]] = frame["text"]
    # gone for a while; the reply goes on without the tab
    await asyncio.sleep(0.5)
    last = max(seen)
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "resume", "after_seq": last})
        rest = await recv_until(ws, "done", "error", timeout=20)
    deltas = [f for f in rest if f["type"] == "delta"]
    seqs = [f["seq"] for f in deltas]
    assert seqs == list(range(last + 1, last + 1 + len(seqs))), "a gap or a duplicate"
    assert rest[-1]["type"] == "done"
    text = "".join(seen[s] for s in sorted(seen)) + "".join(f["text"] for f in deltas)
    assert len(text.split()) == words
    message, [call] = await saved(message_id)
    assert message.status == "done" and message.text == text and message.stream_seq == seqs[-1]
    assert call.output_tokens == words


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_socket_that_resumes_after_the_end_gets_the_rest_and_done(alice, conversation):
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(
            {"type": "send", "client_id": str(uuid.uuid4()), "text": "[[offline words=30]]"}
        )
        frames = await recv_until(ws, "delta")
        first = frames[-1]
    await asyncio.sleep(1.0)  # the reply ends while nobody listens
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to({"type": "resume", "after_seq": first["seq"]})
        rest = await recv_until(ws, "done", "error")
    seqs = [f["seq"] for f in rest if f["type"] == "delta"]
    assert seqs == list(range(first["seq"] + 1, first["seq"] + 1 + len(seqs)))
    text = first["text"] + streamed(rest)
    assert rest[-1]["type"] == "done" and len(text.split()) == 30


# --- PostgreSQL briefly unavailable when a reply finishes -----------------------------------------


class DatabaseOutage:
    """Makes the test database refuse connections and ends the open ones; others are untouched."""

    def __init__(self, name: str) -> None:
        import psycopg

        url = os.environ["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
        admin = urlunsplit(urlsplit(url)._replace(path="/postgres"))
        self.conn = psycopg.connect(admin, autocommit=True)
        self.name = name

    def begin(self) -> None:
        self.conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.name],
        )

    def end(self) -> None:
        self.conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def close(self) -> None:
        self.end()
        self.conn.close()


@pytest.fixture
def outage(db):
    if not IS_POSTGRES:
        pytest.fail("the database outage tests need PostgreSQL (DATABASE_URL)")
    control = DatabaseOutage(connections["default"].settings_dict["NAME"])
    yield control
    control.close()
    connections.close_all()


async def paced_turn_with_outage(alice, conversation, outage, *, words: int, down_s: float):
    """A paced reply; the database goes away just before its end, for `down_s` seconds."""
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame(f"[[offline words={words} pace_ms=40]]"))
        frames = await recv_until(ws, "start")
        message_id = frames[-1]["message_id"]
        received = 0
        while received < words - 4:  # ~160 ms before the stream ends
            frame = await recv(ws)
            frames.append(frame)
            if frame["type"] == "delta":
                received += len(frame["text"].split())
        await sync_to_async(outage.begin, thread_sensitive=False)()
        restore = asyncio.get_running_loop().call_later(down_s, outage.end)
        try:
            # Poll without a receive timeout: a timed-out receive cancels the application.
            deadline = time.monotonic() + down_s + 6
            while True:
                if time.monotonic() > deadline:
                    frames.append({"type": "nothing: no done or error frame came"})
                    break
                if await ws.receive_nothing(timeout=0.5, interval=0.05):
                    continue
                frames.append(await recv(ws))
                if frames[-1]["type"] in ("done", "error"):
                    break
        finally:
            restore.cancel()
            await sync_to_async(outage.end, thread_sensitive=False)()
    await database_sync_to_async(connections.close_all)()
    return message_id, frames


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_short_database_outage_at_the_end_is_ridden_out(alice, conversation, outage):
    """The finish is retried with backoff (0.5 s, 1 s, 2 s): a 1.2 s outage loses nothing —
    neither the text nor the ledger row of the call."""
    words = 40
    message_id, frames = await paced_turn_with_outage(
        alice, conversation, outage, words=words, down_s=1.2
    )
    final = frames[-1]
    assert final["type"] == "done", final
    text = streamed(frames)
    assert len(text.split()) == words
    message, calls = await saved(message_id)
    assert message.status == "done" and message.text == text
    assert (await user_message_of(message_id)).text.startswith("[[offline")
    assert [c.output_tokens for c in calls] == [words], "the call's usage was not recorded"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_long_database_outage_at_the_end_is_never_silent(alice, conversation, outage):
    """Longer than the retries (0.5 + 1 + 2 s): the user is told (an `error` frame, not `done`),
    and the reply's text survives somewhere — the row, or at least the log."""
    words = 40
    logged: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())
    runner_log = logging.getLogger("chat.replies")
    runner_log.addHandler(handler)
    try:
        message_id, frames = await paced_turn_with_outage(
            alice, conversation, outage, words=words, down_s=6.0
        )
    finally:
        runner_log.removeHandler(handler)
    text = streamed(frames)
    assert len(text.split()) == words
    final = frames[-1]
    message, _ = await saved(message_id)
    if message.status == "done" and message.text == text:
        return  # saved after all
    assert any(repr(text) in line or text in line for line in logged), (
        "the reply's text is lost: not saved, not logged"
    )
    assert final["type"] == "error", (
        f"the reply was not saved (row {message.status!r}, {len(message.text)} of {len(text)} "
        f"chars) but the user was told {final['type']!r}"
    )
    assert final["retryable"] is True


# --- a Daphne subprocess: process and Redis faults -------------------------------------------------

STATE = """
import json
from chat.models import ApiCall, Message
rows = []
for m in Message.objects.order_by("pk"):
    rows.append({"id": m.pk, "role": m.role, "status": m.status, "text": m.text,
                 "error_code": m.error_code, "seq": m.stream_seq})
calls = list(ApiCall.objects.order_by("pk").values(
    "message_id", "input_tokens", "output_tokens", "error_code"))
print(json.dumps({"messages": rows, "calls": calls}))
"""


PACE_MS = 25


async def test_daphne_killed_mid_reply_and_restarted(app_factory, private_redis):
    """SIGKILL leaves the reply `streaming`; after a restart (and the startup reaper the run
    script runs) a resuming tab gets it `interrupted`, its text no more than ~2 s behind what the
    tab had seen, the user's message intact, and the usage the API had reported recorded."""
    app, seed = app_factory(REDIS_URL=private_redis.url)
    app.start()
    words = 400  # 10 s at 25 ms a word: still running when killed
    prompt = f"a long story [[offline words={words} pace_ms={PACE_MS}]]"
    async with ws_connect(app, seed) as ws:
        await ws.send(json.dumps(send_frame(prompt)))
        frames = await ws_until(ws, "start")
        message_id = frames[-1]["message_id"]
        seen, last_seq = "", 0
        began = time.monotonic()
        while time.monotonic() - began < 3.0:
            frame = await ws_recv(ws)
            if frame["type"] == "delta":
                assert frame["seq"] == last_seq + 1
                seen += frame["text"]
                last_seq = frame["seq"]
        app.kill()
        with pytest.raises(Exception):  # noqa: B017 (the connection is gone, however it shows)
            while True:
                await ws_recv(ws, timeout=5)
    assert 50 < len(seen.split()) < words

    before = app.query(STATE)
    [reply] = [m for m in before["messages"] if m["id"] == message_id]
    assert reply["status"] == "streaming"  # nothing ran in the killed process

    app.manage("reap_replies", "--stale-seconds", "0")  # what scripts/run.sh does at startup
    app.start()
    async with ws_connect(app, seed) as ws:
        await ws.send(json.dumps({"type": "resume", "after_seq": last_seq}))
        answer = await ws_until(ws, "message", "done", "error", timeout=10)
    assert answer[-1]["type"] == "message", answer
    shown = answer[-1]["message"]
    assert shown["id"] == message_id and shown["status"] == "interrupted"

    state = app.query(STATE)
    [user_msg] = [m for m in state["messages"] if m["role"] == "user"]
    assert user_msg["text"] == prompt and user_msg["status"] == "done"
    [reply] = [m for m in state["messages"] if m["id"] == message_id]
    assert reply["status"] == "interrupted" and reply["text"] == shown["text"]
    saved_text = reply["text"]
    # The checkpoint is a prefix of the reply, at most ~2 s of text behind what the tab saw.
    common = os.path.commonprefix([saved_text, seen])
    assert common == saved_text[: len(common)] and len(common) >= min(len(saved_text), len(seen))
    chars_per_s = len(seen) / 3.0
    assert len(seen) - len(saved_text) <= 2.0 * chars_per_s, (len(seen), len(saved_text))
    # Usage: message_start reported the input tokens before the kill; the ledger should say so.
    calls = [c for c in state["calls"] if c["message_id"] == message_id]
    assert calls and calls[0]["input_tokens"] > 0, (
        "no ledger row for the killed process's API call: its usage is lost"
    )


async def test_redis_restarted_while_a_reply_runs(app_factory, private_redis):
    """The channel layer's Redis dies mid-reply and comes back a second later. The reply runs in
    the Daphne process, so it should finish and be saved whole; a tab that (re)connects and
    resumes gets the rest and `done`."""
    redis = private_redis
    app, seed = app_factory(REDIS_URL=redis.url)
    app.start()
    words = 200  # 5 s
    prompt = f"[[offline words={words} pace_ms={PACE_MS}]]"
    outcome = {"socket": "open"}
    async with ws_connect(app, seed) as ws:
        await ws.send(json.dumps(send_frame(prompt)))
        frames = await ws_until(ws, "start")
        message_id = frames[-1]["message_id"]
        seen: dict[int, str] = {}
        while len(seen) < 10:
            frame = await ws_recv(ws)
            if frame["type"] == "delta":
                seen[frame["seq"]] = frame["text"]
        redis.kill()
        await asyncio.sleep(1.0)
        redis.start()
        # What does the open socket do now? Read until the end, a close, or silence.
        try:
            while True:
                frame = await ws_recv(ws, timeout=8)
                if frame["type"] == "delta":
                    seen[frame["seq"]] = frame["text"]
                if frame["type"] in ("done", "error"):
                    outcome["socket"] = frame["type"]
                    break
        except TimeoutError:
            outcome["socket"] = "silent"
        except Exception as exc:  # noqa: BLE001
            outcome["socket"] = f"closed: {type(exc).__name__}"
    # A tab that reconnects and resumes after the outage.
    await asyncio.sleep(1.0)
    async with ws_connect(app, seed) as ws:
        # A client applies deltas in seq order only: it resumes after the last one it could
        # apply, before any gap the outage made.
        after = 0
        while after + 1 in seen:
            after += 1
        await ws.send(json.dumps({"type": "resume", "after_seq": after}))
        rest = await ws_until(ws, "done", "error", "message", timeout=20)
    for frame in rest:
        if frame["type"] == "delta":
            seen[frame["seq"]] = frame["text"]
    state = app.query(STATE)
    [reply] = [m for m in state["messages"] if m["id"] == message_id]
    report = {
        "open socket": outcome["socket"],
        "resume answered with": rest[-1]["type"],
        "saved status": reply["status"],
        "saved words": len(reply["text"].split()),
        "seqs seen": f"{min(seen)}..{max(seen)} ({len(seen)})",
    }
    assert reply["status"] == "done" and len(reply["text"].split()) == words, report
    if rest[-1]["type"] == "message":
        assert rest[-1]["message"]["status"] == "done", report
    else:
        assert rest[-1]["type"] == "done", report
        assert sorted(seen) == list(range(1, max(seen) + 1)), report
        assert "".join(seen[s] for s in sorted(seen)) == reply["text"], report


async def test_two_deployments_sharing_a_redis_do_not_hear_each_other(app_factory, private_redis):
    """Two apps with their own databases on one Redis server (two deployments, or two test runs
    on the shared test Redis): the same conversation id in each must not share a group. A tab of
    app B must never see app A's reply."""
    app_a, seed_a = app_factory(REDIS_URL=private_redis.url)
    app_b, seed_b = app_factory(REDIS_URL=private_redis.url.replace("/0", "/1"))
    app_a.start()
    app_b.start()
    assert seed_a["conversation"] == seed_b["conversation"]  # both databases are fresh
    secret = "private to A"
    async with ws_connect(app_b, seed_b) as tab_b, ws_connect(app_a, seed_a) as tab_a:
        prompt = f"[[offline reply pace_ms=1]]\n{secret}"
        await tab_a.send(json.dumps(send_frame(prompt)))
        frames_a = await ws_until(tab_a, "done", "error")
        assert frames_a[-1]["type"] == "done"
        heard = []
        with contextlib.suppress(TimeoutError):
            while True:
                heard.append(await ws_recv(tab_b, timeout=1.0))
    assert heard == [], f"app B's tab received app A's frames: {[f['type'] for f in heard]}"
