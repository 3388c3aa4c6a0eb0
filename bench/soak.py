"""Soak: steady streams for a long time with random disconnects and stops; nothing may be lost.

    scripts/services.sh start && . .run/services/env
    .venv/bin/python bench/soak.py                      # 30 minutes, 20 streams
    .venv/bin/python bench/soak.py --minutes 3 --streams 10

Everything runs on 127.0.0.1 and stops by itself (plumbing from bench/relay.py): the offline
Claude, a Redis of its own (RedisPubSubChannelLayer), one Daphne process against the PostgreSQL
database `claudeweb_bench_soak` (dropped, created, migrated here; dropped at the end).

Each stream is a logged-in socket that sends replies of 50–300 tokens at 100 tokens/s, over and
over, moving to a new conversation every `--turns-per-conversation` replies (40). At random
it closes its socket mid-reply, waits a moment, reconnects and sends `resume` with the last
seq it applied; at random it sends `stop` mid-reply. It applies deltas strictly in
seq order (seq == last + 1), counts duplicates it dropped and gaps it saw. When a reply ends, the
text it assembled must equal the saved message's text, byte for byte.

Prints, at the end (and a line a minute): replies, disconnects, stops, errors (error frames,
failed connects, replies not ended in time — must be 0), lost (replies whose assembled text is
not the saved text — must be 0), and the server's RSS at the start (after warm-up) and the end
(must be flat: growth under 10 % or 20 MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay import (  # noqa: E402
    DaphneServer,
    Proc,
    django_setup,
    make_logins,
    migrate,
    proc_rss,
    recreate_database,
    server_env,
    start_offline_claude,
    start_redis,
)

SOAK_DB = "claudeweb_bench_soak"
REPLY_LIMIT_S = 60


@dataclass
class Tally:
    replies: int = 0
    disconnects: int = 0
    stops: int = 0
    conversations: int = 0
    duplicates_dropped: int = 0
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def error(self, text: str) -> None:
        """Count an error and print it at once (with the minute it happened)."""
        self.errors.append(text)
        print(f"  {(time.monotonic() - self.started) / 60:5.1f} min: ERROR {text}", flush=True)

    def lose(self, text: str) -> None:
        self.lost.append(text)
        print(f"  {(time.monotonic() - self.started) / 60:5.1f} min: LOST {text}", flush=True)


def saved_text(message_id: int) -> str:
    from chat.models import Message

    return Message.objects.get(pk=message_id).text


async def connect(server, login):
    from websockets.asyncio.client import connect as ws_connect

    return await ws_connect(
        f"{server.ws_base}/ws/conversations/{login.conversation_id}/",
        origin=server.origin,
        additional_headers={"Cookie": f"sessionid={login.session_key}"},
        ping_interval=None,
        open_timeout=30,
        max_size=2**22,
    )


async def one_reply(server, login, ws, tally: Tally, rng: random.Random, args) -> object:
    """Send, read to the end (surviving a disconnect), check; returns the socket to go on with."""
    words = rng.randint(50, 300)
    await ws.send(
        json.dumps(
            {
                "type": "send",
                "client_id": str(uuid.uuid4()),
                "text": f"[[offline words={words} pace_ms=10]]",
            }
        )
    )
    text, last_seq, message_id = "", 0, None
    drop_at = rng.randint(1, 20) if rng.random() < args.p_disconnect else None
    stop_at = rng.randint(1, 20) if rng.random() < args.p_stop else None
    deadline = time.monotonic() + REPLY_LIMIT_S
    frames = 0
    events: list[str] = []
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
        frame = json.loads(raw)
        kind = frame["type"]
        if kind == "start":
            message_id = frame["message_id"]
        elif kind == "delta" and frame["message_id"] == message_id:
            frames += 1
            if frame["seq"] == last_seq + 1:
                text += frame["text"]
                last_seq = frame["seq"]
            elif frame["seq"] <= last_seq:
                tally.duplicates_dropped += 1
            else:
                tally.error(f"gap: seq {frame['seq']} after {last_seq}; events {events}")
            if drop_at is not None and frames == drop_at:
                drop_at = None
                tally.disconnects += 1
                events.append(f"drop after seq {last_seq}")
                await ws.close()
                await asyncio.sleep(rng.uniform(0.05, 1.0))
                ws = await connect(server, login)
                await ws.send(json.dumps({"type": "resume", "after_seq": last_seq}))
            elif stop_at is not None and frames == stop_at:
                stop_at = None
                tally.stops += 1
                events.append(f"stop after seq {last_seq}")
                await ws.send(json.dumps({"type": "stop"}))
        elif kind == "message" and message_id and frame["message"]["id"] == message_id:
            events.append(f"message frame (seq {frame['message'].get('seq')})")
            text, last_seq = frame["message"]["text"], frame["message"].get("seq", last_seq)
        elif kind == "done" and frame["message_id"] == message_id:
            events.append(f"done {frame['stop_reason']} at seq {last_seq}")
            break
        elif kind == "error":
            tally.error(f"error frame {frame['code']}: {frame['message']}; events {events}")
            return ws
    tally.replies += 1
    saved = await asyncio.to_thread(saved_text, message_id)
    if saved != text:
        where = next((i for i, (a, b) in enumerate(zip(text, saved, strict=False)) if a != b), None)
        tally.lose(
            f"message {message_id}: got {len(text)} chars, saved {len(saved)}, first difference "
            f"at {where}; events {events}"
        )
    return ws


def new_conversation(login):
    """The next conversation of a stream's user (titled: no background title call)."""
    from django.conf import settings

    from chat import services
    from chat.models import Conversation

    conversation = Conversation.objects.get(pk=login.conversation_id)
    fresh = Conversation.objects.create(
        owner_id=conversation.owner_id,
        model=settings.CLAUDE_DEFAULT_MODEL,
        system_prompt=services.current_system_prompt(),
        title="soak",
    )
    return dataclasses.replace(login, conversation_id=fresh.pk)


