"""The usage dashboard, the ledger's CSV export, budgets in the admin, and chat.ledger.usage."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.conversations import lifecycle
from chat.ledger import usage
from chat.ledger.csv_export import EXPORT_COLUMNS
from chat.models import ApiCall, Message, UserBudget
from tests.conftest import make_user
from tests.support.admin_forms import user_change_form

pytestmark = pytest.mark.django_db

# The figures below span "today", "this month" and "the last 30 days": on a real calendar those
# periods overlap differently from one day to the next (seed()'s 30 days cross a month boundary
# in the first days of a month), so the clock is fixed at an instant whose 30 days lie in one month.
FROZEN_AT = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fixed_clock():
    with time_machine.travel(FROZEN_AT, tick=True):
        yield


HAIKU, SONNET, OPUS = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7"
DASHBOARD = "admin:usage_dashboard"
EXPORT = "admin:chat_apicall_export"


def record(user, model, when, *, cost="0", stop="end_turn", error="", **tokens) -> ApiCall:
    """One ledger row at `when` (created_at is set on insert, so it is moved afterwards)."""
    call = ApiCall.objects.create(
        user=user, model=model, cost=Decimal(cost), stop_reason=stop, error_code=error, **tokens
    )
    ApiCall.objects.filter(pk=call.pk).update(created_at=when)
    return call


def today() -> datetime:
    return usage.period_starts()[0]


@pytest.fixture
def ledger(alice, bob):
    """Seven calls; the figures below are worked out by hand from them."""
    t = today()
    return [
        record(alice, HAIKU, t + timedelta(hours=1), cost="0.00100000", input_tokens=100,
               cache_write_5m_tokens=200, cache_read_tokens=700, output_tokens=50),
        record(alice, SONNET, t + timedelta(hours=2), cost="0.01000000", stop="max_tokens",
               input_tokens=1000, cache_write_1h_tokens=400, output_tokens=300),
        record(bob, HAIKU, t + timedelta(hours=3), cost="0.00010000", stop="",
               error="upstream_overloaded", input_tokens=10),
        record(bob, SONNET, t - timedelta(days=3), cost="0.00400000", stop="refusal",
               input_tokens=500, cache_read_tokens=1500, output_tokens=100),
        record(alice, HAIKU, t - timedelta(days=10), cost="0.00700000", stop="",
               error="upstream_timeout", input_tokens=2000, output_tokens=1000),
        record(bob, HAIKU, t - timedelta(days=40), cost="9.99990000", input_tokens=9999),
        record(alice, OPUS, t - timedelta(days=29, hours=-1), cost="0.50000001",
               input_tokens=1, output_tokens=1),
    ]  # fmt: skip


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


def totals_of(response) -> dict:
    t = response.context["totals"]
    return {
        "requests": t.requests,
        "input": t.input,
        "cache_write": t.cache_write,
        "cache_read": t.cache_read,
        "output": t.output,
        "cost": t.cost,
        "truncations": t.truncations,
        "refusals": t.refusals,
        "errors": t.errors,
    }


def keys(response, table: str) -> list:
    return [row.label for row in response.context["tables"][table]["rows"]]


# --- Totals and periods -------------------------------------------------------------------------


def test_it_works(admin_client, ledger):
    response = admin_client.get(reverse(DASHBOARD), {"period": "30d"})
    assert response.status_code == 200
    assert totals_of(response) == {
        "requests": 6,
        "input": 3611,
        "cache_write": 600,
        "cache_read": 2200,
        "output": 1451,
        "cost": Decimal("0.52210001"),
        "truncations": 1,
        "refusals": 1,
        "errors": 2,
    }
    assert response.context["totals"].hit_ratio == Decimal(2200) / Decimal(3611 + 600 + 2200)
    assert response.context["errors_by_kind"] == [
        ("upstream_overloaded", 1),
        ("upstream_timeout", 1),
    ]
    html = response.content.decode()
    assert 'data-testid="usage-totals"' in html and "<svg" in html
    assert "0.5221" in html  # rounded for display only


def test_today(admin_client, ledger):
    response = admin_client.get(reverse(DASHBOARD), {"period": "today"})
    assert totals_of(response) == {
        "requests": 3,
        "input": 1110,
        "cache_write": 600,
        "cache_read": 700,
        "output": 350,
        "cost": Decimal("0.01110000"),
        "truncations": 1,
        "refusals": 0,
        "errors": 1,
    }
    assert response.context["totals"].hit_ratio == Decimal(700) / Decimal(2410)
    assert len(response.context["period"].days) == 1


def test_seven_days(admin_client, ledger):
    response = admin_client.get(reverse(DASHBOARD), {"period": "7d"})
    totals = totals_of(response)
    assert (totals["requests"], totals["input"], totals["cache_read"]) == (4, 1610, 2200)
    assert (totals["cost"], totals["refusals"]) == (Decimal("0.01510000"), 1)


def test_custom_dates(admin_client, ledger):
    t = today()
    response = admin_client.get(
        reverse(DASHBOARD),
        {
            "period": "custom",
            "start": (t - timedelta(days=40)).date().isoformat(),
            "end": (t - timedelta(days=10)).date().isoformat(),
        },
    )
    totals = totals_of(response)
    assert (totals["requests"], totals["input"]) == (3, 2000 + 9999 + 1)
    assert totals["cost"] == Decimal("10.50690001")
    assert len(response.context["period"].days) == 31


@pytest.mark.parametrize("query", [{}, {"users_sort": "-requests"}, {"period": ""}])
def test_the_period_menu_names_the_period_shown_when_none_is_asked(admin_client, ledger, query):
    response = admin_client.get(reverse(DASHBOARD), query)
    assert len(response.context["period"].days) == 30
    assert totals_of(response)["requests"] == 6
    html = response.content.decode()
    assert '<option value="30d" selected>Last 30 days</option>' in html
    assert '<option value="today" selected>' not in html


def test_a_bad_custom_period_shows_the_default_and_says_why(admin_client, ledger):
    t = today()
    response = admin_client.get(
        reverse(DASHBOARD),
        {"period": "custom", "start": t.date().isoformat(), "end": "2000-01-01"},
    )
    assert response.status_code == 200
    assert "The end date is before the start date." in response.content.decode()
    assert totals_of(response)["requests"] == 6


def test_an_empty_period_is_all_zero(admin_client):
    response = admin_client.get(reverse(DASHBOARD))
    assert response.status_code == 200
    assert totals_of(response)["requests"] == 0
    assert response.context["totals"].hit_percent == "—"


# --- Breakdowns and sorting ---------------------------------------------------------------------


def test_breakdowns_by_user_model_and_day(admin_client, ledger, alice, bob):
    response = admin_client.get(reverse(DASHBOARD), {"period": "30d"})
    tables = response.context["tables"]
    users = {row.label: row.totals for row in tables["users"]["rows"]}
    assert (users["alice"].requests, users["alice"].input, users["alice"].output) == (4, 3101, 1351)
    assert (users["alice"].cache_write, users["alice"].cache_read) == (600, 700)
    assert users["alice"].cost == Decimal("0.51800001")
    assert (users["bob"].requests, users["bob"].input, users["bob"].cache_read) == (2, 510, 1500)
    assert users["bob"].cost == Decimal("0.00410000")

    models = {row.label: row.totals for row in tables["models"]["rows"]}
    assert {m: (t.requests, t.input, t.cost) for m, t in models.items()} == {
        HAIKU: (3, 2110, Decimal("0.00810000")),
        SONNET: (2, 1500, Decimal("0.01400000")),
        OPUS: (1, 1, Decimal("0.50000001")),
    }
    assert models[HAIKU].errors == 2

    t = today().date()
    days = {row.key: row.totals.requests for row in tables["days"]["rows"]}
    assert days == {
        t: 3,
        t - timedelta(days=3): 1,
        t - timedelta(days=10): 1,
        t - timedelta(days=29): 1,
    }


def test_tables_sort_by_whitelisted_columns(admin_client, ledger):
    url = reverse(DASHBOARD)
    assert keys(admin_client.get(url, {"period": "30d"}), "users") == ["alice", "bob"]
    assert keys(admin_client.get(url, {"users_sort": "requests"}), "users") == ["bob", "alice"]
    assert keys(admin_client.get(url, {"users_sort": "-user"}), "users") == ["bob", "alice"]
    assert keys(admin_client.get(url, {"models_sort": "cost"}), "models") == [HAIKU, SONNET, OPUS]
    assert keys(admin_client.get(url, {"models_sort": "-input"}), "models") == [
        HAIKU,
        SONNET,
        OPUS,
    ]
    assert keys(admin_client.get(url, {"models_sort": "model"}), "models") == [HAIKU, OPUS, SONNET]
    days = keys(admin_client.get(url, {"days_sort": "day"}), "days")
    assert days == sorted(days)
    # Anything else falls back to the default order (most expensive first).
    for bad in ("password", "-user__password", "cost;drop", ""):
        assert keys(admin_client.get(url, {"users_sort": bad}), "users") == ["alice", "bob"]


def test_sort_links_keep_the_period_and_reverse_the_order(admin_client, ledger):
    response = admin_client.get(reverse(DASHBOARD), {"period": "7d", "users_sort": "-requests"})
    headers = {h["label"]: h for h in response.context["tables"]["users"]["headers"]}
    assert headers["Requests"]["arrow"] == "▼"
    assert "users_sort=requests" in headers["Requests"]["url"]
    assert "period=7d" in headers["Requests"]["url"]
    assert "users_sort=-cost" in headers["Cost (USD)"]["url"]


def test_the_chart_is_svg_drawn_on_the_server(admin_client, ledger):
    response = admin_client.get(reverse(DASHBOARD), {"period": "7d"})
    chart = response.context["cost_chart"]
    assert len(chart["bars"]) == 7  # one per day, empty days included
    tallest = max(chart["bars"], key=lambda bar: float(bar["h"]))
    assert tallest["title"] == f"{today().date().isoformat()} Cost (USD): $0.0111"
    assert len(response.context["token_chart"]["bars"]) == 7 * 4  # stacked by kind
    main = response.content.decode().split('id="content-main"')[1].split("<footer")[0]
    assert main.count("<svg") == 2
    assert 'data-testid="usage-cost-chart"' in main and 'data-testid="usage-token-chart"' in main
    assert "<script" not in main and "style=" not in main


# --- Drill-down links ---------------------------------------------------------------------------


def test_drill_down_links_filter_the_changelists(admin_client, ledger, alice):
    response = admin_client.get(reverse(DASHBOARD), {"period": "30d"})
    alice_row = next(r for r in response.context["tables"]["users"]["rows"] if r.key == alice.pk)
    calls = admin_client.get(alice_row.calls_url)
    assert calls.status_code == 200 and calls.context["cl"].result_count == 4
    haiku = next(r for r in response.context["tables"]["models"]["rows"] if r.key == HAIKU)
    assert admin_client.get(haiku.calls_url).context["cl"].result_count == 3
    day = next(r for r in response.context["tables"]["days"]["rows"] if r.key == today().date())
    assert admin_client.get(day.calls_url).context["cl"].result_count == 3


def test_users_link_to_their_conversations_and_calls(admin_client, alice, bob):
    conversation = lifecycle.conversation_create(owner=alice)
    lifecycle.conversation_create(owner=bob)
    reply = Message.objects.create(conversation=conversation, role="assistant")
    call = ApiCall.objects.create(user=alice, conversation=conversation, message=reply, model=HAIKU)
    users = admin_client.get(reverse("admin:auth_user_changelist")).content.decode()
    conversations_url = reverse("admin:chat_conversation_changelist")
    assert f"{conversations_url}?owner__id__exact={alice.pk}" in users
    calls_url = reverse("admin:chat_apicall_changelist")
    assert f"{calls_url}?user__id__exact={alice.pk}" in users
    response = admin_client.get(conversations_url, {"owner__id__exact": alice.pk})
    assert response.context["cl"].result_count == 1

    calls = admin_client.get(calls_url).content.decode()
    assert reverse("admin:chat_conversation_change", args=[conversation.pk]) in calls
    assert reverse("admin:chat_message_change", args=[reply.pk]) in calls
    conversations = admin_client.get(conversations_url).content.decode()
    assert f"{calls_url}?conversation__id__exact={conversation.pk}" in conversations
    assert call.pk


def test_the_admin_index_links_to_the_dashboard(admin_client, client, staff):
    assert reverse(DASHBOARD) in admin_client.get(reverse("admin:index")).content.decode()
    client.force_login(staff)
    assert reverse(DASHBOARD) not in client.get(reverse("admin:index")).content.decode()


# --- Permissions --------------------------------------------------------------------------------


def grant_view_apicall(user) -> None:
    user.user_permissions.add(Permission.objects.get(codename="view_apicall"))


@pytest.mark.parametrize("name", [DASHBOARD, EXPORT])
def test_it_checks_permissions(client, name, superuser, staff, alice):
    url = reverse(name)
    client.force_login(superuser)
    assert client.get(url).status_code == 200
    client.force_login(staff)
    assert client.get(url).status_code == 403
    grant_view_apicall(staff)
    staff = get_user_model().objects.get(pk=staff.pk)  # a fresh permission cache
    client.force_login(staff)
    assert client.get(url).status_code == 200
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.logout()
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- CSV export ---------------------------------------------------------------------------------


def export_rows(response) -> list[dict]:
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment; filename=")
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_the_export_follows_the_changelist_filters(admin_client, ledger, alice):
    query = {"model": HAIKU, "user__id__exact": alice.pk}
    rows = export_rows(admin_client.get(reverse(EXPORT), query))
    expected = ApiCall.objects.filter(model=HAIKU, user=alice).order_by("-created_at", "-id")
    assert [int(r["id"]) for r in rows] == [c.pk for c in expected]
    assert {r["username"] for r in rows} == {"alice"}
    first = expected[0]
    assert rows[0]["cost"] == str(first.cost)
    assert rows[0]["cache_read_tokens"] == str(first.cache_read_tokens)
    assert datetime.fromisoformat(rows[0]["created_at"]) == first.created_at
    assert list(rows[0]) == list(EXPORT_COLUMNS)


def test_the_export_takes_search_dates_and_order(admin_client, ledger):
    t = today()
    query = {
        "created_at__gte": (t - timedelta(days=7)).isoformat(),
        "error_code": "",
        "o": "-7",  # the changelist's own ordering parameter: a column, descending
    }
    rows = export_rows(admin_client.get(reverse(EXPORT), query))
    changelist = admin_client.get(reverse("admin:chat_apicall_changelist"), query)
    assert [int(r["id"]) for r in rows] == [c.pk for c in changelist.context["cl"].result_list]
    assert len(rows) == 3


def test_the_export_of_everything_spans_every_page(admin_client, alice):
    ApiCall.objects.bulk_create(ApiCall(user=alice, model=HAIKU) for _ in range(2500))
    rows = export_rows(admin_client.get(reverse(EXPORT)))
    assert len(rows) == 2500


def test_the_export_defuses_spreadsheet_formulas(admin_client):
    user = make_user("=cmd")
    record(user, HAIKU, today(), cost="0.00000001")
    rows = export_rows(admin_client.get(reverse(EXPORT)))
    assert rows[0]["username"] == "'=cmd"
    assert rows[0]["cost"] == "0.00000001"  # exact, not 1E-8


def test_the_export_refuses_bad_filters(admin_client):
    assert admin_client.get(reverse(EXPORT), {"created_at__gte": "yesterday"}).status_code == 400


@pytest.mark.django_db(transaction=True)
async def test_the_export_streams_under_asgi(async_client, recwarn):
    """Under ASGI a sync iterator would be read whole into memory first; ours is async."""
    user = await sync_to_async(make_user)("root", is_staff=True, is_superuser=True)
    await ApiCall.objects.abulk_create(ApiCall(user=user, model=HAIKU) for _ in range(4100))
    await async_client.aforce_login(user)
    response = await async_client.get(reverse(EXPORT))
    assert response.status_code == 200 and response.is_async
    chunks = [chunk async for chunk in response.streaming_content]
    assert len(chunks) == 1 + 3  # the header, then 2,000 + 2,000 + 100 rows
    assert b"".join(chunks).count(b"\n") == 4101
    assert not [w for w in recwarn if "consume" in str(w.message)]
    await sync_to_async(connections.close_all)()  # the request thread's, before the flush


def test_the_changelist_has_an_export_button_with_its_filters(admin_client, ledger, alice):
    response = admin_client.get(reverse("admin:chat_apicall_changelist"), {"model": HAIKU})
    assert f'href="{reverse(EXPORT)}?model={HAIKU}"' in response.content.decode()


# --- Budgets in the admin -----------------------------------------------------------------------


def test_budgets_are_edited_on_the_user_page(admin_client, alice):
    url = reverse("admin:auth_user_change", args=[alice.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and "budget-0-daily_tokens" in page.content.decode()
    data = user_change_form(alice, daily_tokens="5000", monthly_cost="12.50")
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].errors
    budget = UserBudget.objects.get(user=alice)
    assert (budget.daily_tokens, budget.monthly_cost) == (5000, Decimal("12.50"))
    assert budget.monthly_tokens is None


def test_the_budget_admin_searches_and_edits(admin_client, alice, bob):
    UserBudget.objects.create(user=alice, daily_tokens=100)
    UserBudget.objects.create(user=bob, daily_tokens=100)
    response = admin_client.get(reverse("admin:chat_userbudget_changelist"), {"q": "ali"})
    assert response.context["cl"].result_count == 1
    assert "form-0-daily_tokens" in response.content.decode()  # list_editable


def test_users_near_or_over_a_budget_are_flagged(admin_client, settings, alice, bob, staff):
    settings.USER_DAILY_TOKEN_BUDGET = 1000
    record(alice, HAIKU, today(), input_tokens=500, cache_read_tokens=300)  # 80 %
    record(bob, HAIKU, today(), output_tokens=1200)  # 120 %
    record(staff, HAIKU, today(), input_tokens=799)  # 79 %: not flagged
    users = admin_client.get(reverse("admin:auth_user_changelist")).content.decode()
    assert '<span class="budget-near">80 % (near)</span>' in users
    assert '<span class="budget-over">120 % (over)</span>' in users
    assert '<td class="field-budget_used">79 %</td>' in users

    dashboard = admin_client.get(reverse(DASHBOARD))
    alerts = [(a["username"], a["percent"], a["over"]) for a in dashboard.context["alerts"]]
    assert alerts == [("bob", 120, True), ("alice", 80, False)]


# --- Query counts -------------------------------------------------------------------------------


def seed(calls: int, users: int) -> None:
    people = get_user_model().objects.bulk_create(
        get_user_model()(username=f"user{i}-{calls}") for i in range(users)
    )
    UserBudget.objects.bulk_create(UserBudget(user=u, daily_tokens=10) for u in people)
    models = [HAIKU, SONNET, OPUS]
    rows = ApiCall.objects.bulk_create(
        ApiCall(
            user=people[i % users],
            model=models[i % 3],
            input_tokens=i,
            cache_read_tokens=i,
            output_tokens=7,
            web_search_requests=i % 3,
            prices={"web_search_per_1k": "10.00"},
            cost=Decimal("0.001"),
            error_code="upstream_error" if i % 7 == 0 else "",
            stop_reason="max_tokens" if i % 5 == 0 else "end_turn",
        )
        for i in range(calls)
    )
    ids = [row.pk for row in rows]
    now = today() + timedelta(hours=1)
    for day in range(30):
        ApiCall.objects.filter(pk__in=ids[day::30]).update(created_at=now - timedelta(days=day))


def count_queries(client, url: str, params: dict | None = None) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params or {})
        assert response.status_code == 200
        if response.streaming:
            b"".join(response.streaming_content)
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    "name",
    [
        DASHBOARD,
        "admin:chat_apicall_changelist",
        "admin:auth_user_changelist",
        "admin:chat_userbudget_changelist",
    ],
)
def test_pages_run_a_constant_number_of_queries(admin_client, settings, name):
    settings.USER_MONTHLY_TOKEN_BUDGET = 50  # every user is over: the alerts list them all
    seed(10, users=3)
    small = count_queries(admin_client, reverse(name))
    seed(990, users=120)  # more users than a changelist page holds
    assert ApiCall.objects.count() == 1000
    large = count_queries(admin_client, reverse(name))
    assert small == large


def test_the_dashboard_query_count(admin_client, settings):
    settings.USER_MONTHLY_TOKEN_BUDGET = 50
    seed(1000, users=50)
    # session, user; the rollup; per user and their names; budgets, month usage, the group
    # policies and the names of the flagged users; the ratings of replies
    assert count_queries(admin_client, reverse(DASHBOARD)) == 10
    assert count_queries(admin_client, reverse(DASHBOARD), {"users_sort": "user"}) == 9


def test_the_export_runs_a_constant_number_of_queries(admin_client):
    seed(10, users=3)
    small = count_queries(admin_client, reverse(EXPORT))
    seed(4990, users=10)
    large = count_queries(admin_client, reverse(EXPORT))
    # One more round trip per 2,000 rows fetched from the cursor is not a query of its own.
    assert small == large


# --- Web searches ------------------------------------------------------------------------------


@pytest.fixture
def searches(alice, bob):
    """Calls with web searches, each priced at its own snapshot's price per 1,000."""
    t = today()
    ten, five = {"web_search_per_1k": "10.00"}, {"web_search_per_1k": "5.00"}
    return [
        record(alice, SONNET, t + timedelta(hours=1), cost="0.03300000", input_tokens=1000,
               output_tokens=100, web_search_requests=3, prices=ten),
        record(bob, HAIKU, t + timedelta(hours=2), cost="0.00600000", input_tokens=1000,
               web_search_requests=1, prices=five),  # an older price: kept as recorded
        record(bob, HAIKU, t + timedelta(hours=3), cost="0.00100000", input_tokens=1000,
               prices={}),  # a row recorded before searches were priced
    ]  # fmt: skip


