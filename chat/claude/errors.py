"""Upstream failures in our terms: one table from what the SDK raises to a code, a message
for the user and whether trying again can help."""

from __future__ import annotations

import anthropic
import httpx2


class ClaudeError(Exception):
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
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
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


def _from_status_error(exc: anthropic.APIStatusError) -> ClaudeError:
    kind = exc.type or ""
    detail = exc.api_message or ""
    request_id = exc.request_id or ""
    status = exc.status_code
    if status == 200:
        # An `error` event after the stream began: the SDK reports it with the stream's 200.
        if kind == "overloaded_error":
            return ClaudeError(
                "upstream_overloaded",
                "The model is overloaded right now. Try again in a moment.",
                retryable=True,
                status=status,
                request_id=request_id,
            )
        return ClaudeError(
            "upstream_error",
            "Claude stopped with an error partway through. Try again.",
            retryable=True,
            status=status,
            request_id=request_id,
        )
    if isinstance(exc, anthropic.RateLimitError):
        if "enforced_spend_limit_reached" in (exc.error_code or "", detail):
            return ClaudeError(
                "spend_limit",
                "The organisation's API spend limit is reached. An admin must raise it.",
                retryable=False,
                status=status,
                request_id=request_id,
            )
        retry_after = _retry_after(exc.response)
        wait = f" Try again in {retry_after:g} s." if retry_after else " Try again shortly."
        return ClaudeError(
            "upstream_rate_limited",
            "Claude's rate limit was reached." + wait,
            retryable=True,
            status=status,
            retry_after=retry_after,
            request_id=request_id,
        )
    if isinstance(exc, anthropic.OverloadedError) or status == 529:
        return ClaudeError(
            "upstream_overloaded",
            "The model is overloaded right now. Try again in a moment.",
            retryable=True,
            status=status,
            request_id=request_id,
        )
    if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
        return ClaudeError(
            "upstream_auth",
            "The server's Claude API key was refused. An admin must check it.",
            retryable=False,
            status=status,
            request_id=request_id,
        )
    if status == 413 or "prompt is too long" in detail:
        return ClaudeError(
            "context_too_long",
            "This conversation is too long for the model. Start a new conversation.",
            retryable=False,
            status=status,
            request_id=request_id,
        )
    if 400 <= status < 500:
        return ClaudeError(
            "upstream_invalid",
            "Claude rejected the request" + (f": {detail}" if detail else "."),
            retryable=False,
            status=status,
            request_id=request_id,
        )
    return ClaudeError(
        "upstream_error",
        "Claude had a server error. Try again.",
        retryable=True,
        status=status,
        request_id=request_id,
    )


def to_claude_error(exc: BaseException) -> ClaudeError | None:
    """Map an SDK or transport exception to ours; None for anything else (a bug, re-raised)."""
    if isinstance(exc, ClaudeError):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        return _from_status_error(exc)
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return ClaudeError(
            "upstream_timeout",
            "Claude stopped answering (timed out). Try again.",
            retryable=True,
        )
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return ClaudeError(
            "upstream_disconnected",
            "The connection to Claude was lost. Try again.",
            retryable=True,
        )
    if isinstance(exc, anthropic.APIError):
        return ClaudeError(
            "upstream_error", "Claude returned something unexpected. Try again.", retryable=True
        )
    return None
