"""Browser tests: the app served by Daphne in a subprocess, driven by headless Chromium.

These run in their own pytest invocation (Playwright's sync API leaves an event loop running),
against their own database: a fresh PostgreSQL database when DATABASE_URL names PostgreSQL,
else a SQLite file; Redis when REDIS_URL is set.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin(url: str, *statements: str) -> None:
    import psycopg

    parts = urlsplit(url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(
        admin_url.replace("postgres://", "postgresql://", 1), autocommit=True
    ) as c:
        for statement in statements:
            c.execute(statement)


def _fresh_database(tmp: Path) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{tmp / 'e2e.sqlite3'}"
    # One database per test run, so runs in parallel (several suites at once) do not collide.
    name = f"claudeweb_e2e_{os.getpid()}"
    _admin(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def app_env(offline_claude_url, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The server's environment, for `manage.py` subprocesses that seed its database. The
    database is dropped at the end of the run."""
    database_url = _fresh_database(tmp_path_factory.mktemp("e2e-db"))
    yield dict(
        os.environ,
        DJANGO_DEBUG="true",
        DATABASE_URL=database_url,
        ANTHROPIC_BASE_URL=offline_claude_url,
        ANTHROPIC_API_KEY="test-key",
        CLAUDE_MAX_RETRIES="0",
        DEMO_USERNAME=E2E_USER,
        DEMO_PASSWORD=E2E_PASSWORD,
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    if database_url.startswith(("postgres://", "postgresql://")):
        name = urlsplit(database_url).path.lstrip("/")
        _admin(database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def app_server(app_env, tmp_path_factory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("e2e")
    port = _free_port()
    env = app_env
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT)
    subprocess.run([*manage, "ensure_demo_user"], env=env, check=True, cwd=ROOT)
    log = open(tmp / "daphne.log", "w")  # noqa: SIM115 (kept open for the server's life)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "claudeweb.server",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "claudeweb.asgi:application",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/login/", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                log.close()
                raise RuntimeError((tmp / "daphne.log").read_text()) from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(tmp / "daphne.log", ARTIFACTS / "e2e-daphne.log")


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
