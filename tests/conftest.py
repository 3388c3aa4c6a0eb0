"""Shared fixtures: users, conversations, the offline Claude and the app as real servers on
loopback, socket helpers."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from tests.suites import pytest_terminal_summary  # noqa: F401  (a summary line per suite)
from tests.support.servers import (
    AppServer,
    RedisServer,
    app_environment,
    drop_database,
    fresh_database,
    offline_claude,
)

ORIGIN = (b"origin", b"http://localhost")
FRAME_TIMEOUT_S = 10


@pytest.fixture(scope="session")
def offline_claude_url() -> Iterator[str]:
    """The offline Claude started as a subprocess on a free loopback port."""
    with offline_claude() as url:
        yield url


@pytest.fixture(autouse=True)
def _claude_settings(request):
    """Every Django test talks to the offline Claude through the real SDK, without retries."""
    if not request.config.pluginmanager.has_plugin("django"):
        yield
        return
    from chat.claude.client import reset_clients

    settings = request.getfixturevalue("settings")
    offline_claude_url = request.getfixturevalue("offline_claude_url")
    settings.ANTHROPIC_BASE_URL = offline_claude_url
    settings.ANTHROPIC_API_KEY = "test-key"
    settings.CLAUDE_MAX_RETRIES = 0
    settings.CLAUDE_READ_TIMEOUT_S = 5.0
    settings.STREAM_REPLAY_KEEP_S = 60.0
    # The suite's exact figures (output tokens, words before max_tokens, block order) are those
    # of a model that does not think unasked; the default (Sonnet 5.5) always thinks, and thinking
    # has tests of its own (test_continue_and_thinking.py, test_thinking_*.py), which name the
    # models they use.
    settings.CLAUDE_DEFAULT_MODEL = "claude-sonnet-4-6"
    reset_clients()
    yield
    reset_clients()


@pytest.fixture
def offline_requests(offline_claude_url):
    """Read (and clear) what the offline Claude received."""

    class Recorder:
        def clear(self) -> None:
            req = urllib.request.Request(offline_claude_url + "/_offline/requests", method="DELETE")
            urllib.request.urlopen(req, timeout=5).read()

        def everything(self) -> list[dict]:
            with urllib.request.urlopen(offline_claude_url + "/_offline/requests", timeout=5) as r:
                return [rec for rec in json.load(r) if rec["path"] == "/v1/messages"]

        def all(self) -> list[dict]:
            """The reply requests (streamed); titles and summaries are not streamed."""
            return [rec for rec in self.everything() if rec["body"].get("stream")]

        def side(self) -> list[dict]:
            return [rec for rec in self.everything() if not rec["body"].get("stream")]

    recorder = Recorder()
    recorder.clear()
    return recorder


def make_user(username: str, **extra):
    return get_user_model().objects.create_user(
        username=username, password=f"{username}-password-123", **extra
    )


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def conversation(alice):
    """Alice's new conversation, untitled: its first reply is followed by a background title call."""
    from chat.conversations import lifecycle

    return lifecycle.conversation_create(owner=alice)


@pytest.fixture
def titled_conversation(alice):
    """Alice's conversation, already named: no background title call follows its first reply."""
    from chat.conversations import lifecycle

    conversation = lifecycle.conversation_create(owner=alice)
    conversation.title = "Named"
    conversation.save()
    return conversation