def test_web_searches_and_their_cost_are_shown_beside_tokens_and_cost(admin_client, searches):
    response = admin_client.get(reverse(DASHBOARD), {"period": "today"})
    totals = response.context["totals"]
    # 3 × $10 / 1,000 + 1 × $5 / 1,000; the whole cost still holds it.
    assert (totals.searches, totals.search_cost) == (4, Decimal("0.035"))
    assert totals.cost == Decimal("0.04")
    tables = response.context["tables"]
    users = {row.label: row.totals for row in tables["users"]["rows"]}
    assert (users["alice"].searches, users["alice"].search_cost) == (3, Decimal("0.03"))
    assert (users["bob"].searches, users["bob"].search_cost) == (1, Decimal("0.005"))
    models = {
        row.label: (row.totals.searches, row.totals.search_cost) for row in tables["models"]["rows"]
    }
    assert models == {SONNET: (3, Decimal("0.03")), HAIKU: (1, Decimal("0.005"))}
    days = [(row.totals.searches, row.totals.search_cost) for row in tables["days"]["rows"]]
    assert days == [(4, Decimal("0.035"))]
    headers = [h["label"] for h in tables["users"]["headers"]]
    assert headers.index("Web searches") == headers.index("Output") + 1
    assert headers.index("Search cost (USD)") == headers.index("Cost (USD)") - 1
    html = response.content.decode()
    assert '<td data-total="searches">4</td>' in html
    assert '<td data-total="search_cost">0.0350</td>' in html


