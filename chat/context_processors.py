from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def upstream_label() -> tuple[bool, str]:
    """(is_offline, host): a base URL on this machine is the offline model, not Claude."""
    base_url = settings.ANTHROPIC_BASE_URL
    if not base_url:
        return False, "api.anthropic.com"
    host = urlsplit(base_url).hostname or base_url
    return host in LOOPBACK_HOSTS or host.startswith("127."), host


def claudeweb(request: HttpRequest) -> dict:
    offline, host = upstream_label()
    return {"offline_claude": offline, "claude_host": host}
