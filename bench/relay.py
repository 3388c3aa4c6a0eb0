"""Streaming relay: N concurrent conversations through the app against a bare relay baseline.

    scripts/services.sh start && . .run/services/env
    .venv/bin/python bench/relay.py                       # N = 1, 50, 200; app and baseline
    .venv/bin/python bench/relay.py --n 40 --only app --layer memory
    .venv/bin/python bench/relay.py --topology prod --processes 1,2 --only app
    .venv/bin/python bench/relay.py --layers-alone --n 50,200
    .venv/bin/python bench/relay.py --n 50 --profile /tmp/p.txt   # py-spy, summarised after
    .venv/bin/python bench/relay.py --n 50 --only app --thinking both  # with and without thinking
    .venv/bin/python bench/relay.py --summarize /tmp/p.txt

What runs (all on 127.0.0.1, started here and stopped at the end, also on error or Ctrl-C):
  - the offline Claude (`python -m offline_claude`), paced like a real model through the
    `[[offline words=N pace_ms=F]]` directive (default 400 tokens at 60 tokens/s);
  - a Redis of its own (`redis-server` on a free port: pub/sub channel names are global to a
    Redis server, so a shared one would mix these frames with other users' groups), unless
    `--layer memory` (InMemoryChannelLayer) or `--redis-url`;
  - the server under test: one Daphne process as deployed, `python -m claudeweb.server` on
    uvloop (`--topology daphne`, default; `--app-loop asyncio` for asyncio's own loop,
    `--asgi-server uvicorn` to compare) against the PostgreSQL database
    `claudeweb_bench_relay` (dropped, created and migrated here, next to the one DATABASE_URL
    names), or `--topology prod`:
    `scripts/prod.sh` with `--processes` Daphne processes behind nginx, same database;
  - the baseline: bench/bare_relay.py (SDK raw events → `websockets`, same coalescing, no
    Django, no database), one process, on asyncio's own loop (`bare`: the targets' baseline)
    and on uvloop (`bare-uvloop`: the same loop as the app), `--bare-loops`.
Experiments that are not the app's configuration go through a settings module written to the
run's temp dir: `--layer redis-core|redis-4shards`, `--db-threads`, `--switch-interval-ms`.

Thinking (`--thinking shown|both`): the `app-thinking` server's turns ask for adaptive thinking
at high effort with `display: "summarized"` (the fields
`chat.claude.request_body.thinking_params` builds;
the socket's `send` carries no effort yet, so its settings module fills one in), and the model
thinks `thinking_words=T` chunks before it writes; T is `--thinking-share` of `--tokens` and the
text the rest, so a reply relays as many tokens as without thinking. The thinking streams to the
client as `thinking` frames, coalesced like text. The server without thinking (`app`) runs
today's default turn: its model (Sonnet 5.5) thinks unasked with the thinking omitted, which
streams nothing. `--thinking both` runs the two one after the other for each N.

Each phase (one N, one server) restarts its server, warms it with two short replies, connects N
logged-in sockets (sessions made in the bench database through the ORM; the cookie and an
Origin header go in the handshake), then every client sends, reads the whole reply and sends
again at once, for --duration seconds after a ramp of one reply's length (start times are spread
over the ramp, so about N replies stream at any time). Replies sent inside the window count.

Metrics (bench/README.md, "Streaming relay"):
  - upstream: direct SDK streams to the offline Claude from this process, back to back during
    the window: their time to first text delta (TTFT_up), pace (least-squares slope of token
    arrival against token index) and lateness (below): what the model itself does under the load.
  - added TTFT: client's first delta − send, minus the median TTFT_up of the window. The first
    text goes out at once in the app and the bare relay alike; coalescing starts after it.
    Its parts, from the client: send → `message` ack → `start` → first delta.
  - token lateness (the added inter-token delay): every token k of a reply arrives with its frame
    at a_k; a relay that adds nothing delivers token k at c + k·p for a constant c, p being the
    reply's pace (least-squares fit over its tokens, which absorbs the model's own drift). The
    lateness of token k is a_k − k·p − c, with c = the smallest a_k − k·p of the reply (its
    best-placed token), so lateness ≥ 0; p50/p95 over every token of every reply. A perfect
    relay with 40 ms coalescing scores about 0–40 ms (tokens wait for their frame). Stretch (a
    reply's pace / the model's) catches a relay that falls behind steadily, which the fit hides;
    `lateness_vs_probe_pace` uses the model's pace instead of the reply's.
  - frame gap: time between consecutive delta frames of a reply (p50/p95/max).
  - relayed tokens/s: tokens received by the clients inside the window / window.
  - CPU µs per relayed token: the server processes' utime+stime (/proc/<pid>/stat) over the
    window / tokens relayed in it (text and thinking), also split into the event loop's thread
    and the others (the database thread). The bench client, Redis, nginx and the offline
    Claude are reported apart.
  - RSS per connection: (largest server RSS during the window − RSS before connecting) / N.
  - errors: failed handshakes, error frames, closed sockets, replies not done in time, replies
    with fewer tokens than the model sent (`short_reply`; `seq_gap` when a delta seq was skipped).
  - client loop lag: how late a 10 ms timer in this process fires (p95); when it is large the
    client, not the server, is the bottleneck and every latency above is inflated by it.

Bounded: each phase stops after --max-seconds (default 120); the whole run after their sum.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BENCH_DB = "claudeweb_bench_relay"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# One secret for the sessions made here and the server that reads them.
SECRET_KEY = "bench-" + secrets.token_urlsafe(32)


# --- small helpers ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def slope(ys: list[float]) -> float | None:
    """Least-squares slope of ys against their index (seconds per token)."""
    if len(ys) < 3:
        return None
    mean_x, mean_y = (len(ys) - 1) / 2, statistics.fmean(ys)
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(ys))
    den = sum((x - mean_x) ** 2 for x in range(len(ys)))
    return num / den


def token_lateness(arrivals: list[float], pace: float) -> list[float]:
    """How late each token arrives against a relay that adds nothing, at `pace` per token.

    Token k (from 0) of a perfect relay arrives at c + k·pace; c is taken from the reply's
    best-placed token, so the lateness is ≥ 0 and a constant delay (which TTFT shows) is not
    counted again.
    """
    if not arrivals:
        return []
    anchor = min(t - k * pace for k, t in enumerate(arrivals))
    return [t - k * pace - anchor for k, t in enumerate(arrivals)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def libpq(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def recreate_database(server_url: str, name: str, *, drop_only: bool = False) -> str:
    """Drop and create database `name` next to the one `server_url` names; its URL."""
    import psycopg

    with psycopg.connect(libpq(with_database(server_url, "postgres")), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {name}")
    return with_database(server_url, name)


def raise_fd_limit(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, want)) if hard != resource.RLIM_INFINITY else max(soft, want)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def machine() -> dict:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as fh:
        cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    mem_gib = PAGE * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(mem_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of a process's main thread and of all its other threads (for Daphne: the
    database thread of `database_sync_to_async`, plus any other executor threads)."""
    main = other = 0.0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
                if int(tid) == pid:
                    main += cpu
                else:
                    other += cpu
    return main, other


def proc_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:
        return 0


# --- processes -------------------------------------------------------------------------------