def test_tables_sort_by_web_searches(admin_client, searches):
    url = reverse(DASHBOARD)
    assert keys(admin_client.get(url, {"users_sort": "-searches"}), "users") == ["alice", "bob"]
    assert keys(admin_client.get(url, {"users_sort": "searches"}), "users") == ["bob", "alice"]
    assert keys(admin_client.get(url, {"models_sort": "search_cost"}), "models") == [HAIKU, SONNET]


def test_the_export_appends_web_searches_after_the_earlier_columns(admin_client, searches):
    rows = export_rows(admin_client.get(reverse(EXPORT), {"o": "1"}))
    # The columns readers already rely on keep their places; the new one comes last.
    assert list(rows[0]) == [
        "id", "created_at", "user_id", "username", "conversation_id", "message_id", "purpose",
        "model", "request_id", "round", "input_tokens", "cache_write_5m_tokens",
        "cache_write_1h_tokens", "cache_read_tokens", "output_tokens", "stop_reason",
        "error_code", "ttft_ms", "duration_ms", "cost", "web_search_requests",
    ]  # fmt: skip
    by_id = {int(r["id"]): r["web_search_requests"] for r in rows}
    assert by_id == {c.pk: str(c.web_search_requests) for c in searches}
    assert sorted(by_id.values()) == ["0", "1", "3"]


