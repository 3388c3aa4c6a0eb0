"""Soak: steady streams for a long time with random disconnects and stops; nothing may be lost.

    scripts/services.sh start && . .run/services/env
    .venv/bin/python bench/soak.py                      # 30 minutes, 20 streams
    .venv/bin/python bench/soak.py --minutes 3 --streams 10
    .venv/bin/python bench/soak.py --minutes 25 --pages-per-minute 60   # and page loads
    .venv/bin/python bench/soak.py --minutes 25 --pages-per-minute 60 --tracemalloc 25

Everything runs on 127.0.0.1 and stops by itself (plumbing from bench/relay.py): the offline
Claude, a Redis of its own (RedisPubSubChannelLayer), one Daphne process against the PostgreSQL
database `claudeweb_bench_soak` (dropped, created, migrated here; dropped at the end).

Each stream is a logged-in socket that sends replies of 50–300 tokens at 100 tokens/s, over and
over, moving to a new conversation every `--turns-per-conversation` replies (40). At random
it closes its socket mid-reply, waits a moment, reconnects and sends `resume` with the last
seq it applied; at random it sends `stop` mid-reply. It applies deltas strictly in
seq order (seq == last + 1), counts duplicates it dropped and gaps it saw. When a reply ends, the
text it assembled must equal the saved message's text, byte for byte.

With `--pages-per-minute N`, the streams' users also load pages as a person does, logged in,
at a steady N a minute (each started on time, a few at once if the server is slow): the chat
page with the conversation list, a conversation's page with its messages, older messages
(`/c/<id>/messages/?before=`), a search, the settings page; the hashed static files a page
links, once per user (a browser keeps them). Every answer must be a 200 with what the page
promises (a redirect to the login page is an error).

Prints, at the end (and a line a minute): replies, disconnects, stops, page loads, errors (error
frames, failed connects, replies not ended in time, failed pages — must be 0), lost (replies
whose assembled text is not the saved text — must be 0), and the server's RSS at the start
(after warm-up) and the end (must be flat: growth under 10 % or 20 MiB). Then whether RSS
levels off: least-squares slopes of RSS after `--warmup-minutes`, in the first half of the rest
and in the last half, in MiB per minute, per 1,000 page loads and per 1,000 replies (the two
loads run together, so both figures describe the same growth).

`--tracemalloc FRAMES` runs Daphne under `python -X tracemalloc=FRAMES` through
`bench/soak_server.py`, which dumps a heap snapshot on SIGUSR1; the bench asks for one after the
warm-up and one at the end and prints the allocations that grew most between them. Tracing
costs CPU and memory of its own: its RSS figures are not comparable with an untraced run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import html
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay import (  # noqa: E402
    PY,
    ROOT,
    DaphneServer,
    Proc,
    django_setup,
    free_port,
    make_logins,
    migrate,
    proc_rss,
    recreate_database,
    server_env,
    start_offline_claude,
    start_redis,
    wait_http,
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

    from chat.conversations import preferences
    from chat.models import Conversation

    conversation = Conversation.objects.get(pk=login.conversation_id)
    fresh = Conversation.objects.create(
        owner_id=conversation.owner_id,
        model=settings.CLAUDE_DEFAULT_MODEL,
        system_prompt=preferences.current_system_prompt(),
        title="soak",
    )
    return dataclasses.replace(login, conversation_id=fresh.pk)


# --- page loads ------------------------------------------------------------------------------

# What a person's visits look like, in turn: mostly the conversation they are in, the list,
# scrolling up for older messages, now and then a search or the settings page.
PAGE_MIX = (
    "conversation", "index", "conversation", "older", "conversation",
    "settings", "index", "conversation", "search", "older",
)  # fmt: skip
PAGE_LIMIT_S = 30
PAGES_AT_ONCE = 8
CONFIG_RE = re.compile(r'<script id="chat-config" type="application/json">(.*?)</script>', re.S)
STATIC_RE = re.compile(r'(?:href|src)="(/static/[^"]+)"')


@dataclass
class Pages:
    loads: int = 0
    by_kind: Counter = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)
    static_files: int = 0
    skipped: int = 0  # due while PAGES_AT_ONCE loads were still running
    seen_static: set[tuple[str, str]] = field(default_factory=set)
    oldest: dict[int, int] = field(default_factory=dict)  # conversation -> oldest message shown


def http_get(origin: str, path: str, session_key: str) -> tuple[int, str, dict, float]:
    """GET with the user's session cookie; no redirects followed (a login redirect is a 302)."""
    host, port = origin.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=PAGE_LIMIT_S)
    started = time.monotonic()
    try:
        conn.request("GET", path, headers={"Cookie": f"sessionid={session_key}"})
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        return response.status, body, dict(response.getheaders()), time.monotonic() - started
    finally:
        conn.close()


