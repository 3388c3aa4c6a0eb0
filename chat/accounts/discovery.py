"""The provider's endpoints, from its discovery document (OpenID Connect Discovery 1.0).

Fetched on first use with a timeout and cached for the life of the process; a failure is not
cached, so the next sign-in tries again. Raises SsoUnavailable, the one error of this package.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import requests
from django.conf import settings

DISCOVERY_PATH = "/.well-known/openid-configuration"
REQUIRED = ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint")


class SsoUnavailable(Exception):
    """The provider could not be reached or answered something unusable."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str
    end_session_endpoint: str  # "" when the provider offers no logout


_lock = threading.Lock()
_cache: dict[str, Provider] = {}


def sso_enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def provider() -> Provider:
    """The configured provider's endpoints; raises SsoUnavailable."""
    issuer = settings.OIDC_ISSUER
    with _lock:
        if issuer not in _cache:
            _cache[issuer] = fetch(issuer, timeout=settings.OIDC_TIMEOUT)
        return _cache[issuer]


def forget() -> None:
    """Drop the cached documents (tests, or after the provider moved its endpoints)."""
    with _lock:
        _cache.clear()


def fetch(issuer: str, *, timeout: float) -> Provider:
    url = issuer + DISCOVERY_PATH
    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
        document = response.json()
    except requests.Timeout:
        raise SsoUnavailable(f"{url} did not answer within {timeout:g} s") from None
    except (requests.RequestException, ValueError) as exc:
        raise SsoUnavailable(f"{url} could not be read: {exc}") from None
    if not isinstance(document, dict):
        raise SsoUnavailable(f"{url} is not a discovery document")
    # The document must name the issuer it was fetched for (Discovery 1.0, section 4.3).
    if document.get("issuer", "").rstrip("/") != issuer:
        raise SsoUnavailable(
            f"{url} names the issuer {document.get('issuer')!r}, not {issuer!r} (OIDC_ISSUER)"
        )
    missing = [key for key in REQUIRED if not isinstance(document.get(key), str)]
    if missing:
        raise SsoUnavailable(f"{url} has no {', '.join(missing)}")
    return Provider(
        issuer=document["issuer"],
        authorization_endpoint=document["authorization_endpoint"],
        token_endpoint=document["token_endpoint"],
        jwks_uri=document["jwks_uri"],
        userinfo_endpoint=document["userinfo_endpoint"],
        end_session_endpoint=document.get("end_session_endpoint") or "",
    )


# mozilla-django-oidc reads the endpoints as settings; these are the ones discovery answers.
ENDPOINT_SETTINGS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}


def setting(name: str, *default):
    """mozilla-django-oidc's `get_settings`, with the provider's endpoints from discovery."""
    if name in ENDPOINT_SETTINGS:
        return getattr(provider(), ENDPOINT_SETTINGS[name])
    from mozilla_django_oidc.utils import import_from_settings

    return import_from_settings(name, *default)