def test_the_export_still_defuses_a_formula_username_with_searches(admin_client):
    user = make_user("@SUM(A1)")
    record(user, HAIKU, today(), cost="0.01", web_search_requests=1)
    rows = export_rows(admin_client.get(reverse(EXPORT)))
    assert (rows[0]["username"], rows[0]["web_search_requests"]) == ("'@SUM(A1)", "1")


# --- chat.ledger.usage ---------------------------------------------------------------------------------


def test_limits_fall_back_to_settings(settings, alice):
    # Budgets are money by default: $5 a day, $50 a month, no token limit.
    assert usage.limits_for(None) == usage.Limits(None, None, Decimal(5), Decimal(50))
    settings.USER_DAILY_TOKEN_BUDGET = 1000
    settings.USER_MONTHLY_TOKEN_BUDGET = 0
    settings.USER_DAILY_COST_BUDGET = "1.50"
    settings.USER_MONTHLY_COST_BUDGET = "0"
    assert usage.limits_for(None) == usage.Limits(1000, None, Decimal("1.50"), None)
    budget = UserBudget(user=alice, monthly_tokens=70_000, daily_cost=Decimal("0"))
    # Own values win; a null falls back; 0 (own or default) means no limit.
    assert usage.limits_for(budget) == usage.Limits(1000, 70_000, None, None)
    budget.daily_tokens = 0
    assert usage.limits_for(budget).daily_tokens is None


