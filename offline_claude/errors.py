"""Error types and wire shapes of the Anthropic API, as emulated by offline Claude.

Every error leaves the server as::

    HTTP <status>
    request-id: req_...
    {"type": "error", "error": {"type": "<error_type>", "message": "..."}, "request_id": "req_..."}

``error.details.error_code`` is added only when a directive asks for it, which lets
the SDK pick its specialised exception classes (for example
``EnforcedSpendLimitReachedError`` for ``429`` + ``enforced_spend_limit_reached``).
"""

from __future__ import annotations

import secrets
import string
from typing import Any

_BASE62 = string.digits + string.ascii_letters

#: The error ``type`` the real API uses for each HTTP status.
DEFAULT_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

#: The HTTP status the real API uses for each error ``type`` (reverse of the above).
STATUS_FOR_ERROR_TYPE: dict[str, int] = {v: k for k, v in DEFAULT_ERROR_TYPES.items()}

#: Messages close to the real ones, used when a directive gives no ``message=``.
DEFAULT_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request (offline directive)",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit (offline directive).",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}


def new_id(prefix: str) -> str:
    """A random identifier shaped like the real ones: ``prefix`` + ``01`` + 22 base62 chars."""
    return prefix + "01" + "".join(secrets.choice(_BASE62) for _ in range(22))


def error_type_for_status(status: int) -> str:
    """The default error type for ``status``.

    Unknown statuses map to ``api_error`` (5xx) or ``invalid_request_error`` (4xx).
    """
    if status in DEFAULT_ERROR_TYPES:
        return DEFAULT_ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_payload(error_type: str, message: str, error_code: str | None = None) -> dict[str, Any]:
    """The ``{"type": "error", "error": {...}}`` object without request id (SSE ``error`` data)."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error}


class ApiError(Exception):
    """An error to be answered with the real API error shape.

    ``headers`` are extra response headers (e.g. ``retry-after``), as ``(name, value)``
    pairs of lowercase ASCII strings.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        error_code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or error_type_for_status(status)
        self.error_code = error_code
        self.headers = headers or []

    def body(self, request_id: str) -> dict[str, Any]:
        """The JSON body of the error response."""
        payload = error_payload(self.error_type, self.message, self.error_code)
        payload["request_id"] = request_id
        return payload


def invalid(message: str) -> ApiError:
    """A ``400 invalid_request_error`` with ``message``."""
    return ApiError(400, message)


class DropConnection(Exception):
    """Raised out of the ASGI app to make the server abort the connection mid-response.

    ASGI servers (uvicorn, daphne, hypercorn) close the transport when the app raises
    after the response has started; ``python -m offline_claude`` silences the log line.
    """
