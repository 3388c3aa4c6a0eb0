"""The test OpenID provider (tests/oidc_provider/server.mjs, the `oidc-provider` package) on a
free loopback port, and a sign-in through its own login and consent pages without a browser.

Its accounts (sub → claims): sub-alice (alice, groups researchers and staff-chat), sub-bob
(bob, builders), sub-carol (carol, no groups). The test-only admin endpoint changes an account or
disables it, and sets the lifetime of the ID tokens it issues.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urljoin

import requests

from tests.support.servers import end_process

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_DIR = ROOT / "tests" / "oidc_provider"
CLIENT_ID, CLIENT_SECRET = "claudeweb-test", "test-only-client-secret"


@dataclass
class OidcProvider:
    issuer: str
    admin_token: str

    def admin(self, action: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.issuer}/test-admin/{action}",
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def set_account(self, sub: str, **claims) -> dict:
        """Change (or create) an account: groups, email, preferred_username, disabled, …"""
        return self.admin(f"accounts/{sub}", claims)

    def set_id_token_ttl(self, seconds: int) -> None:
        self.admin("id-token-ttl", {"seconds": seconds})

    def app_settings(self) -> dict[str, str]:
        """The app's environment for this provider."""
        return {
            "OIDC_ISSUER": self.issuer,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_PROVIDER_NAME": "Test SSO",
        }


@contextmanager
def oidc_provider(*, app_url: str) -> Iterator[OidcProvider]:
    """The provider, its client registered for the app at `app_url` (callback and logout)."""
    assert (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir(), (
        "tests/oidc_provider/node_modules is missing: scripts/services.sh start runs npm ci"
    )
    token = secrets.token_urlsafe(24)
    env = dict(
        os.environ,
        **{
            "OIDC_TEST_PORT": "0",
            "OIDC_TEST_CLIENT_ID": CLIENT_ID,
            "OIDC_TEST_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_TEST_REDIRECT_URI": f"{app_url}/oidc/callback/",
            "OIDC_TEST_LOGOUT_URI": f"{app_url}/login/",
            "OIDC_TEST_ADMIN_TOKEN": token,
        },
    )
    proc = subprocess.Popen(
        ["node", "server.mjs"],
        cwd=PROVIDER_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        issuer = _wait_for_issuer(proc)
        yield OidcProvider(issuer=issuer, admin_token=token)
    finally:
        end_process(proc)


def _wait_for_issuer(proc: subprocess.Popen) -> str:
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("oidc-provider listening on "):
                lines.append(line.split()[-1])
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert lines, "the test OpenID provider did not start"
    return lines[0]


# --- signing in at the provider without a browser ------------------------------------------------

FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.IGNORECASE)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.IGNORECASE)


def sign_in_at_provider(
    authorization_url: str, *, login: str, browser: requests.Session | None = None
) -> str:
    """Follow the provider from `authorization_url` through its login and consent pages as
    `login` (any password); returns the URL it finally redirects to (the app's callback, with
    a code or an error). `browser` keeps the provider's cookies between sign-ins."""
    browser = browser or requests.Session()
    url = authorization_url
    for _ in range(12):
        response = browser.get(url, allow_redirects=False, timeout=10)
        if response.is_redirect:
            location = urljoin(url, response.headers["Location"])
            if not location.startswith(authorization_url.split("/auth")[0]):
                return location
            url = location
            continue
        assert response.status_code == 200, response.text[:500]
        action = urljoin(url, unescape(FORM.search(response.text)[1]))
        fields = dict(HIDDEN.findall(response.text))
        if fields.get("prompt") == "login":
            fields.update(login=login, password="any-password")  # noqa: S105
        response = browser.post(action, data=fields, allow_redirects=False, timeout=10)
        assert response.is_redirect, response.text[:500]
        url = urljoin(action, response.headers["Location"])
        if not url.startswith(authorization_url.split("/auth")[0]):
            return url
    raise AssertionError(f"the provider never sent the browser back (last at {url})")