def test_period_starts_are_in_the_configured_time_zone(settings):
    settings.TIME_ZONE = "America/New_York"
    now = datetime(2025, 3, 10, 3, 30, tzinfo=UTC)  # still 9 March in New York
    day, month = usage.period_starts(now)
    assert day == datetime(2025, 3, 9, 5, 0, tzinfo=UTC)  # midnight EST, before the DST switch
    assert month == datetime(2025, 3, 1, 5, 0, tzinfo=UTC)
    assert day.utcoffset() == timedelta(hours=-5)


def test_usage_since_counts_every_token_kind(django_assert_num_queries, alice, bob, staff):
    since = today()
    record(alice, HAIKU, since + timedelta(minutes=1), cost="0.25", input_tokens=1,
           cache_write_5m_tokens=10, cache_write_1h_tokens=100, cache_read_tokens=1000,
           output_tokens=10000)  # fmt: skip
    record(alice, HAIKU, since - timedelta(seconds=1), cost="9", input_tokens=5)
    record(bob, SONNET, since, cost="0.00000001", output_tokens=2)
    with django_assert_num_queries(1):
        result = usage.usage_since([alice.pk, bob.pk, staff.pk], since)
    assert result == {
        alice.pk: usage.PeriodUsage(tokens=11111, cost=Decimal("0.25")),
        bob.pk: usage.PeriodUsage(tokens=2, cost=Decimal("0.00000001")),
        staff.pk: usage.PeriodUsage(tokens=0, cost=Decimal(0)),
    }


