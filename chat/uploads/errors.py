"""AttachmentError, the one error callers of chat.uploads catch, and its protocol error codes."""

from __future__ import annotations

from chat.errors import UserFacingError

INVALID = "attachment_invalid"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
STORAGE_UNAVAILABLE = "storage_unavailable"
BUSY = "busy"
# What a busy answer tells the client to wait before finishing again (Retry-After, seconds).
BUSY_RETRY_AFTER_S = 2


class AttachmentError(UserFacingError):
    """The one error callers catch. `code` is a protocol error code, `message` is for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def invalid(message: str) -> AttachmentError:
    """An attachment_invalid error: the request or the file is refused; retrying will not help."""
    return AttachmentError(INVALID, message)