async def stream(server, login, tally: Tally, stop_at: float, seed: int, args) -> None:
    rng = random.Random(seed)
    ws = None
    replies = 0
    while time.monotonic() < stop_at:
        try:
            if replies and replies % args.turns_per_conversation == 0 and ws is not None:
                # A person starts a new chat now and then: conversations stay a realistic
                # length instead of growing for the whole soak.
                await ws.close()
                ws = None
                login = await asyncio.to_thread(new_conversation, login)
                tally.conversations += 1
            if ws is None:
                ws = await connect(server, login)
            ws = await one_reply(server, login, ws, tally, rng, args)
            replies += 1
        except Exception as exc:  # noqa: BLE001 (counted: every failure is an error here)
            tally.error(f"{type(exc).__name__}: {exc}"[:300])
            with contextlib.suppress(Exception):
                await ws.close()
            ws = None
            await asyncio.sleep(1)
    if ws is not None:
        with contextlib.suppress(Exception):
            await ws.close()


async def soak(server, logins, args) -> tuple[Tally, list[tuple[float, int]]]:
    tally = Tally()
    pid = server.pids()[0]
    start = time.monotonic()
    stop_at = start + args.minutes * 60
    rss: list[tuple[float, int]] = [(0.0, proc_rss(pid))]
    tasks = [
        asyncio.create_task(stream(server, login, tally, stop_at, seed, args))
        for seed, login in enumerate(logins)
    ]
    while time.monotonic() < stop_at:
        await asyncio.sleep(min(60, max(0.1, stop_at - time.monotonic())))
        minute = (time.monotonic() - start) / 60
        rss.append((minute, proc_rss(pid)))
        print(
            f"  {minute:5.1f} min: replies {tally.replies}, disconnects {tally.disconnects}, "
            f"stops {tally.stops}, errors {len(tally.errors)}, lost {len(tally.lost)}, "
            f"RSS {rss[-1][1] / 2**20:.1f} MiB",
            flush=True,
        )
    await asyncio.wait_for(asyncio.gather(*tasks), REPLY_LIMIT_S + 10)
    return tally, rss


def main() -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--p-disconnect", type=float, default=0.2)
    parser.add_argument("--p-stop", type=float, default=0.1)
    parser.add_argument(
        "--turns-per-conversation",
        type=int,
        default=40,
        help="replies before a stream moves to a new conversation",
    )
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "DATABASE_URL must name PostgreSQL: scripts/services.sh start && . .run/services/env"
        )
    logdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    procs: list[Proc] = []
    database_url = recreate_database(server_url, SOAK_DB)
    server = None
    try:
        offline, upstream = start_offline_claude(logdir)
        redis, redis_url = start_redis(logdir)
        procs += [offline, redis]
        env = server_env(
            database_url=database_url,
            redis_url=redis_url,
            upstream=upstream,
            layer="pubsub",
            logdir=logdir,
        )
        # The soak sends far faster than a person: lift the per-user abuse limits.
        env.update(RATE_SENDS_PER_MINUTE="100000", RATE_MAX_CONCURRENT_REPLIES="100")
        migrate(env)
        django_setup(database_url)
        logins = make_logins(args.streams, "soak")
        server = DaphneServer(env, logdir)
        print(f"soak: {args.streams} streams for {args.minutes:g} min; logs {logdir}", flush=True)
        tally, rss = asyncio.run(soak(server, logins, args))
    finally:
        if server is not None:
            server.stop()
        for proc in reversed(procs):
            proc.stop()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        recreate_database(server_url, SOAK_DB, drop_only=True)
    # The baseline is the first sample after a minute of streaming (pools and caches warm).
    warm = [sample for sample in rss if sample[0] >= 1.0] or rss
    start_rss, end_rss = warm[0][1], rss[-1][1]
    growth = end_rss - start_rss
    flat = growth < max(0.10 * start_rss, 20 * 2**20)
    print(
        f"\nreplies {tally.replies}, disconnects+resumes {tally.disconnects}, stops {tally.stops}, "
        f"duplicates dropped {tally.duplicates_dropped}, new conversations {tally.conversations}"
    )
    print(f"errors {len(tally.errors)} (must be 0)")
    for line in tally.errors[:10]:
        print(f"  {line}")
    print(f"lost {len(tally.lost)} (must be 0)")
    for line in tally.lost[:10]:
        print(f"  {line}")
    print(
        f"server RSS start {start_rss / 2**20:.1f} MiB, end {end_rss / 2**20:.1f} MiB, "
        f"growth {growth / 2**20:+.1f} MiB ({'flat' if flat else 'NOT flat'})"
    )
    return 0 if not tally.errors and not tally.lost and flat else 1


if __name__ == "__main__":
    sys.exit(main())
