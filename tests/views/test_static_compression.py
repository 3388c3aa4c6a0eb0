"""Static files are gzipped when DEBUG serves them from the finders (`make run`); pages never."""

from __future__ import annotations

import gzip

from django.conf import settings
from django.http import HttpResponse
from django.test import RequestFactory

from claudeweb.middleware import DebugStaticGzipMiddleware

BODY = b"export function greet() { return 'hello'; }\n" * 200


def respond(path: str) -> HttpResponse:
    request = RequestFactory().get(path, HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    return DebugStaticGzipMiddleware(lambda r: HttpResponse(BODY))(request)


def test_a_static_file_is_gzipped_for_a_browser_that_takes_gzip():
    response = respond(settings.STATIC_URL + "chat/chat.js")
    assert response["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response["Vary"]
    assert gzip.decompress(response.content) == BODY


def test_a_page_is_left_alone_since_it_carries_a_csrf_token():
    response = respond("/c/1/")
    assert not response.has_header("Content-Encoding")
    assert response.content == BODY
