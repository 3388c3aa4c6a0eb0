"""The model catalogue: today's models, their prices applied to each call, retired ids, the
opaque user id sent with every request, and `check_models` against GET /v1/models."""

from __future__ import annotations

import asyncio
import io
import json
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.checks import run_checks
from django.core.management import call_command
from django.urls import reverse

from chat.claude import catalogue
from chat.claude.client import ServedModel, list_models
from chat.claude.records import CallRecord, Usage
from chat.claude.served import compare
from chat.conversations import lifecycle, preferences
from chat.ledger import budgets, entries
from chat.models import ApiCall, Conversation
from tests.conftest import open_socket, recv_until, send_frame

MTOK = Decimal(1_000_000)
RETIRED = "claude-3-opus-20240229"
OFFICIAL = ("https://platform.claude.com/docs/", "https://www.anthropic.com/")


def ledger_row(model: str, **usage: int) -> ApiCall:
    """A call recorded through the ledger (entries.record_calls), as a reply's is."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="alice")
    record = CallRecord(model=model, purpose=ApiCall.Purpose.REPLY)
    record.usage = Usage(**usage)
    entries.record_calls(calls=[record], user_id=user.pk, conversation_id=None, message_id=None)
    return ApiCall.objects.latest("id")


# --- the data ----------------------------------------------------------------------------------


def test_every_row_says_where_and_when_its_figures_were_read():
    models = catalogue.all_models()
    assert {m.id for m in models} >= {
        "claude-opus-5-5",
        "claude-sonnet-5-5",
        "claude-haiku-5-5",
        "claude-fable-5-2",
        "claude-sonnet-4-6",
        "claude-opus-4-7",
        "claude-haiku-4-5",
    }
    for m in models:
        assert m.source.startswith(OFFICIAL), m.id
        assert m.web_search_source.startswith(OFFICIAL), m.id
        assert m.checked == "2026-12-07", m.id
        assert m.thinking in catalogue.THINKING_KINDS
        assert set(m.effort_levels) <= set(catalogue.EFFORT_LEVELS)
        assert not m.default_effort or m.default_effort in m.effort_levels


def test_web_search_is_ten_dollars_per_1000_searches_on_every_model():
    # The web search tool page prices searches per 1,000, the same for every model.
    for m in catalogue.all_models():
        assert m.price_web_search_per_1k == Decimal("10"), m.id
        assert m.prices()["web_search_per_1k"] == "10.00", m.id


def test_a_search_costs_a_thousandth_of_the_per_1k_price_on_top_of_the_tokens():
    prices = catalogue.get_model("claude-sonnet-5-5").prices()
    tokens = {
        "input_tokens": 1000,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": 0,
        "output_tokens": 100,
    }
    # $2 input, $10 output per MTok: 2,000 + 1,000 micro-dollars; 3 searches at $10 per 1,000.
    assert catalogue.cost_of(prices, **tokens) == Decimal("0.003")
    assert catalogue.cost_of(prices, **tokens, web_search_requests=3) == Decimal("0.033")


def test_a_tier_does_not_change_the_search_price():
    haiku = catalogue.get_model("claude-haiku-5-5")
    high = haiku.prices(total_input=150_000)
    assert high["tier"] == "input>100000"
    assert high["web_search_per_1k"] == haiku.prices()["web_search_per_1k"] == "10.00"


def test_a_catalogue_row_without_a_search_price_cannot_be_read(settings, tmp_path):
    row = {
        "id": "claude-haiku-4-5",
        "context_window": 200_000,
        "max_output": 64_000,
        "price_input": "1.00",
        "price_cache_write_5m": "1.25",
        "price_cache_write_1h": "2.00",
        "price_cache_read": "0.10",
        "price_output": "5.00",
    }
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [row]}))
    settings.CLAUDE_MODEL_CATALOGUE = path
    with pytest.raises(KeyError, match="price_web_search_per_1k"):
        catalogue.all_models()


def test_the_current_lineup_has_1m_windows_and_128k_output():
    for model_id in (
        "claude-opus-5-5",
        "claude-sonnet-5-5",
        "claude-haiku-5-5",
        "claude-fable-5-2",
    ):
        m = catalogue.get_model(model_id)
        assert (m.context_window, m.max_output) == (1_000_000, 128_000)
        assert m.status == "current" and not m.prefill
    opus = catalogue.get_model("claude-opus-5-5")
    assert (opus.price_input, opus.price_output) == (Decimal("4"), Decimal("20"))
    assert (opus.price_cache_write_5m, opus.price_cache_write_1h) == (Decimal("5"), Decimal("8"))
    assert opus.price_cache_read == Decimal("0.20") == opus.price_input * Decimal("0.05")
    assert opus.thinking == "always" and opus.default_effort == "medium"


def test_only_haiku_4_5_accepts_a_prefill():
    assert [m.id for m in catalogue.all_models() if m.prefill] == ["claude-haiku-4-5"]


def test_the_defaults_are_current_models(settings):
    from claudeweb import settings as configured  # as read from the environment, before the
    # suite's fixtures pin a model that does not think unasked (tests/conftest.py)

    assert catalogue.get_model(configured.CLAUDE_DEFAULT_MODEL).status == "current"
    fast = catalogue.get_model(settings.CLAUDE_FAST_MODEL)
    current = [m for m in catalogue.all_models() if m.status == "current"]
    assert fast.price_input == min(m.price_input for m in current)


def test_max_tokens_is_the_model_s_max_output_capped_by_the_setting(settings):
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 50_000
    assert catalogue.max_tokens_for(catalogue.get_model("claude-opus-5-5")) == 50_000
    assert catalogue.max_tokens_for(catalogue.get_model("claude-haiku-4-5")) == 50_000
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 200_000
    assert catalogue.max_tokens_for(catalogue.get_model("claude-opus-5-5")) == 128_000
    assert catalogue.max_tokens_for(catalogue.get_model("claude-haiku-4-5")) == 64_000


# --- prices applied to a call ------------------------------------------------------------------


@pytest.mark.django_db
def test_opus_5_5_prices_each_cache_write_ttl_and_its_own_cache_read(alice):
    row = ledger_row(
        "claude-opus-5-5",
        input_tokens=1234,
        cache_write_5m_tokens=2000,
        cache_write_1h_tokens=3000,
        cache_read_tokens=50_000,
        output_tokens=777,
    )
    # $4 input, $5 5-minute write, $8 1-hour write, $0.20 read, $20 output per MTok:
    # 4,936 + 10,000 + 24,000 + 10,000 + 15,540 = 64,476 micro-dollars.
    assert row.cost == Decimal("0.064476")
    assert row.prices == {
        "input": "4.00",
        "cache_write_5m": "5.00",
        "cache_write_1h": "8.00",
        "cache_read": "0.20",
        "output": "20.00",
        "web_search_per_1k": "10.00",
    }


@pytest.mark.django_db
def test_haiku_5_5_up_to_100k_input_tokens_is_the_low_tier(alice):
    # "Up to 100,000 tokens" includes 100,000: input + cache writes + cache reads = 100,000.
    row = ledger_row(
        "claude-haiku-5-5",
        input_tokens=60_000,
        cache_write_5m_tokens=20_000,
        cache_write_1h_tokens=10_000,
        cache_read_tokens=10_000,
        output_tokens=1000,
    )
    # 60,000 × 0.10 + 20,000 × 0.125 + 10,000 × 0.20 + 10,000 × 0.01 + 1,000 × 0.50
    # = 6,000 + 2,500 + 2,000 + 100 + 500 = 11,100 micro-dollars.
    assert row.cost == Decimal("0.0111")
    assert "tier" not in row.prices and row.prices["input"] == "0.10"


@pytest.mark.django_db
def test_haiku_5_5_over_100k_input_tokens_prices_every_token_of_the_call_higher(alice):
    row = ledger_row(
        "claude-haiku-5-5",
        input_tokens=60_001,
        cache_write_5m_tokens=20_000,
        cache_write_1h_tokens=10_000,
        cache_read_tokens=10_000,
        output_tokens=1000,
    )
    # 60,001 × 0.50 + 20,000 × 0.625 + 10,000 × 1.00 + 10,000 × 0.05 + 1,000 × 2.50
    # = 30,000.5 + 12,500 + 10,000 + 500 + 2,500 = 55,500.5 micro-dollars.
    assert row.cost == Decimal("0.0555005")
    assert row.prices["tier"] == "input>100000" and row.prices["output"] == "2.50"


@pytest.mark.django_db
def test_the_stored_snapshot_recomputes_the_cost_exactly(alice):
    for model_id, tokens in (("claude-haiku-5-5", 150_000), ("claude-sonnet-4-6", 3000)):
        row = ledger_row(model_id, input_tokens=tokens, cache_read_tokens=999, output_tokens=321)
        again = catalogue.cost_of(
            row.prices,
            input_tokens=row.input_tokens,
            cache_write_5m_tokens=row.cache_write_5m_tokens,
            cache_write_1h_tokens=row.cache_write_1h_tokens,
            cache_read_tokens=row.cache_read_tokens,
            output_tokens=row.output_tokens,
        )
        assert again == row.cost > 0


def test_a_budget_estimate_prices_the_call_in_its_tier():
    # Input at the 5-minute cache-write price, the dearest an input token of a request may cost.
    low = budgets.estimate(model="claude-haiku-5-5", input_tokens=100_000, max_tokens=1000)
    assert low.cost == (100_000 * Decimal("0.125") + 1000 * Decimal("0.50")) / MTOK
    high = budgets.estimate(model="claude-haiku-5-5", input_tokens=150_000, max_tokens=1000)
    assert high.cost == (150_000 * Decimal("0.625") + 1000 * Decimal("2.50")) / MTOK
    assert high.tokens == 151_000


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_reply_asks_for_the_model_s_max_output_up_to_the_cap(
    alice, offline_requests, settings
):
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 100_000
    settings.CONVERSATION_TOKEN_BUDGET = 1_000_000  # a reply holds its max_tokens against it
    conversation = await sync_to_async(lifecycle.conversation_create)(
        owner=alice, model="claude-opus-5-5"
    )
    async with open_socket(conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=3]]"))
        assert (await recv_until(ws, "done", "error"))[-1]["type"] == "done"
    [request] = offline_requests.all()
    assert request["body"]["model"] == "claude-opus-5-5"
    assert request["body"]["max_tokens"] == 100_000


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_every_request_carries_an_opaque_stable_user_id(alice, bob, offline_requests):
    for user, n in ((alice, 1), (alice, 2), (bob, 1)):
        conversation = await sync_to_async(lifecycle.conversation_create)(owner=user)
        async with open_socket(conversation.pk, user) as ws:
            await ws.send_json_to(send_frame(f"[[offline words=3]] marker-{user.username}-{n}"))
            assert (await recv_until(ws, "done", "error"))[-1]["type"] == "done"
    for _ in range(100):  # each first reply names its conversation in the background
        if len(offline_requests.side()) >= 3:
            break
        await asyncio.sleep(0.05)
    sent = offline_requests.everything()
    assert len(offline_requests.all()) == 3 and len(offline_requests.side()) == 3
    ids: dict[str, set[str]] = {"alice": set(), "bob": set()}
    for record in sent:
        owner = "alice" if "marker-alice" in json.dumps(record["body"]) else "bob"
        ids[owner].add(record["body"]["metadata"]["user_id"])
    assert len(ids["alice"]) == 1 and len(ids["bob"]) == 1  # replies and titles alike
    assert ids["alice"] != ids["bob"]
    for value in ids["alice"] | ids["bob"]:
        assert "alice" not in value and "bob" not in value
        assert value not in (str(alice.pk), str(bob.pk)) and len(value) >= 16


# --- retired ids ---------------------------------------------------------------------------------


@pytest.fixture
def retired_conversation(alice):
    conversation = lifecycle.conversation_create(owner=alice)
    Conversation.objects.filter(pk=conversation.pk).update(model=RETIRED, title="Old")
    ApiCall.objects.create(
        user=alice,
        conversation=conversation,
        model=RETIRED,
        purpose="reply",
        input_tokens=10,
        output_tokens=5,
        cost=Decimal("0.001"),
    )
    return conversation


@pytest.mark.django_db
def test_a_conversation_on_a_retired_model_opens_and_says_so(client, alice, retired_conversation):
    client.force_login(alice)
    response = client.get(reverse("chat:conversation", args=[retired_conversation.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert f"{RETIRED}, is no longer available" in page
    default = catalogue.get_model(preferences.default_model(None)).label
    assert f"Your next message goes to {default}" in page
    config = response.context["chat_config"]
    assert config["model"] is None  # the page does not send the retired id back


@pytest.mark.django_db
def test_usage_pages_show_ledger_rows_of_retired_models(admin_client, retired_conversation):
    assert admin_client.get(reverse("admin:usage_dashboard")).status_code == 200
    assert admin_client.get(reverse("admin:chat_apicall_changelist")).status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_the_next_send_runs_on_the_default_model_with_a_notice(
    alice, retired_conversation, offline_requests, settings
):
    async with open_socket(retired_conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=3]]"))
        frames = await recv_until(ws, "done", "error")
    assert frames[-1]["type"] == "done"
    [notice] = [f for f in frames if f["type"] == "notice"]
    assert notice["code"] == "model_replaced" and notice["previous_model"] == RETIRED
    assert notice["model"] == settings.CLAUDE_DEFAULT_MODEL
    assert offline_requests.all()[0]["body"]["model"] == settings.CLAUDE_DEFAULT_MODEL
    await sync_to_async(retired_conversation.refresh_from_db)()
    assert retired_conversation.model == settings.CLAUDE_DEFAULT_MODEL
    models = await sync_to_async(
        lambda: sorted(
            ApiCall.objects.filter(conversation=retired_conversation).values_list(
                "model", flat=True
            )
        )
    )()
    assert RETIRED in models  # the old row keeps its id


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_send_that_picks_a_model_runs_on_it_without_a_notice(
    alice, retired_conversation, offline_requests
):
    async with open_socket(retired_conversation.pk, alice) as ws:
        await ws.send_json_to(send_frame("[[offline words=3]]", model="claude-haiku-4-5"))
        frames = await recv_until(ws, "done", "error")
    assert frames[-1]["type"] == "done"
    assert not [f for f in frames if f["type"] == "notice"]
    assert offline_requests.all()[0]["body"]["model"] == "claude-haiku-4-5"


# --- checks and check_models --------------------------------------------------------------------


def test_a_default_model_with_an_announced_retirement_is_warned_about(settings):
    settings.CLAUDE_DEFAULT_MODEL = "claude-opus-5"  # retirement: not sooner than 2027-07-24
    ids = {m.id for m in run_checks()}
    assert "claudeweb.W001" in ids and "claudeweb.E005" not in ids
    settings.CLAUDE_DEFAULT_MODEL = RETIRED
    assert "claudeweb.E005" in {m.id for m in run_checks()}


def test_compare_reports_missing_ids_and_different_limits():
    opus, haiku = catalogue.get_model("claude-opus-5-5"), catalogue.get_model("claude-haiku-4-5")
    served = [
        ServedModel("claude-opus-5-5", "Opus", 1_000_000, 64_000),
        ServedModel("claude-new-6", "New", None, None),
    ]
    rows = {r.id: r for r in compare([opus, haiku], served)}
    assert rows["claude-opus-5-5"].status == "mismatch"
    assert rows["claude-opus-5-5"].max_output == "128,000 / 64,000"
    assert rows["claude-haiku-4-5"].status == "missing"
    assert rows["claude-new-6"].status == "not in catalogue"


@pytest.mark.django_db
def test_check_models_reports_what_the_api_serves():
    served = {m.id: m for m in async_to_sync(list_models)()}
    out = io.StringIO()
    call_command("check_models", stdout=out)
    lines = {line.split()[0]: line for line in out.getvalue().splitlines()[1:-1]}
    for model in catalogue.all_models():
        api = served.get(model.id)
        if api is None:
            expected = "missing"
        elif (api.max_input_tokens or model.context_window) != model.context_window or (
            api.max_tokens or model.max_output
        ) != model.max_output:
            expected = "mismatch"
        else:
            expected = "ok"
        assert lines[model.id].split()[1] == expected, lines[model.id]
    for model_id in served.keys() - {m.id for m in catalogue.all_models()}:
        assert "not in catalogue" in lines[model_id]
