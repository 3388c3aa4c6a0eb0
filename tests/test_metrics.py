"""/metrics: who may read it, and what a reply through the socket does to each metric.

Values are read from the exposition text the endpoint serves, before and after; assertions are
on the differences (other tests in the process move the same counters).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import AsyncClient, Client
from prometheus_client.parser import text_string_to_metric_families

from chat.models import ApiCall
from tests.conftest import open_socket, recv_until, send_and_wait, send_frame

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-token-for-the-tests-0123456789"
MODEL = "claude-sonnet-4-6"  # the suite's default model (tests/conftest.py)


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) → value, from an exposition."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict, name: str, **labels) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


# --- who may read it --------------------------------------------------------------------------


@pytest.fixture
def metrics_settings(settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_ADDRESSES = []
    settings.PROMETHEUS_MULTIPROC_DIR = ""
    return settings


def test_it_is_off_without_a_token_or_an_allow_list(metrics_settings):
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 404


def test_the_right_token_reads_it(metrics_settings):
    metrics_settings.METRICS_TOKEN = TOKEN
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "no-cache" in response["Cache-Control"]
    assert b"claudeweb_replies_in_flight" in response.content


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        f"Basic {TOKEN}",
        TOKEN,
    ],
    ids=["missing", "empty", "longer", "shorter", "blank", "other-scheme", "no-scheme"],
)
def test_a_wrong_or_missing_token_is_refused_as_not_found(metrics_settings, authorization):
    metrics_settings.METRICS_TOKEN = TOKEN
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    assert Client().get("/metrics", **headers).status_code == 404


@pytest.mark.parametrize(
    ("address", "status"),
    [("10.1.2.3", 200), ("192.168.1.9", 200), ("192.168.2.9", 404), ("127.0.0.1", 404)],
)
def test_an_address_in_the_allow_list_reads_it_without_a_token(metrics_settings, address, status):
    import ipaddress

    metrics_settings.METRICS_ALLOWED_ADDRESSES = [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.0/24"),
    ]
    assert Client(REMOTE_ADDR=address).get("/metrics").status_code == status


def test_an_address_outside_the_list_still_gets_in_with_the_token(metrics_settings):
    import ipaddress

    metrics_settings.METRICS_TOKEN = TOKEN
    metrics_settings.METRICS_ALLOWED_ADDRESSES = [ipaddress.ip_network("10.0.0.0/8")]
    outside = Client(REMOTE_ADDR="203.0.113.7")
    assert outside.get("/metrics").status_code == 404
    assert outside.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_it_takes_only_get_and_head(metrics_settings):
    metrics_settings.METRICS_TOKEN = TOKEN
    assert Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("METRICS_TOKEN", "short"), ("METRICS_ALLOWED_ADDRESSES", "10.0.0.1/8")],
)
def test_bad_settings_fail_loudly_at_start(variable, raw):
    env = {**os.environ, variable: raw}
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "DJANGO_SETTINGS_MODULE": "claudeweb.settings"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr and variable in out.stderr


# --- a reply moves every metric ---------------------------------------------------------------


async def scrape() -> dict:
    response = await AsyncClient().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return samples(response.content.decode())


async def wait_for(predicate, timeout: float = 10.0) -> dict:
    """Scrape until `predicate(values)` holds (bounded); the last values."""
    deadline = time.monotonic() + timeout
    while True:
        values = await scrape()
        if predicate(values) or time.monotonic() > deadline:
            return values
        await __import__("asyncio").sleep(0.05)


@pytest.mark.django_db(transaction=True)
async def test_a_reply_through_the_socket_moves_each_metric(
    metrics_settings, alice, titled_conversation, finish_replies
):
    metrics_settings.METRICS_TOKEN = TOKEN
    before = await scrape()
    in_flight = value(before, "claudeweb_replies_in_flight")
    sockets = value(before, "claudeweb_sockets_open")

    async with open_socket(titled_conversation.pk, alice) as ws:
        opened = await scrape()
        assert value(opened, "claudeweb_sockets_open") == sockets + 1

        # The model waits before its first event: the reply is in flight meanwhile.
        await ws.send_json_to(send_frame("Count the hours. [[offline words=40 first_ms=800]]"))
        await recv_until(ws, "start")
        streaming = await scrape()
        assert value(streaming, "claudeweb_replies_in_flight") == in_flight + 1
        frames = await recv_until(ws, "done", "error")
        assert frames[-1]["type"] == "done", frames[-1]
        deltas = [f for f in frames if f["type"] == "delta"]

        after = await wait_for(
            lambda v: (
                value(v, "claudeweb_replies_in_flight") == in_flight
                and value(v, "claudeweb_ledger_tokens_total", model=MODEL, kind="output")
                > value(before, "claudeweb_ledger_tokens_total", model=MODEL, kind="output")
            )
        )
        assert value(after, "claudeweb_replies_in_flight") == in_flight

        # A failing call: counted by its error code.
        failed = await send_and_wait(ws, "Again. [[offline status=529]]")
        assert failed[-1]["type"] == "error"
        code = failed[-1]["code"]
        errored = await scrape()

    closed = await wait_for(lambda v: value(v, "claudeweb_sockets_open") == sockets)
    assert value(closed, "claudeweb_sockets_open") == sockets

    def moved(name: str, values=after, **labels) -> float:
        return value(values, name, **labels) - value(before, name, **labels)

    # 40 words arrive as 40 text deltas; tabs get them coalesced into fewer frames.
    assert moved("claudeweb_deltas_relayed_total") == 40
    assert 1 <= len(deltas) <= 40
    assert moved("claudeweb_time_to_first_token_seconds_count", model=MODEL) == 1
    # It waited 800 ms before its first event: the observation is in a bucket above that.
    assert moved("claudeweb_time_to_first_token_seconds_bucket", model=MODEL, le="0.75") == 0
    assert moved("claudeweb_time_to_first_token_seconds_sum", model=MODEL) >= 0.8
    assert moved("claudeweb_upstream_errors_total", values=errored, code=code) == 1

    # The ledger's counters move by exactly the reply's ledger row.
    row = await ApiCall.objects.filter(conversation=titled_conversation).order_by("id").afirst()
    assert row.output_tokens > 0 and row.input_tokens > 0
    for kind, tokens in [
        ("input", row.input_tokens),
        ("output", row.output_tokens),
        ("cache_read", row.cache_read_tokens),
        ("cache_write", row.cache_write_5m_tokens + row.cache_write_1h_tokens),
    ]:
        assert moved("claudeweb_ledger_tokens_total", model=MODEL, kind=kind) == tokens, kind
    dollars = sum(
        moved("claudeweb_ledger_cost_dollars_total", model=MODEL, kind=kind)
        for kind in ("input", "output", "cache_read", "cache_write", "web_search")
    )
    assert Decimal(str(dollars)).quantize(Decimal("0.00000001")) == row.cost
    assert moved("claudeweb_ledger_cost_dollars_total", model=MODEL, kind="output") > 0


# --- several processes ------------------------------------------------------------------------

WORKER = """
import os, sys
from chat.telemetry import metrics
metrics.DELTAS_RELAYED.inc(int(sys.argv[1]))
metrics.SOCKETS_OPEN.inc()
print("ready", flush=True)
sys.stdin.readline()  # until the test kills it
"""


def test_with_a_multiprocess_dir_it_adds_up_every_process_and_forgets_dead_ones_gauges(
    metrics_settings, tmp_path
):
    metrics_settings.METRICS_TOKEN = TOKEN
    metrics_settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in (3, 4)
    ]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"

        def read() -> dict:
            response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
            assert response.status_code == 200
            return samples(response.content.decode())

        both = read()
        assert value(both, "claudeweb_deltas_relayed_total") == 7
        assert value(both, "claudeweb_sockets_open") == 2

        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        one_left = read()
        # The dead process's counter stays; its open sockets are gone with it.
        assert value(one_left, "claudeweb_deltas_relayed_total") == 7
        assert value(one_left, "claudeweb_sockets_open") == 1
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(timeout=10)


@pytest.mark.django_db(transaction=True)
def test_the_ledger_counters_add_up_to_the_row_s_cost_with_compaction_and_searches(
    metrics_settings, alice
):
    """Each part at its own prices (a compaction iteration at its prompt's tier), searches as
    their own kind; tokens of every kind, both cache write lifetimes as one."""
    from chat.claude.records import CallRecord, Usage
    from chat.ledger import entries

    model = "claude-haiku-5-5"  # tiered by prompt size: the compaction part is priced apart
    record = CallRecord(
        model=model,
        usage=Usage(
            input_tokens=1_200,
            output_tokens=800,
            cache_write_5m_tokens=300,
            cache_write_1h_tokens=50,
            cache_read_tokens=4_000,
            web_search_requests=3,
        ),
        compaction=Usage(input_tokens=150_000, output_tokens=2_000, cache_read_tokens=10_000),
    )
    metrics_settings.METRICS_TOKEN = TOKEN

    def read() -> dict:
        response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        return samples(response.content.decode())

    before = read()
    entries.record_calls(calls=[record], user_id=alice.pk, conversation_id=None, message_id=None)
    after = read()
    row = ApiCall.objects.get(user=alice)
    assert row.prices.get("compaction"), "the row keeps the compaction part apart"

    def moved(name: str, kind: str) -> float:
        labels = {"model": model, "kind": kind}
        return value(after, name, **labels) - value(before, name, **labels)

    tokens = "claudeweb_ledger_tokens_total"
    assert moved(tokens, "input") == 151_200
    assert moved(tokens, "output") == 2_800
    assert moved(tokens, "cache_read") == 14_000
    assert moved(tokens, "cache_write") == 350
    kinds = ("input", "output", "cache_read", "cache_write", "web_search")
    dollars = sum(moved("claudeweb_ledger_cost_dollars_total", kind) for kind in kinds)
    assert Decimal(str(dollars)).quantize(Decimal("0.00000001")) == row.cost
    assert moved("claudeweb_ledger_cost_dollars_total", "web_search") > 0