@pytest.fixture(scope="module")
def s3():
    """A client of the S3 that AWS_S3_ENDPOINT_URL names (the local one in tests)."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=os.environ.get("AWS_S3_ENDPOINT_URL"), region_name="us-east-1"
    )


@pytest.fixture
def staff(db):
    return make_user("charlie", is_staff=True)


@pytest.fixture
def superuser(db):
    return make_user("root", is_staff=True, is_superuser=True)


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@asynccontextmanager
async def open_socket(conversation_id: int, user=None, *, origin=ORIGIN, connect=True):
    """A connected WebsocketCommunicator on the real ASGI stack (origin and login checked)."""
    from claudeweb.asgi import application

    headers = [origin] if origin else []
    if user is not None:
        headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
    comm = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation_id}/", headers=headers
    )
    try:
        if connect:
            connected, _ = await comm.connect(timeout=FRAME_TIMEOUT_S)
            assert connected
        yield comm
    finally:
        await comm.disconnect()


async def recv(comm: WebsocketCommunicator, timeout: float = FRAME_TIMEOUT_S) -> dict:
    return await comm.receive_json_from(timeout=timeout)


async def recv_until(comm, *types: str, timeout: float = FRAME_TIMEOUT_S) -> list[dict]:
    """Frames up to and including the first whose type is one of `types`."""
    frames = []
    while True:
        frame = await recv(comm, timeout)
        frames.append(frame)
        if frame["type"] in types:
            return frames


def send_frame(text: str, **fields) -> dict:
    """A `send` frame with a fresh client_id; `fields` add to it or replace its defaults."""
    return {"type": "send", "client_id": str(uuid.uuid4()), "text": text, **fields}


async def send_and_wait(
    ws, text: str, *, until=("done", "error"), timeout: float = FRAME_TIMEOUT_S, **fields
) -> list[dict]:
    """Send `text` on an open socket; the frames up to the first of type `until` (done or error)."""
    await ws.send_json_to(send_frame(text, **fields))
    return await recv_until(ws, *until, timeout=timeout)


async def run_turn(user, conversation, text: str, **wait) -> list[dict]:
    """One turn on a socket of its own: open it as `user`, send and wait (see send_and_wait)."""
    async with open_socket(conversation.pk, user) as ws:
        return await send_and_wait(ws, text, **wait)


@pytest.fixture
async def finish_replies():
    """Stop and await replies still running when a test ends, so none leaks into the next."""
    yield
    from chat.replies import runner, titles

    await titles.wait_for_background()
    await runner.stop_local_replies()
    # The socket thread's database connection must not outlive the test (teardown drops the DB).
    from channels.db import database_sync_to_async
    from django.db import connections

    await database_sync_to_async(connections.close_all)()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Close connections after each use, so the socket thread's one does not outlive a test."""
    from django.conf import settings

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


# --- the app served by Daphne in a subprocess -------------------------------------------------------

SEED = """
import json
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from chat.conversations import lifecycle
user = get_user_model().objects.create_user("fay", password="fay-password-123")
conversation = lifecycle.conversation_create(owner=user)
session = SessionStore()
session["_auth_user_id"] = str(user.pk)
session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = user.get_session_auth_hash()
session.create()
print(json.dumps({"session": session.session_key, "conversation": conversation.pk}))
"""


@pytest.fixture
def app_factory(offline_claude_url):
    """Makes AppServers (each with a fresh database, migrated and seeded with a user, a session
    and a conversation: `seed`), not yet started; stops them and drops their databases after."""
    made: list[tuple[AppServer, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="claudeweb-faults-"))

    def make(**extra_env: str) -> tuple[AppServer, dict]:
        name = f"claudeweb_faults_{os.getpid()}_{len(made)}"
        db_url = fresh_database(name, tmp)
        env = app_environment(
            database_url=db_url,
            claude_url=offline_claude_url,
            STREAM_STALE_S="2",
            LOG_LEVEL="INFO",
            **extra_env,
        )
        app = AppServer(env, tmp)
        made.append((app, db_url))
        app.manage("migrate", "-v", "0")
        seed = app.query(SEED)
        return app, seed

    yield make
    for app, db_url in made:
        app.stop()
        with suppress(Exception):  # best effort
            drop_database(db_url)
    if os.environ.get("FAULTS_KEEP_LOGS"):
        print(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def private_redis():
    """A Redis of the test's own: the pub/sub channel layer's channels are server-wide (not per
    database number), so apps sharing a Redis server hear each other's conversation groups."""
    if not shutil.which("redis-server"):
        pytest.fail("needs redis-server")
    tmp = Path(tempfile.mkdtemp(prefix="claudeweb-redis-"))
    redis = RedisServer(tmp)
    redis.start()
    yield redis
    redis.kill()
    shutil.rmtree(tmp, ignore_errors=True)
