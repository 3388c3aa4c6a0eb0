"""LOG_FORMAT=json: one JSON object per line, with the request's and conversation's ids."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from claudeweb.logs import ContextFilter, JsonFormatter
from tests.conftest import run_turn

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def json_lines():
    """The root logger also writes through the JSON formatter and the ids filter that
    LOG_FORMAT=json configures; returns a function that parses what was written."""
    import claudeweb.asgi  # noqa: F401  (its django.setup() configures logging anew: first)

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    root.removeHandler(handler)


def test_with_log_format_json_every_line_is_a_json_object_with_its_keys():
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('claudeweb.example').warning('disk %s at %d%%', 'sda', 93); "
        "logging.getLogger('claudeweb.example').error('failed', exc_info=ValueError('bad'))"
    )
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "claudeweb.settings"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["level"] == "WARNING" and first["logger"] == "claudeweb.example"
    assert first["message"] == "disk sda at 93%"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["level"] == "ERROR" and second["exception"].endswith("ValueError: bad")


def test_a_bad_log_format_stops_startup():
    env = {**os.environ, "LOG_FORMAT": "yaml", "DJANGO_SETTINGS_MODULE": "claudeweb.settings"}
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "LOG_FORMAT" in out.stderr


@pytest.mark.django_db
def test_a_request_s_lines_carry_its_id_and_its_conversation(json_lines, alice):
    client = Client()
    client.force_login(alice)
    response = client.get("/c/987654/")  # no such conversation: Django logs "Not Found"
    assert response.status_code == 404
    request_id = response["X-Request-ID"]
    (line,) = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["request_id"] == request_id
    assert line["conversation_id"] == 987654
    assert line["message"] == "Not Found: /c/987654/"


@pytest.mark.django_db
def test_a_well_formed_request_id_from_the_proxy_is_kept_and_a_bad_one_replaced(json_lines):
    kept = Client().get("/nowhere/", HTTP_X_REQUEST_ID="0123456789abcdef0123")
    assert kept["X-Request-ID"] == "0123456789abcdef0123"
    replaced = Client().get("/nowhere/", HTTP_X_REQUEST_ID="bad id\nwith a line")
    assert replaced["X-Request-ID"] != "bad id\nwith a line"
    assert len(replaced["X-Request-ID"]) == 32
    ids = [line.get("request_id") for line in json_lines() if line["logger"] == "django.request"]
    assert ids == ["0123456789abcdef0123", replaced["X-Request-ID"]]


@pytest.mark.django_db(transaction=True)
async def test_a_reply_s_lines_carry_its_conversation(json_lines, alice, titled_conversation):
    from chat.replies import runner

    frames = await run_turn(alice, titled_conversation, "Hello there.")
    assert frames[-1]["type"] == "done"
    await runner.stop_local_replies()
    calls = [line for line in json_lines() if line["message"].startswith("api_call ")]
    assert calls, json_lines()
    assert all(line["conversation_id"] == titled_conversation.pk for line in calls)
    assert "request_id" not in calls[0]  # a socket's reply belongs to no HTTP request
