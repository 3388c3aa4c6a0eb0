"""Error reports reach Sentry (a real sentry-sdk client, sending to a server on loopback that
records the envelopes), from views, the socket and reply tasks, without the users' words."""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sentry_sdk
from django.test import Client

from claudeweb import error_reports
from tests.conftest import open_socket, run_turn, send_and_wait

SECRET = "Ultramarine-heron-4417 is my bank password"
FILE_NAME = "payroll-ultramarine-4417.pdf"


class Recorder:
    """What the SDK posted: each envelope's text and its event items."""

    def __init__(self) -> None:
        self.envelopes: list[str] = []
        self.lock = threading.Lock()

    def events(self) -> list[dict]:
        found = []
        with self.lock:
            for text in self.envelopes:
                lines = text.split("\n")
                for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                    if json.loads(header).get("type") == "event":
                        found.append(json.loads(payload))
        return found

    def wait_for_event(self, predicate, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sentry_sdk.flush(timeout=2)
            for event in self.events():
                if predicate(event):
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no such event; got {self.events()}")

    def everything(self) -> str:
        with self.lock:
            return "\n".join(self.envelopes)


@pytest.fixture
def sentry():
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding:
                raise AssertionError(f"unexpected Content-Encoding {encoding}")
            with recorder.lock:
                recorder.envelopes.append(body.decode())
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    error_reports.init(f"http://publickey@127.0.0.1:{server.server_port}/1", environment="test")
    yield recorder
    sentry_sdk.flush(timeout=2)
    sentry_sdk.get_client().close()
    sentry_sdk.init(dsn=None)
    server.shutdown()
    server.server_close()


def assert_no_words(recorder: Recorder) -> None:
    everything = recorder.everything()
    for words in (SECRET, "Ultramarine", FILE_NAME):
        assert words not in everything


@pytest.mark.django_db
def test_a_failing_view_is_reported_without_the_text_it_was_sent(sentry, settings, alice):
    settings.ROOT_URLCONF = "tests.support.failing_urls"
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    response = client.post("/fail/?q=Ultramarine", {"text": SECRET, "file": FILE_NAME})
    assert response.status_code == 500

    event = sentry.wait_for_event(lambda e: "exception" in e)
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == error_reports.FILTERED
    frames = exception["stacktrace"]["frames"]
    assert frames[-1]["function"] == "fail"
    assert all("vars" not in frame for frame in frames)
    # (Under the test client the SDK knows no URL or method; under Daphne it does, and
    # scrub() keeps them without the query string: the scrubber's own test below.)
    assert "data" not in event.get("request", {})
    crumbs = [c.get("message") for c in event["breadcrumbs"]["values"]]
    assert "handling %s" in crumbs  # the log line's format, not its text
    assert_no_words(sentry)


@pytest.mark.django_db(transaction=True)
async def test_a_failing_reply_task_is_reported_without_the_conversation(
    sentry, monkeypatch, alice, titled_conversation, finish_replies
):
    from chat.claude import request_body

    def fail(history, blocks):
        raise RuntimeError(f"cannot build a request from {history!r}")

    monkeypatch.setattr(request_body, "round_messages", fail)
    frames = await run_turn(alice, titled_conversation, SECRET)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "internal_error"

    event = sentry.wait_for_event(lambda e: e.get("logger") == "chat.replies.runner")
    assert event["level"] == "error"
    assert event["logentry"]["message"] == "reply %s failed"
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["stacktrace"]["frames"][-1]["function"] == "fail"
    assert_no_words(sentry)


@pytest.mark.django_db(transaction=True)
async def test_a_fault_in_the_socket_is_reported_without_the_frame(
    sentry, monkeypatch, alice, titled_conversation, finish_replies
):
    from chat.replies import starting

    def fail(**kwargs):
        raise RuntimeError(f"cannot start a reply to {kwargs['text']}")

    monkeypatch.setattr(starting, "send", fail)
    async with open_socket(titled_conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, SECRET, until=("error",))
    assert frames[-1]["code"] == "internal_error"

    event = sentry.wait_for_event(lambda e: e.get("logger") == "chat.replies.consumers")
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert_no_words(sentry)


def test_the_scrubber_drops_every_value_that_can_hold_text():
    event = {
        "message": SECRET,
        "logentry": {"message": "reply %s text %r", "params": [1, SECRET], "formatted": SECRET},
        "request": {
            "url": f"https://chat.example.com/c/1/?q={SECRET}",
            "method": "POST",
            "data": {"text": SECRET},
            "query_string": f"q={SECRET}",
            "cookies": {"sessionid": "abc"},
            "headers": {"User-Agent": "Firefox", "X-Title": SECRET, "Cookie": "sessionid=abc"},
        },
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": SECRET,
                    "stacktrace": {"frames": [{"function": "f", "vars": {"text": SECRET}}]},
                }
            ]
        },
        "threads": {"values": [{"stacktrace": {"frames": [{"vars": {"prompt": SECRET}}]}}]},
        "breadcrumbs": {
            "values": [
                {"type": "log", "message": "saved %s", "data": {"text": SECRET}},
                {"type": "default", "category": "query", "message": SECRET},
            ]
        },
        "extra": {"text": SECRET},
        "user": {"username": "alice"},
        "contexts": {"runtime": {"name": "CPython"}, "reply": {"text": SECRET}},
    }
    scrubbed = error_reports.scrub(event)
    assert scrubbed["request"] == {
        "method": "POST",
        "url": "https://chat.example.com/c/1/",
        "headers": {"User-Agent": "Firefox"},
    }
    assert SECRET not in json.dumps(scrubbed)
    assert scrubbed["logentry"]["message"] == "reply %s text %r"
    assert scrubbed["exception"]["values"][0]["type"] == "ValueError"
    assert scrubbed["contexts"] == {"runtime": {"name": "CPython"}}
    assert "user" not in scrubbed
