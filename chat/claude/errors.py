"""Upstream failures in our terms: one table from what the SDK raises to a code, a message
for the user and whether trying again can help.

The messages name the model the request went to, by its catalogue label ("Claude Sonnet 4.6
had a server error"): the same code serves every base URL, so the name comes from the request,
never from where it was sent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anthropic
import httpx2

from chat.claude import catalogue
from chat.errors import UserFacingError

# The name used when a failure belongs to no one model (listing the models).
NO_MODEL_NAME = "the API"


class ClaudeError(UserFacingError):
    """An upstream failure, in our terms. `message` is for the user."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str = "",
    ) -> None:
        super().__init__(message, code=code, retryable=retryable)
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id


def _retry_after(response: httpx2.Response | None) -> float | None:
    if response is None:
        return None
    raw = response.headers.get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class _Failure:
    """What an SDK or transport exception tells us; the API's fields are empty without a
    response (a timeout, a dropped connection)."""

    exc: BaseException
    status: int | None = None
    kind: str = ""  # the API's error type, e.g. "overloaded_error"
    detail: str = ""  # the API's own message
    error_code: str = ""
    request_id: str = ""
    retry_after: float | None = None

    def raised(self, *classes: type[BaseException]) -> bool:
        return isinstance(self.exc, classes)

    @property
    def wait(self) -> str:
        if self.retry_after:
            return f" Try again in {self.retry_after:g} s."
        return " Try again shortly."

    @property
    def api_detail(self) -> str:
        return f": {self.detail}" if self.detail else "."


def _failure(exc: BaseException) -> _Failure:
    if not isinstance(exc, anthropic.APIStatusError):
        return _Failure(exc)
    return _Failure(
        exc,
        status=exc.status_code,
        kind=exc.type or "",
        detail=exc.api_message or "",
        error_code=exc.error_code or "",
        request_id=exc.request_id or "",
        retry_after=_retry_after(exc.response),
    )


@dataclass(frozen=True)
class _Row:
    """One upstream failure: the first row whose `when` holds gives the code, the user's
    message (`{wait}` and `{api_detail}` filled from the failure, `{model}` / `{Model}` with
    the model's name, mid-sentence / at its start) and whether to retry."""

    when: Callable[[_Failure], bool]
    code: str
    message: str
    retryable: bool
    with_retry_after: bool = False


_OVERLOADED = "{Model} is overloaded right now. Try again in a moment."
_CLIENT_ERROR = range(400, 500)

# Order matters: the first match wins (subclasses before their bases, the stream's 200 first).
_UPSTREAM: tuple[_Row, ...] = (
    # An `error` event after the stream began: the SDK reports it with the stream's 200.
    _Row(
        lambda f: f.status == 200 and f.kind == "overloaded_error",
        "upstream_overloaded",
        _OVERLOADED,
        retryable=True,
    ),
    _Row(
        lambda f: f.status == 200,
        "upstream_error",
        "{Model} stopped with an error partway through. Try again.",
        retryable=True,
    ),
    _Row(
        lambda f: (
            f.raised(anthropic.RateLimitError)
            and "enforced_spend_limit_reached" in (f.error_code, f.detail)
        ),
        "spend_limit",
        "The organisation's API spend limit is reached. An admin must raise it.",
        retryable=False,
    ),
    _Row(
        lambda f: f.raised(anthropic.RateLimitError),
        "upstream_rate_limited",
        "The rate limit for {model} was reached.{wait}",
        retryable=True,
        with_retry_after=True,
    ),
    _Row(
        lambda f: f.raised(anthropic.OverloadedError) or f.status == 529,
        "upstream_overloaded",
        _OVERLOADED,
        retryable=True,
    ),
    _Row(
        lambda f: f.raised(anthropic.AuthenticationError, anthropic.PermissionDeniedError),
        "upstream_auth",
        "The server's API key was refused. An admin must check it.",
        retryable=False,
    ),
    _Row(
        lambda f: f.status == 413 or "prompt is too long" in f.detail,
        "context_too_long",
        "This conversation is too long for {model}. Start a new conversation.",
        retryable=False,
    ),
    _Row(
        lambda f: f.status in _CLIENT_ERROR,
        "upstream_invalid",
        "{Model} rejected the request{api_detail}",
        retryable=False,
    ),
    _Row(
        lambda f: f.raised(anthropic.APIStatusError),
        "upstream_error",
        "{Model} had a server error. Try again.",
        retryable=True,
    ),
    _Row(
        lambda f: f.raised(anthropic.APITimeoutError, httpx2.TimeoutException),
        "upstream_timeout",
        "{Model} stopped answering (timed out). Try again.",
        retryable=True,
    ),
    _Row(
        lambda f: f.raised(anthropic.APIConnectionError, httpx2.TransportError),
        "upstream_disconnected",
        "The connection to {model} was lost. Try again.",
        retryable=True,
    ),
    _Row(
        lambda f: f.raised(anthropic.APIError),
        "upstream_error",
        "{Model} returned something unexpected. Try again.",
        retryable=True,
    ),
)


def model_name(model: str) -> str:
    """How the messages name a model: its catalogue label, else its id (a model the catalogue
    no longer lists), else NO_MODEL_NAME."""
    if not model:
        return NO_MODEL_NAME
    found = catalogue.find_model(model)
    return found.label if found is not None else model


def to_claude_error(exc: BaseException, *, model: str = "") -> ClaudeError | None:
    """Map an SDK or transport exception to ours; None for anything else (a bug, re-raised).

    `model` is the id the request went to: the message names it (see model_name)."""
    if isinstance(exc, ClaudeError):
        return exc
    failure = _failure(exc)
    name = model_name(model)
    for row in _UPSTREAM:
        if row.when(failure):
            return ClaudeError(
                row.code,
                row.message.format(
                    wait=failure.wait,
                    api_detail=failure.api_detail,
                    model=name,
                    Model=name[:1].upper() + name[1:],
                ),
                retryable=row.retryable,
                status=failure.status,
                retry_after=failure.retry_after if row.with_retry_after else None,
                request_id=failure.request_id,
            )
    return None
