"""Real processes on loopback for the tests: the app under Daphne, the offline Claude, Redis.

Each starts on a free 127.0.0.1 port, is waited for until it answers, and is stopped by its user.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


def _admin(url: str, *statements: str) -> None:
    """Run statements on the server's `postgres` database (outside the one `url` names)."""
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres")).replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as c:
        for statement in statements:
            c.execute(statement)


def fresh_database(name: str, tmp: Path) -> str:
    """An empty database for a served app: on the PostgreSQL server DATABASE_URL names, else a
    SQLite file in `tmp`."""
    url = os.environ.get("DATABASE_URL", "")
    if not is_postgres(url):
        return f"sqlite:///{tmp / (name + '.sqlite3')}"
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def drop_database(url: str) -> None:
    if is_postgres(url):
        _admin(url, f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


def app_environment(*, database_url: str, claude_url: str, **extra: str) -> dict[str, str]:
    """The environment of a served app talking to the offline Claude."""
    return dict(
        os.environ,
        DJANGO_DEBUG="true",
        DATABASE_URL=database_url,
        ANTHROPIC_BASE_URL=claude_url,
        ANTHROPIC_API_KEY="test-key",
        CLAUDE_MAX_RETRIES="0",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        **extra,
    )


class AppServer:
    """An ASGI app served by `python -m claudeweb.server` (Daphne) in a subprocess.

    `start()` picks a free port and returns once `ready_path` answers; `stop()` ends the process
    (SIGTERM, then SIGKILL), `kill()` kills it at once. Each start logs to a file of its own in
    `tmp`. `manage()` and `query()` run `manage.py` with the same environment.
    """

    def __init__(
        self,
        env: dict[str, str],
        tmp: Path,
        *,
        app: str = "claudeweb.asgi:application",
        ready_path: str = "/login/",
    ) -> None:
        self.env = env
        self.tmp = tmp
        self.app = app
        self.ready_path = ready_path
        self.proc: subprocess.Popen | None = None
        self.daphne_args: tuple[str, ...] = ()  # e.g. ("--proxy-headers",), before start()
        self.port = 0
        self.logs: list[Path] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str, code: str | None = None) -> str:
        cmd = [sys.executable, str(ROOT / "manage.py"), *args]
        if code is not None:
            cmd += ["-c", code]
        out = subprocess.run(
            cmd, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    def query(self, code: str):
        """Run Python in `manage.py shell`; its last printed line, as JSON."""
        return json.loads(self.manage("shell", code=code).strip().splitlines()[-1])

    def start(self, port: int = 0) -> None:
        """`port`: one picked beforehand (e.g. registered at the test OpenID provider)."""
        self.port = port or free_port()
        log = self.tmp / f"daphne-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "claudeweb.server",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    *self.daphne_args,
                    self.app,
                ],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(self.url + self.ready_path, timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(log.read_text()) from None
                time.sleep(0.1)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs)


@contextmanager
def offline_claude(*, stderr: IO[str] | None = None) -> Iterator[str]:
    """`python -m offline_claude --port 0` (it picks a free port and prints its URL); yields the
    base URL. Small cache minimum and pace, so tests run fast."""
    env = dict(os.environ, OFFLINE_CLAUDE_CACHE_MIN_TOKENS="50", OFFLINE_CLAUDE_PACE_MS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline_claude", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=15)
        assert lines and lines[0].startswith("offline-claude listening on http://127.0.0.1:"), (
            f"offline Claude did not start: {lines!r}"
        )
        yield lines[0].split()[-1]
    finally:
        end_process(proc)


def end_process(proc: subprocess.Popen) -> None:
    """Stop a helper server: SIGTERM, then SIGKILL after 10 s; its output pipe closed."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class RedisServer:
    """A redis-server of a test's own, on a free port, that the test can kill and restart."""

    def __init__(self, tmp: Path) -> None:
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


# --- a served app's socket, through the `websockets` client ----------------------------------------


def ws_connect(app: AppServer, seed: dict):
    """The conversation `seed` names, as the user whose session it holds."""
    from websockets.asyncio.client import connect

    return connect(
        f"ws://127.0.0.1:{app.port}/ws/conversations/{seed['conversation']}/",
        additional_headers={"Cookie": f"sessionid={seed['session']}", "Origin": app.url},
        open_timeout=10,
        max_size=2**22,
    )


async def ws_recv(ws, timeout: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def ws_until(ws, *types: str, timeout: float = 20) -> list[dict]:
    frames = []
    deadline = time.monotonic() + timeout
    while True:
        frame = await ws_recv(ws, max(0.1, deadline - time.monotonic()))
        frames.append(frame)
        if frame["type"] in types:
            return frames
