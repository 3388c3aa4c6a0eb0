"""Error reports to Sentry, when SENTRY_DSN is set (settings.py calls `init`).

What reaches Sentry: Django views' unhandled exceptions (the Django integration), and every
record logged at ERROR or above with its exception — which is how the socket consumers'
faults (`ChatConsumer.receive` logs them), the reply tasks' (chat/replies/runner.py logs a
reply that failed), Daphne's "Exception inside application" and the management commands'
surface. Lower records travel as breadcrumbs.

What never does: the users' words. Conversations hold message text, replies, system prompts
and file names, and any of them can sit in a request body, a local variable, an exception's
message or a log line's arguments. `scrub` (before_send) and `scrub_breadcrumb`
(before_breadcrumb) keep the shape of a fault — exception types, stack frames (file, function,
line, source), log format strings, the URL path and method, the logger — and drop every value
that could carry text: request bodies, query strings, cookies and headers but a few, frame
variables, exception messages, log arguments, breadcrumb data, extras and the user. The SDK is
also told to collect none of them (data_collection) and to leave the Anthropic SDK alone.
"""

from __future__ import annotations

import logging
from typing import Any

FILTERED = "[Filtered]"
# Request headers kept in an event: none of them carries what a user wrote.
SAFE_HEADERS = frozenset({"user-agent", "content-type", "content-length", "accept", "host"})
# Contexts the SDK fills in about the machine, kept; any other is dropped.
SAFE_CONTEXTS = frozenset({"runtime", "os", "device", "trace", "app"})


def init(dsn: str, *, environment: str = "production", release: str | None = None) -> None:
    import sentry_sdk
    from sentry_sdk.integrations.anthropic import AnthropicIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        integrations=[
            DjangoIntegration(),
            # Records at ERROR become events, INFO and up breadcrumbs; none is sent as a
            # Sentry log (`level`): those would carry the formatted lines.
            LoggingIntegration(
                level=None, event_level=logging.ERROR, breadcrumb_level=logging.INFO
            ),
        ],
        disabled_integrations=[AnthropicIntegration()],
        data_collection={
            "user_info": False,
            "http_bodies": [],
            "cookies": {"mode": "off"},
            "url_query_params": {"mode": "off"},
            "stack_frame_variables": False,
            "database_query_data": False,
            "gen_ai": {"inputs": False, "outputs": False},
        },
        max_request_body_size="never",
        traces_sample_rate=None,
        before_send=scrub,
        before_breadcrumb=scrub_breadcrumb,
        before_send_log=lambda log, hint: None,
    )


def scrub(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event without anything a user wrote (see the module's docstring)."""
    request = event.get("request")
    if isinstance(request, dict):
        kept = {}
        if request.get("method"):
            kept["method"] = request["method"]
        if request.get("url"):
            kept["url"] = str(request["url"]).split("?", 1)[0]
        if request.get("headers"):
            kept["headers"] = {
                k: v for k, v in request["headers"].items() if k.lower() in SAFE_HEADERS
            }
        event["request"] = kept
    for exception in (event.get("exception") or {}).get("values") or []:
        if exception.get("value"):
            exception["value"] = FILTERED
        _drop_vars(exception.get("stacktrace"))
    for thread in (event.get("threads") or {}).get("values") or []:
        _drop_vars(thread.get("stacktrace"))
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        event["logentry"] = {"message": logentry.get("message", ""), "params": []}
    if "message" in event:  # capture_message's text
        event["message"] = FILTERED
    event.pop("extra", None)
    event.pop("user", None)
    contexts = event.get("contexts")
    if isinstance(contexts, dict):
        event["contexts"] = {k: v for k, v in contexts.items() if k in SAFE_CONTEXTS}
    crumbs = event.get("breadcrumbs")
    values = crumbs.get("values") if isinstance(crumbs, dict) else crumbs
    for crumb in values or []:
        _scrub_crumb(crumb)
    return event


def scrub_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """A log record's breadcrumb keeps its format string, not the formatted line."""
    record = (hint or {}).get("log_record")
    if record is not None:
        crumb["message"] = str(record.msg)
    _scrub_crumb(crumb)
    return crumb


def _scrub_crumb(crumb: dict[str, Any]) -> None:
    crumb.pop("data", None)
    if crumb.get("type") != "log":  # only a log line's message is known to be a format string
        crumb.pop("message", None)


def _drop_vars(stacktrace: dict[str, Any] | None) -> None:
    for frame in (stacktrace or {}).get("frames") or []:
        frame.pop("vars", None)