def page_config(body: str) -> dict:
    match = CONFIG_RE.search(body)
    if match is None:
        raise ValueError("no chat-config in the page")
    return json.loads(html.unescape(match.group(1)))


def check_page(kind: str, login, status: int, body: str, pages: Pages) -> None:
    """Raise unless the answer is what the page promises; note the oldest message shown."""
    if status != 200:
        raise ValueError(f"status {status}")
    if kind in ("conversation", "index", "search"):
        config = page_config(body)
        expected = login.conversation_id if kind == "conversation" else None
        if config["conversation_id"] != expected:
            raise ValueError(f"chat-config names conversation {config['conversation_id']}")
        if kind == "conversation" and config["messages"]:
            pages.oldest[login.conversation_id] = config["messages"][0]["id"]
    elif kind == "older":
        json.loads(body)["messages"]  # noqa: B018 (a KeyError is the failure)
    elif 'data-testid="settings-form"' not in body:
        raise ValueError("no settings form")


def page_path(kind: str, login, pages: Pages) -> str:
    pk = login.conversation_id
    if kind == "conversation":
        return f"/c/{pk}/"
    if kind == "older":
        before = pages.oldest.get(pk)
        return f"/c/{pk}/messages/?before={before}" if before else f"/c/{pk}/messages/?limit=20"
    if kind == "search":
        return "/?q=soak"
    if kind == "settings":
        return "/settings/"
    return "/"


def load_page(server, login, kind: str, pages: Pages) -> tuple[float, list[str]]:
    """One page as a browser loads it (in a thread): its time and the static files it links
    that this user has not fetched yet. Raises when the answer is not the page."""
    path = page_path(kind, login, pages)
    try:
        status, body, _, seconds = http_get(server.origin, path, login.session_key)
        check_page(kind, login, status, body, pages)
    except Exception as exc:
        raise ValueError(f"page {path} ({login.username}): {type(exc).__name__}: {exc}") from exc
    assets = [a for a in STATIC_RE.findall(body) if (login.username, a) not in pages.seen_static]
    for asset in assets:
        pages.seen_static.add((login.username, asset))
        status, _, _, _ = http_get(server.origin, html.unescape(asset), login.session_key)
        if status != 200:
            raise ValueError(f"static {asset}: status {status}")
    return seconds, assets


async def visit(server, login, kind: str, pages: Pages, tally: Tally) -> None:
    try:
        seconds, assets = await asyncio.to_thread(load_page, server, login, kind, pages)
    except Exception as exc:  # noqa: BLE001 (counted: every failure is an error here)
        tally.error(str(exc)[:300])
        return
    pages.loads += 1
    pages.by_kind[kind] += 1
    pages.seconds.append(seconds)
    pages.static_files += len(assets)


