"""Security headers Django 5.2 does not set by itself; request ids for the logs."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.gzip import GZipMiddleware

from chat.telemetry import context


def storage_origins(
    endpoint_url: str | None, bucket: str, region: str, addressing_style: str
) -> list[str]:
    """The origins browsers reach the image bucket at: uploads post there, images load from it."""
    if endpoint_url:
        parts = urlsplit(endpoint_url)
        origins = [f"{parts.scheme}://{parts.netloc}"]
        if addressing_style == "virtual":
            origins.append(f"{parts.scheme}://{bucket}.{parts.netloc}")
        return origins
    if addressing_style == "path":
        return ["https://s3.amazonaws.com", f"https://s3.{region}.amazonaws.com"]
    # boto3 signs with the global name; S3 may redirect a new bucket to its regional name.
    return [f"https://{bucket}.s3.amazonaws.com", f"https://{bucket}.s3.{region}.amazonaws.com"]


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@lru_cache(maxsize=4)
def _policies(s3_origins: tuple[str, ...], sso_origin: str) -> tuple[str, str]:
    s3 = " ".join(s3_origins)
    # Scripts and styles only from this origin, no inline script; the socket to this host;
    # presigned uploads and images from the bucket.
    app = "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data: blob: {s3}",
            f"connect-src 'self' {s3}",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            # The logout form's redirect goes on to the single sign-on provider's logout.
            f"form-action 'self' {sso_origin}".rstrip(),
            "frame-ancestors 'none'",
        ]
    )
    # Django's admin sets inline style attributes; it still runs no inline or foreign script.
    admin = app.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    return app, admin


def content_security_policies() -> tuple[str, str]:
    """(app policy, admin policy) for the current settings."""
    origins = storage_origins(
        settings.AWS_S3_ENDPOINT_URL,
        settings.AWS_STORAGE_BUCKET_NAME,
        settings.AWS_S3_REGION_NAME,
        settings.AWS_S3_ADDRESSING_STYLE,
    )
    sso_origin = origin_of(settings.OIDC_ISSUER) if settings.OIDC_ISSUER else ""
    return _policies(tuple(origins), sso_origin)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            app_csp, admin_csp = content_security_policies()
            admin = request.path.startswith("/" + settings.ADMIN_URL_PREFIX)
            response["Content-Security-Policy"] = admin_csp if admin else app_csp
        return response


class DebugStaticGzipMiddleware(GZipMiddleware):
    """Static files gzipped on the fly when DEBUG serves them (`make run`).

    Outside DEBUG, `collectstatic` writes compressed copies and whitenoise serves those
    (claudeweb/storage.py). In DEBUG whitenoise serves static/ through the finders and has no
    compressed copy to send: 1.1 MB of scripts and styles went uncompressed to every new tab.
    Only static paths: pages carry CSRF tokens next to text users control, which compression
    can leak (BREACH); static files hold neither.
    """

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if not request.path.startswith(settings.STATIC_URL):
            return response
        return super().process_response(request, response)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Gives each request an id that its log lines carry (chat/telemetry/context.py) and that
    answers in `X-Request-ID`: nginx's, when it sends a well-formed one, else a new one. Under a
    conversation's URL (`c/<pk>/…`) the lines carry the conversation's id too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        # Also on the request: Django logs a 4xx/5xx response after the middleware returned.
        request.request_id = request_id
        request_token = context.request_id.set(request_id)
        conversation_token = context.conversation_id.set(None)
        try:
            response = self.get_response(request)
        finally:
            context.request_id.reset(request_token)
            context.conversation_id.reset(conversation_token)
        response["X-Request-ID"] = request_id
        return response

    def process_view(self, request: HttpRequest, view, args, kwargs) -> None:
        match = request.resolver_match
        if match is not None and match.route.startswith("c/<int:pk>") and "pk" in kwargs:
            request.conversation_id = kwargs["pk"]
            context.conversation_id.set(kwargs["pk"])
