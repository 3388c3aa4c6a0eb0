"""Liveness and readiness for load balancers and orchestrators, without login.

`/healthz` answers 200 as long as the process serves requests: it touches nothing else, so a
database outage does not get every process restarted. `/readyz` answers 200 when the database,
the channel layer's Redis and the S3 bucket all answer, else 503 naming each that failed; each
check has CHECK_TIMEOUT_S, run side by side, so a hung dependency costs at most that. Both answer
GET and HEAD only and are never cached.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0
# Threads that run the checks; a hung check keeps its thread until its own timeout ends it.
_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="readyz")


@require_safe
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain; charset=utf-8")


def _database() -> None:
    from django.db import close_old_connections

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        close_old_connections()  # this thread's connection is not reused by a request


def _channel_layer() -> None:
    """Redis, when the channel layer uses it (the in-memory layer is always there)."""
    if not settings.REDIS_URL:
        return
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT_S, socket_connect_timeout=CHECK_TIMEOUT_S
    )
    try:
        client.ping()
    finally:
        client.close()


def _storage() -> None:
    from chat.uploads import storage

    storage.client().head_bucket(Bucket=storage.bucket())


CHECKS = {"database": _database, "channel_layer": _channel_layer, "storage": _storage}


def _build_clients() -> str | None:
    """Build the shared S3 client outside the timed checks: its first build is local work
    (botocore loads its service model, about a second of CPU on a busy machine), not the
    bucket's answer. None, or why it could not be built."""
    from chat.uploads import storage

    try:
        storage.client()
    except Exception as exc:
        log.warning("readiness: no S3 client: %s", exc)
        return type(exc).__name__
    return None


def readiness() -> dict[str, str]:
    """Each dependency's state: "ok", or why it failed (the exception's class, or "timeout")."""
    broken = _build_clients()
    checks = dict(CHECKS)
    if broken:
        del checks["storage"]
    futures = {name: _pool.submit(check) for name, check in checks.items()}
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    states = {}
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            states[name] = "ok"
        except FutureTimeout:
            states[name] = "timeout"
        except Exception as exc:  # what failed is the answer, not an error of this view
            log.warning("readiness: %s failed: %s", name, exc)
            states[name] = type(exc).__name__
    if broken:
        states["storage"] = broken
    return {name: states[name] for name in CHECKS}


@require_safe
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    states = readiness()
    failed = sorted(name for name, state in states.items() if state != "ok")
    body = {"ready": not failed, "checks": states, "failed": failed}
    return JsonResponse(body, status=503 if failed else 200)
