"""In headless Chromium: an admin opens the usage dashboard and exports the ledger as CSV."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

from playwright.sync_api import expect

from tests.e2e.conftest import ARTIFACTS, E2E_PASSWORD, E2E_USER, ROOT

# Twelve calls of one user over the last six days, two models, one error, one truncation; and a
# daily budget of 10,000 tokens of which they used 9,000 today (90 %).
SEED = """
from datetime import timedelta
from decimal import Decimal
from django.contrib.auth import get_user_model
from chat.models import ApiCall, UserBudget
from chat.ledger.usage import period_starts

user = get_user_model().objects.create_user("dashboard-frank", password="x-unused-password-1")
UserBudget.objects.create(user=user, daily_tokens=10_000)
today = period_starts()[0]
for i in range(12):
    call = ApiCall.objects.create(
        user=user,
        model="claude-haiku-4-5" if i % 2 else "claude-sonnet-4-6",
        input_tokens=1000 if i < 6 else 500,
        cache_read_tokens=500,
        output_tokens=0 if i < 6 else 250,
        cost=Decimal("0.0125"),
        stop_reason="max_tokens" if i == 7 else "end_turn",
        error_code="upstream_overloaded" if i == 3 else "",
    )
    when = today + timedelta(hours=1) if i < 6 else today - timedelta(days=i - 5)
    ApiCall.objects.filter(pk=call.pk).update(created_at=when)
print(user.pk)
"""
CALLS, COST = 12, "0.1500"


def seed(env: dict) -> int:
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", SEED],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def admin_login(page, app_server: str) -> None:
    page.goto(app_server + "/admin/login/?next=/admin/")
    page.locator("#id_username").fill(E2E_USER)
    page.locator("#id_password").fill(E2E_PASSWORD)
    page.locator("input[type=submit]").click()
    page.wait_for_url(app_server + "/admin/")


def test_the_dashboard_shows_totals_a_chart_and_budget_alerts(page, app_server, app_env):
    user_id = seed(app_env)
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    admin_login(page, app_server)
    page.get_by_test_id("usage-dashboard-link").click()
    page.wait_for_url(app_server + "/admin/usage/")
    page.locator("#id_period").select_option("7d")
    page.locator(".usage-period input[type=submit]").click()
    page.wait_for_url(re.compile(r"/admin/usage/\?period=7d"))

    totals = page.get_by_test_id("usage-totals")
    expect(totals).to_be_visible()
    assert int(totals.locator('[data-total="requests"]').inner_text().replace(",", "")) >= CALLS
    frank = page.get_by_test_id("usage-users").locator('tr[data-key="dashboard-frank"]')
    expect(frank.locator('td[data-column="requests"]')).to_have_text(str(CALLS))
    expect(frank.locator('td[data-column="cost"]')).to_have_text(COST)
    alert = page.get_by_test_id("usage-alerts").locator('[data-alert="dashboard-frank"]')
    expect(alert).to_have_text("90 %")
    for chart in ("usage-cost-chart", "usage-token-chart"):
        svg = page.get_by_test_id(chart)
        expect(svg).to_be_visible()
        assert svg.locator("rect").count() >= 7  # a bar (or segment) per day, and the legend
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "usage-dashboard.png"), full_page=True)

    # The user's row drills down to their calls; the export streams them through Daphne.
    frank.get_by_role("link", name="calls").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(CALLS)
    export = page.get_by_test_id("apicall-export").get_attribute("href")
    assert f"user__id__exact={user_id}" in export
    response = page.request.get(app_server + export)
    assert response.ok and response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert len(rows) == CALLS and {r["username"] for r in rows} == {"dashboard-frank"}
    assert page.errors == [] and violations == [], json.dumps(violations)