class Proc:
    """A subprocess with its log in a file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self, name: str, args: list[str], *, env: dict, logdir: Path, ready_line: bool = True
    ) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "w", buffering=1)  # noqa: SIM115 (open while it runs)
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if ready_line else self._log,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def ready_line(self, pattern: str, timeout: float = 30) -> str:
        """Wait for a line of stdout containing `pattern`; stdout then goes on into the log (a
        pipe nobody reads fills up and blocks the writer: Daphne writes its access log there)."""
        deadline = time.monotonic() + timeout
        assert self.popen.stdout is not None
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if pattern in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return line.strip()
            if not line and self.popen.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def _drain(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in self.popen.stdout:
                self._log.write(line)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


def wait_http(url: str, proc: Proc | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if proc is not None and not proc.alive():
                break
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered at {url}" + (f"; see {proc.log_path}" if proc else ""))


def start_offline_claude(logdir: Path) -> tuple[Proc, str]:
    proc = Proc(
        "offline-claude",
        [PY, "-m", "offline_claude", "--host", "127.0.0.1", "--port", "0"],
        env=dict(os.environ),
        logdir=logdir,
    )
    url = proc.ready_line("listening on").split()[-1]
    return proc, url


def start_redis(logdir: Path) -> tuple[Proc, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed: run scripts/services.sh start")
    port = free_port()
    proc = Proc(
        "redis",
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        env=dict(os.environ),
        logdir=logdir,
    )
    proc.ready_line("Ready to accept connections")
    return proc, f"redis://127.0.0.1:{port}/0"


# Channel layers the app's settings do not offer, for comparison: a settings module written to
# the run's temp dir imports claudeweb.settings and replaces CHANNEL_LAYERS.
LAYER_OVERRIDES = {
    # channels_redis' pub/sub layer as it comes: every frame through Redis, even to a socket of
    # the same process (the app's chat/layers.py delivers those in-process).
    "redis-pubsub": '{"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", '
    '"CONFIG": {"hosts": [REDIS_URL]}}}',
    # channels_redis' list-based layer: group_send drops past `capacity` per channel.
    "redis-core": '{"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", '
    '"CONFIG": {"hosts": [REDIS_URL]}}}',
    # The pub/sub layer with 4 connections (shards) to the same Redis: publishes no longer wait
    # for each other behind one connection's lock.
    "redis-4shards": '{"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", '
    '"CONFIG": {"hosts": [REDIS_URL] * 4}}}',
}


def server_env(
    *,
    database_url: str,
    redis_url: str | None,
    upstream: str,
    layer: str,
    logdir: Path,
    switch_interval_ms: float | None = None,
    db_threads: bool = False,
    event_loop: str = "uvloop",
    thinking: bool = False,
) -> dict:
    """The app's environment for the bench: production settings on plain loopback HTTP."""
    env = dict(
        os.environ,
        CLAUDEWEB_EVENT_LOOP=event_loop,
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="claudeweb.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=SECRET_KEY,
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        ANTHROPIC_BASE_URL=upstream,
        ANTHROPIC_API_KEY="bench-key",
        CLAUDE_MAX_RETRIES="0",
        # Budgets are exercised (reserve and settle run per call) but never refuse a bench turn.
        CONVERSATION_TOKEN_BUDGET="1000000000",
        LOG_LEVEL="WARNING",
    )
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    lines = []
    if layer in LAYER_OVERRIDES:
        lines.append(f"CHANNEL_LAYERS = {LAYER_OVERRIDES[layer]}")
    if switch_interval_ms is not None:
        # How long the event loop may hold the GIL before a waiting thread (the database
        # thread) gets it: Python's default is 5 ms.
        lines.append(f"import sys\nsys.setswitchinterval({switch_interval_ms / 1000!r})")
    if db_threads:
        # Experiment, not the app's code: every `database_sync_to_async` call runs in the
        # loop's thread pool (thread_sensitive=False, one connection per pool thread) instead
        # of the process's single database thread. The chat modules import the name after
        # settings are loaded, so they get this one.
        lines.append(
            "import functools\nimport channels.db\n"
            "channels.db.database_sync_to_async = functools.partial(\n"
            "    channels.db.DatabaseSyncToAsync, thread_sensitive=False\n)"
        )
    if thinking:
        # Every turn asks for thinking as a turn with an effort does: adaptive, summarized, at
        # high effort (chat.claude.request_body has no Django imports, so it can be patched here).
        lines.append(
            "from chat.claude import request_body\n"
            "_thinking_params = request_body.thinking_params\n"
            "request_body.thinking_params = lambda *, support, effort: _thinking_params(\n"
            "    support=support, effort=effort or 'high'\n)"
        )
    if lines:
        module = "bench_settings_thinking" if thinking else "bench_settings"
        (logdir / f"{module}.py").write_text(
            "from claudeweb.settings import *  # noqa: F403\n" + "\n".join(lines) + "\n"
        )
        env["DJANGO_SETTINGS_MODULE"] = module
        env["PYTHONPATH"] = os.pathsep.join([str(logdir), str(ROOT)])
    return env


class Server:
    """What a phase talks to: a WebSocket base URL and the pids whose CPU and RSS count."""

    ws_base: str
    origin: str

    def pids(self) -> list[int]:
        raise NotImplementedError

    def extra_pids(self) -> dict[str, list[int]]:
        return {}

    def stop(self) -> None:
        raise NotImplementedError


