"""GET /metrics: the Prometheus exposition of chat/telemetry/metrics.py, off unless configured.

Who may read it: a request with `Authorization: Bearer <METRICS_TOKEN>` (compared in constant
time), or one from an address in METRICS_ALLOWED_ADDRESSES (CIDRs). Either admits. With neither
setting the endpoint does not exist (404), and every refusal is the same 404, so the outside
learns nothing of it. The address is the request's REMOTE_ADDR: behind nginx with Daphne's
--proxy-headers that is the first X-Forwarded-For entry, trustworthy only when nginx sets the
header (overwriting the client's) and nothing but nginx reaches Daphne (docs/deploy.md).
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from chat.telemetry.metrics import forget_dead_processes


def _token_matches(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _address_allowed(request: HttpRequest) -> bool:
    networks = settings.METRICS_ALLOWED_ADDRESSES
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def exposition() -> bytes:
    """Every metric of this process, or of every process sharing PROMETHEUS_MULTIPROC_DIR."""
    directory = settings.PROMETHEUS_MULTIPROC_DIR
    if not directory:
        return generate_latest(REGISTRY)
    forget_dead_processes(Path(directory))
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


@require_safe
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not (_token_matches(request) or _address_allowed(request)):
        raise Http404
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