def test_budget_percent(settings, django_assert_num_queries, alice, bob, staff, superuser):
    now = datetime(2025, 6, 15, 12, tzinfo=UTC)
    settings.USER_MONTHLY_TOKEN_BUDGET = 10_000
    record(alice, HAIKU, now - timedelta(hours=1), input_tokens=600, output_tokens=200)
    record(alice, HAIKU, datetime(2025, 6, 2, tzinfo=UTC), input_tokens=7200)
    record(alice, HAIKU, datetime(2025, 5, 31, 23, tzinfo=UTC), input_tokens=99_999)  # May
    UserBudget.objects.create(user=alice, daily_tokens=1000)  # 800 / 1000 today: 80 %
    UserBudget.objects.create(user=bob, daily_cost=Decimal("0.0100"))
    record(bob, SONNET, now, cost="0.015")  # 150 % of the daily cost
    UserBudget.objects.create(user=superuser, monthly_tokens=0)  # own 0: no monthly limit
    with django_assert_num_queries(3):  # budgets, group policies, usage
        percents = usage.budget_percent([alice, bob.pk, staff, superuser], now=now)
    assert percents == {alice.pk: 80, bob.pk: 150, staff.pk: 0, superuser.pk: 0}

    settings.USER_MONTHLY_TOKEN_BUDGET = 10_000  # alice: 8,000 this month → still 80 %
    assert usage.budget_percent([alice], now=now)[alice.pk] == 80
    settings.USER_MONTHLY_TOKEN_BUDGET = 9_000  # 88 %
    assert usage.budget_percent([alice], now=now)[alice.pk] == 88
    assert usage.budget_percent([], now=now) == {}
    assert usage.users_near_limit(80, now=now) == [(bob.pk, 150), (alice.pk, 88)]
    assert usage.users_near_limit(100, now=now) == [(bob.pk, 150)]


