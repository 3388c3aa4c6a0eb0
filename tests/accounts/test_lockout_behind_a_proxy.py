"""Login throttling under Daphne behind a proxy, as `make prod` runs it (docs/deploy.md).

Daphne with --proxy-headers takes the client address from X-Forwarded-For (its first entry) and
Django's REMOTE_ADDR is that address, which django-axes counts failures against. nginx must
therefore overwrite the header with the address it saw (scripts/prod.sh), never append to what
the client sent.
"""

from __future__ import annotations

import http.client
import re
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

LIMIT = 5
ROOT = Path(__file__).resolve().parents[2]


def log_in(url: str, username: str, password: str, *, forwarded_for: str) -> tuple[int, str]:
    """POST the login form as a browser behind a proxy would; the HTTP status and the page."""
    host = urlsplit(url).netloc
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", "/login/", headers={"X-Forwarded-For": forwarded_for})
    page = conn.getresponse()
    cookie = SimpleCookie(page.getheader("Set-Cookie"))["csrftoken"].value
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.read().decode())[1]
    body = urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
    conn.request(
        "POST",
        "/login/",
        body=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={cookie}",
            "X-Forwarded-For": forwarded_for,
        },
    )
    response = conn.getresponse()
    page = response.read().decode()
    conn.close()
    return response.status, page


def test_failures_count_against_the_forwarded_address_under_daphne(app_factory):
    app, _ = app_factory()
    app.daphne_args = ("--proxy-headers",)
    app.start()
    for name in ["amy", "ben", "cat", "dan"]:
        assert log_in(app.url, name, "wrong", forwarded_for="203.0.113.5")[0] == 200
    status, page = log_in(app.url, "eve", "wrong", forwarded_for="203.0.113.5")
    assert status == 429 and "Too many failed logins" in page and 'value="eve"' in page
    # Every request came from 127.0.0.1: only the forwarded address tells these two apart.
    assert log_in(app.url, "fay", "fay-password-123", forwarded_for="203.0.113.5")[0] == 429
    assert log_in(app.url, "fay", "fay-password-123", forwarded_for="203.0.113.6")[0] == 302


def test_the_demo_proxy_overwrites_the_forwarded_address():
    """A client's own X-Forwarded-For would come first, and Daphne would take it."""
    script = (ROOT / "scripts" / "prod.sh").read_text()
    headers = re.findall(r"proxy_set_header X-Forwarded-For (\S+);", script)
    assert headers and set(headers) == {r"\$remote_addr"}
