"""Every row of the upstream error table: what the SDK raises becomes our code, message and
retry flag, with the API's status, Retry-After and request id carried along.

The exceptions are built as the SDK builds them, from an HTTP response and its JSON body;
no server is involved.
"""

from __future__ import annotations

import anthropic
import httpx2
import pytest

from chat.claude.errors import ClaudeError, to_claude_error

REQUEST = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages")
MODEL = "claude-haiku-5-5"  # the catalogue's "Claude Haiku 5.5": messages name it


def status_error(
    cls: type[anthropic.APIStatusError],
    status: int,
    *,
    kind: str = "api_error",
    detail: str = "",
    error_code: str | None = None,
    retry_after: str | None = None,
) -> anthropic.APIStatusError:
    headers = {"request-id": "req_test"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    error: dict = {"type": kind, "message": detail}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    body = {"type": "error", "error": error}
    response = httpx2.Response(status, headers=headers, json=body, request=REQUEST)
    return cls(f"Error code: {status}", response=response, body=body)


STATUS_ROWS = [
    (
        "overloaded event after the stream began",
        status_error(anthropic.APIStatusError, 200, kind="overloaded_error"),
        "upstream_overloaded",
        "Claude Haiku 5.5 is overloaded right now. Try again in a moment.",
        True,
    ),
    (
        "other error event after the stream began",
        status_error(anthropic.APIStatusError, 200, kind="api_error"),
        "upstream_error",
        "Claude Haiku 5.5 stopped with an error partway through. Try again.",
        True,
    ),
    (
        "spend limit named by the error code",
        status_error(
            anthropic.RateLimitError,
            429,
            kind="rate_limit_error",
            detail="Your organisation has reached its limit.",
            error_code="enforced_spend_limit_reached",
        ),
        "spend_limit",
        "The organisation's API spend limit is reached. An admin must raise it.",
        False,
    ),
    (
        "spend limit named by the message",
        status_error(
            anthropic.RateLimitError,
            429,
            kind="rate_limit_error",
            detail="enforced_spend_limit_reached",
        ),
        "spend_limit",
        "The organisation's API spend limit is reached. An admin must raise it.",
        False,
    ),
    (
        "rate limit without retry-after",
        status_error(anthropic.RateLimitError, 429, kind="rate_limit_error"),
        "upstream_rate_limited",
        "The rate limit for Claude Haiku 5.5 was reached. Try again shortly.",
        True,
    ),
    (
        "overloaded",
        status_error(anthropic.OverloadedError, 529, kind="overloaded_error"),
        "upstream_overloaded",
        "Claude Haiku 5.5 is overloaded right now. Try again in a moment.",
        True,
    ),
    (
        "529 under a plain status error",
        status_error(anthropic.APIStatusError, 529),
        "upstream_overloaded",
        "Claude Haiku 5.5 is overloaded right now. Try again in a moment.",
        True,
    ),
    (
        "key refused",
        status_error(anthropic.AuthenticationError, 401, kind="authentication_error"),
        "upstream_auth",
        "The server's API key was refused. An admin must check it.",
        False,
    ),
    (
        "key not permitted",
        status_error(anthropic.PermissionDeniedError, 403, kind="permission_error"),
        "upstream_auth",
        "The server's API key was refused. An admin must check it.",
        False,
    ),
    (
        "request too large",
        status_error(anthropic.ContentTooLargeError, 413, kind="request_too_large"),
        "context_too_long",
        "This conversation is too long for Claude Haiku 5.5. Start a new conversation.",
        False,
    ),
    (
        "prompt too long",
        status_error(
            anthropic.BadRequestError,
            400,
            kind="invalid_request_error",
            detail="prompt is too long: 210000 tokens > 200000 maximum",
        ),
        "context_too_long",
        "This conversation is too long for Claude Haiku 5.5. Start a new conversation.",
        False,
    ),
    (
        "invalid request with the API's detail",
        status_error(
            anthropic.BadRequestError,
            400,
            kind="invalid_request_error",
            detail="messages: roles must alternate",
        ),
        "upstream_invalid",
        "Claude Haiku 5.5 rejected the request: messages: roles must alternate",
        False,
    ),
    (
        "invalid request without detail",
        status_error(anthropic.NotFoundError, 404, kind="not_found_error"),
        "upstream_invalid",
        "Claude Haiku 5.5 rejected the request.",
        False,
    ),
    (
        "server error",
        status_error(anthropic.InternalServerError, 500),
        "upstream_error",
        "Claude Haiku 5.5 had a server error. Try again.",
        True,
    ),
]


@pytest.mark.parametrize(
    ("exc", "code", "message", "retryable"),
    [row[1:] for row in STATUS_ROWS],
    ids=[row[0] for row in STATUS_ROWS],
)
def test_an_api_status_error_maps_to_its_code_message_and_retry_flag(exc, code, message, retryable):
    error = to_claude_error(exc, model=MODEL)
    assert (error.code, error.message, error.retryable) == (code, message, retryable)
    assert (error.status, error.request_id) == (exc.status_code, "req_test")
    assert error.retry_after is None


def test_a_rate_limit_tells_the_wait_from_retry_after():
    exc = status_error(anthropic.RateLimitError, 429, kind="rate_limit_error", retry_after="7")
    error = to_claude_error(exc, model=MODEL)
    assert (error.code, error.retryable) == ("upstream_rate_limited", True)
    assert error.message == "The rate limit for Claude Haiku 5.5 was reached. Try again in 7 s."
    assert (error.status, error.retry_after, error.request_id) == (429, 7.0, "req_test")


def test_an_unreadable_retry_after_means_try_again_shortly():
    exc = status_error(anthropic.RateLimitError, 429, retry_after="tomorrow")
    error = to_claude_error(exc, model=MODEL)
    assert error.message == "The rate limit for Claude Haiku 5.5 was reached. Try again shortly."
    assert error.retry_after is None


def test_retry_after_is_kept_only_for_a_rate_limit():
    error = to_claude_error(
        status_error(anthropic.OverloadedError, 529, retry_after="5"), model=MODEL
    )
    assert error.code == "upstream_overloaded" and error.retry_after is None


TRANSPORT_ROWS = [
    (
        "sdk timeout",
        anthropic.APITimeoutError(request=REQUEST),
        "upstream_timeout",
        "Claude Haiku 5.5 stopped answering (timed out). Try again.",
    ),
    (
        "read timeout",
        httpx2.ReadTimeout("timed out", request=REQUEST),
        "upstream_timeout",
        "Claude Haiku 5.5 stopped answering (timed out). Try again.",
    ),
    (
        "sdk connection error",
        anthropic.APIConnectionError(request=REQUEST),
        "upstream_disconnected",
        "The connection to Claude Haiku 5.5 was lost. Try again.",
    ),
    (
        "dropped connection",
        httpx2.RemoteProtocolError("peer closed connection", request=REQUEST),
        "upstream_disconnected",
        "The connection to Claude Haiku 5.5 was lost. Try again.",
    ),
    (
        "malformed response",
        anthropic.APIResponseValidationError(
            httpx2.Response(200, json={"unexpected": True}, request=REQUEST), body=None
        ),
        "upstream_error",
        "Claude Haiku 5.5 returned something unexpected. Try again.",
    ),
]


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [row[1:] for row in TRANSPORT_ROWS],
    ids=[row[0] for row in TRANSPORT_ROWS],
)
def test_a_failure_without_an_api_status_maps_to_a_retryable_error(exc, code, message):
    error = to_claude_error(exc, model=MODEL)
    assert (error.code, error.message, error.retryable) == (code, message, True)
    assert (error.status, error.retry_after, error.request_id) == (None, None, "")


def test_our_own_error_passes_through_unchanged():
    ours = ClaudeError("budget", "Over budget.", retryable=False)
    assert to_claude_error(ours) is ours


def test_anything_else_is_not_mapped_so_it_is_raised_as_a_bug():
    assert to_claude_error(KeyError("content")) is None


def test_a_message_names_the_model_the_request_went_to_by_its_catalogue_label():
    exc = status_error(anthropic.InternalServerError, 500)
    assert to_claude_error(exc, model="claude-opus-5-5").message == (
        "Claude Opus 5.5 had a server error. Try again."
    )


def test_a_model_the_catalogue_does_not_list_is_named_by_its_id_and_no_model_as_the_api():
    exc = anthropic.APIConnectionError(request=REQUEST)
    assert to_claude_error(exc, model="my-local-model").message == (
        "The connection to my-local-model was lost. Try again."
    )
    timeout = to_claude_error(anthropic.APITimeoutError(request=REQUEST))
    assert timeout.message == "The API stopped answering (timed out). Try again."