class DaphneServer(Server):
    """The app in one process: Daphne (as deployed), or uvicorn for comparison."""

    def __init__(
        self, env: dict, logdir: Path, name: str = "daphne", asgi_server: str = "daphne"
    ) -> None:
        port = free_port()
        if asgi_server == "uvicorn":
            # The websockets protocol implementation and the plain asyncio loop: what bare
            # relay uses too. No access log (Daphne writes one line per socket).
            args = [
                PY, "-m", "uvicorn", "claudeweb.asgi:application", "--host", "127.0.0.1",
                "--port", str(port), "--ws", "websockets", "--lifespan", "off",
                "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        else:
            # As deployed: Daphne through claudeweb.server (its event loop: CLAUDEWEB_EVENT_LOOP).
            args = [PY, "-m", "claudeweb.server", "-b", "127.0.0.1", "-p", str(port)]
            args.append("claudeweb.asgi:application")
        self.proc = Proc(name, args, env=env, logdir=logdir, ready_line=False)
        self.origin = f"http://127.0.0.1:{port}"
        self.ws_base = f"ws://127.0.0.1:{port}"
        wait_http(self.origin + "/bench-ready/", self.proc)  # a 404 is an answer

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        self.proc.stop()


class BareServer(Server):
    def __init__(
        self,
        upstream: str,
        coalesce_ms: float,
        logdir: Path,
        name: str = "bare-relay",
        loop: str = "asyncio",
    ) -> None:
        self.proc = Proc(
            name,
            [
                PY,
                str(ROOT / "bench" / "bare_relay.py"),
                "--upstream",
                upstream,
                "--coalesce-ms",
                str(coalesce_ms),
                "--loop",
                loop,
            ],
            env=dict(os.environ),
            logdir=logdir,
        )
        self.ws_base = self.proc.ready_line("listening on").split()[-1]
        self.origin = "http://" + self.ws_base.split("//", 1)[1]

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        self.proc.stop()


class ProdServer(Server):
    """scripts/prod.sh: K Daphne processes behind nginx, in a state dir of its own."""

    def __init__(self, env: dict, processes: int, logdir: Path) -> None:
        self.state = logdir / f"prod-{processes}-{time.strftime('%H%M%S')}"
        self.state.mkdir(exist_ok=True)
        # prod.sh keeps the secret key it finds: the one the bench's sessions are signed with.
        (self.state / "secret_key").write_text(SECRET_KEY + "\n")
        port = free_port()
        self.env = dict(
            env,
            PROD_DATABASE_URL=env["DATABASE_URL"],
            PROD_REDIS_URL=env.get("REDIS_URL", ""),
            PROD_DIR=str(self.state),
            PROD_WORKERS=str(processes),
            PROD_PORT=str(port),
            PROD_SKIP_DEMO_USER="1",
        )
        out = subprocess.run(
            [str(ROOT / "scripts" / "prod.sh"), "start"],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"scripts/prod.sh start failed:\n{out.stdout}\n{out.stderr}")
        self.origin = f"http://127.0.0.1:{port}"
        self.ws_base = f"ws://127.0.0.1:{port}"

    def _read_pids(self, pattern: str) -> list[int]:
        pids = []
        for path in sorted(self.state.glob(pattern)):
            with contextlib.suppress(ValueError, OSError):
                pids.append(int(path.read_text().strip()))
        return pids

    def pids(self) -> list[int]:
        return self._read_pids("daphne-*.pid")

    def extra_pids(self) -> dict[str, list[int]]:
        master = self._read_pids("nginx.pid")
        workers = []
        for pid in master:
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                workers += [int(c) for c in children]
        return {"nginx": master + workers}

    def stop(self) -> None:
        subprocess.run(
            [str(ROOT / "scripts" / "prod.sh"), "stop"],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )


# --- logins in the bench database ------------------------------------------------------------


@dataclass
class Login:
    username: str
    session_key: str
    conversation_id: int


def django_setup(database_url: str) -> None:
    os.environ.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="claudeweb.settings",
        DJANGO_SECRET_KEY=SECRET_KEY,
        LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def migrate(env: dict) -> None:
    subprocess.run(
        [PY, str(ROOT / "manage.py"), "migrate", "-v", "0"], env=env, cwd=ROOT, check=True
    )


def make_logins(count: int, prefix: str) -> list[Login]:
    """`count` users, each logged in (a session row) with one titled conversation."""
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from chat.conversations import preferences
    from chat.models import Conversation

    password = make_password("bench-password-123")  # hashed once: every bench user shares it
    users = User.objects.bulk_create(
        [User(username=f"{prefix}{i}", password=password) for i in range(count)],
        batch_size=1000,
    )
    prompt = preferences.current_system_prompt()
    # A title: the first exchange would otherwise start a second, background API call.
    conversations = Conversation.objects.bulk_create(
        [
            Conversation(
                owner=u, model=settings.CLAUDE_DEFAULT_MODEL, system_prompt=prompt, title="bench"
            )
            for u in users
        ],
        batch_size=1000,
    )
    store = SessionStore()
    expire = timezone.now() + timedelta(days=1)
    sessions, logins = [], []
    for user, conversation in zip(users, conversations, strict=True):
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        sessions.append(
            Session(session_key=key, session_data=store.encode(data), expire_date=expire)
        )
        logins.append(Login(user.username, key, conversation.pk))
    Session.objects.bulk_create(sessions, batch_size=1000)
    return logins


# --- the client ------------------------------------------------------------------------------


@dataclass
class Turn:
    t_send: float
    t_ack: float | None = None  # the `message` frame: the turn is saved
    t_start: float | None = None  # the `start` frame: the reply task runs
    t_first: float | None = None
    t_done: float | None = None
    frames: list[tuple[float, int]] = field(default_factory=list)  # (arrival, tokens)
    thinking: list[tuple[float, int]] = field(default_factory=list)  # thinking frames, the same
    seq_gaps: int = 0  # delta seqs skipped (a frame lost on the way)
    error: str = ""

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.frames)

    @property
    def thinking_tokens(self) -> int:
        return sum(n for _, n in self.thinking)


@dataclass
class Client:
    login: Login
    ws_base: str
    origin: str
    ws: object = None
    turns: list[Turn] = field(default_factory=list)
    error: str = ""

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        url = f"{self.ws_base}/ws/conversations/{self.login.conversation_id}/"
        try:
            self.ws = await connect(
                url,
                origin=self.origin,
                additional_headers={"Cookie": f"sessionid={self.login.session_key}"},
                compression=None,
                proxy=None,
                ping_interval=None,
                open_timeout=60,
                max_size=2**22,
            )
        except Exception as exc:  # noqa: BLE001 (counted, reported)
            self.error = f"connect: {type(exc).__name__}: {exc}"[:200]

    async def turn(self, text: str, limit_s: float) -> Turn:
        turn = Turn(t_send=time.perf_counter())
        self.turns.append(turn)
        ws = self.ws
        await ws.send(json.dumps({"type": "send", "client_id": str(uuid.uuid4()), "text": text}))
        deadline = turn.t_send + limit_s
        try:
            while True:
                raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.perf_counter()))
                now = time.perf_counter()
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "delta":
                    if turn.t_first is None:
                        turn.t_first = now
                    turn.frames.append((now, len(frame["text"].split())))
                    if frame.get("seq", len(turn.frames)) != len(turn.frames) + turn.seq_gaps:
                        turn.seq_gaps = frame["seq"] - len(turn.frames)
                elif kind == "thinking":
                    turn.thinking.append((now, len(frame["text"].split())))
                elif kind == "message" and turn.t_ack is None:
                    turn.t_ack = now
                elif kind == "start" and turn.t_start is None:
                    turn.t_start = now
                elif kind == "done":
                    turn.t_done = now
                    if frame.get("stop_reason") not in ("end_turn", "max_tokens"):
                        turn.error = f"stop_reason:{frame.get('stop_reason')}"
                    return turn
                elif kind == "error":
                    turn.error = f"error:{frame.get('code')}"
                    return turn
        except TimeoutError:
            turn.error = "timeout"
        except Exception as exc:  # noqa: BLE001 (a closed socket is a result)
            turn.error = f"closed:{type(exc).__name__}"
        return turn

    async def run(self, *, start_at: float, stop_at: float, text: str, limit_s: float) -> None:
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        while time.perf_counter() < stop_at and self.ws is not None:
            turn = await self.turn(text, limit_s)
            if turn.error == "timeout" or turn.error.startswith("closed:"):
                break

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)


# --- the upstream, measured directly ---------------------------------------------------------


@dataclass
class Probe:
    ttft: float
    pace: float | None
    tokens: int
    lateness: list[float] = field(default_factory=list)  # the upstream's own jitter


# What the app-thinking server's requests ask for (chat.claude.request_body.thinking_params at
# high effort).
THINKING_REQUEST = {
    "thinking": {"type": "adaptive", "display": "summarized"},
    "output_config": {"effort": "high"},
}


async def probe_upstream(client, text: str, thinking: bool = False) -> Probe:
    """One direct SDK stream: time to first text delta and the pace of the tokens after it
    (with `thinking`, the first text comes after the thinking, as in the relayed replies)."""
    t0 = time.perf_counter()
    arrivals: list[float] = []
    stream = await client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=4096,
        messages=[{"role": "user", "content": text}],
        stream=True,
        **(THINKING_REQUEST if thinking else {}),
    )
    async with stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                now = time.perf_counter()
                arrivals += [now] * max(1, len(event.delta.text.split()))
    pace = slope(arrivals)
    ttft = arrivals[0] - t0 if arrivals else float("nan")
    lateness = token_lateness(arrivals, pace) if pace else []
    return Probe(ttft=ttft, pace=pace, tokens=len(arrivals), lateness=lateness)


