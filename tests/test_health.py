"""/healthz and /readyz: without login, cheap, and /readyz names what is down."""

from __future__ import annotations

import socket
import time

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def anonymous() -> Client:
    return Client()


def test_healthz_answers_without_login(anonymous):
    response = anonymous.get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_take_only_get_and_head(anonymous, path):
    assert anonymous.post(path).status_code == 405
    assert anonymous.head(path).status_code in (200, 503)


def test_readyz_is_ready_when_database_redis_and_s3_answer(anonymous, settings, private_redis):
    settings.REDIS_URL = private_redis.url
    response = anonymous.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "ready": True,
        "checks": {"database": "ok", "channel_layer": "ok", "storage": "ok"},
        "failed": [],
    }


def test_readyz_answers_503_while_redis_is_stopped_and_200_again_after(
    anonymous, settings, private_redis
):
    settings.REDIS_URL = private_redis.url
    assert anonymous.get("/readyz").status_code == 200
    private_redis.kill()
    down = anonymous.get("/readyz")
    assert down.status_code == 503
    assert down.json()["failed"] == ["channel_layer"]
    assert down.json()["checks"]["channel_layer"] == "ConnectionError"
    private_redis.start()
    assert anonymous.get("/readyz").status_code == 200


def test_a_hung_dependency_costs_the_probe_its_timeout_not_more(anonymous, settings):
    # A "Redis" that accepts connections and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = time.monotonic()
        response = anonymous.get("/readyz")
        took = time.monotonic() - started
    assert response.status_code == 503 and response.json()["failed"] == ["channel_layer"]
    assert took < 2 * 2.0  # CHECK_TIMEOUT_S, with room for a loaded machine
