"""Checks the production topology end to end: nginx → two Daphne processes → Redis, PostgreSQL.

    scripts/services.sh start && . .run/services/env
    .venv/bin/python bench/topology_check.py              # starts and stops its own topology
    .venv/bin/python bench/topology_check.py --url http://127.0.0.1:8080 \
        --username demo --password demo-password-change-me   # against `scripts/prod.sh start`

What it does, as a browser would, through nginx only:
  1. logs in through the login form (CSRF cookie and token, Origin header);
  2. creates a conversation (POST /c/new/);
  3. opens WebSockets until two of them reached different Daphne processes (nginx round robin;
     the X-Upstream header of the handshake names the process);
  4. sends from tab A; checks that tab B (the other process) receives the live deltas too;
  5. sends `stop` from tab B; checks that the reply running in A's process stops: both tabs get
     `done` with stop_reason `stopped`, well before the reply would have ended;
  6. starts a second reply from A and opens tab C on B's process, which sends `resume`
     (after_seq 0): it must get every delta from seq 1, in order and without gaps, then `done` —
     answered by A's process through the channel layer;
  7. fetches a hashed static file through nginx (whitenoise: 200, long-lived cache header).

Without --url it starts `scripts/prod.sh` itself (PROD_WORKERS=2, a free port, the database
`claudeweb_topology_check`, a Redis of its own) and stops it at the end. Exits non-zero on the
first failed check. Bounded by --timeout (default 120 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relay  # noqa: E402  (bench/relay.py: processes and databases)

ROOT = relay.ROOT
CHECK_DB = "claudeweb_topology_check"
USERNAME, PASSWORD = "topology", "topology-password-123"


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)
    print(f"  ok: {message}", flush=True)


# --- HTTP as a browser does it (cookies by hand: they are Secure, and this is plain HTTP) -------


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Browser:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.cookies: dict[str, str] = {}
        self.opener = urllib.request.build_opener(NoRedirect)

    def request(self, method: str, path: str, form: dict | None = None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if self.cookies:
            req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if method == "POST":
            req.add_header("Origin", self.base)
            req.add_header("Referer", self.base + path)
        try:
            resp = self.opener.open(req, timeout=10)
        except urllib.error.HTTPError as exc:
            resp = exc
        for header in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return resp.status, dict(resp.headers), resp.read().decode("utf-8", "replace")

    def csrf_token(self, page: str) -> str:
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if not found:
            raise CheckFailed("no CSRF token in the page")
        return html.unescape(found.group(1))

    def login(self, username: str, password: str) -> None:
        status, _, page = self.request("GET", "/login/")
        check(status == 200, f"GET /login/ through nginx: {status}")
        status, headers, _ = self.request(
            "POST",
            "/login/",
            {
                "csrfmiddlewaretoken": self.csrf_token(page),
                "username": username,
                "password": password,
            },
        )
        check(
            status == 302 and "sessionid" in self.cookies,
            f"logged in through the form (302 to {headers.get('Location')})",
        )

    def new_conversation(self) -> int:
        status, _, page = self.request("GET", "/")
        check(status == 200, f"GET / (the chat page): {status}")
        status, headers, _ = self.request(
            "POST", "/c/new/", {"csrfmiddlewaretoken": self.csrf_token(page)}
        )
        found = re.search(r"/c/(\d+)/", headers.get("Location", ""))
        check(
            status == 302 and found is not None,
            f"created a conversation: {headers.get('Location')}",
        )
        return int(found.group(1))


# --- sockets -----------------------------------------------------------------------------------


class Tab:
    """One socket, keeping every frame it received."""

    def __init__(self, ws, upstream: str) -> None:
        self.ws = ws
        self.upstream = upstream
        self.received: list[dict] = []

    @classmethod
    async def open(cls, browser: Browser, conversation_id: int) -> Tab:
        from websockets.asyncio.client import connect

        ws_base = browser.base.replace("http://", "ws://", 1)
        ws = await connect(
            f"{ws_base}/ws/conversations/{conversation_id}/",
            origin=browser.base,
            additional_headers={"Cookie": f"sessionid={browser.cookies['sessionid']}"},
            compression=None,
            proxy=None,
            open_timeout=10,
        )
        return cls(ws, ws.response.headers.get("X-Upstream", "?"))

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    async def frames_until(
        self, kinds: set[str], limit_s: float, message_id: int | None = None
    ) -> list[dict]:
        """Frames up to the first whose type is in `kinds` (and of `message_id`, if given)."""
        frames = []
        async with asyncio.timeout(limit_s):
            while True:
                frame = json.loads(await self.ws.recv())
                self.received.append(frame)
                frames.append(frame)
                if frame["type"] in kinds and message_id in (None, frame.get("message_id")):
                    return frames

    async def deltas(self, count: int, limit_s: float) -> None:
        for _ in range(count):
            await self.frames_until({"delta"}, limit_s)

    def reply_text(self, message_id: int) -> str:
        return "".join(
            f["text"]
            for f in self.received
            if f["type"] == "delta" and f.get("message_id") == message_id
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


async def open_tab(
    browser: Browser, conversation_id: int, *, on: str | None = None, not_on: str | None = None
) -> Tab:
    """A socket on a given Daphne process (or on any other than one), by reconnecting."""
    for _ in range(12):
        tab = await Tab.open(browser, conversation_id)
        if (on is None or tab.upstream == on) and (not_on is None or tab.upstream != not_on):
            return tab
        await tab.close()
    raise CheckFailed("12 sockets never reached the wanted process: is nginx balancing?")


async def send(tab: Tab, text: str) -> None:
    await tab.send({"type": "send", "client_id": str(uuid.uuid4()), "text": text})


async def check_stop(browser: Browser, conversation_id: int) -> str:
    """Stop from a tab on the other process; returns the process the reply ran in."""
    a = await open_tab(browser, conversation_id)
    b = await open_tab(browser, conversation_id, not_on=a.upstream)
    check(True, f"tab A on Daphne {a.upstream}, tab B on Daphne {b.upstream}")
    try:
        await send(a, "[[offline words=400 pace_ms=20]] A long answer, please.")
        await a.deltas(3, limit_s=20)
        await b.deltas(3, limit_s=20)
        check(True, "both tabs receive the live deltas of the reply running in A's process")
        t_stop = time.monotonic()
        await b.send({"type": "stop"})
        done_a = (await a.frames_until({"done", "error"}, limit_s=10))[-1]
        done_b = (await b.frames_until({"done", "error"}, limit_s=10))[-1]
        elapsed = time.monotonic() - t_stop
        check(
            done_a.get("stop_reason") == "stopped" and done_b.get("stop_reason") == "stopped",
            f"stop from tab B (other process) ended the reply in {elapsed * 1000:.0f} ms "
            f"(stop_reason {done_a.get('stop_reason')!r}; it had ~7 s to go)",
        )
        check(elapsed < 3, "the stop took effect at once")
        return a.upstream
    finally:
        await a.close()
        await b.close()


async def check_resume(browser: Browser, conversation_id: int, *, on: str | None, label: str):
    """A reply runs in one process; a tab opened on another asks to resume from seq 0."""
    a = await open_tab(browser, conversation_id, on=on)
    try:
        await send(a, "[[offline words=150 pace_ms=10]] Another answer.")
        await a.deltas(5, limit_s=20)
        c = await open_tab(browser, conversation_id, not_on=a.upstream)
        try:
            await c.send({"type": "resume", "after_seq": 0})
            await a.frames_until({"done", "error"}, limit_s=20)
            message_id = next(f for f in reversed(a.received) if f["type"] == "start")["message_id"]
            full_text = a.reply_text(message_id)
            await c.frames_until({"done", "error"}, limit_s=20, message_id=message_id)
        finally:
            await c.close()
    finally:
        await a.close()
    frames = c.received
    mine = [f for f in frames if f.get("message_id") == message_id and f["type"] == "delta"]
    others = {f.get("message_id") for f in frames if f.get("message_id") not in (None, message_id)}
    seqs = [f["seq"] for f in mine]
    text = "".join(f["text"] for f in mine)
    check(
        seqs == list(range(1, len(seqs) + 1)) and text == full_text and not others,
        f"{label}: tab C on Daphne {c.upstream} resumed reply {message_id} (running on "
        f"{a.upstream}) with deltas 1..{len(seqs)}, {len(text.split())} of "
        f"{len(full_text.split())} words"
        + (f"; it also got frames of reply {sorted(others)}" if others else ""),
    )


async def check_sockets(browser: Browser, first: int, second: int) -> list[str]:
    failures = []
    reply_process = await check_stop(browser, first)
    try:
        await check_resume(browser, second, on=None, label="resume across processes")
    except CheckFailed as exc:
        failures.append(str(exc))
    try:
        # The same, in a conversation whose previous reply (stopped above) finished less than
        # STREAM_REPLAY_KEEP_S ago in the same process.
        await check_resume(
            browser,
            first,
            on=reply_process,
            label="resume across processes, after an earlier reply",
        )
    except CheckFailed as exc:
        failures.append(str(exc))
    return failures


def check_static(base: str) -> None:
    browser = Browser(base)  # logged out: the login page links the stylesheet
    _, _, page = browser.request("GET", "/login/")
    found = re.search(r'(/static/[^"]+\.[0-9a-f]{12}\.css)', page)
    check(found is not None, "the page links hashed static files (collectstatic, manifest)")
    status, headers, _ = browser.request("GET", found.group(1))
    cache = headers.get("Cache-Control", "")
    check(
        status == 200 and "max-age" in cache,
        f"{found.group(1)} through nginx: {status}, Cache-Control: {cache}",
    )


# --- the topology, when we start it ------------------------------------------------------------


def create_user(database_url: str) -> None:
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        DEMO_USERNAME=USERNAME,
        DEMO_PASSWORD=PASSWORD,
        DJANGO_SETTINGS_MODULE="claudeweb.settings",
        ANTHROPIC_API_KEY="unused-here",  # the system checks want one
    )
    subprocess.run(
        [relay.PY, str(ROOT / "manage.py"), "ensure_demo_user"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def run(args: argparse.Namespace) -> list[str]:
    """Runs every check; stops at the first failure except the resume ones, which it returns."""
    if args.url:
        browser = Browser(args.url)
        browser.login(args.username, args.password)
        failures = asyncio.run(
            check_sockets(browser, browser.new_conversation(), browser.new_conversation())
        )
        check_static(browser.base)
        return failures
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("DATABASE_URL must name PostgreSQL: . .run/services/env")
    logdir = Path(tempfile.mkdtemp(prefix="topology-check-"))
    database_url = relay.recreate_database(server_url, CHECK_DB)
    redis, redis_url = relay.start_redis(logdir)
    port = relay.free_port()
    env = dict(
        os.environ,
        PROD_DIR=str(logdir / "prod"),
        PROD_PORT=str(port),
        PROD_WORKERS="2",
        PROD_DATABASE_URL=database_url,
        PROD_REDIS_URL=redis_url,
        PROD_SKIP_DEMO_USER="1",
    )
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("ANTHROPIC_BASE_URL", None)
    prod = [str(ROOT / "scripts" / "prod.sh")]
    try:
        t0 = time.monotonic()
        out = subprocess.run(
            [*prod, "start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise CheckFailed(f"scripts/prod.sh start failed:\n{out.stdout}{out.stderr}")
        check(
            True,
            f"scripts/prod.sh start: nginx on :{port}, 2 Daphne processes "
            f"({time.monotonic() - t0:.1f} s)",
        )
        create_user(database_url)
        browser = Browser(f"http://127.0.0.1:{port}")
        browser.login(USERNAME, PASSWORD)
        failures = asyncio.run(
            check_sockets(browser, browser.new_conversation(), browser.new_conversation())
        )
        check_static(browser.base)
        return failures
    finally:
        subprocess.run([*prod, "stop"], env=env, cwd=ROOT, capture_output=True, timeout=60)
        redis.stop()
        with contextlib.suppress(Exception):
            relay.recreate_database(server_url, CHECK_DB, drop_only=True)
        print(f"  logs: {logdir}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running topology (scripts/prod.sh start)")
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default="demo-password-change-me")
    parser.add_argument("--timeout", type=int, default=120)
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, relay._stop)
    signal.signal(signal.SIGTERM, relay._stop)
    signal.alarm(args.timeout)
    t0 = time.monotonic()
    try:
        failures = run(args)
    except (CheckFailed, relay.Stop) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"all checks passed in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
