"""Browser tests: the app served by Daphne in a subprocess, driven by headless Chromium.

These run in their own pytest invocation (Playwright's sync API leaves an event loop running),
against their own database: a fresh PostgreSQL database when DATABASE_URL names PostgreSQL,
else a SQLite file; Redis when REDIS_URL is set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import AppServer, app_environment, drop_database, fresh_database

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
E2E_USER, E2E_PASSWORD = "erin", "erin-password-123"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def app_env(offline_claude_url, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The server's environment, for `manage.py` subprocesses that seed its database. The
    database is dropped at the end of the run."""
    # One database per test run, so runs in parallel (several suites at once) do not collide.
    name = f"claudeweb_e2e_{os.getpid()}"
    database_url = fresh_database(name, tmp_path_factory.mktemp("e2e-db"))
    yield app_environment(
        database_url=database_url,
        claude_url=offline_claude_url,
        DEMO_USERNAME=E2E_USER,
        DEMO_PASSWORD=E2E_PASSWORD,
        # Allowed server-wide; each conversation's toggle stays off until a test turns it on.
        CLAUDE_WEB_SEARCH="true",
    )
    drop_database(database_url)


@pytest.fixture(scope="session")
def app_server(app_env, tmp_path_factory) -> Iterator[str]:
    server = AppServer(app_env, tmp_path_factory.mktemp("e2e"))
    server.manage("migrate", "-v", "0")
    server.manage("ensure_demo_user")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(server.logs[-1], ARTIFACTS / "e2e-daphne.log")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    assert executable, "Chromium is not installed (make test installs it)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture
def logged_in(page, app_server):
    page.goto(app_server + "/login/")
    page.get_by_test_id("login-username").fill(E2E_USER)
    page.get_by_test_id("login-password").fill(E2E_PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(app_server + "/")
    return page


def open_empty_conversation(page) -> int:
    """The page of a conversation before its first message, its socket connected, for tests of
    that page's controls. Made as the first page makes one when its first message is sent
    (POST chat:new with the page's CSRF token), then opened. Starting a chat from the first
    page itself is tested in test_starting_browser.py."""
    from urllib.parse import urljoin

    from playwright.sync_api import expect

    created = page.evaluate(
        """async () => {
            const token = document.querySelector('meta[name="csrf-token"]').content;
            const response = await fetch("/c/new/", {
                method: "POST", credentials: "same-origin",
                headers: {Accept: "application/json", "X-CSRFToken": token},
            });
            return await response.json();
        }"""
    )
    page.goto(urljoin(page.url, created["url"]))
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    return created["id"]