async def probe_loop(
    client, text: str, stop_at: float, out: list[Probe], thinking: bool = False
) -> None:
    while time.perf_counter() < stop_at:
        try:
            out.append(await probe_upstream(client, text, thinking))
        except Exception as exc:  # noqa: BLE001 (a failed probe is reported as missing)
            print(f"  probe failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            await asyncio.sleep(0.5)


async def lag_monitor(stop_at: float, out: list[float], tick: float = 0.01) -> None:
    while time.perf_counter() < stop_at:
        t = time.perf_counter()
        await asyncio.sleep(tick)
        out.append(time.perf_counter() - t - tick)


# --- one phase -------------------------------------------------------------------------------


@dataclass
class PhaseConfig:
    words: int
    pace_ms: float
    duration: float
    max_seconds: float
    ramp: float | None = None
    thinking_words: int | None = None  # the model thinks this many tokens, shown, first

    @property
    def relayed_per_reply(self) -> int:
        return self.words + (self.thinking_words or 0)


def directive(words: int, pace_ms: float, note: str, thinking_words: int | None = None) -> str:
    thinking = f" thinking_words={thinking_words}" if thinking_words is not None else ""
    return f"[[offline words={words} pace_ms={pace_ms:g}{thinking}]] {note}"


async def warm(server: Server, logins: list[Login]) -> None:
    """Two short replies: the first request of a process builds clients and loads code."""
    clients = [Client(login, server.ws_base, server.origin) for login in logins]
    await asyncio.gather(*(c.connect() for c in clients))
    await asyncio.gather(
        *(c.turn(directive(20, 1, "warm up"), limit_s=30) for c in clients if c.ws is not None)
    )
    await asyncio.gather(*(c.close() for c in clients))


async def run_phase(
    server: Server,
    logins: list[Login],
    cfg: PhaseConfig,
    sdk,
    *,
    others: dict[str, list[int]] | None = None,
    profile: Path | None = None,
    profile_idle: bool = False,
) -> dict:
    n = len(logins)
    text = directive(cfg.words, cfg.pace_ms, "Tell me a long story.", cfg.thinking_words)
    reply_s = cfg.relayed_per_reply * cfg.pace_ms / 1000
    ramp = cfg.ramp if cfg.ramp is not None else reply_s
    pids = server.pids()
    rss0 = sum(proc_rss(p) for p in pids)

    clients = [Client(login, server.ws_base, server.origin) for login in logins]
    gate = asyncio.Semaphore(64)

    async def connect(c: Client) -> None:
        async with gate:
            await c.connect()

    t_connect = time.perf_counter()
    await asyncio.gather(*(connect(c) for c in clients))
    connect_s = time.perf_counter() - t_connect
    connected = [c for c in clients if c.ws is not None]
    rss_connected = sum(proc_rss(p) for p in pids)

    start = time.perf_counter() + 0.2
    window_start = start + ramp
    window_end = window_start + cfg.duration
    hard_stop = start + cfg.max_seconds
    turn_limit = max(30.0, reply_s * 4)
    step = ramp / max(1, len(connected))
    runners = [
        asyncio.create_task(
            c.run(start_at=start + i * step, stop_at=window_end, text=text, limit_s=turn_limit)
        )
        for i, c in enumerate(connected)
    ]

    probes: list[Probe] = []
    lags: list[float] = []
    rss_peak = rss_connected
    await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
    cpu0 = {p: proc_cpu_s(p) for p in pids}
    threads0 = [thread_cpu_s(p) for p in pids]
    client_cpu0 = time.process_time()
    watched = {**(others or {}), **server.extra_pids()}
    extra0 = {k: [proc_cpu_s(p) for p in v] for k, v in watched.items()}
    probe_task = asyncio.create_task(
        probe_loop(sdk, text, window_end, probes, cfg.thinking_words is not None)
    )
    lag_task = asyncio.create_task(lag_monitor(window_end, lags))
    spy = None
    if profile is not None and shutil.which("py-spy", path=str(Path(PY).parent)):
        spy = await asyncio.create_subprocess_exec(
            *[
                str(Path(PY).parent / "py-spy"),
                "record",
                "--nonblocking",
                "-r",
                "100",
                "-f",
                "raw",
                "-d",
                str(int(cfg.duration)),
                "-o",
                str(profile),
                *(["--idle", "--threads"] if profile_idle else []),
                *(a for p in pids[:1] for a in ("-p", str(p))),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    while time.perf_counter() < window_end:
        await asyncio.sleep(0.5)
        rss_peak = max(rss_peak, sum(proc_rss(p) for p in pids))
    cpu1 = {p: proc_cpu_s(p) for p in pids}
    threads1 = [thread_cpu_s(p) for p in pids]
    client_cpu = time.process_time() - client_cpu0
    extra1 = {k: [proc_cpu_s(p) for p in v] for k, v in watched.items()}
    await asyncio.gather(probe_task, lag_task)
    # Let the replies sent inside the window finish.
    remaining = max(1.0, hard_stop - time.perf_counter())
    done, pending = await asyncio.wait(runners, timeout=remaining)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.gather(*(c.close() for c in clients))
    if spy is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(spy.wait(), 30)

    return summarize(
        n=n,
        clients=clients,
        cfg=cfg,
        window=(window_start, window_end),
        probes=probes,
        lags=lags,
        cpu_s=sum(cpu1[p] - cpu0[p] for p in pids),
        thread_cpu_s=(
            sum(b[0] - a[0] for a, b in zip(threads0, threads1, strict=True)),
            sum(b[1] - a[1] for a, b in zip(threads0, threads1, strict=True)),
        ),
        extra_cpu_s={
            "bench client": client_cpu,
            **{k: sum(extra1.get(k, [])) - sum(v) for k, v in extra0.items()},
        },
        rss=(rss0, rss_connected, rss_peak),
        connect_s=connect_s,
        processes=len(pids),
    )


def summarize(
    *,
    n: int,
    clients: list[Client],
    cfg: PhaseConfig,
    window: tuple[float, float],
    probes: list[Probe],
    lags: list[float],
    cpu_s: float,
    thread_cpu_s: tuple[float, float],
    extra_cpu_s: dict[str, float],
    rss: tuple[int, int, int],
    connect_s: float,
    processes: int,
) -> dict:
    w0, w1 = window
    nominal = cfg.pace_ms / 1000
    paces = [p.pace for p in probes if p.pace]
    p_up = statistics.median(paces) if paces else nominal
    ttft_up = statistics.median([p.ttft for p in probes]) if probes else None
    lateness_probe = [x for p in probes for x in p.lateness]

    errors: dict[str, int] = {}

    def count(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    for c in clients:
        if c.error:
            count("connect")
    tokens_in_window = 0
    thinking_in_window = 0
    ttfts, lateness, lateness_up, gaps, stretch = [], [], [], [], []
    short: list[int] = []
    to_ack, ack_to_start, start_to_first = [], [], []
    turns_counted = 0
    for c in clients:
        for turn in c.turns:
            tokens_in_window += sum(k for t, k in turn.frames if w0 <= t < w1)
            thinking_in_window += sum(k for t, k in turn.thinking if w0 <= t < w1)
            if not (w0 <= turn.t_send < w1):
                continue
            if turn.error:
                count(turn.error)
                continue
            if turn.tokens != cfg.words:
                # Timings still count; the reply is an error all the same.
                count("short_reply")
                short.append(turn.tokens)
                if turn.seq_gaps:
                    count("seq_gap")
            if cfg.thinking_words is not None and turn.thinking_tokens != cfg.thinking_words:
                count("short_thinking")
            turns_counted += 1
            ttfts.append(turn.t_first - turn.t_send)
            if turn.t_ack and turn.t_start:
                to_ack.append(turn.t_ack - turn.t_send)
                ack_to_start.append(turn.t_start - turn.t_ack)
                start_to_first.append(turn.t_first - turn.t_start)
            arrivals = [t for t, tokens in turn.frames for _ in range(tokens)]
            pace = slope(arrivals) or p_up
            lateness += token_lateness(arrivals, pace)
            lateness_up += token_lateness(arrivals, p_up)
            stretch.append(pace / p_up)
            gaps += [b[0] - a[0] for a, b in zip(turn.frames, turn.frames[1:], strict=False)]

    duration = w1 - w0
    ms = 1000.0
    text_in_window = tokens_in_window
    tokens_in_window += thinking_in_window  # relayed: text and thinking alike
    added_ttft = [t - ttft_up for t in ttfts] if ttft_up is not None else []
    rss0, rss_connected, rss_peak = rss
    return {
        "n": n,
        "processes": processes,
        "connected": sum(1 for c in clients if c.ws is not None),
        "connect_s": round(connect_s, 2),
        "turns": turns_counted,
        "errors": errors,
        "short_reply_tokens": sorted(short)[:20],
        "offered_tokens_per_s": round(n * 1000 / cfg.pace_ms),
        "tokens_per_s": round(tokens_in_window / duration),
        "thinking_tokens_per_s": round(thinking_in_window / duration),
        "upstream_ttft_ms": round(ttft_up * ms, 1) if ttft_up is not None else None,
        "upstream_pace_ms": round(p_up * ms, 3),
        "probes": len(probes),
        "ttft_ms_p50": _ms(percentile(ttfts, 50)),
        "added_ttft_ms_p50": _ms(percentile(added_ttft, 50)),
        "added_ttft_ms_p95": _ms(percentile(added_ttft, 95)),
        "send_to_ack_ms_p50_p95": [_ms(percentile(to_ack, q)) for q in (50, 95)],
        "ack_to_start_ms_p50_p95": [_ms(percentile(ack_to_start, q)) for q in (50, 95)],
        "start_to_first_ms_p50_p95": [_ms(percentile(start_to_first, q)) for q in (50, 95)],
        "lateness_ms_p50": _ms(percentile(lateness, 50)),
        "lateness_ms_p95": _ms(percentile(lateness, 95)),
        "lateness_ms_p99": _ms(percentile(lateness, 99)),
        "lateness_vs_probe_pace_ms_p95": _ms(percentile(lateness_up, 95)),
        "upstream_lateness_ms_p50": _ms(percentile(lateness_probe, 50)),
        "upstream_lateness_ms_p95": _ms(percentile(lateness_probe, 95)),
        "frame_gap_ms_p50": _ms(percentile(gaps, 50)),
        "frame_gap_ms_p95": _ms(percentile(gaps, 95)),
        "frame_gap_ms_max": _ms(max(gaps) if gaps else None),
        "stretch_p95": round(percentile(stretch, 95), 3) if stretch else None,
        "cpu_s": round(cpu_s, 2),
        "cpu_cores": round(cpu_s / duration, 2),
        "cpu_us_per_token": round(cpu_s * 1e6 / tokens_in_window, 1) if tokens_in_window else None,
        "cpu_us_per_text_token": round(cpu_s * 1e6 / text_in_window, 1) if text_in_window else None,
        # Split: the event loop's thread, and the other threads (Daphne: the database thread).
        "cpu_us_per_token_loop_other": [
            round(t * 1e6 / tokens_in_window, 1) if tokens_in_window else None for t in thread_cpu_s
        ],
        "other_cpu_cores": {k: round(v / duration, 2) for k, v in extra_cpu_s.items()},
        "rss_mib_before": round(rss0 / 2**20, 1),
        "rss_kib_per_conn_connected": round((rss_connected - rss0) / 1024 / max(1, n), 1),
        "rss_kib_per_conn_streaming": round((rss_peak - rss0) / 1024 / max(1, n), 1),
        "client_lag_ms_p95": _ms(percentile(lags, 95)),
        "client_lag_ms_max": _ms(max(lags) if lags else None),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --- report ----------------------------------------------------------------------------------

COLUMNS = [
    ("server", "server", 12),
    ("n", "N", 4),
    ("turns", "turns", 5),
    ("tokens_per_s", "tok/s", 6),
    ("thinking_tokens_per_s", "think/s", 7),
    ("upstream_ttft_ms", "upTTFT", 6),
    ("upstream_pace_ms", "upPace", 6),
    ("added_ttft_ms_p50", "+TTFT50", 7),
    ("added_ttft_ms_p95", "+TTFT95", 7),
    ("lateness_ms_p50", "late50", 6),
    ("lateness_ms_p95", "late95", 6),
    ("upstream_lateness_ms_p95", "upLt95", 6),
    ("stretch_p95", "str95", 5),
    ("frame_gap_ms_p95", "gap95", 6),
    ("cpu_cores", "cores", 5),
    ("cpu_us_per_token", "µs/tok", 6),
    ("rss_kib_per_conn_streaming", "KiB/conn", 8),
    ("client_lag_ms_p95", "lag95", 5),
    ("errors", "errors", 0),
]


def print_table(rows: list[dict], header: bool = True) -> None:
    if header:
        print("  ".join(f"{title:>{width}}" for _, title, width in COLUMNS))
    for row in rows:
        cells = []
        for key, _, width in COLUMNS:
            value = row.get(key)
            if isinstance(value, dict):
                value = ",".join(f"{k}={v}" for k, v in value.items()) or "-"
            cells.append(f"{'-' if value is None else value!s:>{width}}")
        print("  ".join(cells), flush=True)


# The bare relays by event loop; "bare" (asyncio's own loop) is the baseline of the targets.
BARE_NAMES = {"asyncio": "bare", "uvloop": "bare-uvloop"}
BARE_LOOPS = {name: loop for loop, name in BARE_NAMES.items()}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def print_ratios(
    app_rows: list[dict], base_rows: list[dict], title: str | None = "app / bare relay, same N:"
) -> list[dict]:
    out = []
    base = {r["n"]: r for r in base_rows}
    if title:
        print("\n" + title)
    for row in app_rows:
        b = base.get(row["n"])
        if b is None:
            continue
        r = {
            "n": row["n"],
            "cpu_us_per_token": ratio(row["cpu_us_per_token"], b["cpu_us_per_token"]),
            "tokens_per_s": ratio(row["tokens_per_s"], b["tokens_per_s"]),
            "added_ttft_ms_p95": ratio(row["added_ttft_ms_p95"], b["added_ttft_ms_p95"]),
            "lateness_ms_p95": ratio(row["lateness_ms_p95"], b["lateness_ms_p95"]),
            "rss_kib_per_conn_streaming": ratio(
                row["rss_kib_per_conn_streaming"], b["rss_kib_per_conn_streaming"]
            ),
        }
        out.append(r)
        print(
            f"  N={r['n']:>4}: CPU/token ×{r['cpu_us_per_token']}, tokens/s ×{r['tokens_per_s']},"
            f" added TTFT p95 ×{r['added_ttft_ms_p95']}, lateness p95 ×{r['lateness_ms_p95']},"
            f" RSS/conn ×{r['rss_kib_per_conn_streaming']}"
        )
    return out


def check_targets(rows: list[dict], base_rows: list[dict]) -> None:
    base = {r["n"]: r for r in base_rows}
    print("\ntargets (one server, ≥200 streams: +TTFT p95 < 250 ms, lateness p95 < 100 ms,")
    print("CPU/token ≤ 1.5× bare):")
    for row in rows:
        b = base.get(row["n"])
        ok_ttft = row["added_ttft_ms_p95"] is not None and row["added_ttft_ms_p95"] < 250
        ok_late = row["lateness_ms_p95"] is not None and row["lateness_ms_p95"] < 100
        cpu = ratio(row["cpu_us_per_token"], b["cpu_us_per_token"]) if b else None
        if cpu is None:
            cpu_text = "CPU: no baseline in this run"
        else:
            cpu_text = f"CPU ×{cpu} {'met' if cpu <= 1.5 else 'MISSED'}"
        clean = not row["errors"]
        print(
            f"  N={row['n']:>4}: TTFT {'met' if ok_ttft else 'MISSED'}, "
            f"lateness {'met' if ok_late else 'MISSED'}, {cpu_text}, "
            f"errors {'none' if clean else row['errors']}"
        )


THINKING_TARGET = 1.10  # CPU per relayed token with thinking shown / without


def check_thinking(plain: list[dict], thinking: list[dict]) -> list[dict]:
    """CPU per relayed token with thinking shown against without, same N, same run."""
    pairs = {(r["n"], r.get("round", 0)): r for r in plain}
    out = []
    print(f"\nthinking shown / without (target: CPU per relayed token ≤ ×{THINKING_TARGET}):")
    for row in thinking:
        base = pairs.get((row["n"], row.get("round", 0)))
        if base is None:
            continue
        r = {
            "n": row["n"],
            "cpu_us_per_token": [base["cpu_us_per_token"], row["cpu_us_per_token"]],
            "ratio": ratio(row["cpu_us_per_token"], base["cpu_us_per_token"]),
        }
        r["met"] = r["ratio"] is not None and r["ratio"] <= THINKING_TARGET
        out.append(r)
        print(
            f"  N={r['n']:>4} round {row.get('round', 0)}: "
            f"{base['cpu_us_per_token']} → {row['cpu_us_per_token']} µs/token "
            f"(loop + other threads {base['cpu_us_per_token_loop_other']} → "
            f"{row['cpu_us_per_token_loop_other']}; per text token "
            f"{row['cpu_us_per_text_token']}): ×{r['ratio']} {'met' if r['met'] else 'MISSED'}"
        )
    return out


# --- the channel layer alone --------------------------------------------------------------------


async def layer_alone(
    layer, *, streams: int, frame_ms: float, seconds: float, payload: int = 120
) -> dict:
    """`streams` groups of one channel each (a reply and its tab, in one process); each stream
    sends a frame to its group every `frame_ms`. Sent, delivered, and delivery latency."""
    channels = [await layer.new_channel() for _ in range(streams)]
    for i, channel in enumerate(channels):
        await layer.group_add(f"conversation.{i}", channel)
    delivered: list[float] = []
    send_times: list[float] = []
    sent = 0
    stop_at = time.perf_counter() + seconds
    text = "x" * payload

    async def sender(i: int) -> None:
        nonlocal sent
        await asyncio.sleep(frame_ms / 1000 * i / streams)
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            frame = {"type": "delta", "message_id": i, "seq": sent, "text": text, "t": t}
            await layer.group_send(f"conversation.{i}", {"type": "chat.frame", "frame": frame})
            send_times.append(time.perf_counter() - t)
            sent += 1
            await asyncio.sleep(max(0.0, frame_ms / 1000 - (time.perf_counter() - t)))

    async def receiver(channel: str) -> None:
        with contextlib.suppress(Exception):  # cancelled at the end, or the layer gave up
            while True:
                message = await layer.receive(channel)
                delivered.append(time.perf_counter() - message["frame"]["t"])

    receivers = [asyncio.create_task(receiver(c)) for c in channels]
    cpu0 = time.process_time()
    await asyncio.gather(*(sender(i) for i in range(streams)))
    await asyncio.sleep(1.0)  # let the last frames arrive
    cpu = time.process_time() - cpu0
    for task in receivers:
        task.cancel()
    await asyncio.gather(*receivers, return_exceptions=True)
    for i, channel in enumerate(channels):
        await layer.group_discard(f"conversation.{i}", channel)
    return {
        "offered_per_s": round(streams * 1000 / frame_ms),
        "sent_per_s": round(sent / seconds),
        "delivered": len(delivered),
        "lost": sent - len(delivered),
        "group_send_ms_p50": _ms(percentile(send_times, 50)),
        "group_send_ms_p95": _ms(percentile(send_times, 95)),
        "delivery_ms_p50": _ms(percentile(delivered, 50)),
        "delivery_ms_p95": _ms(percentile(delivered, 95)),
        # This process did both ends: the publishing reply and the receiving socket's channel.
        "cpu_us_per_frame": round(cpu * 1e6 / max(1, len(delivered)), 1),
        "cpu_cores": round(cpu / (seconds + 1.0), 2),
    }


def run_layers(args: argparse.Namespace) -> dict:
    """Each channel layer alone, in this process, at the frame rate of --n streams."""
    from channels.layers import InMemoryChannelLayer
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    logdir = Path(tempfile.mkdtemp(prefix="bench-layers-"))
    redis = None
    if args.redis_url:
        url = args.redis_url
    else:
        redis, url = start_redis(logdir)
    from chat.layers import LocalFirstPubSubChannelLayer

    layers = {
        "LocalFirstPubSubChannelLayer (the app's)": lambda: LocalFirstPubSubChannelLayer(
            hosts=[url]
        ),
        "RedisPubSubChannelLayer": lambda: RedisPubSubChannelLayer(hosts=[url]),
        "RedisPubSubChannelLayer, hosts × 4": lambda: RedisPubSubChannelLayer(hosts=[url] * 4),
        "RedisChannelLayer (capacity 100)": lambda: RedisChannelLayer(hosts=[url]),
        "InMemoryChannelLayer": lambda: InMemoryChannelLayer(capacity=1000),
    }
    results: dict = {"machine": machine(), "layers": {}}
    print(f"machine: {results['machine']}")
    try:
        for n in [int(x) for x in args.n.split(",") if x]:
            for name, make in layers.items():

                async def one(make=make, n=n) -> dict:
                    layer = make()
                    try:
                        return await layer_alone(
                            layer, streams=n, frame_ms=args.coalesce_ms, seconds=args.duration
                        )
                    finally:
                        if hasattr(layer, "flush"):
                            with contextlib.suppress(Exception):
                                await layer.flush()

                try:
                    row = asyncio.run(one())
                except Exception as exc:  # noqa: BLE001 (a layer that fails is a result)
                    row = {"error": f"{type(exc).__name__}: {exc}"[:160]}
                results["layers"][f"{name}, {n} streams"] = row
                print(f"{n:>4} streams, {name:<38} {row}", flush=True)
    finally:
        if redis is not None:
            redis.stop()
    return results


# --- profiles ----------------------------------------------------------------------------------

# The frames under which the event loop runs a callback: asyncio's own handle, or, on uvloop,
# the Python frame that started the (C) loop: Twisted's reactor in Daphne, asyncio.run elsewhere.
LOOP_ENTRIES = (
    "Handle._run (asyncio/",
    "AsyncioSelectorReactor.run (twisted/",
    "Runner.run (asyncio/runners.py)",
)
# Where samples go: the innermost frame outside the generic standard library decides.
GENERIC = (
    "(asyncio/",
    "(selectors.py",
    "(contextlib.py",
    "(typing.py",
    "(socket.py",
    "(functools.py",
)
BUCKETS = [
    ("json", ("(json/",)),
    ("logging", ("(logging/",)),
    ("channel layer (channels_redis, redis, msgpack)", ("channels_redis/", "redis/", "msgpack")),
    ("channel layer (in-memory)", ("channels/layers.py",)),
    ("database (Django ORM, psycopg)", ("django/db/", "psycopg/", "psycopg_binary")),
    ("sync_to_async thread hops", ("asgiref/", "concurrent/")),
    (
        "sockets to browsers (Daphne, Twisted, autobahn, channels, websockets)",
        ("autobahn/", "twisted/", "daphne/", "txaio/", "channels/", "websockets/", "uvicorn/"),
    ),
    (
        "upstream stream (anthropic SDK, httpx2, httpcore2, h11, anyio, pydantic)",
        ("anthropic/", "httpx2/", "httpcore2/", "h11/", "anyio/", "sniffio/", "pydantic"),
    ),
    ("app (chat/; bare_relay.py)", ("chat/", "bare_relay.py")),
    ("Django (other)", ("django/",)),
]


def summarize_profile(path: Path, top: int = 20) -> str:
    """A py-spy raw (collapsed) profile, summarised: the event loop's samples by the innermost
    library they are in, the other threads' (the database thread's) by the app function that
    asked for the work, and the top functions by own time."""
    loop_buckets: dict[str, int] = {}
    db_callers: dict[str, int] = {}
    own: dict[str, int] = {}
    threads = {"event loop": 0, "other threads (database)": 0}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        if frames[-1].startswith("_worker (concurrent/futures/thread.py)"):
            continue  # an executor thread waiting for work (--idle profiles)
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        if any("threading.py" in f for f in frames):
            threads["other threads (database)"] += count
            caller = next((f for f in reversed(frames) if "(chat/" in f), "(no app frame)")
            db_callers[caller] = db_callers.get(caller, 0) + count
            continue
        threads["event loop"] += count
        # Only the frames below the callback the loop is running count: above it sits the
        # server's entry point (daphne, uvicorn), the same for every sample. On uvloop the loop
        # is C code py-spy does not see: a callback's frames follow the Python frame that
        # started the loop, and a sample with nothing below that frame is the loop itself.
        runs = [i for i, f in enumerate(frames) if f.startswith(LOOP_ENTRIES)]
        bucket = "the event loop itself (asyncio, selectors; uvloop's C code)"
        for frame in reversed(frames[runs[-1] + 1 :] if runs else []):
            if any(g in frame for g in GENERIC):
                continue
            bucket = next((b for b, marks in BUCKETS if any(m in frame for m in marks)), "other")
            break
        loop_buckets[bucket] = loop_buckets.get(bucket, 0) + count
    if not total:
        return f"{path}: no samples"

    def lines(counts: dict[str, int], limit: int = top) -> list[str]:
        ranked = sorted(counts.items(), key=lambda x: -x[1])[:limit]
        return [f"    {100 * n / total:5.1f}%  {name}" for name, n in ranked]

    out = [f"{path}: {total} samples (percent of all)"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in threads.items()]
    out.append("  event loop, by the innermost library of each sample:")
    out += lines(loop_buckets)
    out.append("  other threads, by the app function that asked for the work:")
    out += lines(db_callers)
    out.append(f"  top {top} functions by own time:")
    out += lines(own)
    return "\n".join(out)


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="1,50,200", help="concurrent conversations, comma list")
    parser.add_argument("--tokens", type=int, default=400, help="tokens per reply")
    parser.add_argument("--tokens-per-s", type=float, default=60.0, help="the model's pace")
    parser.add_argument("--duration", type=float, default=20.0, help="measured window, s")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="bound per phase, s")
    parser.add_argument(
        "--layer",
        choices=("redis", "memory", *LAYER_OVERRIDES),
        default="redis",
        help="redis: the app's layer (chat/layers.py, pub/sub, in-process first); memory: "
        "InMemoryChannelLayer; redis-pubsub: channels_redis' pub/sub layer as it comes; "
        "redis-core: RedisChannelLayer; redis-4shards: the pub/sub layer on 4 connections",
    )
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument(
        "--topology",
        choices=("daphne", "prod"),
        default="daphne",
        help="daphne: one process, direct; prod: scripts/prod.sh (nginx + --processes)",
    )
    parser.add_argument("--processes", default="2", help="prod topology: Daphne processes, list")
    parser.add_argument("--only", choices=("app", "bare", "both"), default="both")
    parser.add_argument(
        "--asgi-server",
        choices=("daphne", "uvicorn"),
        default="daphne",
        help="experiment: serve the app with uvicorn (websockets, asyncio) instead of Daphne",
    )
    parser.add_argument(
        "--db-threads",
        action="store_true",
        help="experiment: database_sync_to_async with thread_sensitive=False in the app",
    )
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        help="experiment: sys.setswitchinterval in the app's processes (Python's default: 5)",
    )
    parser.add_argument(
        "--thinking",
        choices=("off", "shown", "both"),
        default="off",
        help="the app's replies think with the thinking shown (server app-thinking), or not "
        "(app: today's default turn), or both, one after the other per N",
    )
    parser.add_argument(
        "--thinking-share",
        type=float,
        default=0.25,
        help="with thinking: the share of --tokens the model thinks (the rest is text)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every phase this many times, the servers' order reversed every other round",
    )
    parser.add_argument("--coalesce-ms", type=float, default=40.0, help="bare relay coalescing")
    parser.add_argument(
        "--app-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the app's event loop (CLAUDEWEB_EVENT_LOOP; uvloop as deployed)",
    )
    parser.add_argument(
        "--bare-loops",
        default="asyncio,uvloop",
        help="bare relays to run: asyncio (the baseline of the targets), uvloop, or both",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy raw profile of each server at the largest N (FILE, FILE-bare, …)",
    )
    parser.add_argument(
        "--profile-idle",
        action="store_true",
        help="the profile also samples waiting threads, per thread (py-spy --idle --threads)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DB} database")
    parser.add_argument(
        "--summarize", type=Path, metavar="PROFILE", help="only print a py-spy profile's top"
    )
    parser.add_argument(
        "--layers-alone",
        action="store_true",
        help="only the channel layers, in this process: group_send at the frame rate of --n "
        "streams (one frame per --coalesce-ms each) for --duration s",
    )
    return parser.parse_args(argv)


class Stop(Exception):
    pass


def _stop(signum, frame):
    raise Stop(f"signal {signum}")


def run(args: argparse.Namespace) -> dict:
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit(
            "DATABASE_URL must name the PostgreSQL of scripts/services.sh: "
            "scripts/services.sh start && . .run/services/env"
        )
    ns = [int(x) for x in args.n.split(",") if x]
    processes = [int(x) for x in args.processes.split(",") if x]
    unknown = set(args.bare_loops.split(",")) - set(BARE_NAMES)
    if unknown:
        raise SystemExit(f"--bare-loops: unknown {', '.join(sorted(unknown))} (asyncio, uvloop)")
    if args.thinking != "off" and args.topology != "daphne":
        raise SystemExit("--thinking: only with --topology daphne")
    pace_ms = 1000 / args.tokens_per_s
    cfg = PhaseConfig(
        words=args.tokens,
        pace_ms=round(pace_ms, 3),
        duration=args.duration,
        max_seconds=args.max_seconds,
    )
    thinking_words = round(args.tokens * args.thinking_share)
    # The same tokens per reply, a share of them thinking: per-turn costs weigh the same.
    cfgs = {
        "app-thinking": dataclasses.replace(
            cfg, words=args.tokens - thinking_words, thinking_words=thinking_words
        )
    }
    raise_fd_limit(4 * max(ns) + 1024)
    logdir = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    results: dict = {"machine": machine(), "config": vars(args) | {"pace_ms": cfg.pace_ms}}
    results["config"] = {k: str(v) for k, v in results["config"].items()}
    print(f"machine: {results['machine']}")
    print(f"logs: {logdir}")
    procs: list[Proc] = []
    database_url = recreate_database(server_url, BENCH_DB)
    try:
        offline, upstream = start_offline_claude(logdir)
        procs.append(offline)
        others = {"offline-claude": [offline.pid]}
        redis_url = None
        if args.layer != "memory":
            if args.redis_url:
                redis_url = args.redis_url
            else:
                redis, redis_url = start_redis(logdir)
                procs.append(redis)
                others["redis"] = [redis.pid]
        env = server_env(
            database_url=database_url,
            redis_url=redis_url,
            upstream=upstream,
            layer=args.layer,
            logdir=logdir,
            switch_interval_ms=args.switch_interval_ms,
            db_threads=args.db_threads,
            event_loop=args.app_loop,
        )
        envs = {}
        if args.thinking != "off":
            envs["app-thinking"] = server_env(
                database_url=database_url,
                redis_url=redis_url,
                upstream=upstream,
                layer=args.layer,
                logdir=logdir,
                switch_interval_ms=args.switch_interval_ms,
                db_threads=args.db_threads,
                event_loop=args.app_loop,
                thinking=True,
            )
        migrate(env)
        django_setup(database_url)
        servers: list[tuple[str, int | None]] = []
        if args.only in ("app", "both"):
            if args.topology == "prod":
                servers += [(f"prod{k}", k) for k in processes]
            else:
                if args.thinking in ("off", "both"):
                    servers.append(("app", None))
                if args.thinking in ("shown", "both"):
                    servers.append(("app-thinking", None))
        if args.only in ("bare", "both"):
            servers += [(BARE_NAMES[loop], None) for loop in args.bare_loops.split(",")]
        print(f"offline Claude {upstream}; layer {args.layer} {redis_url or ''}")
        print(
            f"{cfg.words} tokens per reply at {args.tokens_per_s:g} tokens/s "
            f"(pace {cfg.pace_ms} ms), window {cfg.duration:g} s",
            flush=True,
        )
        if args.thinking != "off":
            shown = cfgs["app-thinking"]
            print(
                f"app-thinking: {shown.thinking_words} thinking tokens (shown) then "
                f"{shown.words} text tokens per reply",
                flush=True,
            )
        print(flush=True)

        rounds = range(args.repeat)
        logins = {
            (name, n, r): make_logins(n, f"{name}-n{n}-r{r}-")
            for n in ns
            for name, _ in servers
            for r in rounds
        }
        warm_logins = make_logins(2 * len(servers) * len(ns) * args.repeat, "warm")
        rows = asyncio.run(
            _phases(
                args,
                cfg,
                ns,
                servers,
                logins,
                warm_logins,
                env,
                upstream,
                others,
                logdir,
                results,
                envs=envs,
                cfgs=cfgs,
            )
        )
        results["rows"] = rows
        print("\nall phases:")
        print_table([r for name in rows for r in rows[name]])
        base = rows.get("bare", [])
        for name in rows:
            if name in BARE_LOOPS:
                continue
            print(f"\n[{name}]")
            results.setdefault("ratios", {})[name] = print_ratios(rows[name], base)
            if "bare-uvloop" in rows:
                print("  against the bare relay on uvloop (the app's event loop):")
                results.setdefault("ratios_uvloop", {})[name] = print_ratios(
                    rows[name], rows["bare-uvloop"], title=None
                )
            check_targets(rows[name], base)
        if "app" in rows and "app-thinking" in rows:
            results["thinking"] = check_thinking(rows["app"], rows["app-thinking"])
        results["loadavg_after"] = os.getloadavg()
        print(f"\nload average before {results['machine']['loadavg']}, after {os.getloadavg()}")
    finally:
        for proc in reversed(procs):
            proc.stop()
        if not args.keep:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            recreate_database(server_url, BENCH_DB, drop_only=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


async def _phases(
    args: argparse.Namespace,
    cfg: PhaseConfig,
    ns: list[int],
    servers: list[tuple[str, int | None]],
    logins: dict[tuple[str, int, int], list[Login]],
    warm_logins: list[Login],
    env: dict,
    upstream: str,
    others: dict[str, list[int]],
    logdir: Path,
    results: dict,
    *,
    envs: dict[str, dict] | None = None,
    cfgs: dict[str, PhaseConfig] | None = None,
) -> dict[str, list[dict]]:
    """Every phase in one event loop, with one SDK client for the upstream probes."""
    import anthropic

    sdk = anthropic.AsyncAnthropic(base_url=upstream, api_key="bench", max_retries=0)
    idle_text = directive(cfg.words, cfg.pace_ms, "alone")
    idle = [await probe_upstream(sdk, idle_text) for _ in range(3)][1:]  # the first warms up
    results["upstream_idle"] = {
        "ttft_ms": round(statistics.median(p.ttft for p in idle) * 1000, 1),
        "pace_ms": round(statistics.median(p.pace for p in idle if p.pace) * 1000, 3),
    }
    print(
        f"upstream alone (direct SDK stream): TTFT {results['upstream_idle']['ttft_ms']} ms, "
        f"pace {results['upstream_idle']['pace_ms']} ms/token\n",
        flush=True,
    )
    rows: dict[str, list[dict]] = {name: [] for name, _ in servers}
    # Repeats alternate the order of the servers, so a load that drifts favours none of them.
    phases = [
        (n, r, name, k)
        for n in ns
        for r in range(args.repeat)
        for name, k in (servers if r % 2 == 0 else servers[::-1])
    ]
    for n, r, name, k in phases:
        if name in BARE_LOOPS:
            server: Server = BareServer(
                upstream, args.coalesce_ms, logdir, f"{name}-n{n}-r{r}", loop=BARE_LOOPS[name]
            )
        elif k is not None:
            server = ProdServer(env, k, logdir)
        else:
            server = DaphneServer(
                (envs or {}).get(name, env),
                logdir,
                f"{name}-{args.asgi_server}-n{n}-r{r}",
                asgi_server=args.asgi_server,
            )
        warm_pair, warm_logins = warm_logins[:2], warm_logins[2:]
        profile = args.profile if (args.profile and n == ns[-1] and r == 0) else None
        if profile is not None and name != servers[0][0]:
            profile = profile.with_name(f"{profile.stem}-{name}{profile.suffix}")
        try:
            await warm(server, warm_pair)
            await asyncio.sleep(0.5)
            row = await asyncio.wait_for(
                run_phase(
                    server,
                    logins[(name, n, r)],
                    (cfgs or {}).get(name, cfg),
                    sdk,
                    others=others,
                    profile=profile,
                    profile_idle=args.profile_idle,
                ),
                cfg.max_seconds + 30,
            )
        finally:
            server.stop()
        row = {"server": name, "round": r, "loadavg": os.getloadavg(), **row}
        rows[name].append(row)
        print_table([row], header=sum(map(len, rows.values())) == 1)
        print(
            f"  {name} N={n} round {r} (load {row['loadavg'][0]:.1f}): TTFT parts p50/p95 ms: "
            f"send→ack {row['send_to_ack_ms_p50_p95']}, "
            f"ack→start {row['ack_to_start_ms_p50_p95']}, "
            f"start→first delta {row['start_to_first_ms_p50_p95']}; "
            f"CPU µs/token event loop, other threads {row['cpu_us_per_token_loop_other']}; "
            f"others' CPU (cores) {row['other_cpu_cores']}",
            flush=True,
        )
        if profile is not None and profile.exists():
            print(summarize_profile(profile), flush=True)
    await sdk.close()
    return rows


def main() -> int:
    args = parse_args()
    if args.summarize:
        print(summarize_profile(args.summarize))
        return 0
    if args.layers_alone:
        results = run_layers(args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGALRM, _stop)
    ns = [x for x in args.n.split(",") if x]
    kinds = 2 + (len(args.processes.split(",")) - 1 if args.topology == "prod" else 0)
    kinds += 1 if args.thinking == "both" else 0
    signal.alarm(int(len(ns) * kinds * args.repeat * (args.max_seconds + 60) + 120))
    try:
        run(args)
    except (Stop, KeyboardInterrupt) as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