def test_costs_are_summed_as_recorded_never_repriced(admin_client, alice):
    """A call keeps the cost of the prices in force when it was made."""
    record(alice, HAIKU, today(), cost="0.12345678", input_tokens=1)  # not what Haiku costs now
    response = admin_client.get(reverse(DASHBOARD), {"period": "today"})
    assert response.context["totals"].cost == Decimal("0.12345678")


# --- Replies apart from side calls, and budgets that admins cannot set below zero ----------------


def test_titles_and_summaries_cut_at_max_tokens_are_not_truncated_replies(admin_client, alice):
    at = today() + timedelta(hours=1)
    for purpose in ("title", "summary", "title"):
        call = record(alice, HAIKU, at, stop="max_tokens", output_tokens=30)
        ApiCall.objects.filter(pk=call.pk).update(purpose=purpose)
    for purpose in ("reply", "tool_round", "continuation"):
        call = record(alice, SONNET, at, stop="max_tokens", output_tokens=900)
        ApiCall.objects.filter(pk=call.pk).update(purpose=purpose)
    refused = record(alice, HAIKU, at, stop="refusal")
    ApiCall.objects.filter(pk=refused.pk).update(purpose="title")
    totals = totals_of(admin_client.get(reverse(DASHBOARD), {"period": "today"}))
    assert (totals["requests"], totals["truncations"], totals["refusals"]) == (7, 3, 0)
    html = admin_client.get(reverse(DASHBOARD), {"period": "today"}).content.decode()
    assert "Replies truncated (max_tokens)" in html


@pytest.mark.parametrize("field", ["daily_cost", "monthly_cost"])
def test_the_budget_admin_refuses_a_negative_amount(admin_client, alice, field):
    budget = UserBudget.objects.create(user=alice)
    url = reverse("admin:chat_userbudget_change", args=[budget.pk])
    data = {"user": alice.pk, field: "-1.00"}
    response = admin_client.post(url, data)
    assert response.status_code == 200  # the form again, with its error
    assert "Ensure this value is greater than or equal to 0" in response.content.decode()
    budget.refresh_from_db()
    assert getattr(budget, field) is None
    response = admin_client.post(url, {"user": alice.pk, field: "2.50"})
    assert response.status_code == 302
    budget.refresh_from_db()
    assert getattr(budget, field) == Decimal("2.50")


def test_a_conversation_cap_below_1000_tokens_is_refused(alice):
    # The admin's form runs the model's validators: what full_clean refuses, the form refuses.
    conversation = lifecycle.conversation_create(owner=alice)
    conversation.token_budget = 999
    with pytest.raises(ValidationError) as refused:
        conversation.full_clean()
    assert list(refused.value.message_dict) == ["token_budget"]
    conversation.token_budget = 1000
    conversation.full_clean()
