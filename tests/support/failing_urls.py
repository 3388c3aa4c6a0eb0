"""The site's URLs plus one view that fails on purpose, for the error report tests."""

import logging

from django.http import HttpRequest, HttpResponse
from django.urls import include, path

log = logging.getLogger("tests.failing")


def fail(request: HttpRequest) -> HttpResponse:
    text = request.POST.get("text", "")
    log.info("handling %s", text)  # a breadcrumb holding the text, as a careless log line would
    raise RuntimeError(f"could not handle {text}")


urlpatterns = [path("fail/", fail), path("", include("claudeweb.urls"))]