async def page_loader(server, current: list, pages: Pages, tally: Tally, stop_at: float, args):
    """Start a page load every 60 / N seconds, on time, whatever the previous ones take."""
    interval = 60 / args.pages_per_minute
    running: set[asyncio.Task] = set()
    due, n = time.monotonic(), 0
    while due < stop_at:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        running = {task for task in running if not task.done()}
        if len(running) >= PAGES_AT_ONCE:
            pages.skipped += 1
        else:
            login = current[n % len(current)]
            kind = PAGE_MIX[(n // len(current)) % len(PAGE_MIX)]
            running.add(asyncio.create_task(visit(server, login, kind, pages, tally)))
        n += 1
        due += interval
    if running:
        await asyncio.wait(running, timeout=PAGE_LIMIT_S + 5)


async def stream(
    server, current: list, index: int, tally: Tally, stop_at: float, seed: int, args
) -> None:
    """One user's replies; `current[index]` is its login with the conversation it is in now
    (the page loads open that one)."""
    rng = random.Random(seed)
    login = current[index]
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
                current[index] = login
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


@dataclass
class Sample:
    minute: float
    rss: int
    pages: int
    replies: int


async def snapshot(server, snapshots: list[Path], snapshot_dir: Path) -> None:
    """Ask the traced server for a heap snapshot (SIGUSR1) and wait until it is written."""
    path = snapshot_dir / f"snapshot-{len(snapshots)}.pickle"
    os.kill(server.pids()[0], signal.SIGUSR1)
    deadline = time.monotonic() + 300
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {path} after 300 s")
        await asyncio.sleep(0.5)
    snapshots.append(path)
    print(f"  heap snapshot {path.name} written", flush=True)


async def soak(server, logins, args, snapshot_dir: Path | None):
    tally, pages = Tally(), Pages()
    pid = server.pids()[0]
    start = time.monotonic()
    stop_at = start + args.minutes * 60
    samples = [Sample(0.0, proc_rss(pid), 0, 0)]
    snapshots: list[Path] = []
    current = list(logins)
    tasks = [
        asyncio.create_task(stream(server, current, index, tally, stop_at, seed, args))
        for index, seed in enumerate(range(len(logins)))
    ]
    if args.pages_per_minute:
        tasks.append(asyncio.create_task(page_loader(server, current, pages, tally, stop_at, args)))
    # Snapshots after the warm-up, half-way through the rest, and at the end.
    snapshot_at = [args.warmup_minutes, (args.warmup_minutes + args.minutes) / 2]
    while time.monotonic() < stop_at:
        await asyncio.sleep(min(args.sample_seconds, max(0.1, stop_at - time.monotonic())))
        minute = (time.monotonic() - start) / 60
        samples.append(Sample(minute, proc_rss(pid), pages.loads, tally.replies))
        print(
            f"  {minute:5.1f} min: replies {tally.replies}, disconnects {tally.disconnects}, "
            f"stops {tally.stops}, pages {pages.loads}, errors {len(tally.errors)}, "
            f"lost {len(tally.lost)}, RSS {samples[-1].rss / 2**20:.1f} MiB",
            flush=True,
        )
        if snapshot_dir is not None and snapshot_at and minute >= snapshot_at[0]:
            snapshot_at.pop(0)
            await snapshot(server, snapshots, snapshot_dir)
    await asyncio.wait_for(asyncio.gather(*tasks), REPLY_LIMIT_S + 10)
    if snapshot_dir is not None:
        await snapshot(server, snapshots, snapshot_dir)
    return tally, pages, samples, snapshots


# --- does RSS level off? ---------------------------------------------------------------------


def fit(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys against xs."""
    if len(xs) < 3:
        return None
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mean_x) ** 2 for x in xs)
    if den == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / den


def half_slopes(samples: list[Sample]) -> dict:
    """RSS slopes of one half: MiB a minute, per 1,000 page loads, per 1,000 replies."""
    mib = [s.rss / 2**20 for s in samples]
    per_minute = fit([s.minute for s in samples], mib)
    per_page = fit([s.pages for s in samples], mib)
    per_reply = fit([s.replies for s in samples], mib)
    return {
        "from": samples[0].minute,
        "to": samples[-1].minute,
        "rss_from": mib[0],
        "rss_to": mib[-1],
        "per_minute": per_minute,
        "per_1000_pages": per_page * 1000 if per_page is not None else None,
        "per_1000_replies": per_reply * 1000 if per_reply is not None else None,
    }


def levelling(samples: list[Sample], warmup_minutes: float) -> tuple[dict, dict, bool] | None:
    """Fit the samples after the warm-up in two halves (sharing the middle sample).

    It levels off when the last half grows at most a third as fast as the first, or by less
    than 2 MiB in all (the slope times the half's length): a leak keeps its pace."""
    after = [s for s in samples if s.minute >= warmup_minutes]
    if len(after) < 6:
        return None
    mid = len(after) // 2
    first, last = half_slopes(after[: mid + 1]), half_slopes(after[mid:])
    grown = last["per_minute"] * (last["to"] - last["from"])
    levels = last["per_minute"] <= max(first["per_minute"], 0) / 3 or grown < 2
    return first, last, levels


def _num(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:+.2f} {unit}"


def print_levelling(samples: list[Sample], warmup_minutes: float) -> bool:
    result = levelling(samples, warmup_minutes)
    if result is None:
        print(f"RSS slope: too few samples after the {warmup_minutes:g}-minute warm-up")
        return True
    first, last, levels = result
    for name, half in (("first half", first), ("last half ", last)):
        print(
            f"  {name} ({half['from']:4.1f}–{half['to']:4.1f} min, "
            f"{half['rss_from']:.1f} → {half['rss_to']:.1f} MiB): "
            f"{_num(half['per_minute'], 'MiB/min')}, "
            f"{_num(half['per_1000_pages'], 'MiB per 1,000 page loads')}, "
            f"{_num(half['per_1000_replies'], 'MiB per 1,000 replies')}"
        )
    print(f"RSS {'levels off' if levels else 'does NOT level off'} (last half vs first half)")
    return levels


def print_heap_growth(snapshots: list[Path], top: int = 15) -> None:
    """What grew between the snapshots: by line, and the largest by whole traceback."""
    import tracemalloc

    if len(snapshots) < 2:
        return
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, "<unknown>"),
    ]
    loaded = [tracemalloc.Snapshot.load(path).filter_traces(ignore) for path in snapshots]
    first, last = loaded[0], loaded[-1]
    for name, snap in zip(("warm", "end"), (first, last), strict=True):
        total = sum(stat.size for stat in snap.statistics("filename"))
        print(f"  traced heap at {name}: {total / 2**20:.1f} MiB")
    print(f"\nheap growth, {snapshots[0].name} → {snapshots[-1].name}, by line:")
    for stat in last.compare_to(first, "lineno")[:top]:
        print(f"  {stat}")
    if len(loaded) > 2:
        print(f"\nheap growth, {snapshots[-2].name} → {snapshots[-1].name}, by line:")
        for stat in last.compare_to(loaded[-2], "lineno")[:top]:
            print(f"  {stat}")
    print("\nlargest growth by traceback:")
    for stat in last.compare_to(first, "traceback")[:5]:
        print(f"  {stat.size_diff / 2**20:+.2f} MiB in {stat.count_diff:+d} blocks")
        for line in stat.traceback.format(limit=12):
            print(f"    {line}")


class TracedDaphneServer(DaphneServer):
    """The same Daphne under `python -X tracemalloc=FRAMES`, through bench/soak_server.py."""

    def __init__(self, env: dict, logdir: Path, frames: int, snapshot_dir: Path) -> None:
        port = free_port()
        args = [PY, "-X", f"tracemalloc={frames}", str(ROOT / "bench" / "soak_server.py")]
        args += ["-b", "127.0.0.1", "-p", str(port), "claudeweb.asgi:application"]
        env = dict(env, SOAK_SNAPSHOT_DIR=str(snapshot_dir))
        self.proc = Proc("daphne", args, env=env, logdir=logdir, ready_line=False)
        self.origin = f"http://127.0.0.1:{port}"
        self.ws_base = f"ws://127.0.0.1:{port}"
        try:
            # Importing the app under tracing takes minutes on a busy machine.
            wait_http(self.origin + "/bench-ready/", self.proc, timeout=600)
        except RuntimeError:
            self.proc.stop()  # main() only stops a server that started
            raise


def main() -> int:
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
    parser.add_argument(
        "--pages-per-minute", type=float, default=0, help="page loads a minute (0: none)"
    )
    parser.add_argument("--sample-seconds", type=float, default=60, help="RSS sample interval")
    parser.add_argument(
        "--warmup-minutes", type=float, default=2, help="left out of the RSS slope fit"
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="run the server under tracemalloc and compare heap snapshots",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="DJANGO_DEBUG=true, as `make run` serves by default (SQL kept per connection)",
    )
    parser.add_argument(
        "--database", default=SOAK_DB, help="scratch database (dropped, created, dropped)"
    )
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "DATABASE_URL must name PostgreSQL: scripts/services.sh start && . .run/services/env"
        )
    logdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    snapshot_dir = logdir if args.tracemalloc else None
    procs: list[Proc] = []
    database_url = recreate_database(server_url, args.database)
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
        if args.debug:
            env["DJANGO_DEBUG"] = "true"
        migrate(env)
        if args.pages_per_minute and not args.debug:
            # Pages link hashed static files: the manifest must exist, as in production.
            cmd = [PY, str(ROOT / "manage.py"), "collectstatic", "--noinput", "-v", "0"]
            subprocess.run(cmd, env=env, cwd=ROOT, check=True)
        django_setup(database_url)
        logins = make_logins(args.streams, "soak")
        if args.tracemalloc:
            server = TracedDaphneServer(env, logdir, args.tracemalloc, snapshot_dir)
        else:
            server = DaphneServer(env, logdir)
        print(
            f"soak: {args.streams} streams, {args.pages_per_minute:g} page loads a minute, "
            f"for {args.minutes:g} min{', DEBUG on' if args.debug else ''}; logs {logdir}",
            flush=True,
        )
        tally, pages, samples, snapshots = asyncio.run(soak(server, logins, args, snapshot_dir))
    finally:
        if server is not None:
            server.stop()
        for proc in reversed(procs):
            proc.stop()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        recreate_database(server_url, args.database, drop_only=True)
    # The baseline is the first sample after a minute of streaming (pools and caches warm).
    warm = [sample for sample in samples if sample.minute >= 1.0] or samples
    start_rss, end_rss = warm[0].rss, samples[-1].rss
    growth = end_rss - start_rss
    flat = growth < max(0.10 * start_rss, 20 * 2**20)
    print(
        f"\nreplies {tally.replies}, disconnects+resumes {tally.disconnects}, stops {tally.stops}, "
        f"duplicates dropped {tally.duplicates_dropped}, new conversations {tally.conversations}"
    )
    if args.pages_per_minute:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(pages.by_kind.items()))
        ms = sorted(1000 * s for s in pages.seconds) or [0.0]
        print(
            f"page loads {pages.loads} ({kinds}); static files {pages.static_files}; "
            f"skipped (server behind) {pages.skipped}; time p50 {ms[len(ms) // 2]:.0f} ms, "
            f"p95 {ms[int(0.95 * (len(ms) - 1))]:.0f} ms"
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
    levels = print_levelling(samples, args.warmup_minutes)
    print_heap_growth(snapshots)
    return 0 if not tally.errors and not tally.lost and (flat or levels) else 1


if __name__ == "__main__":
    sys.exit(main())
